"""One source for each tool's parameters: the action's arguments model in agent_contracts/tools.py.

The function app validates arguments with the model; every shipped agent configuration offers the
tool with exactly the model's JSON schema. Any edit on one side only fails here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agent_contracts.tools import ACTION_ARGUMENTS, parameters_schema
from agent_registry import read_document
from function_app.registry import default_registry
from function_app.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted(p for p in (ROOT / "agent_configs").iterdir() if p.suffix in {".json", ".yaml", ".yml"})
SETTINGS = {"COSMOS_ENDPOINT": "https://cosmos.example.com:443/"}


def drift(document: dict[str, Any]) -> list[str]:
    """Each tool whose parameters differ from its action's arguments schema, with the difference."""
    problems = []
    for tool in document.get("tools", []):
        action = tool.get("action", tool["name"])
        if action not in ACTION_ARGUMENTS:
            problems.append(f"{tool['name']}: action {action!r} has no arguments model")
        elif tool["parameters"] != parameters_schema(action):
            problems.append(
                f"{tool['name']}: parameters differ from agent_contracts.tools ({action}); "
                f"regenerate with python -m agent_contracts.tools {action}"
            )
    return problems


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_offer_exactly_the_action_schemas(path: Path) -> None:
    """Every tool of every shipped configuration has its action's schema, unchanged."""
    assert drift(read_document(path)) == []


def test_a_drifted_config_is_caught() -> None:
    """The description limit of 4000 (against the model's 5000) or a lost ticket_id pattern is drift."""
    document = read_document(ROOT / "agent_configs" / "default.json")
    longer = json.loads(json.dumps(document))
    longer["tools"][0]["parameters"]["properties"]["description"]["maxLength"] = 4000
    assert drift(longer) and "create_ticket" in drift(longer)[0]
    loose = json.loads(json.dumps(document))
    del loose["tools"][1]["parameters"]["properties"]["ticket_id"]["pattern"]
    assert drift(loose) and "get_ticket" in drift(loose)[0]


def test_function_app_validates_with_the_same_models() -> None:
    """Each registered action's arguments model is the shared one, and its tool definition carries its schema."""
    registry = default_registry(Settings.from_env(SETTINGS))
    assert set(registry.names()) == set(ACTION_ARGUMENTS)
    for name in registry.names():
        assert registry.get(name).arguments is ACTION_ARGUMENTS[name]
        assert registry.get(name).tool_definition()["function"]["parameters"] == parameters_schema(name)


def test_schema_printer() -> None:
    """python -m agent_contracts.tools prints the schemas to paste into a configuration."""
    result = subprocess.run(
        [sys.executable, "-m", "agent_contracts.tools", "get_ticket"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0 and json.loads(result.stdout) == {
        "get_ticket": parameters_schema("get_ticket")
    }
    unknown = subprocess.run(
        [sys.executable, "-m", "agent_contracts.tools", "launch"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert unknown.returncode == 2 and "unknown action" in unknown.stdout
