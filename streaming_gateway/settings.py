"""The gateway's settings: one frozen object, built once from the environment at start."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from agent_contracts.redis_connection import RedisMode, redis_mode
from agent_contracts.settings import Env, SettingsError

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_AGENT_CONFIG_PATH = Path(__file__).resolve().parent.parent / "agent_configs" / "default.json"


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8080
    #: /metrics on a listener of its own (what the pod shows Prometheus only); 0: on the API's.
    metrics_port: int = 0
    metrics_host: str | None = None  # GATEWAY_HOST when unset
    redis_url: str = DEFAULT_REDIS_URL
    #: auto: ask the server whether it runs in cluster mode; standalone or cluster force the client.
    redis_mode: RedisMode = "auto"

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
    servicebus_updates_queue: str = "action-updates"

    applicationinsights_connection_string: str | None = None

    # Auth details.
    auth_leeway_s: float = 30.0
    auth_jwks_cache_s: float = 3600.0
    auth_jwks_min_refresh_s: float = 10.0
    #: Verified tokens remembered per process (0: every request verifies its token in full).
    auth_token_cache_size: int = 4096
    #: The app role (token `roles` claim) that may pin agent versions other than the active one.
    auth_operator_role: str = "Agents.Operator"

    # The file that seeds the agent registry when the agent has no active version yet.
    agent_config_path: str = str(DEFAULT_AGENT_CONFIG_PATH)
    #: A client's system/developer message on /v1/chat/completions, unless the agent's config says:
    #: `refuse` (400) or `append` (after the agent's system prompt, never instead of it).
    client_system_messages: str = "refuse"

    # Limits, each answered with a clear status.
    max_body_bytes: int = 1024 * 1024
    max_message_chars: int = 32_000
    max_messages_per_conversation: int = 500
    max_streams_per_user: int = 8
    rate_limit_per_minute: int = 120
    max_metadata_keys: int = 16
    max_metadata_key_chars: int = 64
    max_metadata_value_chars: int = 512
    max_metadata_bytes: int = 4096
    max_conversations_per_user: int = 10_000

    # Redis state and the per-conversation stream log.
    redis_max_connections: int = 2000
    conversation_ttl_s: int = 30 * 24 * 3600
    event_log_ttl_s: int = 24 * 3600
    event_log_maxlen: int = 10_000
    #: Merge an ended answer's token entries into one (state/log_compaction.py), this long after its end.
    log_compaction: bool = True
    log_compact_delay_s: float = 30.0
    #: A stateless OpenAI-style call's conversation, messages and log, after its answer (state/retention.py).
    stateless_ttl_s: int = 3600
    token_batch_max: int = 64
    turn_timeout_s: int = 900

    #: Run on uvloop's event loop (python -m streaming_gateway); off: asyncio's own loop.
    uvloop: bool = True

    # Streaming behaviour.
    heartbeat_s: float = 15.0
    orphan_grace_s: float = 5.0
    shutdown_grace_s: float = 20.0

    #: Seconds between background canary analyses (one pod per interval); 0 turns the loop off.
    canary_analysis_interval_s: float = 0.0

    # WebSocket sign-in: single-use tickets from POST /v1/ws/tickets; the JWT in the URL only if enabled.
    ws_ticket_ttl_s: int = 30
    ws_query_token: bool = False

    # Web client (streaming_gateway/web): the local-only dev token endpoint, and MSAL.js for Entra ID.
    dev_token_endpoint: bool = False
    web_entra_client_id: str | None = None
    web_entra_authority: str | None = None
    web_entra_scopes: str | None = None

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
            metrics_port=env.int("GATEWAY_METRICS_PORT", 0, minimum=0, maximum=65535),
            metrics_host=env.str("GATEWAY_METRICS_HOST"),
            redis_url=env.url("REDIS_URL", DEFAULT_REDIS_URL, schemes=("redis", "rediss", "unix")),
            redis_mode=redis_mode(environ),
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
            servicebus_updates_queue=env.str("SERVICEBUS_UPDATES_QUEUE", "action-updates")
            or "action-updates",
            applicationinsights_connection_string=env.str("APPLICATIONINSIGHTS_CONNECTION_STRING"),
            auth_leeway_s=env.float("AUTH_LEEWAY_SECONDS", 30.0, minimum=0.0),
            auth_jwks_cache_s=env.float("AUTH_JWKS_CACHE_SECONDS", 3600.0, minimum=0.0),
            auth_jwks_min_refresh_s=env.float("AUTH_JWKS_MIN_REFRESH_SECONDS", 10.0, minimum=0.0),
            auth_token_cache_size=env.int("AUTH_TOKEN_CACHE_SIZE", 4096, minimum=0),
            auth_operator_role=env.str("AUTH_OPERATOR_ROLE", "Agents.Operator") or "Agents.Operator",
            agent_config_path=env.str("AGENT_CONFIG_PATH", str(DEFAULT_AGENT_CONFIG_PATH)) or "",
            client_system_messages=env.choice(
                "GATEWAY_CLIENT_SYSTEM_MESSAGES", "refuse", ("refuse", "append")
            ),
            max_body_bytes=env.int("GATEWAY_MAX_BODY_BYTES", 1024 * 1024, minimum=1024),
            max_message_chars=env.int("GATEWAY_MAX_MESSAGE_CHARS", 32_000, minimum=1),
            max_messages_per_conversation=env.int("GATEWAY_MAX_MESSAGES_PER_CONVERSATION", 500, minimum=2),
            max_streams_per_user=env.int("GATEWAY_MAX_STREAMS_PER_USER", 8, minimum=1),
            rate_limit_per_minute=env.int("GATEWAY_RATE_LIMIT_PER_MINUTE", 120, minimum=1),
            max_metadata_keys=env.int("GATEWAY_MAX_METADATA_KEYS", 16, minimum=0),
            max_metadata_key_chars=env.int("GATEWAY_MAX_METADATA_KEY_CHARS", 64, minimum=1),
            max_metadata_value_chars=env.int("GATEWAY_MAX_METADATA_VALUE_CHARS", 512, minimum=1),
            max_metadata_bytes=env.int("GATEWAY_MAX_METADATA_BYTES", 4096, minimum=1),
            max_conversations_per_user=env.int("GATEWAY_MAX_CONVERSATIONS_PER_USER", 10_000, minimum=1),
            redis_max_connections=env.int("GATEWAY_REDIS_MAX_CONNECTIONS", 2000, minimum=10),
            conversation_ttl_s=env.int("GATEWAY_CONVERSATION_TTL_SECONDS", 30 * 24 * 3600, minimum=60),
            event_log_ttl_s=env.int("GATEWAY_EVENT_LOG_TTL_SECONDS", 24 * 3600, minimum=60),
            event_log_maxlen=env.int("GATEWAY_EVENT_LOG_MAXLEN", 10_000, minimum=100),
            log_compaction=env.bool("GATEWAY_LOG_COMPACTION", True),
            log_compact_delay_s=env.float("GATEWAY_LOG_COMPACT_DELAY_SECONDS", 30.0, minimum=0.0),
            stateless_ttl_s=env.int("GATEWAY_STATELESS_TTL_SECONDS", 3600, minimum=60),
            token_batch_max=env.int("GATEWAY_TOKEN_BATCH_MAX", 64, minimum=1, maximum=1000),
            turn_timeout_s=env.int("GATEWAY_TURN_TIMEOUT_SECONDS", 900, minimum=10),
            uvloop=env.bool("GATEWAY_UVLOOP", True),
            heartbeat_s=env.float("GATEWAY_HEARTBEAT_SECONDS", 15.0, minimum=0.1),
            orphan_grace_s=env.float("GATEWAY_ORPHAN_GRACE_SECONDS", 5.0, minimum=0.0),
            shutdown_grace_s=env.float("GATEWAY_SHUTDOWN_GRACE_SECONDS", 20.0, minimum=0.0),
            canary_analysis_interval_s=env.float("GATEWAY_CANARY_ANALYSIS_SECONDS", 0.0, minimum=0.0),
            ws_ticket_ttl_s=env.int("GATEWAY_WS_TICKET_TTL_SECONDS", 30, minimum=1, maximum=60),
            ws_query_token=env.bool("GATEWAY_WS_QUERY_TOKEN", False),
            dev_token_endpoint=env.bool("GATEWAY_DEV_TOKEN_ENDPOINT", False),
            web_entra_client_id=env.str("WEB_ENTRA_CLIENT_ID"),
            web_entra_authority=env.url("WEB_ENTRA_AUTHORITY", schemes=("https",)),
            web_entra_scopes=env.str("WEB_ENTRA_SCOPES"),
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
        if self.dev_token_endpoint and not self.auth_jwt_secret:
            raise SettingsError(
                "GATEWAY_DEV_TOKEN_ENDPOINT", "needs AUTH_JWT_SECRET (it signs local HS256 tokens)"
            )
        if self.metrics_port and self.metrics_port == self.port:
            raise SettingsError("GATEWAY_METRICS_PORT", f"must differ from GATEWAY_PORT ({self.port})")
        if self.dev_token_endpoint and not is_loopback_host(self.host):
            raise SettingsError(
                "GATEWAY_DEV_TOKEN_ENDPOINT",
                f"hands out tokens for any user: only with a loopback GATEWAY_HOST (127.0.0.1, ::1, "
                f"localhost), not {self.host!r}",
            )
        if bool(self.web_entra_client_id) != bool(self.web_entra_authority):
            raise SettingsError(
                "WEB_ENTRA_CLIENT_ID", "set it together with WEB_ENTRA_AUTHORITY (or neither)"
            )
        if self.servicebus_connection_string and self.servicebus_fully_qualified_namespace:
            raise SettingsError(
                "SERVICEBUS_FULLY_QUALIFIED_NAMESPACE",
                "set either it or SERVICEBUS_CONNECTION_STRING, not both",
            )


def is_loopback_host(host: str) -> bool:
    """Whether listening on `host` is reachable from this machine only: a loopback address or
    `localhost`. Any other name may resolve to anything, so it is not."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False
