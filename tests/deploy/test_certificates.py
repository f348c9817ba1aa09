"""The certificates behind APIM <-> Istio ingress mutual TLS, made by infra/scripts/certificates.sh
(and certificates.py) as the deployment script runs it on every provision, against a stand-in for
`az keyvault` (tests/deploy/fake_az.py: no Azure here; the cryptography and the TLS handshakes are
real). What must hold: both sides trust one private CA, so a certificate issued again (renewal)
keeps mutual TLS working with the trust either side already has; a run with nothing due writes
nothing and prints the same root for APIM; a read failure is never taken for "absent"."""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import shutil
import ssl
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID

from tests.deploy.bicep import INFRA, template, text

SCRIPT = INFRA / "scripts" / "certificates.sh"
HELPER = INFRA / "scripts" / "certificates.py"
FAKE_AZ = Path(__file__).with_name("fake_az.py")
HOST = "gateway.dev.agents.internal"
VAULT, CA_VAULT = "kv-dev-abc", "kvca-dev-abc"


@dataclass
class Run:
    root: Path
    output: dict[str, str]
    stdout: str

    def vault(self, name: str = VAULT) -> Path:
        return self.root / "vaults" / name

    def writes(self, name: str = VAULT) -> list[str]:
        log = self.vault(name) / "writes.log"
        return log.read_text().splitlines() if log.exists() else []


