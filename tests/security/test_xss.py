"""The XSS corpus, in Chromium: hostile text from every source the page shows (the model's answer,
a tool call's name and arguments, an error message, a conversation title, the user's own message)
renders as text. No script runs, no handler attribute, script-capable element or script URL
reaches the DOM, and the page's CSP reports no violation (nothing even tried)."""

from __future__ import annotations

from playwright.async_api import Dialog, Page, expect

from tests.fixtures.gateway import StartGateway
from tests.web.chat_page import last_answer, open_signed_in, send, wait_answer_done

PAYLOADS = [
    "<script>window.__xss = 1</script>",
    '<img src=x onerror="window.__xss = 2">',
    "<svg/onload=window.__xss=3>",
    '<iframe srcdoc="<script>parent.__xss=4</script>"></iframe>',
    "[click](javascript:window.__xss=5)",
    "[click](JaVaScRiPt:window.__xss=6)",
    "[click](data:text/html,<script>alert(7)</script>)",
    '[x](https://a"onmouseover="window.__xss=8)',
    '![x](x"onerror="window.__xss=9)',
    '<a href="javascript:window.__xss=10">link</a>',
    "```\n</code></pre><img src=x onerror=window.__xss=11>\n```",
    "`<img src=x onerror=window.__xss=12>`",
    "<details open ontoggle=window.__xss=13>",
    "<math><mtext><table><mglyph><style><img src=x onerror=window.__xss=14>",
    "**<b onmouseover=window.__xss=15>bold</b>**",
    "&lt;img src=x onerror=window.__xss=16&gt;",
]
HOSTILE = "\n\n".join(PAYLOADS)

#: Run in the page: anything in the document that could run script, or did.
AUDIT = """() => {
  const bad = [];
  for (const node of document.querySelectorAll('body *')) {
    const tag = node.tagName.toLowerCase();
    if (['script', 'iframe', 'object', 'embed', 'svg', 'math', 'details', 'img', 'style'].includes(tag)
        && node.closest('#messages, #conversations')) bad.push(tag);
    for (const attr of node.attributes) {
      const value = attr.value.trim().toLowerCase();
      if (attr.name.startsWith('on')) bad.push(`${tag}[${attr.name}]`);
      if (['href', 'src', 'action', 'formaction', 'srcdoc'].includes(attr.name)
          && (value.startsWith('javascript:') || value.startsWith('data:text'))) bad.push(`${tag}[${attr.name}=${value}]`);
    }
  }
  return {bad, xss: window.__xss || null, violations: window.__violations || []};
}"""

WATCH_CSP = """() => {
  window.__violations = [];
  document.addEventListener('securitypolicyviolation', (e) => window.__violations.push(e.violatedDirective));
}"""


async def audit(page: Page) -> None:
    found = await page.evaluate(AUDIT)
    assert found == {"bad": [], "xss": None, "violations": []}, found


async def test_hostile_text_from_every_source_renders_inert(
    start_gateway: StartGateway, script, page: Page
) -> None:
    """The corpus as the model's answer, tool call and error, as the user's message and as a
    conversation title: all shown as text, nothing executed."""
    gateway = await start_gateway(GATEWAY_DEV_TOKEN_ENDPOINT="true", GATEWAY_HEARTBEAT_SECONDS="5")
    await script(
        [
            {
                "match": "tool",
                "reply": "calling",
                "tool_calls": [{"name": "create_ticket", "arguments": {"title": HOSTILE}}],
            },
            {"match": "fail", "error": {"status": 500, "message": PAYLOADS[1] + PAYLOADS[4]}},
            {"match": "", "on_tool_result": True, "reply": HOSTILE},
            {"match": "", "reply": HOSTILE},
        ]
    )
    async with gateway.request("POST", "/v1/conversations", json={"title": PAYLOADS[1]}) as response:
        assert response.status == 201
    dialogs: list[str] = []

    async def dismiss(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        await dialog.dismiss()

    page.on("dialog", dismiss)
    await page.add_init_script(f"({WATCH_CSP})()")
    await open_signed_in(page, gateway)
    await expect(page.get_by_text(PAYLOADS[1], exact=True).first).to_be_visible()  # the title, as text
    await send(page, HOSTILE)
    await wait_answer_done(page, last_answer(page))
    await expect(last_answer(page)).to_contain_text("window.__xss = 2")
    await audit(page)
    await send(page, "tool please")
    await expect(page.locator(".action-args").last).to_contain_text("onerror")
    await send(page, "now fail")
    await expect(page.get_by_text("onerror").last).to_be_visible()
    await audit(page)
    await page.reload()  # the stored history renders through the same paths
    await expect(last_answer(page)).to_be_visible()
    await audit(page)
    assert dialogs == []
