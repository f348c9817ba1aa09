"""A stand-in for the Azure CLI's `az keyvault` (test double: no Azure here), for running
infra/scripts/certificates.sh as the deployment script would. Each vault is a folder under
FAKE_KEYVAULT_ROOT; every write is appended to its `writes.log`, so a test can tell what a run
changed. Only the calls the script makes are understood; anything else fails loudly. Missing
objects answer as Key Vault does: `(SecretNotFound)` / `(CertificateNotFound)` and exit code 3.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12


def vault(name: str) -> Path:
    path = Path(os.environ["FAKE_KEYVAULT_ROOT"]) / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def log(args: argparse.Namespace, what: str) -> None:
    with (vault(args.vault_name) / "writes.log").open("a") as out:
        out.write(f"{what} {args.n}\n")


def first_certificate(data: bytes) -> bytes:
    if b"-----BEGIN" in data:
        cert = x509.load_pem_x509_certificates(data)[0]
    else:
        loaded = pkcs12.load_pkcs12(data, None)
        assert loaded.cert is not None
        cert = loaded.cert.certificate
    return cert.public_bytes(serialization.Encoding.PEM)


def not_found(kind: str, name: str) -> int:
    label = "SecretNotFound" if kind == "secret" else "CertificateNotFound"
    print(f"({label}) A {kind} with (name/id) {name} was not found in this key vault.", file=sys.stderr)
    return 3


def main() -> int:
    if os.environ.get("FAKE_AZ_FAIL"):  # a permission or network failure, not "absent"
        print("(Forbidden) Caller is not authorized to perform action on resource.", file=sys.stderr)
        return 1
    argv = sys.argv[1:]
    if argv[:1] != ["keyvault"] or len(argv) < 3:
        print(f"fake az: not understood: {argv}", file=sys.stderr)
        return 2
    kind, verb = argv[1], argv[2]
    parser = argparse.ArgumentParser(prog=f"az keyvault {kind} {verb}")
    parser.add_argument("--vault-name", required=True)
    parser.add_argument("-n", required=True)
    parser.add_argument("--query")
    parser.add_argument("-o", "--output")
    parser.add_argument("--value")
    parser.add_argument("--file", "-f")
    parser.add_argument("--content-type")
    parser.add_argument("-e", "--encoding")
    parser.add_argument("--policy")
    args = parser.parse_args(argv[3:])
    store = vault(args.vault_name) / kind
    store.mkdir(exist_ok=True)
    path = store / args.n

    if verb == "show":
        if not path.exists():
            return not_found(kind, args.n)
        if args.query == "id":
            print(f"https://{args.vault_name}.vault.azure.net/{kind}s/{args.n}")
        elif args.query == "value" and kind == "secret":
            print(path.read_text(), end="")
        else:
            print(f"fake az: query {args.query!r} not understood", file=sys.stderr)
            return 2
        return 0
    if kind == "secret" and verb == "set":
        path.write_bytes(Path(args.file).read_bytes() if args.file else args.value.encode())
        log(args, "secret")
        return 0
    if kind == "secret" and verb == "download":
        if not path.exists():
            return not_found(kind, args.n)
        if Path(args.file).exists():
            print(f"File {args.file} already exists", file=sys.stderr)
            return 1
        Path(args.file).write_bytes(path.read_bytes())
        return 0
    if kind == "certificate" and verb == "download":
        if not path.exists():
            return not_found(kind, args.n)
        Path(args.file).write_bytes(first_certificate(path.read_bytes()))
        return 0
    if kind == "certificate" and verb == "import":
        data = Path(args.file).read_bytes()
        policy = json.loads(args.policy)
        expected = "application/x-pem-file" if b"-----BEGIN" in data else "application/x-pkcs12"
        if policy["secretProperties"]["contentType"] != expected:
            print("(BadParameter) The content type does not match the file", file=sys.stderr)
            return 1
        path.write_bytes(data)
        (store / f"{args.n}.policy.json").write_text(args.policy)
        log(args, "certificate")
        return 0
    print(f"fake az: not understood: {argv}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
