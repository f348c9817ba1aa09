"""The chat client in headless Chromium: sign-in, streaming markdown, feedback, history, phone size."""

from __future__ import annotations

import json

import redis.asyncio as aioredis
from playwright.async_api import Page, expect

from observability.online import OnlineMetrics
from streaming_gateway.state.conversation_store import title_from
from tests.fixtures.gateway import Gateway, make_token
from tests.web.chat_page import (
    answers,
    connection,
    last_answer,
    open_signed_in,
    send,
    slow_reply_script,
    wait_answer_done,
    wait_mid_answer,
)

REPLY = "Here is **bold** text and `inline code`:\n\n```python\nprint('hi')\n```\n\n- one\n- two"


async def test_dev_token_sign_in_streams_markdown_answer(page: Page, web_gateway: Gateway, script) -> None:
    """Signing in with the dev token button, a sent message's answer appears token by token and
    ends rendered as markdown (bold, inline code, a code block, a list)."""
    await script(slow_reply_script(REPLY, token_delay_ms=30))
    await open_signed_in(page, web_gateway)
    await expect(page.locator("#who")).to_have_text("Signed in as alice")
    await send(page, "show me markdown")
    await expect(page.locator("article.message.user")).to_have_text("show me markdown")
    answer = last_answer(page)
    # Mid-stream: some of the text is there, the answer is marked busy, Stop is offered.
    await wait_mid_answer(page, "Here is", "two")
    assert await answer.get_attribute("aria-busy") == "true"
    assert await page.get_by_role("button", name="Stop").is_visible()
    await wait_answer_done(page, answer)
    await expect(answer.locator("strong")).to_have_text("bold")
    await expect(answer.locator("p code")).to_have_text("inline code")
    await expect(answer.locator("pre code.language-python")).to_have_text("print('hi')")
    await expect(answer.locator("li")).to_have_text(["one", "two"])
    await expect(answer).not_to_have_attribute("aria-busy", "true")
    await expect(page.get_by_label("Message", exact=True)).to_be_focused()


async def test_feedback_button_records_rating(
    page: Page, web_gateway: Gateway, script, aredis: aioredis.Redis
) -> None:
    """The thumbs-up on a finished answer posts a rating for that message; the button shows as pressed."""
    await script(slow_reply_script("A short answer.", token_delay_ms=0))
    await open_signed_in(page, web_gateway)
    await send(page, "hello")
    answer = last_answer(page)
    await wait_answer_done(page, answer)
    helpful = answer.get_by_role("button", name="Helpful", exact=True)
    await helpful.click()
    await expect(answer.get_by_role("status")).to_have_text("Thanks for the feedback.")
    await expect(helpful).to_have_attribute("aria-pressed", "true")
    conversation_id = await page.evaluate("window.agentChat.conversationId")
    async with web_gateway.request("GET", f"/v1/conversations/{conversation_id}") as response:
        stored = await response.json()
    version = stored["messages"][-1]["agent_config_version"]
    recorded = await OnlineMetrics(aredis).get(version)
    assert recorded.feedback_count == 1 and recorded.feedback_mean == 5


async def test_model_output_cannot_inject_markup(page: Page, web_gateway: Gateway, script) -> None:
    """HTML in an answer is shown as text: no element, no script, no handler attribute reaches the page."""
    hostile = (
        '<img src=x onerror="window.pwned=1"><script>window.pwned=2</script> [x](javascript:alert(1)) done'
    )
    await script(slow_reply_script(hostile, token_delay_ms=0))
    await open_signed_in(page, web_gateway)
    await send(page, "be hostile")
    answer = last_answer(page)
    await wait_answer_done(page, answer)
    await expect(answer.locator(".body")).to_contain_text("<img src=x onerror=")
    assert await answer.locator("img, script, a").count() == 0
    assert await page.evaluate("window.pwned") is None


async def test_conversation_list_reopens_history(page: Page, web_gateway: Gateway, script) -> None:
    """Conversations are listed for the user; a new one starts empty and an old one reopens with its messages."""
    await script([{"match": "first", "reply": "Answer one."}, {"match": "", "reply": "Answer two."}])
    await open_signed_in(page, web_gateway)
    await send(page, "first question")
    await wait_answer_done(page, last_answer(page))
    await page.get_by_role("button", name="New conversation").click()
    await expect(answers(page)).to_have_count(0)
    await send(page, "second question")
    await wait_answer_done(page, last_answer(page))
    conversations = page.locator("#conversation-list button")
    await expect(conversations).to_have_count(2)
    await conversations.nth(1).click()  # newest first: the second entry is the first conversation
    await expect(page.locator("article.message.user")).to_have_text(["first question"])
    await expect(last_answer(page).locator(".body")).to_have_text("Answer one.")
    await expect(conversations.nth(1)).to_have_attribute("aria-current", "true")


