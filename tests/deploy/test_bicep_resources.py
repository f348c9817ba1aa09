"""What each part of infra/ must be, read from the parsed templates: queues, containers, roles,
cluster, function app, Key Vault, registry, app registrations, APIM, versions that move."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from streaming_gateway.settings import Settings
from tests.deploy.bicep import (
    INFRA,
    MAIN,
    modules,
    one,
    outputs,
    parameter_default,
    parameters,
    resources,
    role_assignments,
    template,
    text,
)
from tests.deploy.manifests import ROOT


def module_params(symbol: str) -> dict[str, str]:
    return {name: text(value) for name, value in modules()[symbol]["params"].items()}


# --- Service Bus -------------------------------------------------------------------------------


def queue_settings() -> dict[str, dict[str, Any]]:
    """The per-queue settings of messaging.bicep, by queue name as main.bicep names them."""
    variables = template(INFRA / "modules" / "messaging.bicep")["variables"]
    names = {"queues.actions": "actions", "queues.updates": "action-updates"}
    settings = {}
    for key, value in variables["queueSettings"]["value"].items():
        settings[names[key.strip("'").strip("${}")]] = value
    return settings


def test_queues_detect_duplicates_and_dead_letter() -> None:
    """Both queues: duplicate detection on with a history window, a delivery limit, a lock, dead-lettering on expiry."""
    queue = one("Microsoft.ServiceBus/namespaces/queues")
    assert queue.looped
    props = queue.properties
    assert props["requiresDuplicateDetection"] is True
    assert props["deadLetteringOnMessageExpiration"] is True
    window = parameter_default(
        INFRA / "modules" / "messaging.bicep", props["duplicateDetectionHistoryTimeWindow"]
    )
    assert re.fullmatch(r"PT([1-9]\d*)M", window), window
    assert {text(props[k]) for k in ("lockDuration", "maxDeliveryCount")} == {
        "queueSettings[queueName].lockDuration",
        "queueSettings[queueName].maxDeliveryCount",
    }
    settings = queue_settings()
    assert set(settings) == {"actions", "action-updates"}
    for name, spec in settings.items():
        assert 1 <= int(spec["maxDeliveryCount"]) <= 20, name
        assert re.fullmatch(r"PT(\d+S|[1-5]M)", str(spec["lockDuration"])), name


def test_queue_names_are_the_ones_the_apps_read() -> None:
    """main.bicep's queue names are the gateway's and the function app's defaults."""
    from function_app.settings import Settings as FunctionSettings

    queues = template(MAIN)["variables"]["queues"]["value"]
    defaults = FunctionSettings.from_env({"COSMOS_ENDPOINT": "https://example.documents.azure.com:443/"})
    assert (queues["actions"], queues["updates"]) == (
        defaults.servicebus_actions_queue,
        defaults.servicebus_updates_queue,
    )


def test_servicebus_allows_identities_only() -> None:
    """Local (SAS key) auth is off on the namespace."""
    namespace = one("Microsoft.ServiceBus/namespaces")
    assert namespace.properties["disableLocalAuth"] is True
    assert namespace.properties["minimumTlsVersion"] == "1.2"


def test_each_identity_only_sends_or_receives_where_it_should() -> None:
    """Gateway sends to actions and receives updates; the function app the reverse; all at queue scope."""
    grants = template(INFRA / "modules" / "messaging.bicep")["variables"]["grants"]["value"]
    rows = {(text(g["principalId"]), g["queue"], text(g["role"])) for g in grants}
    assert rows == {
        ("gatewayPrincipalId", 0, "roles.sender"),
        ("gatewayPrincipalId", 1, "roles.receiver"),
        ("functionsPrincipalId", 0, "roles.receiver"),
        ("functionsPrincipalId", 1, "roles.sender"),
    }
    assignment = next(r for r in role_assignments() if r.path.name == "messaging.bicep")
    assert text(assignment.body["scope"]) == "queue[grant.queue]"


# --- Cosmos DB ---------------------------------------------------------------------------------


def test_cosmos_containers_have_the_partition_keys_the_app_uses() -> None:
    """action_results by /conversationId, dead_letters by /partition, the names the function app's settings default to."""
    from function_app.settings import Settings as FunctionSettings

    containers = template(INFRA / "modules" / "cosmos.bicep")["variables"]["containers"]["value"]
    keys = {c["name"]: c["partitionKey"] for c in containers}
    assert keys == {"action_results": "/conversationId", "dead_letters": "/partition"}
    defaults = FunctionSettings.from_env({"COSMOS_ENDPOINT": "https://example.documents.azure.com:443/"})
    assert [c["name"] for c in containers] == [
        defaults.cosmos_container,
        defaults.cosmos_deadletter_container,
    ]
    container = one("Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers")
    assert text(container.properties["resource"]["partitionKey"]["paths"]) == "[spec.partitionKey]"


