"""Action cards in the browser, fed by the real pipeline: the gateway queues the model's tool call,
the local worker (the function app's orchestrator and activities) calls the sample tickets backend
and records each status in Cosmos DB, and the updates stream back to the card."""

from __future__ import annotations

from aiohttp.test_utils import TestServer
from playwright.async_api import Page, expect

from function_app.worker.service import Worker
from tests.function_app.test_pipeline_e2e import control
from tests.gateway.conftest import Gateway
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
