"""Accessibility: an axe-core audit (the npm package, pinned in package.json, injected into the page by
Playwright) finds no serious or critical violation on sign-in, an empty conversation, an answer while
it streams and an action card; and the whole flow works from the keyboard alone."""

from __future__ import annotations

from aiohttp.test_utils import TestServer
from playwright.async_api import Locator, Page, expect

from function_app.worker.service import Worker
from local_stack.processes import NODE_MODULES
from tests.fixtures.gateway import Gateway
from tests.gateway.test_actions import TICKET_SCRIPT
from tests.web.chat_page import (
    answers,
    connection,
    last_answer,
    open_signed_in,
    send,
    wait_answer_done,
    wait_mid_answer,
)

AXE = NODE_MODULES / "axe-core" / "axe.min.js"
#: axe's own rule set (WCAG 2.0-2.2 A/AA and best practices); the impacts that fail the test.
FAILING_IMPACTS = {"serious", "critical"}


async def audit(page: Page) -> list[str]:
    """Run axe on the page as it is now; one line per serious or critical violation and node."""
    if not await page.evaluate("() => typeof window.axe === 'object'"):
        # Evaluated through the DevTools protocol: the page's Content-Security-Policy stays in force.
        await page.evaluate(AXE.read_text())
    results = await page.evaluate("() => axe.run(document, {resultTypes: ['violations']})")
    return [
        f"{violation['id']} ({violation['impact']}): {violation['help']} at {node['target']}"
        for violation in results["violations"]
        if violation["impact"] in FAILING_IMPACTS
        for node in violation["nodes"]
    ]


async def test_axe_finds_no_serious_violation(
    page: Page, web_gateway: Gateway, script, worker: Worker, backend: TestServer
) -> None:
    """Sign-in, an empty conversation, a streaming answer and a finished action card each pass axe
    with no serious or critical violation."""
    assert AXE.is_file(), "scripts/bootstrap.sh installs axe-core from package.json"
    await script(
        [
            *TICKET_SCRIPT[:1],
            {"match": "", "on_tool_result": True, "reply": "Ticket opened."},
            {"match": "", "reply": " ".join(f"word{i}" for i in range(400)), "token_delay_ms": 30},
        ]
    )
    await page.goto(web_gateway.url("/"))
    await expect(page.get_by_role("button", name="Get a local dev token")).to_be_visible()
    problems = {"sign-in": await audit(page)}
    await open_signed_in(page, web_gateway)
    problems["empty conversation"] = await audit(page)
    await send(page, "tell me a long story")
    await wait_mid_answer(page, "word3", "word399")
    problems["streaming answer"] = await audit(page)
    await page.get_by_role("button", name="Stop").click()
    await expect(page.get_by_role("button", name="Stop")).to_be_hidden()
    await send(page, "please open a ticket")
    card = page.get_by_role("region", name="Action create_ticket")
    await expect(card).to_have_attribute("data-status", "succeeded", timeout=30_000)
    await wait_answer_done(page, last_answer(page))
    problems["action card"] = await audit(page)
    assert not any(problems.values()), problems


async def tab_to(page: Page, target: Locator, *, backwards: bool = False, limit: int = 40) -> None:
    """Press Tab (or Shift+Tab) until `target` has the focus: it is reachable in the tab order."""
    for _ in range(limit):
        if await target.evaluate("(node) => node === document.activeElement"):
            return
        await page.keyboard.press("Shift+Tab" if backwards else "Tab")
    raise AssertionError(f"{target} is not reachable with the Tab key")


async def test_whole_flow_by_keyboard_only(
    page: Page, web_gateway: Gateway, script, worker: Worker, backend: TestServer
) -> None:
    """Sign in, send, rate, read an action card's result, start a new conversation, reopen the
    first one and sign out: keyboard only (Tab, Enter, Space, Escape), no mouse."""
    await script(
        [
            *TICKET_SCRIPT[:1],
            {"match": "", "on_tool_result": True, "reply": "Ticket opened."},
            {"match": "long", "reply": " ".join(f"word{i}" for i in range(400)), "token_delay_ms": 30},
            {"match": "", "reply": "Keyboard answer."},
        ]
    )
    await page.goto(web_gateway.url("/"))
    # Sign-in starts in the token box; Tab reaches the local user name, Enter submits its form.
    await expect(page.get_by_label("Access token")).to_be_focused()
    user = page.get_by_label("Local user name")
    await tab_to(page, user)
    await page.keyboard.press("Control+A")
    await page.keyboard.type("kim")
    await page.keyboard.press("Enter")
    await expect(page.locator("#who")).to_have_text("Signed in as kim")
    await expect(connection(page)).to_have_attribute("data-state", "connected")
    box = page.get_by_label("Message", exact=True)
    await expect(box).to_be_focused()

    await page.keyboard.type("first question")
    await page.keyboard.press("Enter")
    await wait_answer_done(page, last_answer(page))
    await expect(last_answer(page).locator(".body")).to_have_text("Keyboard answer.")
    helpful = last_answer(page).get_by_role("button", name="Helpful", exact=True)
    await tab_to(page, helpful, backwards=True)
    await page.keyboard.press("Space")
    await expect(helpful).to_have_attribute("aria-pressed", "true")

    # A long answer stopped with Escape.
    await tab_to(page, box)
    await page.keyboard.type("a long one")
    await page.keyboard.press("Enter")
    await wait_mid_answer(page, "word3", "word399")
    await page.keyboard.press("Escape")
    await expect(last_answer(page)).to_have_attribute("data-finish", "cancelled")
    await expect(box).to_be_focused()

    # An action: the card's result box scrolls, so it takes the focus to be scrolled by keys.
    await page.keyboard.type("please open a ticket")
    await page.keyboard.press("Enter")
    card = page.get_by_role("region", name="Action create_ticket")
    await expect(card).to_have_attribute("data-status", "succeeded", timeout=30_000)
    await wait_answer_done(page, last_answer(page))
    result = card.locator(".action-result")
    await tab_to(page, result, backwards=True)
    await expect(result).to_be_focused()

    # A new conversation, then back to the first one through the list.
    await tab_to(page, page.get_by_role("button", name="New conversation"), backwards=True)
    await page.keyboard.press("Enter")
    await expect(answers(page)).to_have_count(0)
    await expect(box).to_be_focused()
    await page.keyboard.type("second question")
    await page.keyboard.press("Enter")
    await wait_answer_done(page, last_answer(page))
    listed = page.locator("#conversation-list button")
    await expect(listed).to_have_count(2)
    await tab_to(page, listed.nth(1), backwards=True)
    await page.keyboard.press("Enter")
    await expect(page.locator("article.message.user").first).to_have_text("first question")
    await expect(listed.nth(1)).to_have_attribute("aria-current", "true")

    await tab_to(page, page.get_by_role("button", name="Sign out"), backwards=True)
    await page.keyboard.press("Enter")
    await expect(page.get_by_label("Access token")).to_be_focused()
    await expect(page.locator("#workspace")).to_be_hidden()
