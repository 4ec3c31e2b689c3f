"""One request's stream as it comes in: its events, and what ``done`` reports at the end.

``StreamState.absorb`` turns a batch of upstream chunks into stream events in upstream
order: ``reasoning`` (``delta.reasoning`` / ``delta.reasoning_content``), ``token``
(answer text) and ``tool_call`` (one index's pieces).  Neighbouring pieces of one kind
are joined into one event (of one tool-call index, for ``tool_call``); kinds are never
mixed, so a batch with reasoning then text gives two events.  The pipeline numbers
them with the request's one ``seq``.

Meanwhile it keeps what ``done`` needs: the finish reasons, model, generation id,
provider, usage, the tool calls assembled per index, and the reasoning details merged
(consecutive text pieces of one index joined).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from services.upstream.base import Chunk, ToolCallDelta

Payload = dict[str, Any]

# Reasoning detail types whose text streams in pieces, and the field holding the text.
_DETAIL_TEXT = {"reasoning.text": "text", "reasoning.summary": "summary"}


@dataclass(slots=True)
class _Call:
    id: str | None = None
    name: str | None = None
    arguments: list[str] = field(default_factory=list)
    told: set[str] = field(default_factory=set)  # "id", "name": sent in an event


@dataclass(slots=True)
class StreamState:
    model: str | None = None
    finish_reason: str | None = None
    native_finish_reason: str | None = None
    generation_id: str | None = None
    provider: str | None = None
    usage: Payload | None = None
    seq: int = 0  # the next event's seq
    tokens: int = 0  # token events
    keep_text: bool = False  # keep the answer text (a room's history)
    text: list[str] = field(default_factory=list)
    calls: dict[int, _Call] = field(default_factory=dict)
    details: list[Payload] = field(default_factory=list)

    @property
    def last_seq(self) -> int:
        return self.seq - 1

    def absorb(self, batch: list[Chunk]) -> list[tuple[str, Payload]]:
        """The batch's stream events (without ``request_id`` and ``seq``), in order."""
        events: list[tuple[str, Payload]] = []
        kind: str | None = None  # the kind of events[-1]
        for chunk in batch:  # the hot path: a plain-text chunk costs a few checks
            self._note(chunk)
            if chunk.reasoning:
                if kind == "reasoning":
                    events[-1][1]["content"] += chunk.reasoning
                else:
                    events.append(("reasoning", {"content": chunk.reasoning}))
                    kind = "reasoning"
            content = chunk.content
            if content:
                if kind == "token":
                    events[-1][1]["content"] += content
                else:
                    events.append(("token", {"content": content}))
                    kind = "token"
                    self.tokens += 1
                if self.keep_text:
                    self.text.append(content)
            if chunk.tool_calls:
                for delta in chunk.tool_calls:
                    self._add_call(events, delta)
                kind = "tool_call"
            if chunk.reasoning_details:
                for detail in chunk.reasoning_details:
                    self._merge_detail(detail)
        return events

    def _note(self, chunk: Chunk) -> None:
        if chunk.model:
            self.model = chunk.model
        if (
            chunk.finish_reason is None
            and chunk.native_finish_reason is None
            and chunk.usage is None
            and chunk.generation_id == self.generation_id
            and chunk.provider == self.provider
        ):
            return  # a delta like the one before: nothing new to note
        if chunk.finish_reason:
            self.finish_reason = chunk.finish_reason
        if chunk.native_finish_reason:
            self.native_finish_reason = chunk.native_finish_reason
        if chunk.usage:
            self.usage = chunk.usage
        if chunk.generation_id:
            self.generation_id = chunk.generation_id
        if chunk.provider:
            self.provider = chunk.provider

    def _add_call(self, events: list[tuple[str, Payload]], delta: ToolCallDelta) -> None:
        call = self.calls.setdefault(delta.index, _Call())
        call.id = call.id or delta.id
        call.name = call.name or delta.name
        call.arguments.append(delta.arguments)
        last = events[-1] if events else None
        if last is not None and last[0] == "tool_call" and last[1]["index"] == delta.index:
            payload = last[1]
            payload["arguments"] += delta.arguments
        else:
            payload = {"index": delta.index, "arguments": delta.arguments}
            events.append(("tool_call", payload))
        # ``id`` and ``name`` once per index, in its first event that knows them
        for name, value in (("id", call.id), ("name", call.name)):
            if value is not None and name not in call.told:
                call.told.add(name)
                payload[name] = value

    def _merge_detail(self, detail: Payload) -> None:
        text_field = _DETAIL_TEXT.get(str(detail.get("type")))
        last = self.details[-1] if self.details else None
        if (
            text_field is not None
            and last is not None
            and last.get("type") == detail.get("type")
            and last.get("index") == detail.get("index")
            and isinstance(last.get(text_field), str)
            and isinstance(detail.get(text_field), str)
        ):
            merged = {**last, **{k: v for k, v in detail.items() if v is not None}}
            merged[text_field] = last[text_field] + detail[text_field]
            self.details[-1] = merged
        else:
            self.details.append(dict(detail))

    # -- the end ---------------------------------------------------------------------------

    def done_fields(self, finish_reason: str) -> Payload:
        """``done`` without ``request_id``/``room``."""
        done: Payload = {
            "finish_reason": finish_reason,
            "model": self.model,
            "usage": self.done_usage(),
            "last_seq": self.last_seq,
        }
        for name in ("generation_id", "provider", "native_finish_reason"):
            value = getattr(self, name)
            if value is not None:
                done[name] = value
        if self.calls:
            done["tool_calls"] = [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": "".join(call.arguments)},
                }
                for _, call in sorted(self.calls.items())
            ]
        if self.details:
            done["reasoning_details"] = self.details
        return done

    def done_usage(self) -> Payload:
        reported = self.usage or {}
        usage: Payload = {
            "prompt_tokens": reported.get("prompt_tokens"),
            "completion_tokens": reported.get("completion_tokens"),
            "total_tokens": reported.get("total_tokens"),
        }
        if reported.get("cost") is not None:
            usage["cost"] = reported["cost"]
        for name, details, key in (
            ("cached_tokens", "prompt_tokens_details", "cached_tokens"),
            ("reasoning_tokens", "completion_tokens_details", "reasoning_tokens"),
        ):
            section = reported.get(details)
            if isinstance(section, dict) and section.get(key) is not None:
                usage[name] = section[key]
        return usage