def test_cosmos_is_keyless_and_the_function_app_has_a_data_role() -> None:
    """Keys off; the function app's identity holds the built-in Data Contributor on the database."""
    account = one("Microsoft.DocumentDB/databaseAccounts")
    assert account.properties["disableLocalAuth"] is True
    assert account.properties["disableKeyBasedMetadataWriteAccess"] is True
    assignment = one("Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments")
    assert assignment.properties["principalId"] == "functionsPrincipalId"
    assert "dataContributor" in text(assignment.properties["roleDefinitionId"])
    assert (
        template(INFRA / "modules" / "cosmos.bicep")["variables"]["dataContributor"]["value"]
        == "00000000-0000-0000-0000-000000000002"
    )
    assert "dbs/${databaseName}" in text(assignment.properties["scope"])


# --- Roles -------------------------------------------------------------------------------------


def test_role_assignments_name_the_principal_type_they_really_are() -> None:
    """Managed identities are `ServicePrincipal`; only the deploying identity's assignments take principalType."""
    for assignment in role_assignments():
        principal_type = text(assignment.properties["principalType"])
        if principal_type != "ServicePrincipal":
            assert assignment.symbol in {"admin", "deployerAdmin"}, assignment.where
            declared = parameters(assignment.path)[principal_type]
            assert declared["type"] == "string"


def test_deployer_principal_type_defaults_to_user_and_is_validated() -> None:
    """main.bicep takes principalType (User by default, from AZURE_PRINCIPAL_TYPE) and passes it to both deployer roles."""
    spec = parameters(MAIN)["principalType"]
    assert spec["default"] == "User"
    allowed = next(d for d in spec["decorators"] if d["type"] == "allowed")["argument"]
    assert set(allowed) == {"User", "ServicePrincipal", "Group"}
    assert module_params("keyVault")["principalType"] == "principalType"
    assert module_params("aks")["adminPrincipalType"] == "principalType"


def test_role_assignment_names_are_deterministic() -> None:
    """Every assignment's name is a guid of scope, principal and role, so a re-run finds it instead of adding one."""
    for assignment in role_assignments():
        name = text(assignment.body["name"])
        assert name.startswith("guid(") and name.count(",") >= 2, assignment.where


# --- Key Vault ---------------------------------------------------------------------------------


def test_key_vault_uses_rbac_and_keeps_deleted_secrets() -> None:
    """RBAC authorization, soft delete and purge protection, on the main vault and the CA's."""
    vaults = resources("Microsoft.KeyVault/vaults")
    assert sorted(v.symbol for v in vaults) == ["caVault", "vault"]
    for vault in vaults:
        assert vault.properties["enableRbacAuthorization"] is True
        assert vault.properties["enablePurgeProtection"] is True
        assert vault.properties["enableSoftDelete"] is True


def test_only_the_certificate_script_reads_the_ca_vault() -> None:
    """The CA's key is out of reach of every workload identity (they read the main vault's secrets)."""
    on_ca = [r for r in role_assignments() if text(r.body.get("scope")) == "caVault"]
    assert [text(r.properties["principalId"]) for r in on_ca] == ["certificateWriterPrincipalId"]
    assert module_params("keyVault")["certificateWriterPrincipalId"] == "identities.outputs.scriptPrincipalId"


def test_certificate_expiry_raises_an_alert() -> None:
    """Key Vault's near-expiry and expired events go to the action group through Event Grid."""
    topic = one("Microsoft.EventGrid/systemTopics")
    assert topic.properties["topicType"] == "Microsoft.KeyVault.vaults"
    assert text(topic.properties["source"]) == "vault.id"
    subscription = one("Microsoft.EventGrid/systemTopics/eventSubscriptions").properties
    assert set(subscription["filter"]["includedEventTypes"]) == {
        "Microsoft.KeyVault.CertificateNearExpiry",
        "Microsoft.KeyVault.CertificateExpired",
    }
    assert subscription["destination"]["endpointType"] == "MonitorAlert"
    assert text(subscription["destination"]["properties"]["actionGroups"]) == "[actionGroupId]"
    assert module_params("keyVault")["actionGroupId"] == "monitoring.outputs.actionGroupId"


