"""The documented switch from in-cluster Redis to Azure Cache for Redis renders a valid, consistent set."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.deploy.manifests import AKS, Manifest, find, render, validate


@pytest.fixture
def switched(tmp_path: Path) -> list[Manifest]:
    """prod with the azure-cache-redis component, as an engineer would add it to the overlay."""
    relative = os.path.relpath(AKS, tmp_path)
    (tmp_path / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources: [{relative}/overlays/prod]\ncomponents: [{relative}/components/azure-cache-redis]\n"
    )
    return render(tmp_path)


def test_switch_removes_every_in_cluster_redis_object(switched: list[Manifest]) -> None:
    """No Redis workload, service, identity, policy or config is left behind."""
    leftovers = [f"{m['kind']}/{m['metadata']['name']}" for m in switched if "redis" in m["metadata"]["name"]]
    assert leftovers == []


def test_switch_output_validates_strictly(switched: list[Manifest]) -> None:
    """Every object still passes its Kubernetes or CRD schema."""
    for manifest in switched:
        validate(manifest)


def test_switch_reads_the_whole_url_from_key_vault(switched: list[Manifest]) -> None:
    """REDIS_URL comes from the synced Key Vault secret `redis-url`; no password variable remains."""
    container = find(switched, "Deployment", "streaming-gateway")[0]["spec"]["template"]["spec"][
        "containers"
    ][0]
    env = {e["name"]: e for e in container["env"]}
    assert env["REDIS_URL"]["valueFrom"]["secretKeyRef"] == {"name": "gateway-secrets", "key": "redis-url"}
    assert "REDIS_PASSWORD" not in env
    provider = find(switched, "SecretProviderClass", "gateway-secrets")[0]
    synced = {(s["secretName"], d["key"]) for s in provider["spec"]["secretObjects"] for d in s["data"]}
    assert ("gateway-secrets", "redis-url") in synced
    assert "objectName: redis-url" in provider["spec"]["parameters"]["objects"]


def test_switch_opens_egress_to_the_cache_tls_ports_only(switched: list[Manifest]) -> None:
    """The gateway may reach port 6380 and the TLS shard ports of a clustered Premium cache
    (15000-15999, named in MOVED replies), and no longer an in-cluster Redis pod."""
    egress = find(switched, "NetworkPolicy", "streaming-gateway")[0]["spec"]["egress"]
    ports = [(p["port"], p.get("endPort")) for rule in egress for p in rule["ports"]]
    assert (6380, None) in ports and (15000, 15999) in ports
    assert all(port != 6379 for port, _ in ports)
