"""host.json and local.settings.sample.json are what `func start` and `func azure functionapp publish`
expect, and the sample lists every setting the app reads."""

from __future__ import annotations

import json
import re
from pathlib import Path

from function_app.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def test_host_json_uses_bundle_v4_and_settles_by_return() -> None:
    """Extension bundle [4.*, 5.0.0); Service Bus completes on return (abandons on raise); a fixed hub name."""
    host = json.loads((ROOT / "host.json").read_text())
    assert host["version"] == "2.0"
    assert host["extensionBundle"] == {
        "id": "Microsoft.Azure.Functions.ExtensionBundle",
        "version": "[4.*, 5.0.0)",
    }
    servicebus = host["extensions"]["serviceBus"]
    assert servicebus["autoCompleteMessages"] is True and servicebus["maxConcurrentCalls"] >= 1
    assert re.fullmatch(r"[A-Za-z][A-Za-z0-9]{2,49}", host["extensions"]["durableTask"]["hubName"])
    assert host["extensions"]["durableTask"]["tracing"]["traceInputsAndOutputs"] is False


def test_local_settings_sample_lists_every_setting_the_app_reads() -> None:
    """Every variable function_app/settings.py reads, and every %SETTING% in host.json or a binding, is in the sample."""
    values = json.loads((ROOT / "local.settings.sample.json").read_text())["Values"]
    read = set(re.findall(r'env\.\w+\(\s*"([A-Z0-9_]+)"', (ROOT / "function_app/settings.py").read_text()))
    referenced = set(re.findall(r"%([A-Za-z0-9_]+)%", (ROOT / "host.json").read_text()))
    referenced |= set(
        re.findall(r"%([A-Za-z0-9_]+)%", (ROOT / "function_app/blueprints/intake.py").read_text())
    )
    assert read and read <= values.keys(), read - values.keys()
    assert referenced <= values.keys()
    assert {"FUNCTIONS_WORKER_RUNTIME", "AzureWebJobsStorage", "ServiceBusConnection"} <= values.keys()
    assert values["AzureWebJobsStorage"] == "UseDevelopmentStorage=true"


def test_local_settings_sample_values_are_valid_settings() -> None:
    """The sample's values build the app's Settings without error."""
    values = json.loads((ROOT / "local.settings.sample.json").read_text())["Values"]
    settings = Settings.from_env(values)
    assert settings.cosmos_endpoint == "https://127.0.0.1:8081" and not settings.uses_servicebus


def test_host_json_never_overwrites_a_running_instance() -> None:
    """A second start of a running instance id is refused (the start path reads that as already started)."""
    host = json.loads((ROOT / "host.json").read_text())
    assert host["extensions"]["durableTask"]["overridableExistingInstanceStates"] == "NonRunningStates"


def test_host_json_versions_orchestrations_as_the_code_does() -> None:
    """New instances start at the code's ORCHESTRATOR_VERSION; a worker runs its version and older
    ones and leaves newer ones (a deployment in progress) for a newer worker, never failing them."""
    from function_app.orchestration import ORCHESTRATOR_VERSION

    durable = json.loads((ROOT / "host.json").read_text())["extensions"]["durableTask"]
    assert durable["defaultVersion"] == ORCHESTRATOR_VERSION
    assert (durable["versionMatchStrategy"], durable["versionFailureStrategy"]) == (
        "CurrentOrOlder",
        "Reject",
    )


def test_host_does_not_ship_the_workers_log_lines_a_second_time() -> None:
    """Every function's user log lines reach the host only at Critical (the settings alert, which the
    app's own exporter cannot ship); the app's exporter ships all the others, once."""
    from function_app.app import build_app

    levels = json.loads((ROOT / "host.json").read_text())["logging"]["logLevel"]
    names = {f.get_function_name() for f in build_app().get_functions()}
    assert {f"Function.{name}.User" for name in names} <= {k for k, v in levels.items() if v == "Critical"}


def test_funcignore_leaves_local_state_out_of_the_package() -> None:
    """Local data, logs, caches and test output are never published."""
    ignored = {line.strip() for line in (ROOT / ".funcignore").read_text().splitlines()}
    for entry in (".local/", ".hypothesis/", ".schemathesis/", "test-output/", ".mypy_cache/", "bench/"):
        assert entry in ignored, entry