def run_script(root: Path, **env: str) -> Run:
    """certificates.sh with `az` and `python3` on PATH pointing at the stand-in and this interpreter."""
    bin_dir = root / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    (bin_dir / "az").write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE_AZ}" "$@"\n')
    (bin_dir / "python3").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    for tool in ("az", "python3"):
        (bin_dir / tool).chmod(0o755)
    output = root / "output.json"
    result = subprocess.run(
        ["bash", str(SCRIPT)],
        env={
            "PATH": f"{bin_dir}:{os.environ['PATH']}",
            "FAKE_KEYVAULT_ROOT": str(root / "vaults"),
            "KEYVAULT_NAME": VAULT,
            "CA_KEYVAULT_NAME": CA_VAULT,
            "PUBLIC_HOST": HOST,
            "CERTIFICATES_PY": HELPER.read_text(),
            "AZ_SCRIPTS_OUTPUT_PATH": str(output),
            **env,
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    if result.returncode != 0:
        raise AssertionError(f"certificates.sh failed ({result.returncode}):\n{result.stderr}")
    return Run(root, json.loads(output.read_text()), result.stdout)


@pytest.fixture(scope="module")
def first(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return run_script(tmp_path_factory.mktemp("certificates"))


def certificates_in(data: bytes) -> list[x509.Certificate]:
    if b"-----BEGIN" in data:
        return x509.load_pem_x509_certificates(data)
    loaded = pkcs12.load_pkcs12(data, None)
    assert loaded.cert is not None
    return [loaded.cert.certificate, *(c.certificate for c in loaded.additional_certs)]


def as_pem(data: bytes, path: Path) -> Path:
    """Key and certificates of a PEM or PKCS#12 file, as PEM (what ssl loads)."""
    if b"-----BEGIN" not in data:
        loaded = pkcs12.load_pkcs12(data, None)
        assert loaded.key is not None
        data = loaded.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ) + b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates_in(data))
    path.write_bytes(data)
    return path


def handshake(ingress: Path, ingress_trust: Path, apim_client: Path, apim_root_der: str) -> x509.Certificate:
    """One TLS handshake in memory: the ingress (server certificate, client certificates required
    and checked against `ingress_trust`) and APIM (its client certificate, the backend's chain and
    name checked against `apim_root_der`). Returns the client certificate the ingress accepted."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(ingress)
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    server_ctx.load_verify_locations(cafile=str(ingress_trust))
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.load_verify_locations(cadata=base64.b64decode(apim_root_der))
    client_ctx.load_cert_chain(apim_client)
    pipes = [ssl.MemoryBIO() for _ in range(4)]
    server = server_ctx.wrap_bio(pipes[0], pipes[1], server_side=True)
    client = client_ctx.wrap_bio(pipes[2], pipes[3], server_hostname=HOST)
    done = {"server": False, "client": False}
    for _ in range(20):
        for side, tls, outgoing, incoming in (
            ("client", client, pipes[3], pipes[0]),
            ("server", server, pipes[1], pipes[2]),
        ):
            if not done[side]:
                try:
                    tls.do_handshake()
                    done[side] = True
                except ssl.SSLWantReadError:
                    pass
            incoming.write(outgoing.read())
        if all(done.values()):
            break
    assert all(done.values()), done
    peer = server.getpeercert(binary_form=True)
    assert peer is not None
    return x509.load_der_x509_certificate(peer)


def trust_files(run: Run, tmp: Path) -> tuple[Path, str]:
    """What each side trusts: the ingress's ca.crt (the CSI-synced `ingress-ca-cert`) and APIM's root (the output)."""
    ca = tmp / "ingress-ca.crt"
    ca.write_bytes((run.vault() / "secret" / "ingress-ca-cert").read_bytes())
    return ca, run.output["ingressRootCertificate"]


def test_first_run_creates_the_ca_the_certificates_and_the_trust(first: Run) -> None:
    assert sorted(first.writes()) == [
        "certificate apim-client",
        "certificate istio-ingress",
        "secret ingress-ca-cert",
        "secret redis-password",
    ]
    assert first.writes(CA_VAULT) == ["secret ingress-ca"]
    ca_secret = (first.vault(CA_VAULT) / "secret" / "ingress-ca").read_bytes()
    assert b"PRIVATE KEY" in ca_secret
    # The main vault, which the workloads read, holds the CA's certificate but never its key.
    for path in (first.vault() / "secret").iterdir():
        assert b"BEGIN CERTIFICATE" not in path.read_bytes() or b"PRIVATE KEY" not in path.read_bytes()
    assert b"PRIVATE KEY" not in (first.vault() / "secret" / "ingress-ca-cert").read_bytes()


def test_ca_and_certificates_are_what_each_side_needs(first: Run) -> None:
    ca = certificates_in((first.vault() / "secret" / "ingress-ca-cert").read_bytes())[0]
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert ca.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign is True
    assert base64.b64decode(first.output["ingressRootCertificate"]) == ca.public_bytes(
        serialization.Encoding.DER
    )
    for name, cn, usage in (
        ("istio-ingress", HOST, ExtendedKeyUsageOID.SERVER_AUTH),
        ("apim-client", f"apim.{HOST}", ExtendedKeyUsageOID.CLIENT_AUTH),
    ):
        chain = certificates_in((first.vault() / "certificate" / name).read_bytes())
        leaf = chain[0]
        assert leaf.issuer == ca.subject and chain[-1] == ca
        assert leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
        assert list(leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [usage]
        assert leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.DNSName
        ) == [cn]
        assert (leaf.not_valid_after_utc - leaf.not_valid_before_utc).days <= 366


def test_key_vault_never_reissues_them_itself(first: Run) -> None:
    """Imported with issuer `Unknown` and only a warning before expiry: a Key Vault AutoRenew would
    make a self-signed certificate that neither side trusts."""
    for name, content_type in (
        ("istio-ingress", "application/x-pem-file"),
        ("apim-client", "application/x-pkcs12"),
    ):
        policy = json.loads((first.vault() / "certificate" / f"{name}.policy.json").read_text())
        assert policy["issuerParameters"]["name"] == "Unknown"
        assert [a["action"]["actionType"] for a in policy["lifetimeActions"]] == ["EmailContacts"]
        assert policy["secretProperties"]["contentType"] == content_type


def test_mutual_tls_works_with_what_each_side_is_given(first: Run, tmp_path: Path) -> None:
    ingress_trust, apim_root = trust_files(first, tmp_path)
    ingress = as_pem((first.vault() / "certificate" / "istio-ingress").read_bytes(), tmp_path / "ingress.pem")
    client = as_pem((first.vault() / "certificate" / "apim-client").read_bytes(), tmp_path / "client.pem")
    accepted = handshake(ingress, ingress_trust, client, apim_root)
    assert accepted.subject.rfc4514_string() == f"CN=apim.{HOST}"


def test_a_run_with_nothing_due_changes_nothing(first: Run, tmp_path: Path) -> None:
    """The second `azd provision`: no write in either vault, the same root for APIM (so APIM is not updated)."""
    root = tmp_path / "again"
    shutil.copytree(first.root / "vaults", root / "vaults")
    again = run_script(root)
    assert again.writes() == first.writes() and again.writes(CA_VAULT) == first.writes(CA_VAULT)
    assert again.output == first.output
    assert "issued" not in again.stdout


def test_renewal_keeps_mutual_tls_working_with_the_trust_from_before(first: Run, tmp_path: Path) -> None:
    """Certificates within the renewal window are issued again (new keys) from the same CA: the
    ingress's and APIM's trust from before still accepts them, and APIM's root output is unchanged."""
    shutil.copytree(first.root / "vaults", tmp_path / "vaults")
    ingress_trust, apim_root = trust_files(first, tmp_path)
    before = (tmp_path / "vaults" / VAULT / "certificate" / "istio-ingress").read_bytes()
    renewed = run_script(tmp_path, RENEW_WITHIN_DAYS="400")
    new_writes = renewed.writes()[len(first.writes()) :]
    assert sorted(new_writes) == ["certificate apim-client", "certificate istio-ingress"]
    assert renewed.writes(CA_VAULT) == first.writes(CA_VAULT)
    assert renewed.output == first.output
    after = (renewed.vault() / "certificate" / "istio-ingress").read_bytes()
    assert certificates_in(after)[0] != certificates_in(before)[0]
    ingress = as_pem(after, tmp_path / "ingress.pem")
    client = as_pem((renewed.vault() / "certificate" / "apim-client").read_bytes(), tmp_path / "client.pem")
    handshake(ingress, ingress_trust, client, apim_root)


def test_a_self_signed_certificate_from_an_earlier_deployment_is_replaced(first: Run, tmp_path: Path) -> None:
    """Deployments before the CA made self-signed certificates; the first run with the CA re-issues them."""
    shutil.copytree(first.root / "vaults", tmp_path / "vaults")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, HOST)])
    now = dt.datetime.now(dt.UTC)
    self_signed = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=300))
        .sign(key, hashes.SHA256())
    )
    (tmp_path / "vaults" / VAULT / "certificate" / "istio-ingress").write_bytes(
        self_signed.public_bytes(serialization.Encoding.PEM)
    )
    run = run_script(tmp_path)
    assert run.writes()[len(first.writes()) :] == ["certificate istio-ingress"]
    ca = certificates_in((run.vault() / "secret" / "ingress-ca-cert").read_bytes())[0]
    assert (
        certificates_in((run.vault() / "certificate" / "istio-ingress").read_bytes())[0].issuer == ca.subject
    )


