"""The function app's settings (also the local worker's): one frozen object, built once from the
app settings. Every variable here is listed in local.settings.sample.json and docs/configuration.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from agent_contracts.redis_connection import RedisMode, redis_mode
from agent_contracts.settings import Env, SettingsError

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_TICKETS_URL = "http://127.0.0.1:8095"


@dataclass(frozen=True)
class RetryOverride:
    first_interval_s: float
    max_attempts: int


def parse_retry_policies(raw: str | None) -> dict[str, RetryOverride]:
    """`name=first_interval_seconds:max_attempts,...`, e.g. `create_ticket=2:5,get_ticket=1:3`."""
    policies: dict[str, RetryOverride] = {}
    for item in (raw or "").split(","):
        if not item.strip():
            continue
        try:
            name, spec = item.split("=", 1)
            first, attempts = spec.split(":", 1)
            override = RetryOverride(float(first), int(attempts))
        except ValueError:
            raise SettingsError(
                "ACTION_RETRY_POLICIES", f"expected name=seconds:attempts, got {item.strip()!r}"
            ) from None
        if override.first_interval_s <= 0 or not 1 <= override.max_attempts <= 50:
            raise SettingsError("ACTION_RETRY_POLICIES", f"{name.strip()}: seconds > 0 and 1..50 attempts")
        policies[name.strip()] = override
    return policies


@dataclass(frozen=True)
class Settings:
    cosmos_endpoint: str
    cosmos_key: str | None = None  # None: Entra ID (managed identity) via DefaultAzureCredential
    cosmos_database: str = "agent"
    cosmos_container: str = "action_results"
    cosmos_deadletter_container: str = "dead_letters"
    #: Create the database and containers at start (local server, dev); in Azure they are provisioned.
    cosmos_create_if_missing: bool = False
    #: Local emulator only: its certificate is self-signed. Never set in Azure.
    cosmos_verify_tls: bool = True
    servicebus_connection_string: str | None = None
    servicebus_fully_qualified_namespace: str | None = None
    servicebus_actions_queue: str = "actions"
    servicebus_updates_queue: str = "action-updates"
    redis_url: str = DEFAULT_REDIS_URL
    redis_mode: RedisMode = "auto"
    applicationinsights_connection_string: str | None = None
    # Dispatch: where each action's backend lives, and how long one call may take.
    tickets_service_url: str = DEFAULT_TICKETS_URL
    dispatch_timeout_s: float = 10.0
    action_retry_policies: dict[str, RetryOverride] = field(default_factory=dict)
    retry_max_interval_s: float = 300.0
    # The dead-letter command in Azure: the function app's Durable Functions HTTP API, for Failed instances.
    durable_task_api_url: str | None = None
    durable_task_api_key: str | None = None
    # The local worker (Redis Streams broker) only.
    worker_max_deliveries: int = 5
    worker_claim_idle_ms: int = 30_000
    worker_lease_ms: int = 30_000

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = Env(environ)
        settings = cls(
            cosmos_endpoint=env.url("COSMOS_ENDPOINT", "", required=True),
            cosmos_key=env.str("COSMOS_KEY"),
            cosmos_database=env.str("COSMOS_DATABASE", "agent"),
            cosmos_container=env.str("COSMOS_CONTAINER", "action_results"),
            cosmos_deadletter_container=env.str("COSMOS_DEADLETTER_CONTAINER", "dead_letters"),
            cosmos_create_if_missing=env.bool("COSMOS_CREATE_IF_MISSING", False),
            cosmos_verify_tls=env.bool("COSMOS_VERIFY_TLS", True),
            servicebus_connection_string=env.str("SERVICEBUS_CONNECTION_STRING"),
            servicebus_fully_qualified_namespace=env.str("SERVICEBUS_FULLY_QUALIFIED_NAMESPACE"),
            servicebus_actions_queue=env.str("SERVICEBUS_ACTIONS_QUEUE", "actions"),
            servicebus_updates_queue=env.str("SERVICEBUS_UPDATES_QUEUE", "action-updates"),
            redis_url=env.url("REDIS_URL", DEFAULT_REDIS_URL, schemes=("redis", "rediss", "unix")),
            redis_mode=redis_mode(environ),
            applicationinsights_connection_string=env.str("APPLICATIONINSIGHTS_CONNECTION_STRING"),
            tickets_service_url=env.url("TICKETS_SERVICE_URL", DEFAULT_TICKETS_URL),
            dispatch_timeout_s=env.float("DISPATCH_TIMEOUT_SECONDS", 10.0, minimum=0.1),
            action_retry_policies=parse_retry_policies(env.str("ACTION_RETRY_POLICIES")),
            retry_max_interval_s=env.float("ACTION_RETRY_MAX_INTERVAL_SECONDS", 300.0, minimum=0.1),
            durable_task_api_url=env.url("DURABLE_TASK_API_URL"),
            durable_task_api_key=env.str("DURABLE_TASK_API_KEY"),
            worker_max_deliveries=env.int("WORKER_MAX_DELIVERIES", 5, minimum=1, maximum=100),
            worker_claim_idle_ms=env.int("WORKER_CLAIM_IDLE_MS", 30_000, minimum=10),
            worker_lease_ms=env.int("WORKER_LEASE_MS", 30_000, minimum=100),
        )
        if settings.servicebus_connection_string and settings.servicebus_fully_qualified_namespace:
            raise SettingsError(
                "SERVICEBUS_FULLY_QUALIFIED_NAMESPACE",
                "set either it or SERVICEBUS_CONNECTION_STRING, not both",
            )
        if settings.durable_task_api_url and not settings.durable_task_api_key:
            raise SettingsError("DURABLE_TASK_API_KEY", "required with DURABLE_TASK_API_URL")
        if not settings.cosmos_verify_tls and not settings.cosmos_endpoint.startswith(
            ("https://127.", "https://localhost")
        ):
            raise SettingsError("COSMOS_VERIFY_TLS", "may be false only for a loopback emulator endpoint")
        return settings

    @property
    def uses_servicebus(self) -> bool:
        return bool(self.servicebus_connection_string or self.servicebus_fully_qualified_namespace)
