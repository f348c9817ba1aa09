"""The page fits every screen from 320 px up, portrait and landscape: nothing makes the document
wider than the viewport (long words, long URLs, code blocks and big action results scroll inside
their own box), and loading the page makes no request that fails."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer
from playwright.async_api import Browser, Page, expect

from function_app.worker.service import Worker
from tests.fixtures.browser import web_page
from tests.fixtures.gateway import Gateway
from tests.web.chat_page import (
    answers,
    connection,
    open_signed_in,
    record_failed_requests,
    send,
    wait_answer_done,
)

#: Phones and a tablet, each in portrait and landscape (width x height).
SCREENS = [(320, 568), (568, 320), (390, 844), (844, 390), (768, 1024), (1024, 768)]

LONG_WORD = "Supercalifragilisticexpialidocious" * 6
LONG_URL = "https://example.com/" + "/".join(f"segment-{i}" for i in range(40)) + "?query=" + "x" * 120
LONG_CODE_LINE = "const value = compute(" + ", ".join(f"argument{i}" for i in range(40)) + ");"
REPLY = (
    f"A long word: {LONG_WORD}. A long link: {LONG_URL} and [the same link]({LONG_URL}).\n\n"
    f"```js\n{LONG_CODE_LINE}\n```\n\nInline code too: `{'z' * 150}`."
)
#: A ticket whose title and description have no space to break at: the card's arguments and the
#: backend's result (which echoes them) are both wide.
WIDE_TICKET = {"title": "T" * 200, "priority": "high", "description": "d" * 3000}
WIDE_SCRIPT = [
    {
        "match": "wide ticket",
        "reply": "Opening it.",
        "tool_calls": [{"name": "create_ticket", "arguments": WIDE_TICKET}],
    },
    {"match": "", "on_tool_result": True, "reply": "Opened."},
    {"match": "", "reply": REPLY},
]

#: The boxes that may scroll sideways: code blocks, an action's arguments and result, the composer.
SCROLLING_BOXES = "pre, .action-args, .action-result, textarea"

#: Elements whose right edge lies beyond the viewport (named in the failure message), and scroll
#: containers other than SCROLLING_BOXES whose content is wider than they are: the message list
#: scrolling sideways cuts off the start of every line just as a wide page does.
OVERFLOW = """(allowed) => {
  const width = document.documentElement.clientWidth;
  const name = (node) => `${node.tagName.toLowerCase()}${node.id ? '#' + node.id : ''}.${[...node.classList].join('.')}`;
  const wide = [];
  const sideways = [];
  for (const node of document.querySelectorAll('body *')) {
    const box = node.getBoundingClientRect();
    if (box.width && box.right > width + 0.5) {
      wide.push(`${name(node)} right=${Math.round(box.right)}`);
    }
    const overflowX = getComputedStyle(node).overflowX;
    if ((overflowX === 'auto' || overflowX === 'scroll') && node.scrollWidth > node.clientWidth + 1
        && !node.matches(allowed)) {
      sideways.push(`${name(node)} content ${node.scrollWidth}px in ${node.clientWidth}px`);
    }
  }
  return {scrollWidth: document.documentElement.scrollWidth, bodyScrollWidth: document.body.scrollWidth,
          viewport: window.innerWidth, wide: wide.slice(0, 12), sideways: sideways.slice(0, 12)};
}"""


async def measure_all(page: Page, output_dir: Path, label: str) -> list[str]:
    """Resize through every screen; for each where the page or a part of it other than the wide boxes
    scrolls sideways, a screenshot and a line of detail."""
    problems = []
    for width, height in SCREENS:
        await page.set_viewport_size({"width": width, "height": height})
        await page.evaluate(
            "() => new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)))"
        )
        found = await page.evaluate(OVERFLOW, SCROLLING_BOXES)
        if max(found["scrollWidth"], found["bodyScrollWidth"]) > found["viewport"] or found["sideways"]:
            shot = output_dir / f"web-overflow-{label}-{width}x{height}.png"
            await page.screenshot(path=str(shot), full_page=True)
            problems.append(
                f"{label} at {width}x{height}: document {found['scrollWidth']}px wide; "
                f"beyond the edge: {found['wide']}; scrolling sideways: {found['sideways']} "
                f"(screenshot {shot.name})"
            )
    return problems


@pytest.mark.parametrize("mobile", [False, True], ids=["desktop-browser", "mobile-emulation"])
async def test_no_horizontal_overflow_at_any_width(
    browser: Browser,
    request: pytest.FixtureRequest,
    output_dir: Path,
    web_gateway: Gateway,
    script,
    worker: Worker,
    backend: TestServer,
    mobile: bool,
) -> None:
    """Sign-in, an empty conversation, questions and an answer with a long word, a long URL and a wide
    code block, a long title in the list, and an action card with wide arguments and a wide result: at 320, 390 and 768 px wide, portrait
    and landscape, the document is never wider than the viewport; the wide parts scroll in their box."""
    await script(WIDE_SCRIPT)
    options = {"is_mobile": True, "has_touch": True} if mobile else {}
    async for page in web_page(
        browser, request, output_dir, viewport={"width": 390, "height": 844}, **options
    ):
        label = "mobile" if mobile else "desktop"
        await page.goto(web_gateway.url("/"))
        await expect(page.get_by_role("button", name="Get a local dev token")).to_be_visible()
        problems = await measure_all(page, output_dir, f"{label}-signin")
        await page.set_viewport_size({"width": 390, "height": 844})
        await open_signed_in(page, web_gateway)
        problems += await measure_all(page, output_dir, f"{label}-empty")
        await page.set_viewport_size({"width": 390, "height": 844})
        # The user's own words are long too: the first one titles the conversation in the list.
        await send(page, f"please open a wide ticket about {LONG_URL}")
        card = page.get_by_role("region", name="Action create_ticket")
        await expect(card).to_have_attribute("data-status", "succeeded", timeout=30_000)
        await wait_answer_done(page, answers(page).last)
        await send(page, f"now the long text, {LONG_WORD}")
        await wait_answer_done(page, answers(page).last)
        problems += await measure_all(page, output_dir, f"{label}-chat")
        assert not problems, "\n".join(problems)
        # The wide parts keep their content whole and scroll sideways inside their own box.
        for box in [
            card.locator(".action-args"),
            card.locator(".action-result"),
            answers(page).last.locator("pre"),
        ]:
            assert await box.evaluate("(node) => node.scrollWidth > node.clientWidth"), await box.evaluate(
                "n => n.className"
            )
            assert await box.evaluate("(node) => getComputedStyle(node).overflowX") == "auto"


#: The request line and status of one line of aiohttp's access log.
ACCESS_LINE = re.compile(r'"(?P<method>[A-Z]+) (?P<path>\S+) HTTP/[\d.]+" (?P<status>\d{3})')


async def test_page_load_makes_no_failed_request(
    page: Page, web_gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    """Opening the page, signing in and reloading: every request the browser makes succeeds, as the
    page sees them and as the gateway's access log does (the browser's own favicon request is not
    shown to the page: it only appears there)."""
    caplog.set_level(logging.INFO, logger="aiohttp.access")
    failed = record_failed_requests(page)
    await open_signed_in(page, web_gateway)
    await page.reload()
    await expect(page.get_by_role("button", name="Sign out")).to_be_visible()
    await expect(connection(page)).to_have_attribute("data-state", "connected")
    await page.wait_for_load_state("networkidle")
    served = [
        match
        for record in caplog.records
        if record.name == "aiohttp.access"
        if (match := ACCESS_LINE.search(record.getMessage()))
    ]
    assert any(m["path"] == "/web/favicon.svg" for m in served), "the page's icon was not requested"
    failed += [
        f"{m['status']} {m['method']} {m['path']} (gateway access log)"
        for m in served
        if int(m["status"]) >= 400
    ]
    assert failed == [], failed
