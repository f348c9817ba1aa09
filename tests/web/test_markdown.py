"""The client's markdown renderer, run in Chromium: markup for what it supports, never for anything else."""

from __future__ import annotations

from playwright.async_api import Page

from tests.fixtures.gateway import Gateway

CASES = [
    ("**b** and *i* and `x < y`", "<p><strong>b</strong> and <em>i</em> and <code>x &lt; y</code></p>"),
    (
        "```js\nif (a < b) { run('<b>'); }\n```",
        '<pre tabindex="0"><code class="language-js">if (a &lt; b) { run(&#39;&lt;b&gt;&#39;); }</code></pre>',
    ),
    ("```\nstill streaming", '<pre tabindex="0"><code>still streaming</code></pre>'),
    ("- a\n- b\n\n1. c", "<ul><li>a</li><li>b</li></ul><ol><li>c</li></ol>"),
    (
        "[docs](https://example.org/a?b=1&c=2)",
        '<p><a href="https://example.org/a?b=1&amp;c=2" rel="noopener noreferrer" target="_blank">docs</a></p>',
    ),
    ("[x](javascript:alert(1))", "<p>[x](javascript:alert(1))</p>"),
    (
        '[x](https://a"onmouseover="alert(1))',
        '<p><a href="https://a&quot;onmouseover=&quot;alert(1" rel="noopener noreferrer" target="_blank">x</a>)</p>',
    ),
    ("<script>alert(1)</script>", "<p>&lt;script&gt;alert(1)&lt;/script&gt;</p>"),
    ("`**not bold**`", "<p><code>**not bold**</code></p>"),
    ("# Title", "<h3>Title</h3>"),
]


async def test_markdown_renders_safely(page: Page, gateway: Gateway) -> None:
    """Each input renders to exactly its HTML (escaped first, then the supported markup); one page for all."""
    await page.goto(gateway.url("/"))
    rendered = await page.evaluate(
        "async (sources) => { const m = await import('/web/js/markdown.js'); return sources.map(m.renderMarkdown); }",
        [source for source, _ in CASES],
    )
    for (source, html), got in zip(CASES, rendered, strict=True):
        assert got == html, f"{source!r} rendered as {got!r}"
