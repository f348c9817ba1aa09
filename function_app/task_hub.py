"""Failed orchestration instances, for the dead-letter command: the local worker's instance store,
or the Durable Functions HTTP API of the function app in Azure.

An instance ends Failed only when even the orchestrator's guard could not write a dead letter (the
dead-letter store stayed down for the whole bookkeeping window), when the orchestrator's code
itself is broken (non-determinism after a deployment, an unsupported API in the local worker), or
when someone terminated it. Its input is the ActionRequest, so it is replayed like a dead letter:
the same request with the next replay count, under a new instance id.

The HTTP API (`GET {base}/instances?runtimeStatus=Failed`, `DELETE {base}/instances/{id}`) is the
extension's documented instance-management API; `{base}` is
`https://<app>.azurewebsites.net/runtime/webhooks/durabletask` and the key is the app's
`durabletask_extension` system key (DURABLE_TASK_API_URL, DURABLE_TASK_API_KEY). No host runs here,
so that adapter is kept thin and its JSON mapping is what the tests check.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp

from function_app.errors import StoreError
from function_app.worker.instances import InstanceStore


@dataclass(frozen=True)
class FailedInstance:
    instance_id: str
    name: str
    request: dict[str, Any] | None
    error: str
    last_updated: str


class FailedInstances(Protocol):
    async def list_failed(self) -> list[FailedInstance]: ...

    async def forget(self, instance_id: str) -> None:
        """Done with it (replayed): it is not listed again."""
        ...


def _error_text(output: Any) -> str:
    if isinstance(output, dict):
        return str(output.get("error") or output.get("message") or json.dumps(output))[:2000]
    return str(output or "")[:2000]


def _json_or_none(value: Any) -> dict[str, Any] | None:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    return value if isinstance(value, dict) else None


def failed_from_status(status: dict[str, Any]) -> FailedInstance:
    """One entry of the HTTP API's instance list (`showInput=true`)."""
    return FailedInstance(
        instance_id=str(status["instanceId"]),
        name=str(status.get("name", "")),
        request=_json_or_none(status.get("input")),
        error=_error_text(_json_or_none(status.get("output")) or status.get("output")),
        last_updated=str(status.get("lastUpdatedTime", "")),
    )


class LocalFailedInstances:
    """The local worker's Failed instances (Redis)."""

    def __init__(self, store: InstanceStore) -> None:
        self.store = store

    async def list_failed(self) -> list[FailedInstance]:
        return [
            FailedInstance(
                instance_id=instance.instance_id,
                name=instance.name,
                request=_json_or_none(instance.input_json),
                error=_error_text(_json_or_none(instance.output) or instance.output),
                last_updated="",
            )
            for instance in await self.store.failed()
        ]

    async def forget(self, instance_id: str) -> None:
        await self.store.forget_failed(instance_id)


class DurableHttpFailedInstances:
    """Failed instances through the function app's Durable Functions HTTP API."""

    def __init__(self, base_url: str, key: str, http: aiohttp.ClientSession) -> None:
        self.base_url = base_url.rstrip("/")
        self.key = key
        self.http = http

    async def list_failed(self) -> list[FailedInstance]:
        params = {"runtimeStatus": "Failed", "showInput": "true", "code": self.key}
        found: list[FailedInstance] = []
        headers: dict[str, str] = {}
        while True:  # the API pages with a continuation token header
            async with self.http.get(
                f"{self.base_url}/instances", params=params, headers=headers
            ) as response:
                if response.status != 200:
                    raise StoreError(f"durable instances: HTTP {response.status}")
                found.extend(failed_from_status(item) for item in await response.json())
                token = response.headers.get("x-ms-continuation-token")
            if not token:
                return found
            headers = {"x-ms-continuation-token": token}

    async def forget(self, instance_id: str) -> None:
        async with self.http.delete(
            f"{self.base_url}/instances/{instance_id}", params={"code": self.key}
        ) as response:
            if response.status not in (200, 404):
                raise StoreError(f"purge {instance_id}: HTTP {response.status}")