def test_key_vault_readers_are_the_workload_identities() -> None:
    """Gateway, Redis, the ingress certificate sync and APIM read secrets; the script writes certificates."""
    readers = module_params("keyVault")["secretReaders"]
    for name in ("gatewayPrincipalId", "redisPrincipalId", "ingressCertsPrincipalId", "apimPrincipalId"):
        assert f"identities.outputs.{name}" in readers
    assert module_params("keyVault")["certificateWriterPrincipalId"] == "identities.outputs.scriptPrincipalId"


# --- AKS ---------------------------------------------------------------------------------------


def cluster_properties() -> dict[str, Any]:
    return one("Microsoft.ContainerService/managedClusters").properties


def test_cluster_identity_and_access() -> None:
    """Entra ID with Azure RBAC, no local accounts, OIDC issuer and workload identity."""
    props = cluster_properties()
    assert props["aadProfile"]["managed"] is True and props["aadProfile"]["enableAzureRBAC"] is True
    assert props["disableLocalAccounts"] is True
    assert props["oidcIssuerProfile"]["enabled"] is True
    assert props["securityProfile"]["workloadIdentity"]["enabled"] is True


def test_cluster_runs_the_istio_revision_the_namespace_labels() -> None:
    """The Istio add-on at the istioRevision parameter, with an internal ingress gateway; the namespace uses that revision."""
    from tests.deploy.manifests import find, rendered

    mesh = cluster_properties()["serviceMeshProfile"]
    assert mesh["mode"] == "Istio"
    assert text(mesh["istio"]["revisions"]) == "[istioRevision]"
    assert mesh["istio"]["components"]["ingressGateways"] == [{"mode": "Internal", "enabled": True}]
    assert module_params("aks")["istioRevision"] == "istioRevision"
    revision = parameter_default(MAIN, "istioRevision")
    for overlay in ("dev", "prod"):
        assert (
            find(rendered(overlay), "Namespace", "agents")[0]["metadata"]["labels"]["istio.io/rev"]
            == revision
        )


def test_namespace_revision_follows_the_deployed_parameter(tmp_path: Path) -> None:
    """The label is not a second copy of the default: the postprovision hook writes the deployment's
    AKS_ISTIO_REVISION output into azure.env, and the wiring component sets the label from it, so a
    cluster provisioned with another revision gets sidecars from that revision."""
    import shutil

    from tests.deploy.manifests import AKS, find, render

    assert text(outputs(MAIN)["AKS_ISTIO_REVISION"]["value"]) == "istioRevision"
    hook = (ROOT / "infra" / "hooks" / "postprovision.sh").read_text()
    assert "ISTIO_REVISION=${AKS_ISTIO_REVISION}" in hook
    copy = tmp_path / "aks"
    shutil.copytree(AKS, copy)
    env = copy / "overlays" / "prod" / "azure.env"
    env.write_text(re.sub(r"(?m)^ISTIO_REVISION=.*$", "ISTIO_REVISION=asm-1-31", env.read_text()))
    namespace = find(render(copy / "overlays" / "prod"), "Namespace", "agents")[0]
    assert namespace["metadata"]["labels"]["istio.io/rev"] == "asm-1-31"


@pytest.mark.parametrize(
    ("name", "command"),
    [("kubernetesVersion", "az aks get-versions"), ("istioRevision", "az aks mesh get-revisions")],
)
def test_moving_versions_are_parameters_with_documented_defaults(name: str, command: str) -> None:
    """Versions that move have a default and a description naming the command that lists the supported ones."""
    spec = parameters(MAIN)[name]
    assert spec.get("default")
    description = next(d for d in spec["decorators"] if d["type"] == "description")["argument"]
    assert command in description


def test_istio_revision_is_a_supported_shape() -> None:
    """The default revision is asm-1-N with N past the end-of-life asm-1-24."""
    revision = parameter_default(MAIN, "istioRevision")
    assert re.fullmatch(r"asm-1-(\d+)", revision) and int(revision.rsplit("-", 1)[1]) > 24


