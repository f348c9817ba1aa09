"""infra/ as a whole: every Bicep file parses, modules are called with the parameters they declare
and read only outputs they have, every file a template loads exists, API versions are current.

No Bicep compiler can be installed here; these checks stand in for the part of `bicep build` that
can be done from the parsed text (`pycep-parser`). Type checking of property shapes against the
resource providers' schemas does not run here: the first `azd provision` does it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.deploy.bicep import (
    INFRA,
    MAIN,
    bicep_files,
    loaded_files,
    modules,
    outputs,
    parameters,
    resources,
    template,
    text,
)
from tests.deploy.manifests import ROOT

# The oldest API version accepted per resource type. Each is the newest stable version we know
# of (checked against the Azure Verified Modules registry, 2026-08) or close to it; a type whose
# newest release is older than two years says why. A type missing here fails the test.
API_FLOORS = {
    "Microsoft.Resources/resourceGroups": "2025-04-01",
    "Microsoft.Resources/deploymentScripts": "2023-08-01",  # newest stable
    "Microsoft.OperationalInsights/workspaces": "2025-07-01",
    "Microsoft.Insights/components": "2020-02-02",  # newest stable
    "Microsoft.Monitor/accounts": "2023-04-03",  # newest stable
    "Microsoft.Insights/dataCollectionEndpoints": "2024-03-11",
    "Microsoft.Insights/dataCollectionRules": "2024-03-11",
    "Microsoft.Insights/dataCollectionRuleAssociations": "2024-03-11",
    "Microsoft.Insights/actionGroups": "2023-01-01",  # newest stable
    "Microsoft.Insights/metricAlerts": "2018-03-01",  # the only stable version
    "Microsoft.Insights/scheduledQueryRules": "2023-12-01",
    "Microsoft.Insights/workbooks": "2023-06-01",
    "Microsoft.Insights/diagnosticSettings": "2021-05-01-preview",  # the newest version is this preview
    "Microsoft.AlertsManagement/prometheusRuleGroups": "2023-03-01",  # newest stable
    "Microsoft.Authorization/roleAssignments": "2022-04-01",  # newest stable
    "Microsoft.ManagedIdentity/userAssignedIdentities": "2024-11-30",
    "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials": "2024-11-30",
    "Microsoft.Network/networkSecurityGroups": "2025-07-01",
    "Microsoft.Network/virtualNetworks": "2025-07-01",
    "Microsoft.Network/publicIPAddresses": "2025-05-01",
    "Microsoft.Network/privateDnsZones": "2024-06-01",
    "Microsoft.Network/privateDnsZones/virtualNetworkLinks": "2024-06-01",
    "Microsoft.KeyVault/vaults": "2026-02-01",
    "Microsoft.KeyVault/vaults/secrets": "2025-05-01",
    "Microsoft.ContainerRegistry/registries": "2025-11-01",
    "Microsoft.ServiceBus/namespaces": "2024-01-01",
    "Microsoft.ServiceBus/namespaces/queues": "2024-01-01",
    "Microsoft.DocumentDB/databaseAccounts": "2025-04-15",
    "Microsoft.DocumentDB/databaseAccounts/sqlDatabases": "2025-04-15",
    "Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers": "2025-04-15",
    "Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments": "2025-04-15",
    "Microsoft.CognitiveServices/accounts": "2025-06-01",
    "Microsoft.CognitiveServices/accounts/deployments": "2026-05-01",
    "Microsoft.Storage/storageAccounts": "2026-04-01",
    "Microsoft.Storage/storageAccounts/blobServices": "2025-01-01",
    "Microsoft.Storage/storageAccounts/blobServices/containers": "2025-01-01",
    "Microsoft.Web/serverfarms": "2025-03-01",
    "Microsoft.Web/sites": "2025-03-01",
    "Microsoft.Web/sites/basicPublishingCredentialsPolicies": "2025-03-01",
    "Microsoft.ContainerService/managedClusters": "2025-10-01",
    "Microsoft.ApiManagement/service": "2024-05-01",
    "Microsoft.ApiManagement/service/namedValues": "2024-05-01",
    "Microsoft.ApiManagement/service/certificates": "2024-05-01",
    "Microsoft.ApiManagement/service/backends": "2024-05-01",
    "Microsoft.ApiManagement/service/apis": "2024-05-01",
    "Microsoft.ApiManagement/service/apis/operations": "2024-05-01",
    "Microsoft.ApiManagement/service/apis/policies": "2024-05-01",
    "Microsoft.ApiManagement/service/apis/operations/policies": "2024-05-01",
    "Microsoft.ApiManagement/service/apis/diagnostics": "2024-05-01",
    "Microsoft.ApiManagement/service/loggers": "2024-05-01",
    "Microsoft.Cache/redisEnterprise": "2025-07-01",
    "Microsoft.Cache/redisEnterprise/databases": "2025-07-01",
    "Microsoft.EventGrid/systemTopics": "2025-02-15",
    "Microsoft.EventGrid/systemTopics/eventSubscriptions": "2025-02-15",
    "Microsoft.Graph/applications": "v1.0",
    "Microsoft.Graph/servicePrincipals": "v1.0",
}


@pytest.mark.parametrize("path", bicep_files(), ids=lambda p: str(p.relative_to(INFRA)))
def test_every_bicep_file_parses(path: Path) -> None:
    """pycep-parser reads the file into resources, parameters and outputs."""
    parsed = template(path)
    assert parsed.get("resources") or parsed.get("modules")


def test_every_module_file_is_used() -> None:
    """No module lies around unused: main.bicep calls each file under modules/."""
    used = {entry["path"] for entry in modules().values()}
    assert used == {p.resolve() for p in (INFRA / "modules").glob("*.bicep")}


@pytest.mark.parametrize("symbol", sorted(modules()))
def test_module_calls_match_module_parameters(symbol: str) -> None:
    """Each call passes only declared parameters and every parameter without a default."""
    entry = modules()[symbol]
    declared = parameters(entry["path"])
    passed = set(entry["params"])
    assert passed <= set(declared), f"{symbol}: unknown parameters {passed - set(declared)}"
    required = {name for name, spec in declared.items() if "default" not in spec}
    assert required <= passed, f"{symbol}: missing parameters {required - passed}"


def test_module_outputs_read_by_main_exist() -> None:
    """Every `<module>.outputs.<name>` main.bicep reads is an output of that module."""
    references = set(re.findall(r"\b(\w+)\.outputs\.(\w+)", text(template(MAIN))))
    assert references
    for symbol, output in references:
        assert output in outputs(modules()[symbol]["path"]), f"{symbol}.outputs.{output}"


def test_parameters_file_matches_main() -> None:
    """main.parameters.json sets only parameters main.bicep declares, and every one without a default."""
    values = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    declared = parameters(MAIN)
    assert set(values) <= set(declared)
    assert {n for n, spec in declared.items() if "default" not in spec} <= set(values)
    for name, spec in values.items():
        assert re.fullmatch(r"\$\{[A-Z_]+(=[^}]*)?\}", spec["value"]), (
            f"{name} is not an azd environment value"
        )


def test_parameter_file_defaults_equal_template_defaults() -> None:
    """A `${VAR=default}` in the parameters file repeats the template's default, so both document one value."""
    values = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    for name, spec in values.items():
        match = re.fullmatch(r"\$\{[A-Z_]+=([^}]*)\}", spec["value"])
        if match and "default" in parameters(MAIN)[name]:
            assert match.group(1) == str(parameters(MAIN)[name]["default"]), name


