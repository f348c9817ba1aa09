"""tests/deploy checks the deployment offline. What it cannot check here is said at the end of
every run that collected it, so a green run is not read as "deployed and working"."""

from __future__ import annotations

import pytest

NOT_RUN_HERE = (
    "no Bicep compiler here (the Bicep CLI ships as a binary from GitHub releases or NuGet, "
    "Azure.Bicep.CommandLine; neither is reachable from these machines, and no PyPI, npm or Debian package "
    "carries it): infra/*.bicep is parsed (pycep-parser) and checked, not compiled, linted or type-checked "
    "against the resource providers",
    "no Azure subscription here: `azd up` (provision, hooks, deploy), a second `azd up` changing nothing, and "
    "`azd down` have not run",
    "the Entra ID app registrations (Microsoft Graph extension), the certificate deployment script and APIM's "
    "backend TLS validation have not met a real tenant",
    "no cluster here: the manifests are rendered and schema-validated, not applied; the Istio revision, "
    "Kubernetes version and region features are checked for shape, not availability",
    "alert rules and the workbook's queries have not run against real telemetry",
)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    ran = [
        r
        for key in ("passed", "failed", "error")
        for r in terminalreporter.stats.get(key, [])
        if getattr(r, "nodeid", "").startswith("tests/deploy/")
    ]
    if ran:
        terminalreporter.section("tests/deploy: not run on this machine")
        for line in NOT_RUN_HERE:
            terminalreporter.write_line(f"- {line}")
