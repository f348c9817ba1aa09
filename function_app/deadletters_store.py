"""The dead-letter store: actions that exhausted their retries, and bus messages that were not
valid actions, each with the reason and (for actions) the request and its attempt history, so
`python -m function_app.deadletters` can list them and replay them after a fix.

A Cosmos DB container (`dead_letters`) in Azure and locally alike. Dead letters are rare and read
by operators, so they live in one logical partition and are listed with a single-partition query.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, Literal, Protocol

from azure.core.exceptions import AzureError
from azure.cosmos import exceptions as cosmos_errors
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from agent_contracts.actions import AttemptRecord, utcnow
from function_app.errors import StoreError
from function_app.results import honour_throttling

log = logging.getLogger(__name__)

PARTITION = "dead_letters"


class DeadLetter(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    id: str
    partition: str = PARTITION
    kind: Literal["action", "invalid_message"]
    reason: str
    request: dict[str, Any] | None = None
    raw_body: str | None = None
    attempt_history: list[AttemptRecord] = Field(default_factory=list)
    dead_lettered_at: datetime = Field(default_factory=utcnow)
    replayed_at: datetime | None = None
    replay_count: int = 0


class DeadLetterStore(Protocol):
    async def put(self, letter: DeadLetter) -> None: ...
    async def get(self, letter_id: str) -> DeadLetter | None: ...
    async def list(self, include_replayed: bool = False) -> list[DeadLetter]: ...
    async def mark_replayed(self, letter: DeadLetter, replay_count: int) -> None: ...


class CosmosDeadLetterStore:
    def __init__(self, container: Any) -> None:
        self.container = container

    async def put(self, letter: DeadLetter) -> None:
        """Idempotent: the same action dead-lettered twice (activity retried) is one record."""
        body = letter.model_dump(mode="json", by_alias=True)
        try:
            await honour_throttling(lambda: self.container.upsert_item(body))
        except cosmos_errors.CosmosHttpResponseError as exc:
            raise StoreError(f"dead letter {letter.id}: {exc.status_code} {exc.message}") from exc
        except AzureError as exc:  # no answer at all
            raise StoreError(f"dead letter {letter.id}: {exc}") from exc

    async def list(self, include_replayed: bool = False) -> list[DeadLetter]:
        query = "SELECT * FROM c WHERE c.partition = @p"
        try:
            items = [
                item
                async for item in self.container.query_items(
                    query, parameters=[{"name": "@p", "value": PARTITION}], partition_key=PARTITION
                )
            ]
        except AzureError as exc:
            raise StoreError(f"list dead letters: {exc}") from exc
        letters = [DeadLetter.model_validate(item) for item in items]
        if not include_replayed:
            letters = [letter for letter in letters if letter.replayed_at is None]
        return sorted(letters, key=lambda letter: letter.dead_lettered_at)

    async def get(self, letter_id: str) -> DeadLetter | None:
        # A single-partition query rather than a point read: it answers "none" the same way on real
        # Cosmos DB and on the local server (which fails a point read of a missing item with 500).
        query = "SELECT * FROM c WHERE c.partition = @p AND c.id = @id"
        params = [{"name": "@p", "value": PARTITION}, {"name": "@id", "value": letter_id}]
        items = [
            item
            async for item in self.container.query_items(query, parameters=params, partition_key=PARTITION)
        ]
        return DeadLetter.model_validate(items[0]) if items else None

    async def mark_replayed(self, letter: DeadLetter, replay_count: int) -> None:
        await self.put(letter.model_copy(update={"replayed_at": utcnow(), "replay_count": replay_count}))
