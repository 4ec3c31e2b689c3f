"""Local model simulator for demo mode: an OpenAI-compatible endpoint with canned answers.

It speaks OpenRouter's wire format (``POST /api/v1/chat/completions``, streaming SSE or
plain JSON, and ``GET /api/v1/models``) so the relay runs unchanged against it. Every
answer says plainly that no real model is connected.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import re
import time
from typing import Any

from aiohttp import web

logger = logging.getLogger(__name__)

SIMULATOR_MODEL = "local/simulator"
_SNIPPET_CHARS = 200
_WORD = re.compile(r"\s*\S+\s*")

_BODY = """

I'm the built-in demo model, so I don't really understand your message. \
I'm here to show how the relay works:

- the answer streams **word by word** over Socket.IO,
- markdown such as `inline code` and lists is rendered as it arrives,
- you can cancel a reply at any moment.

To talk to a real model, set `OPENROUTER_API_KEY` and start the server without `--demo`."""


def reply_text(user_text: str) -> str:
    """The simulator's answer to ``user_text``."""
    said = " ".join(user_text.split())
    if len(said) > _SNIPPET_CHARS:
        said = said[: _SNIPPET_CHARS - 1].rstrip() + "…"
    opening = "(local simulator — no real model is connected) "
    opening += f"You said: “{said}”." if said else "You sent an empty message."
    return opening + _BODY


def split_words(text: str) -> list[str]:
    """Word-sized tokens with their whitespace; ``"".join(result) == text``."""
    return _WORD.findall(text) or ([text] if text else [])


def _last_user_text(body: dict[str, Any]) -> str:
    messages = body.get("messages")
    for msg in reversed(messages if isinstance(messages, list) else []):
        if isinstance(msg, dict) and msg.get("role") == "user":
            content = msg.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return " ".join(
                    str(part.get("text", ""))
                    for part in content
                    if isinstance(part, dict) and part.get("type") == "text"
                )
    return ""


def _sse(obj: dict[str, Any] | str) -> bytes:
    data = obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False)
    return f"data: {data}\n\n".encode()


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": {"code": status, "message": message}}, status=status)


class Simulator:
    """Serves the simulated model until :meth:`stop`."""

    def __init__(
        self, *, host: str = "127.0.0.1", port: int = 0, token_delay_s: float = 0.03
    ) -> None:
        self._host = host
        self._port = port
        self._token_delay_s = token_delay_s
        self._runner: web.AppRunner | None = None
        self._ids = itertools.count(1)
        self.base_url = ""

    async def start(self) -> str:
        """Start serving; returns the base URL, e.g. ``http://127.0.0.1:PORT/api/v1``."""
        app = web.Application()
        app.router.add_post("/api/v1/chat/completions", self._chat)
        app.router.add_get("/api/v1/models", self._models)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        await web.TCPSite(runner, self._host, self._port).start()
        self._runner = runner
        host, port = runner.addresses[0][:2]
        if ":" in host:
            host = f"[{host}]"
        self.base_url = f"http://{host}:{port}/api/v1"
        logger.info("local model simulator listening at %s", self.base_url)
        return self.base_url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _models(self, request: web.Request) -> web.Response:
        model = {
            "id": SIMULATOR_MODEL,
            "name": "Local simulator (demo, no real model)",
            "created": 0,
            "description": "Canned answers streamed locally; no model is connected.",
            "context_length": 8192,
            "pricing": {"prompt": "0", "completion": "0"},
        }
        return web.json_response({"data": [model]})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "Request body is not valid JSON")
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return _error(400, "Request body needs a 'messages' list")
        text = reply_text(_last_user_text(body))
        words = split_words(text)
        model = body.get("model") if isinstance(body.get("model"), str) else SIMULATOR_MODEL
        base = {
            "id": f"gen-sim-{next(self._ids)}",
            "created": int(time.time()),
            "model": model,
            "provider": "Local simulator",
        }
        messages = [m for m in body["messages"] if isinstance(m, dict)]
        prompt = sum(len(str(m.get("content", "")).split()) for m in messages)
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": len(words),
            "total_tokens": prompt + len(words),
            "cost": 0,
        }
        if body.get("stream") is not True:
            message = {"role": "assistant", "content": text}
            choice = {"index": 0, "message": message, "finish_reason": "stop"}
            return web.json_response(
                {**base, "object": "chat.completion", "choices": [choice], "usage": usage}
            )
        return await self._stream(request, base, words, usage)

    async def _stream(
        self,
        request: web.Request,
        base: dict[str, Any],
        words: list[str],
        usage: dict[str, Any],
    ) -> web.StreamResponse:
        base = {**base, "object": "chat.completion.chunk"}

        def chunk(content: str, finish: str | None = None) -> dict[str, Any]:
            delta = {"role": "assistant", "content": content}
            choice = {"index": 0, "delta": delta, "finish_reason": finish}
            return {**base, "choices": [{**choice, "native_finish_reason": finish}]}

        resp = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        try:
            await resp.prepare(request)
            for i, word in enumerate(words):
                if i and self._token_delay_s > 0:
                    await asyncio.sleep(self._token_delay_s)
                await resp.write(_sse(chunk(word)))
            await resp.write(_sse(chunk("", "stop")))
            await resp.write(_sse({**base, "choices": [], "usage": usage}))
            await resp.write(_sse("[DONE]"))
        except ConnectionResetError:
            logger.debug("simulator: client closed %s early", base["id"])
        return resp
