"""The function app's settings: one frozen object, built once from the app settings."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from agent_contracts.settings import Env, SettingsError

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


@dataclass(frozen=True)
class Settings:
    cosmos_endpoint: str
    cosmos_key: str | None = None  # None: Entra ID (managed identity) via DefaultAzureCredential
    cosmos_database: str = "agent"
    cosmos_container: str = "action_results"
    #: Local emulator only: its certificate is self-signed. Never set in Azure.
    cosmos_verify_tls: bool = True
    servicebus_connection_string: str | None = None
    servicebus_fully_qualified_namespace: str | None = None
    servicebus_actions_queue: str = "actions"
    redis_url: str = DEFAULT_REDIS_URL
    applicationinsights_connection_string: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = Env(environ)
        settings = cls(
            cosmos_endpoint=env.url("COSMOS_ENDPOINT", required=True),
            cosmos_key=env.str("COSMOS_KEY"),
            cosmos_database=env.str("COSMOS_DATABASE", "agent"),
            cosmos_container=env.str("COSMOS_CONTAINER", "action_results"),
            cosmos_verify_tls=env.bool("COSMOS_VERIFY_TLS", True),
            servicebus_connection_string=env.str("SERVICEBUS_CONNECTION_STRING"),
            servicebus_fully_qualified_namespace=env.str("SERVICEBUS_FULLY_QUALIFIED_NAMESPACE"),
            servicebus_actions_queue=env.str("SERVICEBUS_ACTIONS_QUEUE", "actions"),
            redis_url=env.url("REDIS_URL", DEFAULT_REDIS_URL, schemes=("redis", "rediss", "unix")),
            applicationinsights_connection_string=env.str("APPLICATIONINSIGHTS_CONNECTION_STRING"),
        )
        if settings.servicebus_connection_string and settings.servicebus_fully_qualified_namespace:
            raise SettingsError(
                "SERVICEBUS_FULLY_QUALIFIED_NAMESPACE",
                "set either it or SERVICEBUS_CONNECTION_STRING, not both",
            )
        return settings