def test_cluster_scales_and_is_observed() -> None:
    """Autoscaler across three zones, KEDA, managed Prometheus, Container insights, Key Vault CSI with rotation."""
    props = cluster_properties()
    pool = props["agentPoolProfiles"][0]
    assert pool["enableAutoScaling"] is True and text(pool["minCount"]) and text(pool["maxCount"])
    assert pool["availabilityZones"] == ["1", "2", "3"]
    assert props["workloadAutoScalerProfile"]["keda"]["enabled"] is True
    assert props["azureMonitorProfile"]["metrics"]["enabled"] is True
    addons = props["addonProfiles"]
    assert addons["omsagent"]["enabled"] is True
    assert text(addons["omsagent"]["config"]["logAnalyticsWorkspaceResourceID"]) == "logAnalyticsId"
    assert addons["azureKeyvaultSecretsProvider"]["config"]["enableSecretRotation"] == "true"
    links = {
        text(r.properties.get("dataCollectionRuleId", r.properties.get("dataCollectionEndpointId")))
        for r in resources("Microsoft.Insights/dataCollectionRuleAssociations")
    }
    assert links == {"prometheusEndpointId", "prometheusRuleId", "containerInsightsRuleId"}


def test_kubelet_pulls_from_the_registry() -> None:
    """The kubelet identity holds AcrPull on the registry; no admin user, no anonymous pull."""
    pull = next(r for r in role_assignments() if r.symbol == "kubeletPull")
    assert "kubeletidentity" in text(pull.properties["principalId"])
    registry = one("Microsoft.ContainerRegistry/registries")
    assert (
        registry.properties["adminUserEnabled"] is False
        and registry.properties["anonymousPullEnabled"] is False
    )


def test_every_workload_identity_service_account_is_federated() -> None:
    """Each ServiceAccount that names a client id, and KEDA's operator, has a federated credential on its own identity."""
    from tests.deploy.manifests import find, rendered

    federated = {
        (text(w["namespace"]), text(w["serviceAccount"])): text(w["identityName"])
        for w in modules()["aks"]["params"]["workloadIdentities"]
    }
    namespace = template(MAIN)["variables"]["namespace"]["value"]
    federated = {
        (namespace if ns == "namespace" else ns, sa): identity for (ns, sa), identity in federated.items()
    }
    assert ("kube-system", "keda-operator") in federated
    for account in find(rendered("prod"), "ServiceAccount"):
        if "azure.workload.identity/client-id" in account["metadata"].get("annotations", {}):
            assert (account["metadata"]["namespace"], account["metadata"]["name"]) in federated
    assert len(set(federated.values())) == len(federated), "each service account has its own identity"
    credential = one("Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials")
    assert "oidcIssuerProfile.issuerURL" in text(credential.properties["issuer"])
    assert any(d.get("type") == "batchSize" for d in credential.decorators) or "batchSize" in repr(
        credential.decorators
    )


# --- Function app ------------------------------------------------------------------------------


def test_function_app_is_flex_consumption_with_identity_based_deployment_storage() -> None:
    """FC1 plan; the package container is read with the user-assigned identity; no shared keys on the account."""
    plan = one("Microsoft.Web/serverfarms")
    assert plan.body["sku"] == {"name": "FC1", "tier": "FlexConsumption"}
    site = one("Microsoft.Web/sites")
    deployment = site.properties["functionAppConfig"]["deployment"]["storage"]
    assert deployment["type"] == "blobContainer"
    assert deployment["authentication"]["type"] == "UserAssignedIdentity"
    assert site.properties["functionAppConfig"]["runtime"]["name"] == "python"
    storage = one("Microsoft.Storage/storageAccounts")
    assert storage.properties["allowSharedKeyAccess"] is False
    assert not any("AzureFiles" in k or "CONTENTAZUREFILE" in k for k in function_app_settings())


def function_app_settings() -> dict[str, str]:
    """functions.bicep's app settings, values rendered as text."""
    variable = template(INFRA / "modules" / "functions.bicep")["variables"]["appSettings"]["value"]
    first = variable["function"]["parameters"] if "function" in variable else variable
    settings: dict[str, str] = {}
    for part in first.values() if "function" in variable else [first]:
        if isinstance(part, dict) and "operator" not in part:
            settings.update({k: text(v) for k, v in part.items()})
    return settings


def test_function_app_settings_are_accepted_by_the_function_app() -> None:
    """function_app.settings reads the app settings (sample values for references) without keys."""
    from function_app.settings import Settings as FunctionSettings

    samples = {
        "COSMOS_ENDPOINT": "https://cosmos-agents-dev-x.documents.azure.com:443/",
        "SERVICEBUS_FULLY_QUALIFIED_NAMESPACE": "sb-agents-dev-x.servicebus.windows.net",
    }
    environ = {k: samples.get(k, "sample") for k in function_app_settings()}
    environ.update(
        {
            "SERVICEBUS_ACTIONS_QUEUE": "actions",
            "SERVICEBUS_UPDATES_QUEUE": "action-updates",
            "COSMOS_DATABASE": "agent",
            "COSMOS_CONTAINER": "action_results",
            "COSMOS_DEADLETTER_CONTAINER": "dead_letters",
        }
    )
    settings = FunctionSettings.from_env(environ)
    assert settings.cosmos_key is None and settings.servicebus_connection_string is None
    assert settings.uses_servicebus


