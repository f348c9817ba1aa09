"""The private CA behind APIM <-> Istio ingress mutual TLS, and the two certificates it issues.

Run by scripts/certificates.sh inside the certificate deployment script (the Azure CLI image has
Python and `cryptography`). Both sides trust the CA, not a particular certificate: APIM has the CA
as a trusted root for the backend's chain, the ingress accepts client certificates the CA issued.
So either leaf can be re-issued at any time (a renewal reaches the ingress through the CSI driver
within minutes and APIM within hours) without the other side changing: nothing is pinned to a
copy of a certificate that will be replaced.

    certificates.py ca OUT --cn NAME [--years 10]
        a new CA (RSA 3072, CA:TRUE, pathlen 0), key and certificate in one PEM file
    certificates.py leaf OUT --ca CA --cn HOST --usage server|client [--days 365] [--format pem|pfx]
        a certificate for HOST issued by CA; PEM holds key, certificate and the CA certificate
        (the chain the ingress serves), PFX the same without a password (what APIM reads)
    certificates.py needs-new CURRENT --ca CA [--within-days 90]
        exit 0 when CURRENT should be replaced (missing or unreadable, issued by another CA,
        self-signed, or expiring within the window), exit 1 when it is fine
    certificates.py ca-cert CA       the CA certificate alone, PEM (what the ingress trusts)
    certificates.py ca-der CA        the CA certificate, base64 DER (what APIM installs as a root)
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

USAGES = {"server": ExtendedKeyUsageOID.SERVER_AUTH, "client": ExtendedKeyUsageOID.CLIENT_AUTH}
#: Issued certificates start this much in the past, for clocks a little behind.
BACKDATE = dt.timedelta(minutes=10)


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def not_after(cert: x509.Certificate) -> dt.datetime:
    value = getattr(cert, "not_valid_after_utc", None)  # cryptography >= 42
    return value if value is not None else cert.not_valid_after.replace(tzinfo=dt.UTC)


def load(path: Path) -> tuple[rsa.RSAPrivateKey | None, list[x509.Certificate]]:
    data = path.read_bytes()
    certs = x509.load_pem_x509_certificates(data) if b"BEGIN CERTIFICATE" in data else []
    key = None
    if b"PRIVATE KEY" in data:
        loaded = serialization.load_pem_private_key(data, password=None)
        assert isinstance(loaded, rsa.RSAPrivateKey)
        key = loaded
    return key, certs


def load_ca(path: Path) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    key, certs = load(path)
    if key is None or not certs:
        raise SystemExit(f"{path}: not a CA key and certificate (PEM)")
    return key, certs[0]


def pem_key(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def make_ca(cn: str, years: int) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    start = now() - BACKDATE
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=365 * years))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def issue(
    ca_key: rsa.RSAPrivateKey, ca_cert: x509.Certificate, cn: str, usage: str, days: int
) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    start = now() - BACKDATE
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(min(start + dt.timedelta(days=days), not_after(ca_cert)))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=True,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([USAGES[usage]]), critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(cn)]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def issued_by(cert: x509.Certificate, ca_cert: x509.Certificate) -> bool:
    if cert.issuer != ca_cert.subject or cert.subject == ca_cert.subject:
        return False
    public = ca_cert.public_key()
    assert isinstance(public, rsa.RSAPublicKey)
    try:
        assert cert.signature_hash_algorithm is not None
        public.verify(
            cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(), cert.signature_hash_algorithm
        )
    except Exception:  # InvalidSignature, or a key type this CA never uses
        return False
    return True


def needs_new(current: Path, ca_path: Path, within_days: int) -> bool:
    _, ca_cert = load_ca(ca_path)
    try:
        _, certs = load(current)
    except (OSError, ValueError):
        return True
    if not certs or not issued_by(certs[0], ca_cert):
        return True
    return not_after(certs[0]) - now() < dt.timedelta(days=within_days)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    ca = commands.add_parser("ca")
    ca.add_argument("out", type=Path)
    ca.add_argument("--cn", required=True)
    ca.add_argument("--years", type=int, default=10)
    leaf = commands.add_parser("leaf")
    leaf.add_argument("out", type=Path)
    leaf.add_argument("--ca", type=Path, required=True)
    leaf.add_argument("--cn", required=True)
    leaf.add_argument("--usage", choices=sorted(USAGES), required=True)
    leaf.add_argument("--days", type=int, default=365)
    leaf.add_argument("--format", choices=["pem", "pfx"], default="pem")
    check = commands.add_parser("needs-new")
    check.add_argument("current", type=Path)
    check.add_argument("--ca", type=Path, required=True)
    check.add_argument("--within-days", type=int, default=90)
    for name in ("ca-cert", "ca-der"):
        commands.add_parser(name).add_argument("ca", type=Path)
    args = parser.parse_args(argv)

    if args.command == "ca":
        key, cert = make_ca(args.cn, args.years)
        args.out.write_bytes(pem_key(key) + pem_cert(cert))
    elif args.command == "leaf":
        ca_key, ca_cert = load_ca(args.ca)
        key, cert = issue(ca_key, ca_cert, args.cn, args.usage, args.days)
        if args.format == "pfx":
            data = pkcs12.serialize_key_and_certificates(
                args.cn.encode(), key, cert, [ca_cert], serialization.NoEncryption()
            )
        else:
            data = pem_key(key) + pem_cert(cert) + pem_cert(ca_cert)
        args.out.write_bytes(data)
    elif args.command == "needs-new":
        return 0 if needs_new(args.current, args.ca, args.within_days) else 1
    elif args.command == "ca-cert":
        sys.stdout.write(pem_cert(load_ca(args.ca)[1]).decode())
    else:
        der = load_ca(args.ca)[1].public_bytes(serialization.Encoding.DER)
        sys.stdout.write(base64.b64encode(der).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
