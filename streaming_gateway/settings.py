"""The gateway's settings: one frozen object, built once from the environment at start."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from agent_contracts.settings import Env, SettingsError

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8080
    redis_url: str = DEFAULT_REDIS_URL

    # LLM: Azure OpenAI when AZURE_OPENAI_ENDPOINT is set, else OpenAI (or any compatible endpoint).
    openai_api_key: str | None = None
    openai_base_url: str | None = None
    azure_openai_endpoint: str | None = None
    azure_openai_api_key: str | None = None
    openai_api_version: str = "2024-10-21"
    llm_timeout_s: float = 60.0

    # Auth: HS256 with a shared secret (local), or RS256/ES256 keys from a JWKS URL (Entra ID).
    auth_jwt_secret: str | None = None
    auth_jwks_url: str | None = None
    auth_issuer: str | None = None
    auth_audience: str | None = None

    # Action bus: Azure Service Bus when configured, else the local Redis Streams broker.
    servicebus_connection_string: str | None = None
    servicebus_fully_qualified_namespace: str | None = None
    servicebus_actions_queue: str = "actions"

    applicationinsights_connection_string: str | None = None

    @property
    def uses_azure_openai(self) -> bool:
        return self.azure_openai_endpoint is not None

    @property
    def uses_scripted_upstream(self) -> bool:
        """No key and no endpoint configured: the project's scripted upstream serves the model."""
        return not (self.openai_api_key or self.azure_openai_endpoint)

    @property
    def uses_servicebus(self) -> bool:
        return bool(self.servicebus_connection_string or self.servicebus_fully_qualified_namespace)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = Env(environ)
        settings = cls(
            host=env.str("GATEWAY_HOST", "127.0.0.1"),
            port=env.int("GATEWAY_PORT", 8080, minimum=0, maximum=65535),
            redis_url=env.url("REDIS_URL", DEFAULT_REDIS_URL, schemes=("redis", "rediss", "unix")),
            openai_api_key=env.str("OPENAI_API_KEY"),
            openai_base_url=env.url("OPENAI_BASE_URL"),
            azure_openai_endpoint=env.url("AZURE_OPENAI_ENDPOINT", schemes=("https", "http")),
            azure_openai_api_key=env.str("AZURE_OPENAI_API_KEY"),
            openai_api_version=env.str("OPENAI_API_VERSION", "2024-10-21"),
            llm_timeout_s=env.float("LLM_TIMEOUT_SECONDS", 60.0, minimum=1.0),
            auth_jwt_secret=env.str("AUTH_JWT_SECRET"),
            auth_jwks_url=env.url("AUTH_JWKS_URL"),
            auth_issuer=env.str("AUTH_ISSUER"),
            auth_audience=env.str("AUTH_AUDIENCE"),
            servicebus_connection_string=env.str("SERVICEBUS_CONNECTION_STRING"),
            servicebus_fully_qualified_namespace=env.str("SERVICEBUS_FULLY_QUALIFIED_NAMESPACE"),
            servicebus_actions_queue=env.str("SERVICEBUS_ACTIONS_QUEUE", "actions"),
            applicationinsights_connection_string=env.str("APPLICATIONINSIGHTS_CONNECTION_STRING"),
        )
        settings.check()
        return settings

    def check(self) -> None:
        """Cross-field rules; each failure names the variable to fix."""
        if not (self.auth_jwt_secret or self.auth_jwks_url):
            raise SettingsError("AUTH_JWT_SECRET", "set it (local HS256) or AUTH_JWKS_URL (Entra ID)")
        if self.auth_jwt_secret is not None and len(self.auth_jwt_secret) < 32:
            raise SettingsError("AUTH_JWT_SECRET", "must be at least 32 characters (HS256 key strength)")
        if self.azure_openai_endpoint and not self.azure_openai_api_key:
            # Without a key, Azure OpenAI is reached with Entra ID (managed identity).
            pass
        if self.servicebus_connection_string and self.servicebus_fully_qualified_namespace:
            raise SettingsError(
                "SERVICEBUS_FULLY_QUALIFIED_NAMESPACE",
                "set either it or SERVICEBUS_CONNECTION_STRING, not both",
            )
