"""Load-generating clients: one streamed chat completion through the real `openai` SDK, timed.

The same client code measures every target (the upstream directly, our gateway, LiteLLM's proxy),
so the only difference between two measurements is what sits between the client and the model.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import openai

from bench.stack import token


@dataclass
class Sample:
    ttft_ms: float | None = None
    total_ms: float | None = None
    chunks: int = 0
    error: str | None = None
    #: perf_counter (CLOCK_MONOTONIC: comparable with another process's on this machine) at the
    #: request's start and at its first text.
    started_at: float = 0.0
    first_at: float | None = None


@dataclass
class Target:
    """Where to send the completion: base URL, model name and whether each user needs a JWT."""

    name: str
    base_url: str
    model: str = "scripted"
    jwt_per_user: bool = False
    api_key: str = "bench"
    client: openai.AsyncOpenAI = field(init=False)

    def __post_init__(self) -> None:
        # The SDK's own HTTP client and connection limits (1,000 connections): as users run it.
        self.client = openai.AsyncOpenAI(
            base_url=self.base_url, api_key=self.api_key, max_retries=0, timeout=120
        )
        self._tokens: dict[str, str] = {}

    def headers(self, user: str) -> dict[str, str]:
        if not self.jwt_per_user:
            return {}
        if user not in self._tokens:
            self._tokens[user] = token(user)
        return {"Authorization": f"Bearer {self._tokens[user]}"}

    async def close(self) -> None:
        await self.client.close()


async def stream_once(target: Target, user: str, prompt: str) -> Sample:
    """One streamed completion; TTFT is the first chunk that carries text."""
    sample = Sample()
    started = sample.started_at = time.perf_counter()
    try:
        stream = await target.client.chat.completions.create(
            model=target.model,
            messages=[{"role": "user", "content": prompt}],
            stream=True,
            extra_headers=target.headers(user),
        )
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                if sample.ttft_ms is None:
                    sample.first_at = time.perf_counter()
                    sample.ttft_ms = (sample.first_at - started) * 1000
                sample.chunks += 1
        sample.total_ms = (time.perf_counter() - started) * 1000
    except openai.APIError as exc:
        sample.error = f"{type(exc).__name__}: {str(exc)[:200]}"
    return sample


async def wave(target: Target, concurrency: int, prompt: str, round_: int) -> list[Sample]:
    """`concurrency` streams at once, one per user slot."""
    return await asyncio.gather(
        *(stream_once(target, f"bench-user-{i}", f"{prompt} r{round_} s{i}") for i in range(concurrency))
    )
