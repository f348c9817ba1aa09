"""Policy checks on the rendered workloads: hardening, limits, probes, images, secrets, drain."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from tests.deploy.manifests import OVERLAYS, find, pod_specs, rendered

SECRET_NAME = re.compile(r"(PASSWORD|SECRET|TOKEN|API_KEY|ACCOUNT_KEY|CONNECTION_STRING|_KEY$)", re.I)


def containers(pod: dict[str, Any]) -> list[tuple[str, dict[str, Any], bool]]:
    """(name, container, is_init) for every container of a pod spec."""
    return [(c["name"], c, True) for c in pod.get("initContainers", [])] + [
        (c["name"], c, False) for c in pod["containers"]
    ]


def effective(pod: dict[str, Any], container: dict[str, Any], field: str) -> Any:
    """A security field as Kubernetes applies it: the container's value, else the pod's."""
    return container.get("securityContext", {}).get(field, pod.get("securityContext", {}).get(field))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_is_hardened(overlay: str) -> None:
    """Every container runs as non-root, read-only, without privilege, capabilities or syscalls beyond the default."""
    problems = []
    for workload, pod in pod_specs(rendered(overlay)):
        for name, container, _ in containers(pod):
            where = f"{workload}/{name}"
            if effective(pod, container, "runAsNonRoot") is not True:
                problems.append(f"{where}: runAsNonRoot")
            if (effective(pod, container, "runAsUser") or 0) == 0:
                problems.append(f"{where}: numeric non-zero runAsUser")
            context = container.get("securityContext", {})
            if context.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{where}: readOnlyRootFilesystem")
            if context.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{where}: allowPrivilegeEscalation")
            if context.get("capabilities", {}).get("drop") != ["ALL"] or context.get("capabilities", {}).get(
                "add"
            ):
                problems.append(f"{where}: capabilities")
            if (effective(pod, container, "seccompProfile") or {}).get("type") != "RuntimeDefault":
                problems.append(f"{where}: seccomp")
    assert problems == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_has_requests_limits_and_probes(overlay: str) -> None:
    """Every container asks for and is capped on CPU and memory; every long-running one is probed."""
    problems = []
    for workload, pod in pod_specs(rendered(overlay)):
        for name, container, is_init in containers(pod):
            resources = container.get("resources", {})
            for kind in ("requests", "limits"):
                for resource in ("cpu", "memory"):
                    if resource not in resources.get(kind, {}):
                        problems.append(f"{workload}/{name}: {kind}.{resource}")
            if not is_init:
                for probe in ("livenessProbe", "readinessProbe"):
                    if probe not in container:
                        problems.append(f"{workload}/{name}: {probe}")
    assert problems == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_images_are_pinned_and_never_latest(overlay: str) -> None:
    """Every image names a registry and an explicit version tag (or digest), never `latest`."""
    for _, pod in pod_specs(rendered(overlay)):
        for name, container, _ in containers(pod):
            image = container["image"]
            _repository, _, tag = image.rpartition(":") if "@" not in image else (image, "", "digest")
            assert "." in image.split("/")[0], f"{name}: {image} has no registry host"
            assert tag and tag != "latest" and "/" not in tag, f"{name}: {image} is not pinned"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_secret_literal_is_rendered(overlay: str) -> None:
    """No Secret object, no secret-looking ConfigMap key and no secret-looking env literal."""
    manifests = rendered(overlay)
    assert find(manifests, "Secret") == []
    for config_map in find(manifests, "ConfigMap"):
        assert [k for k in config_map.get("data", {}) if SECRET_NAME.search(k)] == []
        for key, value in config_map.get("data", {}).items():
            assert not re.search(r"^\s*(requirepass|masterauth)\s", value, re.M), f"{key} holds a password"
            assert "://" not in value or "@" not in value.split("://", 1)[1].split("/")[0], (
                f"{key}: credentials in URL"
            )
    for workload, pod in pod_specs(manifests):
        for name, container, _ in containers(pod):
            for env in container.get("env", []):
                if SECRET_NAME.search(env["name"]):
                    assert "valueFrom" in env, f"{workload}/{name}: {env['name']} is a literal"
                if "value" in env and "@" in env["value"]:
                    assert re.search(r"://:\$\([A-Z_]+\)@", env["value"]), (
                        f"{env['name']} embeds a credential"
                    )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_secret_refs_come_from_key_vault_mounted_in_the_same_pod(overlay: str) -> None:
    """Each secretKeyRef names a Secret and key that a SecretProviderClass mounted by that pod syncs."""
    manifests = rendered(overlay)
    providers = {m["metadata"]["name"]: m for m in find(manifests, "SecretProviderClass")}
    for workload, pod in pod_specs(manifests):
        synced: set[tuple[str, str]] = set()
        for volume in pod.get("volumes", []):
            csi = volume.get("csi")
            if csi and csi["driver"] == "secrets-store.csi.k8s.io":
                provider = providers[csi["volumeAttributes"]["secretProviderClass"]]
                assert provider["spec"]["provider"] == "azure"
                for secret in provider["spec"].get("secretObjects", []):
                    synced |= {(secret["secretName"], item["key"]) for item in secret["data"]}
        for name, container, _ in containers(pod):
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert (ref["name"], ref["key"]) in synced, f"{workload}/{name}: {ref} is not synced here"


def gateway_pod(overlay: str) -> dict[str, Any]:
    return find(rendered(overlay), "Deployment", "streaming-gateway")[0]["spec"]["template"]


def gateway_settings(overlay: str) -> dict[str, str]:
    deployment_pod = gateway_pod(overlay)["spec"]
    name = deployment_pod["containers"][0]["envFrom"][0]["configMapRef"]["name"]
    return find(rendered(overlay), "ConfigMap", name)[0]["data"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_grace_period_outlasts_prestop_and_stream_drain(overlay: str) -> None:
    """terminationGracePeriodSeconds exceeds preStop delay plus GATEWAY_SHUTDOWN_GRACE_SECONDS, and the sidecar outlives both."""
    template = gateway_pod(overlay)
    pod = template["spec"]
    container = pod["containers"][0]
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    pre_stop_seconds = int(pre_stop[1])
    drain = int(gateway_settings(overlay)["GATEWAY_SHUTDOWN_GRACE_SECONDS"])
    assert pod["terminationGracePeriodSeconds"] > pre_stop_seconds + drain
    proxy = yaml.safe_load(template["metadata"]["annotations"]["proxy.istio.io/config"])
    sidecar_drain = int(proxy["terminationDrainDuration"].rstrip("s"))
    assert pre_stop_seconds + drain < sidecar_drain <= pod["terminationGracePeriodSeconds"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_gateway_probes_hit_its_health_endpoints(overlay: str) -> None:
    """Liveness asks /healthz and readiness /readyz, on the port the container declares."""
    container = gateway_pod(overlay)["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["port"] in ports
    assert ports["http"] == int(gateway_settings(overlay)["GATEWAY_PORT"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_metrics_have_a_port_of_their_own_that_only_the_sidecar_reads(overlay: str) -> None:
    """GATEWAY_METRICS_PORT is the container's `metrics` port and the one Istio's metrics merge reads;
    no Service, NetworkPolicy or AuthorizationPolicy admits anyone to it, so the pod shows its metrics
    only through the sidecar's merged endpoint that the PodMonitor scrapes."""
    manifests = rendered(overlay)
    template = gateway_pod(overlay)
    metrics_port = int(gateway_settings(overlay)["GATEWAY_METRICS_PORT"])
    container = template["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["metrics"] == metrics_port != ports["http"]
    annotations = template["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == metrics_port
    assert annotations["prometheus.io/path"] == "/metrics"
    endpoint = find(manifests, "PodMonitor", "streaming-gateway")[0]["spec"]["podMetricsEndpoints"][0]
    assert endpoint["path"] == "/stats/prometheus" and endpoint["relabelings"][0]["replacement"] == "$1:15020"
    service_ports = {p.get("targetPort") for s in find(manifests, "Service") for p in s["spec"]["ports"]}
    assert not service_ports & {"metrics", metrics_port}
    admitted = [
        port["port"]
        for policy in find(manifests, "NetworkPolicy")
        for rule in policy["spec"].get("ingress", [])
        for port in rule.get("ports", [])
    ]
    assert metrics_port not in admitted
    allowed = [
        port
        for policy in find(manifests, "AuthorizationPolicy")
        for rule in policy["spec"]["rules"]
        for to in rule.get("to", [])
        for port in to["operation"].get("ports", [])
    ]
    assert str(metrics_port) not in allowed


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_gateway_settings_are_accepted_by_the_gateway(overlay: str) -> None:
    """The ConfigMap, plus the REDIS_URL the pod assembles, passes the gateway's own settings check."""
    from streaming_gateway.settings import Settings

    environ = dict(gateway_settings(overlay))
    environ["REDIS_URL"] = "redis://:0123abcd@redis.agents.svc.cluster.local:6379/0"
    settings = Settings.from_env(environ)
    assert settings.host == "0.0.0.0" and settings.metrics_port == 9090
    assert settings.uses_azure_openai and settings.uses_servicebus
    assert settings.auth_jwks_url and settings.auth_jwt_secret is None


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_workload_identity_is_wired(overlay: str) -> None:
    """Pods that read Key Vault use a service account federated with a managed identity."""
    manifests = rendered(overlay)
    for kind, name in (("Deployment", "streaming-gateway"), ("StatefulSet", "redis")):
        template = find(manifests, kind, name)[0]["spec"]["template"]
        assert template["metadata"]["labels"]["azure.workload.identity/use"] == "true"
        account = find(manifests, "ServiceAccount", template["spec"]["serviceAccountName"])[0]
        assert re.fullmatch(
            r"[0-9a-f-]{36}", account["metadata"]["annotations"]["azure.workload.identity/client-id"]
        )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_redis_persists_on_azure_disk_with_aof(overlay: str) -> None:
    """Redis keeps an append-only file on a zone-redundant Premium disk claim and reads its password from a file."""
    manifests = rendered(overlay)
    redis = find(manifests, "StatefulSet", "redis")[0]
    claim = redis["spec"]["volumeClaimTemplates"][0]
    storage_class = find(manifests, "StorageClass", claim["spec"]["storageClassName"])[0]
    assert storage_class["provisioner"] == "disk.csi.azure.com"
    assert storage_class["parameters"]["skuName"] == "Premium_ZRS"
    assert storage_class["volumeBindingMode"] == "WaitForFirstConsumer"
    mounts = {
        m["name"]: m["mountPath"] for m in redis["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    }
    assert mounts[claim["metadata"]["name"]] == "/data"
    confs = [
        m["data"]["redis.conf"] for m in find(manifests, "ConfigMap") if "redis.conf" in m.get("data", {})
    ]
    assert len(confs) == 1
    directives = dict(
        line.split(None, 1) for line in confs[0].splitlines() if line and not line.startswith("#")
    )
    assert directives["appendonly"] == "yes" and directives["dir"] == "/data"
    assert directives["include"] == "/run/redis/auth.conf"
    assert "requirepass" not in directives
    # Redis must refuse writes at maxmemory before the kernel kills it at the limit; the rest is
    # headroom for the fork that rewrites the append-only file.
    limit = redis["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"]
    assert directives["maxmemory-policy"] == "noeviction"
    assert mebibytes(directives["maxmemory"]) <= 0.8 * mebibytes(limit)


def mebibytes(quantity: str) -> float:
    """Kubernetes (Mi, Gi) or redis.conf (mb, gb) memory sizes in MiB."""
    size = re.fullmatch(r"(\d+)([A-Za-z]*)", quantity)
    assert size, quantity
    number, unit = size.groups()
    factor = {"Mi": 1, "Gi": 1024, "mb": 1, "gb": 1024}[unit]
    return int(number) * factor