def test_a_client_certificate_from_another_ca_is_refused(first: Run, tmp_path: Path) -> None:
    """The ingress trusts this CA only: a certificate from another deployment's CA does not get in."""
    other = run_script(tmp_path / "other")
    ingress_trust, apim_root = trust_files(first, tmp_path)
    ingress = as_pem((first.vault() / "certificate" / "istio-ingress").read_bytes(), tmp_path / "ingress.pem")
    stranger = as_pem((other.vault() / "certificate" / "apim-client").read_bytes(), tmp_path / "stranger.pem")
    with pytest.raises(ssl.SSLError):
        handshake(ingress, ingress_trust, stranger, apim_root)


def test_a_failed_read_is_not_taken_for_absent(tmp_path: Path) -> None:
    """A 403 or a network error must stop the script, not create a second CA or password."""
    with pytest.raises(AssertionError, match="cannot read"):
        run_script(tmp_path, FAKE_AZ_FAIL="1")
    assert not (tmp_path / "vaults").exists() or not any((tmp_path / "vaults").rglob("writes.log"))


def test_the_deployment_script_is_wired_to_the_ca_and_apim_trusts_its_root() -> None:
    script = template(INFRA / "modules" / "certificates.bicep")["resources"]["script"]["config"]
    env = {e["name"]: text(e["value"]) for e in script["properties"]["environmentVariables"]}
    assert env["CA_KEYVAULT_NAME"] == "caKeyVaultName"
    assert "certificates.py" in env["CERTIFICATES_PY"]
    assert "certificates.sh" in text(script["properties"]["scriptContent"])
    outputs = template(INFRA / "modules" / "certificates.bicep")["outputs"]
    assert "ingressRootCertificate" in text(outputs["ingressRootCertificate"]["value"])
    apim = template(INFRA / "modules" / "apim.bicep")
    assert text(apim["resources"]["service"]["config"]["properties"]["certificates"]) == (
        "[{encodedCertificate: ingressRootCertificate, storeName: Root}]"
    )
