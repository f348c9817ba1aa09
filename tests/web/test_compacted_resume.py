"""The browser client resuming an answer compacted while it was away: the text ends whole, once."""

from __future__ import annotations

import asyncio

from playwright.async_api import Page, Route, expect

from streaming_gateway.keys import log_compactor_key
from tests.fixtures.gateway import Gateway
from tests.polling import eventually
from tests.web.chat_page import (
    last_answer,
    open_signed_in,
    send,
    slow_reply_script,
    wait_answer_done,
    wait_mid_answer,
)

WORDS = " ".join(f"word{i:02d}" for i in range(40))


async def test_sse_resume_into_a_compacted_answer(page: Page, web_gateway: Gateway, script) -> None:
    """The page drops its stream mid-answer; its resume is held until the answer has ended and its
    log is compacted, so it resumes from an id inside the merged run: no word missing or repeated."""
    await script(slow_reply_script(WORDS, token_delay_ms=25))
    release = asyncio.Event()
    held: list[str] = []

    async def hold(route: Route) -> None:
        held.append(route.request.headers.get("last-event-id", ""))
        await release.wait()
        await route.continue_()

    await page.route("**/v1/conversations/*/events*", hold)
    await open_signed_in(page, web_gateway, query="?transport=sse")
    await send(page, "count for me")
    await wait_mid_answer(page, "word05", "word39")
    cid = await page.evaluate("window.agentChat.conversationId")
    await page.evaluate("window.agentChat.transport.simulateDrop()")
    await eventually(lambda: asyncio.sleep(0, held), "the page's resume")

    async def answered() -> bool:
        async with web_gateway.request("GET", f"/v1/conversations/{cid}") as response:
            messages = (await response.json())["messages"]
        return messages[-1]["role"] == "assistant"

    await eventually(answered, "the answer's end")
    result = await web_gateway.app[log_compactor_key].compact(cid)
    assert (result.status, result.merged) == (1, 1)
    assert 0 < int(held[0]) < 40  # its last id is inside the merged run
    release.set()
    answer = last_answer(page)
    await wait_answer_done(page, answer)
    await expect(answer.locator(".body")).to_have_text(WORDS)
