"""What every chat page has, in headless Chromium against the real server: limits said
plainly, refused messages left out, chats and rooms kept across a reload, new chat, copy,
regenerate, edit, code colours and contrast."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser

from tests.browser.chatpage import ChatPage
from tests.browser.conftest import PASSWORD
from tests.harness import base_settings, run_server
from tests.upstream_double import UpstreamDouble
from tests.upstream_scenarios import NORMAL_TEXT, REASONING_TEXT, SLOW_TEXT

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]

OpenPage = Callable[..., Awaitable[ChatPage]]


def sent_messages(upstream: UpstreamDouble) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = upstream.requests[-1].body["messages"]
    return messages


async def finished_answer(chat: ChatPage, after: int = 0) -> str:
    answer = await chat.latest_answer(after=after)
    await chat.wait_answer_state(answer, "done")
    return await chat.answer_text(answer).inner_text()


async def test_an_overlong_message_is_refused_with_a_reason_then_a_short_one_is_answered(
    open_page: OpenPage, upstream: UpstreamDouble
) -> None:
    chat = await open_page()
    await chat.guest()
    await chat.choose_model("double/echo")
    box = chat.page.get_by_label("Message", exact=True)
    await box.fill("x" * 120_000)
    await chat.page.locator("#char-count.over", has_text="120,000 / 100,000").wait_for()
    await box.press("Enter")
    reason = chat.page.locator("#composer-error")
    await reason.get_by_text("Not sent: this message has 120,000 characters").wait_for()
    assert "at most 100,000" in await reason.inner_text()
    assert len(await box.input_value()) == 120_000  # kept whole, never cut
    assert await chat.answers().count() == 0
    assert upstream.requests == []

    await box.fill("short")
    assert await reason.inner_text() == ""
    await box.press("Enter")
    assert await finished_answer(chat) == "echo: short"
    assert sent_messages(upstream) == [{"role": "user", "content": "short"}]
    assert chat.errors == []


async def test_a_message_the_server_refuses_is_marked_and_never_sent_again(
    browser: Browser, upstream: UpstreamDouble, users_file: Path
) -> None:
    settings = base_settings(
        upstream.base_url, users_file=users_file, allow_anonymous=True, max_payload_bytes=20_000
    )
    async with run_server(settings) as srv:
        chat = ChatPage(await (await browser.new_context()).new_page())
        await chat.open(srv.url + "/")
        await chat.guest()
        await chat.choose_model("double/echo")
        await chat.send("y" * 30_000)  # under max_message_chars, over the payload limit
        refused = await chat.latest_answer()
        await chat.wait_answer_state(refused, "error")
        assert await refused.locator(".error-code").inner_text() == "payload_too_large"
        bubble = chat.page.locator("li.msg-user[data-refused=true]")
        await bubble.get_by_text("Not sent").wait_for()

        await chat.send("short")
        assert await finished_answer(chat, after=1) == "echo: short"
        assert sent_messages(upstream) == [{"role": "user", "content": "short"}]
        await chat.page.reload()
        await chat.wait_connected()
        await chat.page.locator("li.msg-user[data-refused=true]").wait_for()
        await chat.send("again")
        assert await finished_answer(chat, after=1) == "echo: again"
        assert [m["content"][:5] for m in sent_messages(upstream)] == ["short", "echo:", "again"]
        assert chat.errors == []


async def test_a_reload_brings_back_chats_and_rooms_and_resumes_the_answer(
    open_page: OpenPage,
) -> None:
    chat = await open_page()
    await chat.login("alice", PASSWORD)
    await chat.choose_model("double/normal")
    await chat.send("First question")
    assert await finished_answer(chat) == NORMAL_TEXT
    await chat.join("lobby")
    await chat.page.get_by_role("button", name="First question").click()
    await chat.choose_model("double/slow")
    await chat.send("A long one")
    answer = await chat.latest_answer(after=1)
    await chat.wait_text(answer, 20)

    await chat.page.reload()
    await chat.wait_connected()
    page = chat.page
    await page.locator("li.msg-user", has_text="First question").wait_for()
    await page.locator("li.msg-user", has_text="A long one").wait_for()
    assert await chat.answers().count() == 2
    resumed = chat.answers().last
    await chat.wait_answer_state(resumed, "done", timeout=40)
    assert await chat.answer_text(resumed).inner_text() == SLOW_TEXT  # from the start, once
    assert await chat.answer_text(chat.answers().first).inner_text() == NORMAL_TEXT

    await page.get_by_role("button", name="lobby").click()
    await page.get_by_role("heading", name="# lobby").wait_for()
    await chat.members().filter(has_text="Alice").wait_for()  # joined again
    await chat.choose_model("double/normal")
    await chat.send("Hello room")
    assert await finished_answer(chat) == NORMAL_TEXT
    assert chat.errors == []


async def test_new_chat_sends_only_the_new_message(
    open_page: OpenPage, upstream: UpstreamDouble
) -> None:
    chat = await open_page()
    await chat.guest()
    await chat.choose_model("double/echo")
    await chat.send("one")
    assert await finished_answer(chat) == "echo: one"
    await chat.page.get_by_role("button", name="New chat").click()
    assert await chat.answers().count() == 0
    await chat.send("two")
    assert await finished_answer(chat) == "echo: two"
    assert sent_messages(upstream) == [{"role": "user", "content": "two"}]
    chats = chat.page.locator("#conv-list li:visible")
    assert await chats.locator(".conv-name").all_inner_texts() == ["two", "one"]

    # Clear saved chats: the list is empty, a reload brings nothing back.
    await chat.page.get_by_role("button", name="Clear saved chats").click()
    await chat.page.get_by_role("button", name="Delete all").click()
    await chats.first.wait_for(state="hidden")
    await chat.page.reload()
    await chat.wait_connected()
    assert await chat.page.locator("#conv-list li:visible").count() == 0
    assert await chat.answers().count() == 0
    assert chat.errors == []


async def test_copy_puts_the_answer_on_the_clipboard(open_page: OpenPage) -> None:
    chat = await open_page(permissions=["clipboard-read", "clipboard-write"])
    await chat.guest()
    await chat.choose_model("double/markdown")
    await chat.send("Explain")
    answer = await chat.latest_answer()
    await chat.wait_answer_state(answer, "done")
    await answer.get_by_role("button", name="Copy").click()
    await answer.get_by_role("button", name="Copied").wait_for()
    copied = await chat.page.evaluate("navigator.clipboard.readText()")
    assert copied.startswith("Here is how an answer reaches you")
    assert "```python" in copied  # the Markdown source, not the rendered text
    assert chat.errors == []


async def test_regenerate_replaces_the_answer(
    open_page: OpenPage, upstream: UpstreamDouble
) -> None:
    chat = await open_page()
    await chat.guest()
    await chat.choose_model("double/normal")
    await chat.send("Hi")
    first = await chat.latest_answer()
    await chat.wait_answer_state(first, "done")
    first_id = await first.get_attribute("data-request-id")
    await first.get_by_role("button", name="Regenerate").click()
    await chat.page.locator(f'li.msg-assistant[data-request-id="{first_id}"]').wait_for(
        state="detached"
    )
    second = await chat.latest_answer()
    await chat.wait_answer_state(second, "done")
    assert await second.get_attribute("data-request-id") != first_id
    assert await chat.answers().count() == 1
    assert len(upstream.requests) == 2
    assert upstream.requests[0].body["messages"] == upstream.requests[1].body["messages"]
    assert sent_messages(upstream) == [{"role": "user", "content": "Hi"}]
    assert chat.errors == []


async def test_edit_and_resend_replaces_the_message_and_what_followed(
    open_page: OpenPage, upstream: UpstreamDouble
) -> None:
    chat = await open_page()
    await chat.guest()
    await chat.choose_model("double/echo")
    await chat.send("one")
    assert await finished_answer(chat) == "echo: one"
    await chat.send("two")
    assert await finished_answer(chat, after=1) == "echo: two"
    first = chat.page.locator("li.msg-user", has_text="one")
    await first.get_by_role("button", name="Edit").click()
    box = chat.page.get_by_label("Message", exact=True)
    assert await box.input_value() == "one"
    await box.fill("uno")
    await box.press("Enter")
    await chat.page.locator("li.msg-assistant", has_text="echo: uno").wait_for()
    assert await finished_answer(chat) == "echo: uno"
    bubbles = await chat.page.locator("li.msg-user:visible .msg-body").all_inner_texts()
    assert bubbles == ["uno"]  # "one", its answer, "two" and its answer are gone
    assert await chat.answers().count() == 1
    assert sent_messages(upstream) == [{"role": "user", "content": "uno"}]
    assert chat.errors == []


async def test_a_python_block_shows_at_least_three_token_colours(open_page: OpenPage) -> None:
    chat = await open_page()
    await chat.guest()
    await chat.choose_model("double/markdown")
    await chat.send("Show code")
    answer = await chat.latest_answer()
    await chat.wait_answer_state(answer, "done")
    code = answer.locator('pre code[data-lang="python"]')
    colours = await code.evaluate(
        """(code) => [...new Set([code, ...code.querySelectorAll('span')]
             .filter((el) => el.textContent.trim())
             .map((el) => getComputedStyle(el).color))]"""
    )
    assert len(colours) >= 3, colours
    assert await code.locator("span.hljs-keyword").count() >= 2  # async, for, await…
    assert chat.errors == []


# Every visible text node inside `root`'s code: its colour and the colour behind it,
# composited through every translucent ancestor background.
CONTRASTS = """(root) => {
  const parse = (c) => {
    const m = c.match(/rgba?\\(([^)]+)\\)/);
    const [r, g, b, a = 1] = m[1].split(/[ ,/]+/).filter(Boolean).map(Number);
    return [r, g, b, a];
  };
  const over = (top, bottom) => {
    const a = top[3];
    return [0, 1, 2].map((i) => top[i] * a + bottom[i] * (1 - a)).concat(1);
  };
  const background = (el) => {
    const layers = [];
    for (let node = el; node; node = node.parentElement) {
      const bg = parse(getComputedStyle(node).backgroundColor);
      if (bg[3] > 0) layers.push(bg);
      if (bg[3] === 1) break;
    }
    let colour = [255, 255, 255, 1];
    for (const layer of layers.reverse()) colour = over(layer, colour);
    return colour;
  };
  const out = [];
  for (const el of root.querySelectorAll('code, code *')) {
    const own = [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
    if (!own) continue;
    const fg = parse(getComputedStyle(el).color);
    const bg = background(el);
    out.push({ text: el.textContent.slice(0, 20), fg: over(fg, bg), bg });
  }
  return out;
}"""


def luminance(rgb: list[float]) -> float:
    def channel(c: float) -> float:
        c /= 255
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(c) for c in rgb[:3])
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(fg: list[float], bg: list[float]) -> float:
    hi, lo = sorted((luminance(fg), luminance(bg)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


@pytest.mark.parametrize("scheme", ["light", "dark"])
async def test_code_in_both_bubbles_passes_wcag_aa(open_page: OpenPage, scheme: str) -> None:
    chat = await open_page(color_scheme=scheme)
    await chat.guest()
    await chat.choose_model("double/echo")
    await chat.send(
        "Run `pip install relay` then:\n```python\ndef f(x):\n"
        "    return 'a' + str(1)  # a comment\n```"
    )
    answer = await chat.latest_answer()
    await chat.wait_answer_state(answer, "done")
    mine = chat.page.locator("li.msg-user.mine").last
    for bubble in (mine, answer):
        samples = await bubble.locator(".msg-body").evaluate(CONTRASTS)
        assert len(samples) >= 5, samples  # inline code and several highlighted tokens
        low = [(s["text"], round(contrast(s["fg"], s["bg"]), 2)) for s in samples]
        assert all(ratio >= 4.5 for _, ratio in low), (scheme, low)
    assert chat.errors == []


async def test_reasoning_is_a_collapsible_block_above_the_answer(open_page: OpenPage) -> None:
    chat = await open_page()
    await chat.guest()
    await chat.choose_model("double/reasoning")
    await chat.send("Hello")
    answer = await chat.latest_answer()
    await chat.wait_answer_state(answer, "done")
    block = answer.locator("details.reasoning")
    assert await block.is_visible()
    assert await block.get_attribute("open") is None  # collapsed: the answer comes first
    assert await block.locator("summary").inner_text() == "Reasoning"
    above = (
        "(el) => !!(el.compareDocumentPosition(el.parentElement.querySelector('.msg-body')) & 4)"
    )
    assert await block.evaluate(above)
    await block.locator("summary").click()
    assert await block.locator(".reasoning-body").inner_text() == REASONING_TEXT.strip()
    assert await chat.answer_text(answer).inner_text() == NORMAL_TEXT
    assert chat.errors == []


async def test_tool_calls_are_shown_as_named_calls_with_arguments(open_page: OpenPage) -> None:
    chat = await open_page()
    await chat.guest()
    await chat.choose_model("double/tool_calls_parallel")
    await chat.send("Weather and time in Paris?")
    answer = await chat.latest_answer()
    await chat.wait_answer_state(answer, "done")
    calls = answer.locator(".tool-call")
    assert await calls.locator(".tool-name").all_inner_texts() == ["get_weather(…)", "get_time(…)"]
    args = await calls.locator(".tool-args").all_inner_texts()
    assert args == ['{\n  "location": "Paris, FR"\n}', '{\n  "timezone": "Europe/Paris"\n}']
    await answer.locator(".badge", has_text="Called tools").wait_for()  # the finish reason
    assert chat.errors == []


async def test_a_room_answer_in_flight_continues_after_a_reload(open_page: OpenPage) -> None:
    chat = await open_page()
    await chat.login("alice", PASSWORD)
    await chat.join("studio")
    await chat.choose_model("double/slow")
    await chat.send("A long story for the room")
    await chat.wait_text(await chat.latest_answer(), 20)

    await chat.page.reload()
    await chat.wait_connected()
    await chat.page.get_by_role("button", name="studio").click()
    await chat.page.get_by_role("heading", name="# studio").wait_for()
    await chat.members().filter(has_text="Alice").wait_for()  # joined again by itself
    answer = await chat.latest_answer()
    await chat.wait_answer_state(answer, "done", timeout=40)
    assert await chat.answer_text(answer).inner_text() == SLOW_TEXT  # resumed from seq 0
    assert await chat.answers().count() == 1
    await chat.page.locator("li.msg-user", has_text="A long story for the room").wait_for()
    assert chat.errors == []


async def test_reasoning_says_thinking_while_the_model_thinks(open_page: OpenPage) -> None:
    chat = await open_page()
    await chat.guest()
    await chat.choose_model("double/slow_thinker")
    await chat.send("Think first")
    answer = await chat.latest_answer()
    summary = answer.locator("details.reasoning summary")
    await summary.filter(has_text="Thinking…").wait_for()  # reasoning streams, no answer yet
    assert await chat.answer_state(answer) == "streaming"
    await chat.wait_answer_state(answer, "done")
    assert await summary.inner_text() == "Reasoning"
    assert await chat.answer_text(answer).inner_text() == NORMAL_TEXT
    assert chat.errors == []
