"""``/docs`` renders Swagger UI from vendored files with every non-local request blocked."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from playwright.async_api import Browser, Route

from tests.browser.chatpage import STEP_MS
from tests.harness import RunningServer

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]


async def test_docs_render_offline(browser: Browser, web_server: RunningServer) -> None:
    local = urlsplit(web_server.url).netloc
    blocked: list[str] = []
    served: list[str] = []

    async def only_local(route: Route) -> None:
        url = route.request.url
        if urlsplit(url).netloc == local:
            served.append(url)
            await route.continue_()
        else:
            blocked.append(url)
            await route.abort()

    context = await browser.new_context()
    await context.route("**/*", only_local)
    page = await context.new_page()
    page.set_default_timeout(STEP_MS)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await page.goto(web_server.url + "/docs")
    # The operations of /openapi.json are listed: the UI script ran and fetched the spec.
    await page.locator(".opblock-summary-path", has_text="/auth/token").first.wait_for()
    await page.get_by_role("heading", name="llm-relay").first.wait_for()
    assert await page.locator(".opblock").count() >= 5
    assert blocked == []
    assert any(url.endswith("/openapi.json") for url in served)
    assert any("/static/vendor/swagger-ui/" in url for url in served)
    assert errors == []
    await context.close()
