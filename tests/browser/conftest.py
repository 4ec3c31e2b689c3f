from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, async_playwright

from auth.users import UserStore
from tests.browser.chatpage import CHROMIUM, CHROMIUM_ARGS, ChatPage
from tests.harness import RunningServer, base_settings, run_server
from tests.upstream_double import UpstreamDouble

PASSWORD = "correct horse battery staple"


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        pytest.fail("Chromium is not installed: apt-get install -y chromium")
    async with async_playwright() as pw:
        launched = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
def users_file(tmp_path: Path) -> Path:
    path = tmp_path / "users.toml"
    store = UserStore(path)
    store.add("alice", PASSWORD, "Alice")
    store.add("bob", PASSWORD, "Bob")
    return path


@pytest.fixture
async def web_server(upstream: UpstreamDouble, users_file: Path) -> AsyncIterator[RunningServer]:
    settings = base_settings(
        upstream.base_url,
        users_file=users_file,
        allow_anonymous=True,
        upstream_max_retries=0,
        resume_grace_s=30,
    )
    async with run_server(settings) as running:
        yield running


@pytest.fixture
def open_page(browser: Browser, web_server: RunningServer) -> Callable[..., Awaitable[ChatPage]]:
    pages: list[ChatPage] = []

    async def make(**context_options: Any) -> ChatPage:
        context = await browser.new_context(**context_options)
        chat = ChatPage(await context.new_page())
        await chat.open(web_server.url + "/")
        pages.append(chat)
        return chat

    return make
