"""Function app settings and the action registry: bad values fail at start naming the variable."""

from __future__ import annotations

import pytest

from agent_contracts.settings import SettingsError
from function_app.registry import RetryPolicy, default_registry
from function_app.settings import Settings

BASE = {"COSMOS_ENDPOINT": "https://cosmos.example.com:443/"}


def test_defaults_from_minimal_environment() -> None:
    """Only COSMOS_ENDPOINT is required; queues and containers have their documented defaults."""
    settings = Settings.from_env(BASE)
    assert (settings.servicebus_actions_queue, settings.servicebus_updates_queue) == (
        "actions",
        "action-updates",
    )
    assert settings.cosmos_deadletter_container == "dead_letters" and settings.cosmos_verify_tls


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({}, "COSMOS_ENDPOINT"),
        ({**BASE, "ACTION_RETRY_POLICIES": "create_ticket=fast"}, "ACTION_RETRY_POLICIES"),
        ({**BASE, "ACTION_RETRY_POLICIES": "create_ticket=0:3"}, "ACTION_RETRY_POLICIES"),
        ({**BASE, "DISPATCH_TIMEOUT_SECONDS": "0"}, "DISPATCH_TIMEOUT_SECONDS"),
        ({**BASE, "COSMOS_VERIFY_TLS": "false"}, "COSMOS_VERIFY_TLS"),
        (
            {
                **BASE,
                "SERVICEBUS_CONNECTION_STRING": "Endpoint=sb://x/",
                "SERVICEBUS_FULLY_QUALIFIED_NAMESPACE": "x",
            },
            "SERVICEBUS_FULLY_QUALIFIED_NAMESPACE",
        ),
    ],
)
def test_bad_settings_name_the_variable(env: dict[str, str], variable: str) -> None:
    """Each malformed or conflicting value raises SettingsError naming its variable."""
    with pytest.raises(SettingsError) as info:
        Settings.from_env(env)
    assert info.value.name == variable


def test_retry_override_applies_per_action() -> None:
    """ACTION_RETRY_POLICIES overrides first interval and attempts of the named action only."""
    registry = default_registry(Settings.from_env({**BASE, "ACTION_RETRY_POLICIES": "create_ticket=0.5:7"}))
    assert (
        registry.get("create_ticket").retry.first_interval_s,
        registry.get("create_ticket").retry.max_attempts,
    ) == (0.5, 7)
    assert registry.get("get_ticket").retry.max_attempts == 3


def test_retry_override_for_unknown_action_fails() -> None:
    """An override naming no registered action is a settings error, not silently ignored."""
    with pytest.raises(SettingsError):
        default_registry(Settings.from_env({**BASE, "ACTION_RETRY_POLICIES": "launch=1:2"}))


def test_backoff_grows_caps_and_honours_retry_after() -> None:
    """Delays double from the first interval, stop at the cap, and a longer Retry-After wins."""
    policy = RetryPolicy(first_interval_s=1, max_attempts=10, max_interval_s=5)
    assert [policy.delay_after(n) for n in (1, 2, 3, 4)] == [1, 2, 4, 5]
    assert policy.delay_after(1, retry_after_s=30) == 30
    assert policy.delay_after(3, retry_after_s=0.5) == 4


def test_tool_definitions_carry_argument_schemas() -> None:
    """Each action exports an OpenAI tool definition whose parameters are its argument schema."""
    tools = {t["function"]["name"]: t for t in default_registry(Settings.from_env(BASE)).tool_definitions()}
    assert set(tools) == {"create_ticket", "get_ticket"}
    assert tools["create_ticket"]["function"]["parameters"]["required"] == ["title"]
    assert tools["get_ticket"]["function"]["parameters"]["properties"]["ticket_id"]["type"] == "string"


def test_default_agent_config_tools_match_registered_actions() -> None:
    """Every tool of agent_configs/default.json names a registered action with the same required and known fields."""
    import json
    from pathlib import Path

    config = json.loads((Path(__file__).resolve().parents[2] / "agent_configs/default.json").read_text())
    registry = default_registry(Settings.from_env(BASE))
    for tool in config["tools"]:
        schema = registry.get(tool.get("action", tool["name"])).arguments.model_json_schema()
        assert set(tool["parameters"].get("required", [])) == set(schema.get("required", [])), tool["name"]
        assert set(tool["parameters"]["properties"]) <= set(schema["properties"]), tool["name"]
