"""The clustered choice as a deployable option: `redisHosting = 'managed'` creates Azure Managed
Redis with the OSS cluster policy (infra/modules/redis-managed.bicep), and the postprovision hook
switches the overlay to aks/components/azure-managed-redis, which points the gateway at it in
cluster mode with the egress the cluster's ports need. Read from the parsed templates and the
rendered manifests, as an engineer would switch it."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.deploy.bicep import INFRA, MAIN, modules, one, outputs, parameters, template, text
from tests.deploy.manifests import AKS, ROOT, Manifest, find, render, rendered, validate

HOOK = INFRA / "hooks" / "postprovision.sh"


def hosting_component(hosting: str, tmp_path: Path) -> str:
    """The overlay's redis/kustomization.yaml exactly as the postprovision hook writes it."""
    script = HOOK.read_text()
    case = script[script.index('case "$REDIS_HOSTING" in') : script.index("repository=")]
    result = subprocess.run(
        [
            "bash",
            "-c",
            f'set -euo pipefail\nREDIS_HOSTING={hosting}\nOVERLAY="{tmp_path}"\nmkdir -p "$OVERLAY/redis"\n{case}',
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    return (tmp_path / "redis" / "kustomization.yaml").read_text()


@pytest.fixture(scope="module")
def managed(tmp_path_factory: pytest.TempPathFactory) -> list[Manifest]:
    """prod after `azd provision` with redisHosting = 'managed'."""
    root = tmp_path_factory.mktemp("managed")
    copy = root / "aks"
    shutil.copytree(AKS, copy)
    (copy / "overlays" / "prod" / "redis" / "kustomization.yaml").write_text(
        hosting_component("managed", root / "hook")
    )
    return render(copy / "overlays" / "prod")


def test_hosting_is_a_parameter_defaulting_to_the_in_cluster_redis() -> None:
    spec = parameters(MAIN)["redisHosting"]
    assert spec["default"] == "aks"
    allowed = next(d for d in spec["decorators"] if d["type"] == "allowed")["argument"]
    assert sorted(allowed) == ["aks", "managed"]
    assert text(outputs(MAIN)["REDIS_HOSTING"]["value"]) == "redisHosting"
    assert "${REDIS_HOSTING=aks}" in (INFRA / "main.parameters.json").read_text()


def test_managed_redis_is_created_only_when_chosen() -> None:
    raw = template(MAIN)["modules"]["redisManaged"]
    assert "redisHosting" in text(raw["config"]["condition"]) and "managed" in text(
        raw["config"]["condition"]
    )
    assert modules()["redisManaged"]["path"] == (INFRA / "modules" / "redis-managed.bicep").resolve()


def test_managed_redis_is_a_zone_redundant_oss_cluster_on_tls() -> None:
    cluster = one("Microsoft.Cache/redisEnterprise")
    assert cluster.properties["highAvailability"] == "Enabled"
    assert cluster.properties["minimumTlsVersion"] == "1.2"
    skus = parameters(INFRA / "modules" / "redis-managed.bicep")["skus"]["default"]
    assert set(skus) == {"dev", "prod"} and all(
        re.fullmatch(r"(Balanced|MemoryOptimized|ComputeOptimized)_\w+", s) for s in skus.values()
    )
    database = one("Microsoft.Cache/redisEnterprise/databases").properties
    assert database["clusteringPolicy"] == "OSSCluster"
    assert database["port"] == 10000
    assert database["clientProtocol"] == "Encrypted"
    # As the in-cluster Redis: nothing is evicted (the log and the outbox must not vanish), AOF.
    assert database["evictionPolicy"] == "NoEviction"
    assert database["persistence"] == {"aofEnabled": True, "aofFrequency": "1s"}


def test_the_url_reaches_the_gateway_only_through_key_vault() -> None:
    """The URL with its key is a Key Vault secret named as the component reads it; no output carries it."""
    parsed = template(INFRA / "modules" / "redis-managed.bicep")
    value = text(parsed["resources"]["redisUrl"]["config"]["properties"]["value"])
    assert value.startswith("rediss://:") and "uriComponent" in value and "listKeys" in value
    assert value.endswith("/0")  # a cluster has database 0 only (agent_contracts.redis_connection)
    assert parsed["resources"]["redisUrl"]["config"]["name"] == "redis-url"
    for name, output in parsed.get("outputs", {}).items():
        assert "listKeys" not in text(output["value"]), name


def test_managed_redis_is_observed() -> None:
    alert = template(INFRA / "modules" / "redis-managed.bicep")["resources"]["memoryAlert"]["config"]
    criterion = alert["properties"]["criteria"]["allOf"][0]
    assert criterion["metricNamespace"] == "Microsoft.Cache/redisEnterprise"
    assert criterion["metricName"] == "usedmemorypercentage"
    diagnostics = template(INFRA / "modules" / "redis-managed.bicep")["resources"]["diagnostics"]["config"]
    assert text(diagnostics["scope"]) == "database"


def test_hook_writes_the_matching_component_and_rejects_anything_else(tmp_path: Path) -> None:
    assert "components: []" in hosting_component("aks", tmp_path / "a")
    assert "components: [../../../components/azure-managed-redis]" in hosting_component(
        "managed", tmp_path / "m"
    )
    script = HOOK.read_text()
    case = script[script.index('case "$REDIS_HOSTING" in') : script.index("repository=")]
    result = subprocess.run(
        ["bash", "-c", f'set -euo pipefail\nREDIS_HOSTING=elsewhere\nOVERLAY="{tmp_path}"\n{case}'],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0 and "aks or managed" in result.stderr


def test_committed_overlays_are_what_the_hook_writes_for_the_in_cluster_redis(tmp_path: Path) -> None:
    expected = hosting_component("aks", tmp_path)
    for overlay in ("dev", "prod"):
        assert (AKS / "overlays" / overlay / "redis" / "kustomization.yaml").read_text() == expected
        assert find(rendered(overlay), "StatefulSet", "redis")


def test_managed_switch_removes_the_in_cluster_redis(managed: list[Manifest]) -> None:
    leftovers = [f"{m['kind']}/{m['metadata']['name']}" for m in managed if "redis" in m["metadata"]["name"]]
    assert leftovers == []


def test_managed_switch_validates_strictly(managed: list[Manifest]) -> None:
    for manifest in managed:
        validate(manifest)


def test_gateway_uses_the_cluster_client_with_the_url_from_key_vault(managed: list[Manifest]) -> None:
    settings = [
        m
        for m in managed
        if m["kind"] == "ConfigMap" and m["metadata"]["name"].startswith("gateway-settings-")
    ]
    assert len(settings) == 1 and settings[0]["data"]["REDIS_MODE"] == "cluster"
    container = find(managed, "Deployment", "streaming-gateway")[0]["spec"]["template"]["spec"]["containers"][
        0
    ]
    env = {e["name"]: e for e in container["env"]}
    assert env["REDIS_URL"]["valueFrom"]["secretKeyRef"] == {"name": "gateway-secrets", "key": "redis-url"}
    assert "REDIS_PASSWORD" not in env
    assert any(ref["configMapRef"]["name"] == settings[0]["metadata"]["name"] for ref in container["envFrom"])


def test_gateway_settings_select_the_cluster_client(managed: list[Manifest]) -> None:
    """The rendered settings, with a URL of the shape Bicep writes, pass the gateway's own check in cluster mode."""
    from streaming_gateway.settings import Settings

    settings = next(
        m
        for m in managed
        if m["kind"] == "ConfigMap" and m["metadata"]["name"].startswith("gateway-settings-")
    )
    environ = dict(settings["data"])
    environ["REDIS_URL"] = "rediss://:a%2Bb%3D@redis-agents-prod-abc.westeurope.redis.azure.net:10000/0"
    parsed = Settings.from_env(environ)
    assert parsed.redis_mode == "cluster"
    assert parsed.redis_url == environ["REDIS_URL"]


def test_gateway_egress_reaches_the_cluster_endpoint_and_every_shard(managed: list[Manifest]) -> None:
    """10000 answers CLUSTER SLOTS; the shards it names listen on 8500-8599. Nothing else for Redis."""
    egress = find(managed, "NetworkPolicy", "streaming-gateway")[0]["spec"]["egress"]
    redis_rule = egress[0]
    ports = {(p["port"], p.get("endPort")) for p in redis_rule["ports"]}
    assert ports == {(10000, None), (8500, 8599)}
    assert all(port not in (6379, 6380) for rule in egress for port in (p["port"] for p in rule["ports"]))


def test_function_app_gets_no_redis_url() -> None:
    """With Service Bus configured the function app never opens Redis (function_app/runtime.py:
    pipeline_redis builds a client it does not use), so no Redis key is put in its app settings."""
    settings = text(template(INFRA / "modules" / "functions.bicep")["variables"]["appSettings"]["value"])
    assert "REDIS" not in settings
    runtime = (ROOT / "function_app" / "runtime.py").read_text()
    assert "if settings.uses_servicebus:" in runtime
