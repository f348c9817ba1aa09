"""Policy checks on routing, mesh security, scaling and disruption budgets."""

from __future__ import annotations

from typing import Any

import pytest

from tests.deploy.manifests import OVERLAYS, Manifest, find, rendered


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def pod_labels(manifests: tuple[Manifest, ...]) -> list[tuple[str, dict[str, str]]]:
    return [
        (m["metadata"]["name"], m["spec"]["template"]["metadata"]["labels"])
        for m in manifests
        if m["kind"] in {"Deployment", "StatefulSet"}
    ]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_scaler_targets_the_gateway_on_streams_and_cpu(overlay: str) -> None:
    """The ScaledObject scales the rendered gateway Deployment on active streams per pod and on CPU."""
    manifests = rendered(overlay)
    scaled = find(manifests, "ScaledObject")[0]
    target = scaled["spec"]["scaleTargetRef"]
    assert find(manifests, target["kind"], target["name"]), f"{target} is not rendered"
    assert target["apiVersion"] == "apps/v1"
    triggers = {t["type"]: t for t in scaled["spec"]["triggers"]}
    assert set(triggers) == {"prometheus", "cpu"}
    streams = triggers["prometheus"]
    assert "gateway_active_streams" in streams["metadata"]["query"]
    assert streams["metricType"] == "AverageValue" and float(streams["metadata"]["threshold"]) > 0
    assert find(manifests, "TriggerAuthentication", streams["authenticationRef"]["name"])
    assert streams["metadata"]["serverAddress"].startswith("https://")
    assert 1 <= scaled["spec"]["minReplicaCount"] <= scaled["spec"]["maxReplicaCount"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_fallback_is_allowed_by_the_keda_webhook(overlay: str) -> None:
    """KEDA admits `fallback` only when every trigger other than cpu/memory uses AverageValue."""
    for scaled in find(rendered(overlay), "ScaledObject"):
        if "fallback" in scaled["spec"]:
            others = [t for t in scaled["spec"]["triggers"] if t["type"] not in {"cpu", "memory"}]
            assert others and all(t.get("metricType") == "AverageValue" for t in others)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_scaled_deployments_leave_replicas_to_the_autoscaler(overlay: str) -> None:
    """A Deployment a ScaledObject scales sets no replicas, so `kubectl apply` never resets a scaled-out count."""
    manifests = rendered(overlay)
    for scaled in find(manifests, "ScaledObject"):
        target = find(
            manifests, scaled["spec"]["scaleTargetRef"]["kind"], scaled["spec"]["scaleTargetRef"]["name"]
        )[0]
        assert "replicas" not in target["spec"]


def test_prod_never_runs_fewer_than_two_gateways() -> None:
    """prod keeps at least two gateway pods, so the PDB always lets a drain proceed."""
    scaled = find(rendered("prod"), "ScaledObject")[0]
    assert scaled["spec"]["minReplicaCount"] >= 2
    assert scaled["spec"]["fallback"]["replicas"] >= scaled["spec"]["minReplicaCount"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pdb_selectors_match_workloads(overlay: str) -> None:
    """Every PodDisruptionBudget selects the pods of exactly one workload."""
    manifests = rendered(overlay)
    budgets = find(manifests, "PodDisruptionBudget")
    assert budgets
    for budget in budgets:
        selector = budget["spec"]["selector"]["matchLabels"]
        matched = [name for name, labels in pod_labels(manifests) if selects(selector, labels)]
        assert len(matched) == 1, f"{budget['metadata']['name']} selects {matched}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_select_pods_on_declared_ports(overlay: str) -> None:
    """Every Service selects a workload and targets a port that workload's container declares."""
    manifests = rendered(overlay)
    for service in find(manifests, "Service"):
        workloads = [
            m
            for m in manifests
            if m["kind"] in {"Deployment", "StatefulSet"}
            and selects(service["spec"]["selector"], m["spec"]["template"]["metadata"]["labels"])
        ]
        assert len(workloads) == 1
        declared = {
            p["name"] for c in workloads[0]["spec"]["template"]["spec"]["containers"] for p in c["ports"]
        }
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= declared


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_mesh_mtls_is_strict_and_gateway_admits_only_the_ingress(overlay: str) -> None:
    """Namespace-wide STRICT mTLS; the gateway pods accept calls from the ingress namespace only."""
    manifests = rendered(overlay)
    namespace = find(manifests, "Namespace", "agents")[0]
    assert namespace["metadata"]["labels"]["istio.io/rev"].startswith("asm-")
    peer = find(manifests, "PeerAuthentication")
    assert (
        len(peer) == 1 and "selector" not in peer[0]["spec"] and peer[0]["spec"]["mtls"]["mode"] == "STRICT"
    )
    policy = find(manifests, "AuthorizationPolicy", "streaming-gateway")[0]["spec"]
    assert policy["action"] == "ALLOW"
    sources = [s["source"] for rule in policy["rules"] for s in rule["from"]]
    assert sources == [{"namespaces": ["aks-istio-ingress"]}]
    for rule in find(manifests, "DestinationRule"):
        assert rule["spec"]["trafficPolicy"]["tls"]["mode"] == "ISTIO_MUTUAL"


def routes(overlay: str) -> list[dict[str, Any]]:
    return find(rendered(overlay), "VirtualService", "streaming-gateway")[0]["spec"]["http"]


def route_for(overlay: str, method: str, path: str) -> dict[str, Any]:
    """The first route Istio would choose for a request (exact, prefix and regex URI matches)."""
    import re

    for route in routes(overlay):
        for match in route.get("match", [{}]):
            if "method" in match and match["method"]["exact"] != method:
                continue
            uri = match.get("uri", {})
            if (
                ("exact" in uri and uri["exact"] == path)
                or ("prefix" in uri and path.startswith(uri["prefix"]))
                or ("regex" in uri and re.fullmatch(uri["regex"], path))
            ):
                return route
    raise AssertionError(f"no route for {method} {path}")


STREAMING = [
    ("GET", "/v1/ws"),
    ("POST", "/v1/conversations/c1/messages"),
    ("GET", "/v1/conversations/c1/events"),
    ("POST", "/v1/chat/completions"),
]


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize(("method", "path"), STREAMING)
def test_streaming_routes_have_no_timeout_and_no_retry(overlay: str, method: str, path: str) -> None:
    """WebSocket, SSE and streamed completions are never cut by a route timeout nor replayed."""
    route = route_for(overlay, method, path)
    assert route["timeout"] == "0s"
    assert route["retries"]["attempts"] == 0


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_non_idempotent_calls_are_never_retried(overlay: str, method: str) -> None:
    """Whatever route a write lands on, the mesh does not retry it."""
    for path in ("/v1/conversations", "/v1/conversations/c1", "/v1/anything"):
        assert route_for(overlay, method, path)["retries"]["attempts"] == 0


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_health_and_metrics_are_not_routed_from_outside(overlay: str) -> None:
    """Only /v1/ is exposed through the ingress; probes and metrics stay inside the cluster."""
    for path in ("/healthz", "/readyz", "/metrics"):
        with pytest.raises(AssertionError, match="no route"):
            route_for(overlay, "GET", path)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_routes_point_at_rendered_services_and_gateway(overlay: str) -> None:
    """Every route destination is a rendered Service port; the bound Istio Gateway exists and requires client certs."""
    manifests = rendered(overlay)
    service = find(manifests, "VirtualService", "streaming-gateway")[0]
    ports = {
        (f"{s['metadata']['name']}.{s['metadata']['namespace']}.svc.cluster.local", p["port"])
        for s in find(manifests, "Service")
        for p in s["spec"]["ports"]
    }
    for route in service["spec"]["http"]:
        for destination in route["route"]:
            assert (destination["destination"]["host"], destination["destination"]["port"]["number"]) in ports
    for reference in service["spec"]["gateways"]:
        namespace, name = reference.split("/")
        gateway = [g for g in find(manifests, "Gateway", name) if g["metadata"]["namespace"] == namespace]
        assert len(gateway) == 1
        server = gateway[0]["spec"]["servers"][0]
        assert server["tls"]["mode"] == "MUTUAL" and set(server["hosts"]) == set(service["spec"]["hosts"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_deny_by_default_and_admit_the_design_paths(overlay: str) -> None:
    """A default deny covers the namespace; the gateway is reachable from the ingress only, Redis from the gateway only."""
    manifests = rendered(overlay)
    deny = find(manifests, "NetworkPolicy", "default-deny")[0]["spec"]
    assert deny["podSelector"] == {} and set(deny["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny and "egress" not in deny
    gateway = find(manifests, "NetworkPolicy", "streaming-gateway")[0]["spec"]
    app_port = [rule for rule in gateway["ingress"] if {"port": 8080, "protocol": "TCP"} in rule["ports"]]
    assert [peer["namespaceSelector"]["matchLabels"] for peer in app_port[0]["from"]] == [
        {"kubernetes.io/metadata.name": "aks-istio-ingress"}
    ]
    redis = find(manifests, "NetworkPolicy", "redis")[0]["spec"]
    assert redis["ingress"] == [
        {
            "from": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "streaming-gateway"}}}],
            "ports": [{"port": 6379, "protocol": "TCP"}],
        }
    ]
