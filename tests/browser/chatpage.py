"""Driving the chat page the way a person does, with Playwright (async API)."""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from playwright.async_api import Locator, Page

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
CONNECTED = re.compile(r"^Connected$")
STEP_MS = 15_000  # generous: two cores shared by many jobs


@dataclass
class ChatPage:
    page: Page
    errors: list[str] = field(default_factory=list)  # uncaught page errors and dialogs

    def __post_init__(self) -> None:
        self.page.set_default_timeout(STEP_MS)
        self.page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))
        self.page.on("dialog", self._dialog)

    async def _dialog(self, dialog: object) -> None:
        self.errors.append(f"dialog: {dialog.message}")  # type: ignore[attr-defined]
        await dialog.dismiss()  # type: ignore[attr-defined]

    async def open(self, url: str) -> None:
        await self.page.goto(url)

    async def login(self, username: str, password: str) -> None:
        await self.page.get_by_label("User name").fill(username)
        await self.page.get_by_label("Password", exact=True).fill(password)
        await self.page.get_by_role("button", name="Sign in").click()
        await self.wait_connected()

    async def guest(self) -> None:
        await self.page.get_by_role("button", name="Continue as guest").click()
        await self.wait_connected()

    async def wait_connected(self) -> None:
        # The whole text: a substring match (has_text="Connected") also matches the
        # "Not connected" a page shows before its script has started.
        await self.status.filter(has_text=CONNECTED).wait_for()

    @property
    def status(self) -> Locator:
        return self.page.get_by_role("status")

    async def choose_model(self, model: str) -> None:
        await self.page.get_by_label("Model").select_option(model)

    async def send(self, text: str) -> None:
        box = self.page.get_by_label("Message", exact=True)
        await box.fill(text)
        await box.press("Enter")

    def answers(self) -> Locator:
        return self.page.locator("li.msg-assistant:visible")

    async def latest_answer(self, after: int = 0) -> Locator:
        """The newest answer once there are more than ``after``, pinned by its request id."""
        deadline = time.monotonic() + STEP_MS / 1000
        while await self.answers().count() <= after:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no answer number {after + 1}")
            await asyncio.sleep(0.03)
        request_id = await self.answers().last.get_attribute("data-request-id")
        return self.page.locator(f'li.msg-assistant[data-request-id="{request_id}"]')

    def answer_text(self, answer: Locator) -> Locator:
        return answer.locator(".msg-body")

    async def answer_state(self, answer: Locator) -> str | None:
        return await answer.get_attribute("data-state")

    async def wait_answer_state(self, answer: Locator, *states: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while True:
            state = await self.answer_state(answer)
            if state in states:
                return state
            if time.monotonic() > deadline:
                raise TimeoutError(f"answer state {state!r}, wanted {states}")
            await asyncio.sleep(0.05)

    async def wait_text(self, answer: Locator, min_chars: int, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while True:
            text = await self.answer_text(answer).inner_text()
            if len(text) >= min_chars:
                return text
            if time.monotonic() > deadline:
                raise TimeoutError(f"answer text {text!r} never reached {min_chars} chars")
            await asyncio.sleep(0.03)

    async def join(self, room: str) -> None:
        await self.page.get_by_label("Join a room").fill(room)
        await self.page.get_by_role("button", name="Join", exact=True).click()
        await self.page.get_by_role("heading", name=f"# {room}").wait_for()

    def members(self) -> Locator:
        return self.page.locator("#member-list li")

    async def screenshot(self, name: str) -> Path:
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / name
        await self.page.screenshot(path=str(path))
        return path
