"""The page's Markdown renderer, run in Chromium: formatting works, nothing unsafe gets out."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from tests.browser.chatpage import ChatPage

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]

OpenPage = Callable[..., Awaitable[ChatPage]]

RENDER = """async (inputs) => {
  const { renderMarkdown } = await import('/static/js/markdown.js');
  return inputs.map((text) => {
    const box = document.createElement('div');
    box.append(renderMarkdown(text));
    const elements = [...box.querySelectorAll('*')].map((el) => ({
      tag: el.tagName.toLowerCase(),
      attrs: Object.fromEntries([...el.attributes].map((a) => [a.name, a.value])),
    }));
    return { html: box.innerHTML, text: box.textContent, elements };
  });
}"""

ALLOWED_TAGS = {
    "p", "br", "strong", "em", "del", "code", "pre", "a", "ul", "ol", "li", "h3", "h4",
    "h5", "h6", "blockquote", "hr", "table", "thead", "tbody", "tr", "th", "td", "div", "span",
}  # fmt: skip
ALLOWED_ATTRS = {"href", "target", "rel", "start", "data-lang", "tabindex", "class", "scope"}

VECTORS = [
    "<script>window.__xss=1</script>",
    '<img src=x onerror="window.__xss=1">',
    "<svg onload=window.__xss=1>",
    "[a](javascript:window.__xss=1)",
    "[a](JaVaScRiPt:window.__xss=1)",
    "[a](  javascript:window.__xss=1  )",
    "[a](java\tscript:window.__xss=1)",
    "[a](&#106;avascript:window.__xss=1)",
    "[a](data:text/html,<script>window.__xss=1</script>)",
    "[a](vbscript:msgbox(1))",
    "[a](//evil.example/x)",
    '[a](https://ok.example/ "title" onmouseover="window.__xss=1")',
    "![x](javascript:window.__xss=1)",
    "![x](https://tracker.example/pixel.png)",
    '[<img src=x onerror="window.__xss=1">](https://ok.example/)',
    '```"><script>window.__xss=1</script>\ncode\n```',
    # highlighted code: highlight.js output is copied as text and hljs spans only
    '```html\n<img src=x onerror="window.__xss=1"><script>window.__xss=1</script>\n```',
    "```python\nx = '</span><img src=x onerror=window.__xss=1>'  # <b>\n```",
    '| <b onclick="window.__xss=1">h</b> |\n|---|\n| <i>c</i> |',
    "**<iframe src=javascript:window.__xss=1>**",
    "https://ok.example/a?b=<script>",
    "<a href='javascript:window.__xss=1'>x</a>",
    "`<script>window.__xss=1</script>`",
    "> <style>body{display:none}</style>",
    "- <object data=x></object>\n  - <embed src=x>",
]


async def render(chat: ChatPage, inputs: list[str]) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = await chat.page.evaluate(RENDER, inputs)
    return result


async def test_untrusted_input_never_becomes_markup(open_page: OpenPage) -> None:
    chat = await open_page()
    for source, out in zip(VECTORS, await render(chat, VECTORS), strict=True):
        for element in out["elements"]:
            assert element["tag"] in ALLOWED_TAGS, (source, out["html"])
            assert set(element["attrs"]) <= ALLOWED_ATTRS, (source, out["html"])
            href = element["attrs"].get("href")
            if href is not None:  # images become plain links: nothing loads by itself
                assert href.startswith(("https://ok.example/", "https://tracker.example/"))
    await chat.page.wait_for_timeout(300)
    assert await chat.page.evaluate("typeof window.__xss") == "undefined"
    assert chat.errors == []


async def test_common_markdown_renders(open_page: OpenPage) -> None:
    chat = await open_page()
    cases = {
        "**bold** and *it* and ~~gone~~ and `x<y`": (
            "<p><strong>bold</strong> and <em>it</em> and <del>gone</del> and "
            "<code>x&lt;y</code></p>"
        ),
        "snake_case_name stays": "<p>snake_case_name stays</p>",
        "# Title": "<h3>Title</h3>",
        "line one\nline two": "<p>line one<br>line two</p>",
        "- a\n- b\n  - c": "<ul><li>a</li><li>b<ul><li>c</li></ul></li></ul>",
        "3. three\n4. four": '<ol start="3"><li>three</li><li>four</li></ol>',
        "see https://ok.example/x.": (
            '<p>see <a href="https://ok.example/x" target="_blank" '
            'rel="noopener noreferrer nofollow ugc">https://ok.example/x</a>.</p>'
        ),
        "\\*not italic\\*": "<p>*not italic*</p>",
        "```js\nlet a = 1;\n```": (
            '<pre tabindex="0"><code data-lang="js" class="hljs">'
            '<span class="hljs-keyword">let</span> a = <span class="hljs-number">1</span>;'
            "</code></pre>"
        ),
        "```nosuchlang\nlet a = 1;\n```": (
            '<pre tabindex="0"><code data-lang="nosuchlang">let a = 1;</code></pre>'
        ),
        "```\nstill streaming": '<pre tabindex="0"><code>still streaming</code></pre>',
        "---": "<hr>",
    }
    results = await render(chat, list(cases))
    for (source, expected), out in zip(cases.items(), results, strict=True):
        assert out["html"] == expected, source
