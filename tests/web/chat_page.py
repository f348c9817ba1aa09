"""The chat page as the tests drive it: sign in, send, read answers, as a user would (roles and labels)."""

from __future__ import annotations

from playwright.async_api import Locator, Page, Request, expect

from tests.fixtures.gateway import Gateway


def record_failed_requests(page: Page) -> list[str]:
    """Every request of the page that fails from now on: an HTTP status of 400 or more, or no answer
    at all (blocked, refused). The list fills in as the page runs."""
    failed: list[str] = []

    async def on_finished(req: Request) -> None:
        response = await req.response()
        if response is not None and response.status >= 400:
            failed.append(f"{response.status} {req.method} {req.url}")

    page.on("requestfinished", on_finished)
    page.on("requestfailed", lambda req: failed.append(f"failed {req.method} {req.url}: {req.failure}"))
    return failed


def slow_reply_script(reply: str, token_delay_ms: float = 40) -> list[dict[str, object]]:
    return [{"match": "", "reply": reply, "token_delay_ms": token_delay_ms}]


async def open_signed_in(page: Page, gateway: Gateway, *, query: str = "", user: str = "alice") -> None:
    """Open the client and sign in with the local dev token button; wait for the live connection."""
    await page.goto(gateway.url(f"/{query}"))
    await page.get_by_label("Local user name").fill(user)
    await page.get_by_role("button", name="Get a local dev token").click()
    await expect(page.get_by_role("button", name="Sign out")).to_be_visible()
    await expect(connection(page)).to_have_attribute("data-state", "connected")


def connection(page: Page) -> Locator:
    return page.locator("#connection")


async def send(page: Page, text: str) -> None:
    box = page.get_by_label("Message", exact=True)
    await box.fill(text)
    await box.press("Enter")


def answers(page: Page) -> Locator:
    return page.locator("article.message.assistant")


def last_answer(page: Page) -> Locator:
    return answers(page).last


async def wait_answer_done(page: Page, answer: Locator) -> None:
    await expect(answer).to_have_attribute("data-finish", "stop")
    await expect(page.get_by_role("button", name="Stop")).to_be_hidden()


async def wait_mid_answer(page: Page, present: str, absent: str) -> None:
    """Wait (checking every animation frame) until the last answer shows `present` but not yet `absent`:
    a moment in the middle of the stream, however fast or slow the machine is."""
    await page.wait_for_function(
        """([present, absent]) => {
          const answers = document.querySelectorAll('article.message.assistant .body');
          const text = answers.length ? answers[answers.length - 1].textContent : '';
          return text.includes(present) && !text.includes(absent);
        }""",
        arg=[present, absent],
        polling="raf",
    )
