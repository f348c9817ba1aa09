"""The function app's Azure settings, written by infra/deploy.sh, fit the app and its host.json."""

from __future__ import annotations

import json
import re
import shlex

from tests.deploy.manifests import INFRA_SCRIPT, ROOT


def app_settings() -> dict[str, str]:
    """KEY=VALUE pairs of the script's first `appsettings set`, with each $(...) lookup replaced by a sample."""
    text = INFRA_SCRIPT.read_text()
    command = re.search(
        r"az functionapp config appsettings set [^\n]*--settings \\\n((?:.*\\\n)*.*\n)", text
    ).group(1)
    samples = {"COSMOS_ENDPOINT": "https://cosmos-agents-dev-abc123.documents.azure.com:443/"}
    settings = {}
    for item in shlex.split(command.replace("\\\n", " ")):
        key, _, value = item.partition("=")
        settings[key] = samples.get(key, re.sub(r"\$\{?[A-Z_]+\}?", "sample", value))
    return settings


def test_settings_are_accepted_by_the_function_app() -> None:
    """function_app.settings reads the script's settings without error, by identity (no keys)."""
    from function_app.settings import Settings

    settings = Settings.from_env(app_settings())
    assert settings.cosmos_key is None and settings.servicebus_connection_string is None
    assert settings.uses_servicebus


def test_identity_connections_match_the_bindings() -> None:
    """Each `<connection>__...` setting names a connection the triggers or host.json use."""
    sources = "\n".join(p.read_text() for p in (ROOT / "function_app").rglob("*.py"))
    used = set(re.findall(r'connection="([A-Za-z]+)"', sources))
    host = json.loads((ROOT / "host.json").read_text())
    used.add(host["extensions"]["durableTask"]["storageProvider"]["connectionName"])
    identity_settings = {key.split("__")[0] for key in app_settings() if "__" in key}
    assert used and used == identity_settings
    assert "AzureWebJobsStorage" not in app_settings()  # no account key


def test_every_cosmos_container_is_created_with_its_partition_key() -> None:
    """The containers the app's settings name exist, with the partition keys the app creates them with."""
    runtime = (ROOT / "function_app" / "runtime.py").read_text()
    keys = re.findall(
        r'settings\.(cosmos_[a-z_]*container), partition_key=PartitionKey\("([^"]+)"\)', runtime
    )
    settings = app_settings()
    script = INFRA_SCRIPT.read_text()
    assert keys
    for field, partition_key in keys:
        name = settings[field.upper()]
        assert re.search(rf"-n {name} \\\n\s+--partition-key-path {partition_key} ", script), (
            name,
            partition_key,
        )