async def test_conversations_are_titled_after_their_first_message(
    page: Page, web_gateway: Gateway, script
) -> None:
    """A conversation is created by its first message, and the gateway titles it after that message (on
    one line, a long one cut at a word); the list shows the titles, after a reload too. A new
    conversation with no message yet is not created."""
    await script(slow_reply_script("Noted.", token_delay_ms=0))
    await open_signed_in(page, web_gateway)
    await send(page, "Why is the printer\non fire?")
    await wait_answer_done(page, last_answer(page))
    long = "Please summarise " + " ".join(f"chapter{i}" for i in range(30))
    await page.get_by_role("button", name="New conversation").click()
    await page.get_by_role("button", name="New conversation").click()  # twice: still nothing created
    await send(page, long)
    await wait_answer_done(page, last_answer(page))
    conversations = page.locator("#conversation-list button")
    await expect(conversations).to_have_count(2)
    titles = [
        title_from([{"role": "user", "content": text}]) for text in ["Why is the printer\non fire?", long]
    ]
    assert titles[0] == "Why is the printer on fire?"
    assert titles[1].endswith("\u2026") and titles[1].startswith("Please summarise chapter0")
    await expect(conversations).to_have_text([titles[1], titles[0]])
    await page.reload()
    await expect(page.locator("#conversation-list button")).to_have_text([titles[1], titles[0]])
    async with web_gateway.request("GET", "/v1/conversations") as response:
        listed = (await response.json())["data"]
    assert [c["title"] for c in listed] == [titles[1], titles[0]]


async def test_other_users_conversations_are_not_listed(page: Page, web_gateway: Gateway, script) -> None:
    """The list shows only the signed-in user's conversations."""
    await web_gateway.create_conversation("bob")
    await open_signed_in(page, web_gateway, user="carol")
    await expect(page.locator("#conversation-list button")).to_have_count(0)
    await expect(page.locator("#who")).to_have_text("Signed in as carol")


async def test_pasted_token_signs_in_and_bad_token_is_refused(page: Page, web_gateway: Gateway) -> None:
    """A pasted valid token signs in; a forged one gets the gateway's reason and stays on the sign-in form."""
    await page.goto(web_gateway.url("/"))
    await page.get_by_label("Access token").fill(make_token("dave", secret="x" * 40))
    await page.get_by_role("button", name="Sign in with token").click()
    await expect(page.get_by_role("alert").first).to_contain_text("signature")
    await page.get_by_label("Access token").fill(make_token("dave"))
    await page.get_by_role("button", name="Sign in with token").click()
    await expect(page.locator("#who")).to_have_text("Signed in as dave")
    await expect(connection(page)).to_have_attribute("data-state", "connected")


async def test_phone_layout_and_keyboard_use(phone_page: Page, web_gateway: Gateway, script) -> None:
    """On a phone-sized screen the list is a drawer behind a labelled menu button; chat works by keyboard."""
    page = phone_page
    await script(slow_reply_script("Small screen answer.", token_delay_ms=0))
    await open_signed_in(page, web_gateway)
    menu = page.get_by_role("button", name="Show conversations")
    await expect(menu).to_be_visible()
    await expect(page.get_by_role("button", name="New conversation")).to_be_hidden()
    await menu.click()
    await expect(menu).to_have_attribute("aria-expanded", "true")
    await page.get_by_role("button", name="New conversation").click()
    await expect(page.get_by_role("button", name="New conversation")).to_be_hidden()
    box = page.get_by_label("Message", exact=True)
    await expect(box).to_be_focused()
    await page.keyboard.type("typed on a phone")
    await page.keyboard.press("Enter")
    answer = last_answer(page)
    await wait_answer_done(page, answer)
    await expect(answer.locator(".body")).to_have_text("Small screen answer.")
    await expect(box).to_be_in_viewport()
    await expect(page.get_by_role("button", name="Send")).to_be_in_viewport()
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the page scrolls sideways on a phone ({width}px wide)"
    assert (
        json.loads(await page.evaluate("JSON.stringify(document.body.classList.contains('sidebar-open'))"))
        is False
    )


async def test_expired_stored_token_returns_to_sign_in(page: Page, web_gateway: Gateway) -> None:
    """A token kept from an earlier visit that has since expired leads back to sign-in with the reason."""
    expired = make_token("frank", ttl=-3600)
    await page.add_init_script(f"sessionStorage.setItem('agentChat.token', {json.dumps(expired)})")
    await page.goto(web_gateway.url("/"))
    await expect(page.locator("#signin-error")).to_contain_text("Please sign in again: token expired")
    await expect(page.get_by_role("button", name="Sign in with token")).to_be_visible()
    await expect(page.locator("#workspace")).to_be_hidden()
