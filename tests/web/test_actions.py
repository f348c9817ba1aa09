"""Action cards in the browser, fed by the real pipeline: the gateway queues the model's tool call,
the local worker (the function app's orchestrator and activities) calls the sample tickets backend
and records each status in Cosmos DB, and the updates stream back to the card."""

from __future__ import annotations

import json

from aiohttp.test_utils import TestServer
from playwright.async_api import Page, expect

from function_app.worker.service import Worker
from scripted_upstream.script import Script
from tests.fixtures.gateway import Gateway
from tests.function_app.helpers import control
from tests.gateway.test_actions import TICKET_SCRIPT
from tests.web.chat_page import answers, open_signed_in, send, wait_answer_done

#: Every status text a card shows, in order (read by the test once the card is final).
RECORD_STATUSES = """() => {
  window.cardStatuses = [];
  new MutationObserver(() => {
    const card = document.querySelector('.action-card');
    const text = card && card.querySelector('.action-status').textContent;
    if (text && window.cardStatuses[window.cardStatuses.length - 1] !== text) window.cardStatuses.push(text);
  }).observe(document.getElementById('messages'), {subtree: true, childList: true, characterData: true});
}"""


async def test_action_card_goes_to_succeeded_with_result(
    page: Page, web_gateway: Gateway, script, worker: Worker, backend: TestServer
) -> None:
    """The model asks for a ticket: the card shows the call, goes to Succeeded with the backend's
    ticket id, and the model's continuation follows in a new answer."""
    await script(TICKET_SCRIPT)
    await open_signed_in(page, web_gateway)
    await page.evaluate(RECORD_STATUSES)
    await send(page, "please open a ticket")
    card = page.get_by_role("region", name="Action create_ticket")
    await expect(card).to_be_visible()
    await expect(card.locator(".action-args")).to_contain_text("Printer on fire")
    await expect(card).to_have_attribute("data-status", "succeeded", timeout=30_000)
    await expect(card.locator(".action-status")).to_have_text("Succeeded")
    stats = await control(backend, "GET", "/_control/stats")
    assert stats["tickets"] == 1
    await expect(card.locator(".action-result")).to_contain_text('"ticketId": "T-')
    continuation = answers(page).last
    await wait_answer_done(page, continuation)
    await expect(continuation.locator(".body")).to_contain_text("Done:")
    assert (await page.evaluate("window.cardStatuses"))[-1] == "Succeeded"
    assert "Queued" in await page.evaluate("window.cardStatuses")
    # Reloaded, the conversation shows the same card from the stored messages.
    await page.reload()
    stored = page.get_by_role("region", name="Action create_ticket")
    await expect(stored).to_have_attribute("data-status", "succeeded")
    await expect(stored.locator(".action-result")).to_contain_text('"ticketId": "T-')
    await expect(answers(page).last.locator(".body")).to_contain_text("Done:")


async def test_action_card_goes_to_dead_lettered_with_reason(
    page: Page, web_gateway: Gateway, script, worker: Worker, backend: TestServer
) -> None:
    """A backend that answers 503 to every attempt: the card shows the retries, then Dead-lettered
    with the pipeline's reason; the model is told and answers."""
    await control(
        backend,
        "PUT",
        "/_control/faults",
        {"rules": [{"path": "/tickets", "status": 503, "times": 3, "retry_after": 0}]},
    )
    await script(TICKET_SCRIPT)
    await open_signed_in(page, web_gateway)
    await page.evaluate(RECORD_STATUSES)
    await send(page, "please open a ticket")
    card = page.get_by_role("region", name="Action create_ticket")
    await expect(card).to_have_attribute("data-status", "dead_lettered", timeout=30_000)
    await expect(card.locator(".action-status")).to_have_text("Dead-lettered")
    await expect(card.locator(".action-reason")).to_contain_text("gave up after 3 attempts")
    await expect(card.locator(".action-reason")).to_contain_text("503")
    statuses = await page.evaluate("window.cardStatuses")
    assert "Retrying 1/3" in statuses and "Retrying 2/3" in statuses, statuses
    assert statuses[-1] == "Dead-lettered"
    await wait_answer_done(page, answers(page).last)
    assert (await control(backend, "GET", "/_control/stats"))["tickets"] == 0


def default_rules() -> list[dict[str, object]]:
    """The scripted upstream's shipped script, the one `make dev` runs (no delay between tokens)."""
    return [rule.model_dump(exclude_defaults=True) for rule in Script.load().rules]


async def test_default_script_opens_the_ticket_asked_for_and_reports_it(
    page: Page, web_gateway: Gateway, script, worker: Worker, backend: TestServer
) -> None:
    """With the demo's script, the ticket's title is what the user asked about, the answer after the
    action names the ticket id and status from the result, and a lookup by that id answers from it."""
    await script(default_rules())
    await open_signed_in(page, web_gateway)
    await send(page, "please open a ticket: printer on fire")
    card = page.get_by_role("region", name="Action create_ticket")
    await expect(card.locator(".action-args")).to_contain_text('"title": "printer on fire"')
    await expect(card.locator(".action-args")).to_contain_text('"priority": "high"')
    await expect(card).to_have_attribute("data-status", "succeeded", timeout=30_000)
    result = json.loads(await card.locator(".action-result").inner_text())
    assert result["title"] == "printer on fire" and result["status"] == "open"
    ticket_id = result["ticketId"]
    continuation = answers(page).last
    await wait_answer_done(page, continuation)
    await expect(continuation.locator(".body")).to_have_text(
        f'I opened ticket {ticket_id} for "printer on fire"; its status is open.'
    )
    await send(page, f"What is the status of ticket {ticket_id}?")
    lookup = page.get_by_role("region", name="Action get_ticket")
    await expect(lookup).to_have_attribute("data-status", "succeeded", timeout=30_000)
    await wait_answer_done(page, answers(page).last)
    await expect(answers(page).last.locator(".body")).to_have_text(
        f'Ticket {ticket_id} ("printer on fire") is open, priority high.'
    )


async def test_default_script_says_when_the_action_was_dead_lettered(
    page: Page, web_gateway: Gateway, script, worker: Worker, backend: TestServer
) -> None:
    """With the demo's script, an action that exhausts its retries is answered in words: it was
    dead-lettered, with the pipeline's reason, and nothing was changed."""
    await control(
        backend,
        "PUT",
        "/_control/faults",
        {"rules": [{"path": "/tickets", "status": 503, "times": 3, "retry_after": 0}]},
    )
    await script(default_rules())
    await open_signed_in(page, web_gateway)
    await send(page, "Could you open a ticket about the broken coffee machine")
    card = page.get_by_role("region", name="Action create_ticket")
    await expect(card.locator(".action-args")).to_contain_text('"title": "the broken coffee machine"')
    await expect(card).to_have_attribute("data-status", "dead_lettered", timeout=30_000)
    continuation = answers(page).last
    await wait_answer_done(page, continuation)
    await expect(continuation.locator(".body")).to_contain_text(
        "the request was dead-lettered (gave up after 3 attempts"
    )
    await expect(continuation.locator(".body")).to_contain_text("Nothing was changed")