def test_every_loaded_file_exists() -> None:
    """loadTextContent / loadJsonContent name files that exist (the APIM policies, the workbook, scripts)."""
    loaded = [f for path in bicep_files() for f in loaded_files(template(path), path.parent)]
    assert {p.name for p in loaded} >= {
        "gateway-api-policy.xml",
        "websocket-api-policy.xml",
        "workbook.json",
        "certificates.sh",
        "certificates.py",
    }
    assert [p for p in loaded if not p.exists()] == []


def test_api_versions_are_not_older_than_their_floor() -> None:
    """Every resource uses an API version at or above the floor stated for its type above."""
    problems = []
    for resource in resources(include_existing=True):
        floor = API_FLOORS.get(resource.type)
        if floor is None:
            problems.append(f"{resource.where}: {resource.type} has no floor in API_FLOORS")
        elif resource.api_version < floor:
            problems.append(f"{resource.where}: {resource.type}@{resource.api_version} is older than {floor}")
    assert problems == []


def test_no_preview_api_unless_it_is_the_newest() -> None:
    """Preview API versions appear only where the floor itself is a preview."""
    for resource in resources(include_existing=True):
        if "preview" in resource.api_version:
            assert "preview" in API_FLOORS[resource.type], resource.where


def test_graph_extension_is_configured() -> None:
    """The Microsoft Graph extension the Entra module declares is registered in bicepconfig.json."""
    config = json.loads((INFRA / "bicepconfig.json").read_text())
    assert config["extensions"]["microsoftGraphV1"].startswith(
        "br:mcr.microsoft.com/bicep/extensions/microsoftgraph/"
    )
    assert (INFRA / "modules" / "entra.bicep").read_text().count("extension microsoftGraphV1") == 1


def test_no_error_is_swallowed_in_deployment_scripts() -> None:
    """No `|| true` in the scripts azd and the deployment run: a failed step fails the deployment."""
    for path in [*(INFRA / "hooks").glob("*.sh"), *(INFRA / "scripts").glob("*.sh")]:
        assert "|| true" not in path.read_text(), path.relative_to(ROOT)
        assert path.read_text().splitlines()[1].startswith("#"), f"{path.name}: say what it does"
        assert "set -euo pipefail" in path.read_text()
