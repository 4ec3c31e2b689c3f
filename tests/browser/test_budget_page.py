"""The page shows the remaining daily budget (web/js/budget.js) only when one is set."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.async_api import Browser, expect

from tests.browser.chatpage import ChatPage
from tests.browser.conftest import PASSWORD
from tests.harness import base_settings, run_server
from tests.integration.test_usage import usage_settled
from tests.upstream_double import UpstreamDouble

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]


async def open_chat(browser: Browser, url: str) -> ChatPage:
    chat = ChatPage(await (await browser.new_context()).new_page())
    await chat.open(url + "/")
    await chat.login("alice", PASSWORD)
    await chat.page.get_by_text("Alice", exact=True).first.wait_for()
    return chat


async def test_the_remaining_budget_is_shown_and_goes_down(
    browser: Browser, upstream: UpstreamDouble, users_file: Path
) -> None:
    settings = base_settings(upstream.base_url, users_file=users_file, budget_tokens_per_day=1000)
    async with run_server(settings) as server:
        chat = await open_chat(browser, server.url)
        budget = chat.page.locator("#budget")
        await budget.wait_for()
        assert await budget.inner_text() == "1,000 tokens left today"
        await chat.send("Hello")
        await chat.wait_answer_state(await chat.latest_answer(), "done")
        # The ledger row is written in the background after done: once it is there, the
        # next refresh (every 30 s, or on reload) sees the answer.
        token = await chat.page.evaluate(
            "JSON.parse(sessionStorage.getItem('llm-relay.auth')).token"
        )
        await usage_settled(server, token, 1)
        await chat.page.reload()
        await expect(budget).to_have_text(re.compile(r"^9\d\d tokens left today$"))
        text = await budget.inner_text()
        match = re.fullmatch(r"(\d+) tokens left today", text)
        assert match is not None, text
        assert 900 < int(match.group(1)) < 1000
        assert chat.errors == []


async def test_no_budget_no_element(
    browser: Browser, upstream: UpstreamDouble, users_file: Path
) -> None:
    settings = base_settings(upstream.base_url, users_file=users_file)
    async with run_server(settings) as server:
        chat = await open_chat(browser, server.url)
        await chat.send("Hello")
        await chat.wait_answer_state(await chat.latest_answer(), "done")
        assert await chat.page.locator("#budget").is_hidden()
        assert chat.errors == []
