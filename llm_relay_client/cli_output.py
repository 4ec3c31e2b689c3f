"""How ``chat`` prints a stream: the answer as text (the reasoning and tool calls only
when asked for, dimmed on a terminal), or every event as one JSON line."""

from __future__ import annotations

import json
import sys
from typing import Any, TextIO

from llm_relay_client.errors import ChatError

DIM, RESET = "\x1b[2m", "\x1b[0m"


class Output:
    """Writes a stream as text (reasoning and tool calls only when asked for), or its
    events as JSON lines."""

    def __init__(
        self,
        as_json: bool,
        out: TextIO = sys.stdout,
        err: TextIO = sys.stderr,
        *,
        reasoning: bool = False,
    ) -> None:
        self.as_json = as_json
        self.out = out
        self.err = err
        self.reasoning = reasoning
        self.dim = out.isatty()
        self._thinking = False  # inside a block of reasoning text
        self._last = "\n"  # the last character written to ``out``

    def _write(self, text: str) -> None:
        if text:
            self.out.write(text)
            self.out.flush()
            self._last = text[-1]

    def event(self, name: str, payload: dict[str, Any]) -> None:
        if self.as_json:
            line = json.dumps({"type": name, **payload}, ensure_ascii=False)
            self._write(line + "\n")
        elif name == "reasoning" and self.reasoning:
            if not self._thinking:
                self._thinking = True
                self._write(DIM if self.dim else "")
            self._write(str(payload.get("content", "")))
        elif name == "token":
            self._end_thinking()
            self._write(str(payload.get("content", "")))
        elif name == "done":
            self._end_thinking()
            self._tool_calls(payload.get("tool_calls"))

    def _end_thinking(self) -> None:
        if self._thinking:
            self._thinking = False
            gap = "\n" if self._last == "\n" else "\n\n"  # one blank line before the answer
            self._write((RESET if self.dim else "") + gap)

    def _tool_calls(self, calls: Any) -> None:
        for call in calls if isinstance(calls, list) else []:
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict):
                self._newline()
                text = f"[tool call {function.get('name')}: {function.get('arguments')}]"
                self._write(f"{DIM}{text}{RESET}\n" if self.dim else text + "\n")

    def _newline(self) -> None:
        if self._last != "\n":
            self._write("\n")

    def end_of_answer(self) -> None:
        if not self.as_json:
            self._end_thinking()
            self._newline()

    def error(self, error: ChatError) -> None:
        self.err.write(f"chat: {error.code}: {error.message}\n")
        if error.retry_after is not None:
            self.err.write(f"chat: retry after {error.retry_after:g} s\n")
        self.err.flush()

    def note(self, text: str) -> None:
        self.err.write(text + "\n")
        self.err.flush()
