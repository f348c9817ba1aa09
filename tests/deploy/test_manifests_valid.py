"""Every object the overlays render is valid for the cluster it targets, strictly."""

from __future__ import annotations

import copy

import jsonschema
import pytest

from tests.deploy.manifests import (
    AKS,
    OVERLAYS,
    SchemaMissing,
    find,
    kubernetes_version,
    render,
    rendered,
    validate,
)

EXPECTED_KINDS = {
    "Namespace",
    "ServiceAccount",
    "ConfigMap",
    "Service",
    "Deployment",
    "StatefulSet",
    "PodDisruptionBudget",
    "NetworkPolicy",
    "SecretProviderClass",
    "ScaledObject",
    "TriggerAuthentication",
    "PodMonitor",
    "Gateway",
    "VirtualService",
    "DestinationRule",
    "PeerAuthentication",
    "AuthorizationPolicy",
    "StorageClass",
}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_every_kind(overlay: str) -> None:
    """Each overlay renders the whole topology, with no kind missing."""
    kinds = {m["kind"] for m in rendered(overlay)}
    assert kinds == EXPECTED_KINDS


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_validates_strictly(overlay: str) -> None:
    """Every rendered object passes its Kubernetes or CRD schema with unknown fields rejected."""
    failures = []
    for manifest in rendered(overlay):
        try:
            validate(manifest)
        except (jsonschema.ValidationError, SchemaMissing) as exc:
            path = ".".join(str(p) for p in getattr(exc, "absolute_path", []))
            failures.append(f"{manifest['kind']}/{manifest['metadata']['name']} {path}: {str(exc)[:300]}")
    assert failures == []


def test_base_renders_on_its_own() -> None:
    """The base is a valid kustomization by itself (overlays only fill in and resize)."""
    assert {m["kind"] for m in render(AKS / "base")} == EXPECTED_KINDS


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_placeholder_survives_rendering(overlay: str) -> None:
    """Every upper-case Azure placeholder of the base is replaced from the overlay's azure.env."""
    placeholders = {
        "AZURE_TENANT_ID",
        "AZURE_WORKLOAD_CLIENT_ID",
        "REDIS_CLIENT_ID",
        "KEDA_CLIENT_ID",
        "INGRESS_CERTS_CLIENT_ID",
        "KEYVAULT_NAME",
        "PROMETHEUS_QUERY_ENDPOINT",
        "REDIS_IMAGE",
        "PUBLIC_HOST",
    }
    text = repr(rendered(overlay))
    assert [p for p in placeholders if f"'{p}'" in text] == []
    assert find(rendered(overlay), "ConfigMap", "azure") == []  # local to kustomize, never applied


def test_strict_validation_rejects_an_unknown_container_field() -> None:
    """The Kubernetes check is strict: a misspelt field in a Deployment fails."""
    deployment = copy.deepcopy(find(rendered("prod"), "Deployment", "streaming-gateway")[0])
    deployment["spec"]["template"]["spec"]["containers"][0]["readOnlyRootFileSystem"] = True
    with pytest.raises(jsonschema.ValidationError):
        validate(deployment)


def test_crd_validation_rejects_an_unknown_istio_field() -> None:
    """The Istio check is strict: an unknown field in a VirtualService route fails."""
    service = copy.deepcopy(find(rendered("prod"), "VirtualService")[0])
    service["spec"]["http"][0]["websocketUpgrade"] = True
    with pytest.raises(jsonschema.ValidationError):
        validate(service)


def test_crd_validation_rejects_a_bad_keda_trigger() -> None:
    """The KEDA check reads real types: a trigger without its type fails."""
    scaled = copy.deepcopy(find(rendered("prod"), "ScaledObject")[0])
    del scaled["spec"]["triggers"][0]["type"]
    with pytest.raises(jsonschema.ValidationError):
        validate(scaled)


def test_a_kind_without_schema_is_an_error() -> None:
    """An object of a kind no schema knows is reported, never passed silently."""
    with pytest.raises(SchemaMissing):
        validate({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}})


def test_kubernetes_version_is_one_the_validator_knows() -> None:
    """The AKS version infra/main.bicep creates has schemas in kubernetes-validate."""
    import kubernetes_validate.utils

    assert kubernetes_version() in {v.rsplit(".", 1)[0] for v in kubernetes_validate.utils.all_versions()}


def test_crd_validation_rejects_an_unknown_enum_value() -> None:
    """The Istio check knows each field's allowed values: a misspelt mTLS mode fails."""
    peer = copy.deepcopy(find(rendered("prod"), "PeerAuthentication")[0])
    peer["spec"]["mtls"]["mode"] = "STRICTT"
    with pytest.raises(jsonschema.ValidationError):
        validate(peer)
