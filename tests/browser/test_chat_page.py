"""The chat page in headless Chromium against the real server and the upstream double."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from playwright.async_api import Browser, expect

from tests.browser.chatpage import ChatPage
from tests.browser.conftest import PASSWORD
from tests.harness import base_settings, run_server
from tests.upstream_double import UpstreamDouble
from tests.upstream_scenarios import SLOW_TEXT, Scenario

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]

OpenPage = Callable[..., Awaitable[ChatPage]]


async def test_login_and_answer_streams_in_progressively(open_page: OpenPage) -> None:
    chat = await open_page()
    await chat.login("alice", PASSWORD)
    await chat.page.get_by_text("Alice", exact=True).first.wait_for()
    await chat.choose_model("double/slow")
    await chat.send("Count for me, please")

    await chat.page.locator("li.msg-user", has_text="Count for me, please").wait_for()
    answer = await chat.latest_answer()
    seen: list[str] = []
    first = await chat.wait_text(answer, 10)
    seen.append(first)
    while await chat.answer_state(answer) == "streaming" and len(seen) < 4:
        seen.append(await chat.wait_text(answer, len(seen[-1]) + 1))
    assert len(seen) >= 3, seen  # the text grew in several steps while streaming
    assert all(SLOW_TEXT.startswith(part) for part in seen), seen
    assert await chat.answer_state(answer) == "streaming"

    await chat.wait_answer_state(answer, "done")
    assert await chat.answer_text(answer).inner_text() == SLOW_TEXT
    assert await chat.page.get_by_role("button", name="Send").is_visible()
    assert chat.errors == []


async def test_markdown_is_rendered_while_it_streams(open_page: OpenPage) -> None:
    chat = await open_page(viewport={"width": 1100, "height": 760})
    await chat.login("alice", PASSWORD)
    await chat.choose_model("double/markdown")
    await chat.send("How does streaming work here?")
    answer = await chat.latest_answer()
    # The code block is complete and the table is still to come.
    await answer.locator("pre code", has_text="batch)").wait_for()
    assert await chat.answer_state(answer) == "streaming"
    await chat.screenshot("page-mid-stream.png")
    await chat.wait_answer_state(answer, "done")

    body = chat.answer_text(answer)
    assert await body.locator("ol > li").count() == 3
    assert await body.locator("strong code").inner_text() == "token"
    assert "await sink.emit" in await body.locator("pre code").inner_text()
    assert await body.locator("table th").all_inner_texts() == ["event", "carries"]
    assert await body.locator("table tbody tr").count() == 2
    assert await body.locator("blockquote strong").inner_text() == "Stop"
    assert chat.errors == []


async def test_stop_ends_the_answer_and_closes_the_upstream(
    open_page: OpenPage, upstream: UpstreamDouble
) -> None:
    chat = await open_page()
    await chat.login("alice", PASSWORD)
    await chat.choose_model("double/slow")
    await chat.send("A long answer, please")
    answer = await chat.latest_answer()
    await chat.wait_text(answer, 20)
    rec = await upstream.wait_for_request()

    await chat.page.locator("#stop-btn").click()
    await chat.wait_answer_state(answer, "cancelled")
    await upstream.wait_closed(rec, timeout=10)
    assert rec.closed_by_client
    assert not rec.completed

    await answer.get_by_text("Stopped").wait_for()
    stopped_at = await chat.answer_text(answer).inner_text()
    assert SLOW_TEXT.startswith(stopped_at)
    assert stopped_at != SLOW_TEXT
    await asyncio.sleep(1)  # the double would have sent ~5 more tokens by now
    assert await chat.answer_text(answer).inner_text() == stopped_at
    assert await chat.page.get_by_role("button", name="Send").is_visible()
    assert chat.errors == []


@pytest.mark.parametrize(
    ("model", "readable", "code"),
    [
        (
            "double/http_402",
            "The model provider account has run out of credits.",
            "insufficient_credits",
        ),
        ("double/http_429_later", "Try again in", "upstream_rate_limited"),
        ("double/http_503", "The model provider is unavailable right now.", "upstream_unavailable"),
    ],
)
async def test_upstream_error_is_shown_readably(
    open_page: OpenPage, upstream: UpstreamDouble, model: str, readable: str, code: str
) -> None:
    later = Scenario(name="http_429_later", status=429, retry_after="30")
    upstream.scenarios[later.name] = later  # listed by the double's /models from now on
    chat = await open_page()
    await chat.guest()
    await chat.choose_model(model)
    await chat.send("Hello?")
    answer = await chat.latest_answer()
    await chat.wait_answer_state(answer, "error")
    alert = answer.get_by_role("alert")
    await alert.get_by_text(readable).wait_for()
    assert await alert.locator(".error-code").inner_text() == code
    assert chat.errors == []


async def test_a_refused_request_shows_its_code_and_when_to_retry(
    browser: Browser, upstream: UpstreamDouble, users_file: Path
) -> None:
    settings = base_settings(upstream.base_url, users_file=users_file, rate_limit_per_minute=1)
    async with run_server(settings) as srv:
        context = await browser.new_context()
        chat = ChatPage(await context.new_page())
        await chat.open(srv.url + "/")
        await chat.login("alice", PASSWORD)
        await chat.choose_model("double/normal")
        await chat.send("One")
        await chat.wait_answer_state(await chat.latest_answer(), "done")
        await chat.send("Two")
        refused = await chat.latest_answer(after=1)
        await chat.wait_answer_state(refused, "error")
        alert = refused.get_by_role("alert")
        await alert.get_by_text("You are sending messages too quickly.").wait_for()
        assert await alert.locator(".error-code").inner_text() == "rate_limited"
        await alert.get_by_text("Try again in").wait_for()
        assert await alert.get_by_role("button", name="Retry").is_disabled()
        assert await chat.answers().count() == 2  # the ack and the error event: one bubble
        assert chat.errors == []


async def test_a_reply_with_html_renders_as_text_and_runs_no_script(
    open_page: OpenPage,
) -> None:
    chat = await open_page()
    await chat.guest()
    await chat.choose_model("double/xss")
    await chat.send("Show me something")
    answer = await chat.latest_answer()
    await chat.wait_answer_state(answer, "done")
    # The user's own prompt goes through the same renderer: the echo scenario returns it.
    await chat.choose_model("double/echo")
    await chat.send('<img src=x onerror="window.__xss=5"><script>window.__xss=6</script>')
    echo = await chat.latest_answer(after=1)
    await chat.wait_answer_state(echo, "done")
    await asyncio.sleep(0.5)  # give any injected handler a chance to run

    text = await chat.answer_text(answer).inner_text()
    assert '<img src=x onerror="window.__xss=1">' in text
    assert "<script>window.__xss=2</script>" in text
    assert '<iframe src="about:blank"></iframe>' in text
    echoed = await chat.answer_text(echo).inner_text()
    assert '<img src=x onerror="window.__xss=5">' in echoed

    log = chat.page.locator(".msg-list")
    for tag in ("img", "script", "iframe"):
        assert await log.locator(tag).count() == 0, tag
    hrefs = await log.locator("a").evaluate_all("links => links.map(a => a.href)")
    assert hrefs == ["https://example.com/docs"]
    assert await answer.locator("strong", has_text="bold").count() == 1
    assert await chat.page.evaluate("typeof window.__xss") == "undefined"
    assert chat.errors == []


async def test_two_people_in_one_room_see_the_same_conversation(open_page: OpenPage) -> None:
    alice = await open_page()
    await alice.login("alice", PASSWORD)
    bob = await open_page()
    await bob.login("bob", PASSWORD)
    await alice.join("lobby")
    await bob.join("lobby")
    for chat in (alice, bob):
        await chat.members().filter(has_text="Alice").wait_for()
        await chat.members().filter(has_text="Bob").wait_for()
        assert await chat.members().count() == 2

    await alice.choose_model("double/slow")
    await alice.send("Hello room")
    for chat in (alice, bob):
        await chat.page.locator("li.msg-user", has_text="Hello room").wait_for()
    answers = [await alice.latest_answer(), await bob.latest_answer()]
    await bob.wait_text(answers[1], 10)  # bob sees it while it streams
    for chat, answer in zip((alice, bob), answers, strict=True):
        await chat.wait_answer_state(answer, "done")
        assert await chat.answer_text(answer).inner_text() == SLOW_TEXT

    for chat in (alice, bob):
        assert await chat.answers().count() == 1

    # A late joiner gets the conversation so far, the shared answer included.
    carol = await open_page()
    await carol.guest()
    await carol.join("lobby")
    await carol.page.locator("li.msg-user", has_text="Hello room").wait_for()
    history = await carol.latest_answer()
    assert await carol.answer_text(history).inner_text() == SLOW_TEXT
    await alice.members().nth(2).wait_for()

    # Another member's message is untrusted text too.
    await bob.choose_model("double/normal")
    await bob.send('hi <img src=x onerror="window.__xss=7">')
    message = alice.page.locator("li.msg-user", has_text="hi <img src=x")
    await message.wait_for()
    assert await message.locator("img").count() == 0
    assert await alice.page.evaluate("typeof window.__xss") == "undefined"
    assert alice.errors == []
    assert bob.errors == []


async def test_a_member_joining_mid_answer_sees_all_of_it(open_page: OpenPage) -> None:
    alice = await open_page()
    await alice.login("alice", PASSWORD)
    await alice.join("studio")
    await alice.choose_model("double/slow")
    await alice.send("Tell the room a long story")
    await alice.wait_text(await alice.latest_answer(), 30)

    bob = await open_page()
    await bob.login("bob", PASSWORD)
    await bob.join("studio")  # tokens are already flowing: the page resumes from seq 0
    answer = await bob.latest_answer()
    await bob.wait_answer_state(answer, "done", timeout=40)
    assert await bob.answer_text(answer).inner_text() == SLOW_TEXT
    assert await bob.answers().count() == 1
    assert bob.errors == []


async def test_a_session_is_renewed_before_the_token_expires(
    browser: Browser, upstream: UpstreamDouble, users_file: Path
) -> None:
    settings = base_settings(upstream.base_url, users_file=users_file, token_ttl_s=8)
    async with run_server(settings) as srv:
        context = await browser.new_context()
        chat = ChatPage(await context.new_page())
        await chat.open(srv.url + "/")
        await chat.login("alice", PASSWORD)
        started = time.monotonic()
        banner = chat.page.get_by_role("alert").filter(has_text="Your session ends soon")
        await banner.wait_for(timeout=15_000)
        await banner.get_by_label("Password").fill(PASSWORD)
        await banner.get_by_role("button", name="Stay signed in").click()
        await banner.wait_for(state="hidden")
        await asyncio.sleep(max(0.0, 10 - (time.monotonic() - started)))  # past the first exp

        assert await chat.status.inner_text() == "Connected"
        await chat.choose_model("double/normal")
        await chat.send("Still here?")
        answer = await chat.latest_answer()
        assert await chat.wait_answer_state(answer, "done") == "done"
        assert chat.errors == []


async def test_an_expired_session_returns_to_sign_in_with_a_reason(
    browser: Browser, upstream: UpstreamDouble, users_file: Path
) -> None:
    settings = base_settings(upstream.base_url, users_file=users_file, token_ttl_s=4)
    async with run_server(settings) as srv:
        context = await browser.new_context()
        chat = ChatPage(await context.new_page())
        await chat.open(srv.url + "/")
        await chat.login("alice", PASSWORD)
        reason = chat.page.get_by_text("Your session has expired. Please sign in again.")
        await reason.wait_for(timeout=20_000)
        assert await chat.page.get_by_role("button", name="Sign in").is_visible()
        assert chat.errors == []


async def test_a_dropped_connection_resumes_and_shows_the_answer_once(
    open_page: OpenPage,
) -> None:
    chat = await open_page()
    await chat.login("alice", PASSWORD)
    await chat.choose_model("double/slow")
    await chat.send("Stream through a network drop")
    answer = await chat.latest_answer()
    await chat.wait_text(answer, 20)

    context = chat.page.context
    await context.set_offline(True)
    await chat.status.filter(has_text="Reconnecting").wait_for()
    await asyncio.sleep(1.5)  # tokens keep coming upstream while we are away
    await context.set_offline(False)
    await chat.wait_connected()

    await chat.wait_answer_state(answer, "done", timeout=40)
    assert await chat.answer_text(answer).inner_text() == SLOW_TEXT
    assert await chat.answers().count() == 1
    assert chat.errors == []


async def test_keyboard_only_on_a_phone_screen(open_page: OpenPage) -> None:
    chat = await open_page(viewport={"width": 375, "height": 740}, is_mobile=True, has_touch=True)
    page = chat.page
    await page.get_by_role("button", name="Continue as guest").focus()
    await page.keyboard.press("Enter")
    await chat.wait_connected()
    # Focus lands on the message box by itself (the page may still be laying out).
    # (a locator assertion, not wait_for_function: the page's CSP forbids eval for polling)
    await expect(page.locator("#prompt")).to_be_focused(timeout=5_000)
    await page.keyboard.type("Hello from a phone")
    await page.keyboard.press("Enter")
    answer = await chat.latest_answer()
    await chat.wait_answer_state(answer, "done")
    no_overflow = "document.documentElement.scrollWidth <= window.innerWidth"
    assert await page.evaluate(no_overflow)

    unlabelled = await page.evaluate(
        """[...document.querySelectorAll('input, select, textarea, button')]
            .filter((el) => el.checkVisibility())
            .filter((el) => !(el.labels?.length || el.getAttribute('aria-label')
                              || el.textContent.trim()))
            .map((el) => el.outerHTML)"""
    )
    assert unlabelled == []

    # The sidebar is a drawer behind the menu button on a narrow screen.
    join = page.get_by_label("Join a room")
    assert not await join.is_visible()
    menu = page.get_by_role("button", name="Conversations and rooms")
    await menu.focus()
    await page.keyboard.press("Enter")
    assert await menu.get_attribute("aria-expanded") == "true"
    await join.wait_for(state="visible")
    await page.keyboard.press("Escape")
    await join.wait_for(state="hidden")
    assert chat.errors == []