def test_function_app_connections_match_the_bindings() -> None:
    """Each `<connection>__...` triple names a connection the triggers or host.json use, by managed identity."""
    import json

    from tests.deploy.manifests import ROOT

    sources = "\n".join(p.read_text() for p in (ROOT / "function_app").rglob("*.py"))
    used = set(re.findall(r'connection="([A-Za-z]+)"', sources))
    host = json.loads((ROOT / "host.json").read_text())
    used.add(host["extensions"]["durableTask"]["storageProvider"]["connectionName"])
    settings = function_app_settings()
    identity = {key.split("__")[0] for key in settings if "__" in key}
    assert used and used == identity
    for connection in used:
        assert settings[f"{connection}__credential"] == "managedidentity"
        assert settings[f"{connection}__clientId"] == "identityClientId"
    assert "AzureWebJobsStorage" not in settings  # a connection string would carry a key


# --- Entra ID, audience and issuer -------------------------------------------------------------


def test_api_registration_issues_v2_tokens_and_has_an_operator_role() -> None:
    """requestedAccessTokenVersion 2, a user scope for the web client, the `Agents.Operator` app role
    (the gateway's default AUTH_OPERATOR_ROLE)."""
    api = next(r for r in resources("Microsoft.Graph/applications") if r.symbol == "api")
    assert api.body["api"]["requestedAccessTokenVersion"] == 2
    assert [s["value"] for s in api.body["api"]["oauth2PermissionScopes"]] == ["access_as_user"]
    roles = {r["value"]: r for r in api.body["appRoles"]}
    assert set(roles["Agents.Operator"]["allowedMemberTypes"]) == {"User", "Application"}
    assert Settings().auth_operator_role in roles
    spa = next(r for r in resources("Microsoft.Graph/applications") if r.symbol == "spa")
    assert text(spa.body["requiredResourceAccess"][0]["resourceAppId"]) == "api.appId"
    assert {r.symbol for r in resources("Microsoft.Graph/servicePrincipals")} == {
        "apiPrincipal",
        "spaPrincipal",
    }


def test_audience_and_issuer_are_wired_from_the_registration() -> None:
    """The gateway's AUTH_AUDIENCE and APIM's gateway-audience are the API's app id; the issuer is the tenant's v2 one."""
    out = {name: text(spec["value"]) for name, spec in outputs(MAIN).items()}
    assert out["AUTH_AUDIENCE"] == "entra.outputs.apiAppId"
    assert module_params("apim")["audience"] == "entra.outputs.apiAppId"
    assert out["AUTH_ISSUER"].endswith("${tenant().tenantId}/v2.0")
    assert out["AUTH_JWKS_URL"].endswith("${tenant().tenantId}/discovery/v2.0/keys")
    named = template(INFRA / "modules" / "apim.bicep")["variables"]["namedValues"]["value"]
    assert {k.strip("'"): text(v) for k, v in named.items()}["gateway-audience"] == "audience"


# --- Monitoring --------------------------------------------------------------------------------


def test_app_insights_is_workspace_based() -> None:
    """Application Insights keeps its data in the Log Analytics workspace Container insights also uses."""
    component = one("Microsoft.Insights/components")
    assert text(component.properties["WorkspaceResourceId"]) == "logs.id"


def test_data_services_send_diagnostics_to_log_analytics() -> None:
    """Key Vault, registry, Service Bus, Cosmos DB, Azure OpenAI, the function app and APIM have diagnostic settings."""
    scoped = {r.path.name for r in resources("Microsoft.Insights/diagnosticSettings")}
    assert scoped >= {
        "keyvault.bicep",
        "registry.bicep",
        "messaging.bicep",
        "cosmos.bicep",
        "openai.bicep",
        "functions.bicep",
        "apim.bicep",
    }


def test_redis_image_is_a_patched_release() -> None:
    """The Redis image tag is 7.4.10 or later in the 7.4 line (or a later minor): July 2026's urgent
    security release; every 7.4 before it has remote code execution bugs."""
    tag = parameter_default(MAIN, "redisImageTag")
    release = re.match(r"(\d+)\.(\d+)\.(\d+)", tag)
    assert release, tag
    major, minor, patch = (int(n) for n in release.groups())
    assert (major, minor, patch) >= (7, 4, 10), tag
