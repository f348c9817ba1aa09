"""Settings: read once from the environment; a bad value fails naming the variable."""

from __future__ import annotations

import pytest

from agent_contracts.settings import SettingsError
from function_app.settings import Settings as FunctionSettings
from streaming_gateway.settings import Settings as GatewaySettings

SECRET = "s" * 32


def test_gateway_defaults() -> None:
    """With only a JWT secret, the gateway uses local defaults and the scripted upstream."""
    settings = GatewaySettings.from_env({"AUTH_JWT_SECRET": SECRET})
    assert (settings.host, settings.port) == ("127.0.0.1", 8080)
    assert settings.redis_url == "redis://127.0.0.1:6379/0"
    assert settings.uses_scripted_upstream and not settings.uses_servicebus


@pytest.mark.parametrize(
    ("environ", "variable"),
    [
        ({"AUTH_JWT_SECRET": SECRET, "GATEWAY_PORT": "http"}, "GATEWAY_PORT"),
        ({"AUTH_JWT_SECRET": SECRET, "GATEWAY_PORT": "70000"}, "GATEWAY_PORT"),
        ({"AUTH_JWT_SECRET": SECRET, "REDIS_URL": "localhost:6379"}, "REDIS_URL"),
        ({"AUTH_JWT_SECRET": SECRET, "OPENAI_BASE_URL": "not a url"}, "OPENAI_BASE_URL"),
        ({}, "AUTH_JWT_SECRET"),
        ({"AUTH_JWT_SECRET": "short"}, "AUTH_JWT_SECRET"),
        (
            {
                "AUTH_JWT_SECRET": SECRET,
                "SERVICEBUS_CONNECTION_STRING": "Endpoint=sb://x/",
                "SERVICEBUS_FULLY_QUALIFIED_NAMESPACE": "x.servicebus.windows.net",
            },
            "SERVICEBUS_FULLY_QUALIFIED_NAMESPACE",
        ),
    ],
)
def test_gateway_bad_setting_names_the_variable(environ: dict[str, str], variable: str) -> None:
    """A missing or malformed setting raises one error whose message names the variable."""
    with pytest.raises(SettingsError) as info:
        GatewaySettings.from_env(environ)
    assert info.value.name == variable
    assert variable in str(info.value)


def test_function_app_requires_cosmos_endpoint() -> None:
    """The function app cannot start without a Cosmos DB endpoint."""
    with pytest.raises(SettingsError, match="COSMOS_ENDPOINT"):
        FunctionSettings.from_env({})


def test_function_app_reads_cosmos_settings() -> None:
    """Cosmos database and container names come from the environment, with defaults."""
    settings = FunctionSettings.from_env(
        {"COSMOS_ENDPOINT": "https://127.0.0.1:8081", "COSMOS_DATABASE": "db1"}
    )
    assert (settings.cosmos_database, settings.cosmos_container) == ("db1", "action_results")
    assert settings.cosmos_verify_tls
