"""Tool calling: Python functions the model may call, and the loop that runs them.

    tools = Tools()

    @tools.register
    def get_weather(city: str) -> str:
        \"\"\"The current weather in a city.\"\"\"
        return f"Sunny in {city}"

    run = await client.run_tools("Weather in Paris?", tools, model="...")
    print(run.text)

When a request ends with ``done.finish_reason == "tool_calls"``, :func:`run_tools` runs
each call with its parsed arguments and sends the next request: the conversation so far,
the assistant message (the calls and ``reasoning_details`` as ``done`` gave them) and one
``tool`` message per call. A tool that raises, an unknown tool name or arguments that are
not a JSON object become that call's result text, so the model can react; they never end
the loop.
"""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, overload

from llm_relay_client.errors import ChatError
from llm_relay_client.models import Done, Messages, StreamEvent, ToolCall, as_messages
from llm_relay_client.stream import Stream
from llm_relay_client.tool_schema import description_of, parameters_of

logger = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])
MAX_ROUNDS = "max_tool_rounds"  # the client's ChatError code when the loop gives up
# finish reasons after which the calls in ``done`` are complete and may run
RUNNABLE = frozenset({"tool_calls", "stop"})


@dataclass(frozen=True, slots=True)
class Tool:
    name: str
    description: str
    parameters: Mapping[str, Any]
    function: Callable[..., Any]

    def definition(self) -> dict[str, Any]:
        """The ChatRequest ``tools`` item."""
        function: dict[str, Any] = {"name": self.name, "parameters": dict(self.parameters)}
        if self.description:
            function["description"] = self.description
        return {"type": "function", "function": function}


@dataclass(frozen=True, slots=True)
class ToolResult:
    """One call the model asked for and what running it gave (``failed``: an error text)."""

    call: ToolCall
    content: str
    failed: bool = False

    def message(self) -> dict[str, Any]:
        """The ``tool`` message that carries the result back to the model."""
        return {"role": "tool", "tool_call_id": self.call.id, "content": self.content}


class Tools:
    """A set of Python functions offered to the model as tools.

    ``register`` (a decorator, with or without arguments) takes the tool's name from the
    function, its description from the docstring's first paragraph and its JSON-schema
    ``parameters`` from the type hints; give any of them explicitly instead.
    Functions may be sync or async; sync ones run on the event loop, so keep them quick.
    """

    def __init__(self, *functions: Callable[..., Any]) -> None:
        self._tools: dict[str, Tool] = {}
        for function in functions:
            self.add(function)

    def add(
        self,
        function: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        parameters: Mapping[str, Any] | None = None,
    ) -> Tool:
        tool = Tool(
            name or function.__name__,
            description_of(function) if description is None else description,
            parameters_of(function) if parameters is None else parameters,
            function,
        )
        self._tools[tool.name] = tool
        return tool

    @overload
    def register(self, function: F) -> F: ...

    @overload
    def register(
        self,
        *,
        name: str | None = None,
        description: str | None = None,
        parameters: Mapping[str, Any] | None = None,
    ) -> Callable[[F], F]: ...

    def register(
        self,
        function: F | None = None,
        *,
        name: str | None = None,
        description: str | None = None,
        parameters: Mapping[str, Any] | None = None,
    ) -> F | Callable[[F], F]:
        def decorate(fn: F) -> F:
            self.add(fn, name=name, description=description, parameters=parameters)
            return fn

        return decorate if function is None else decorate(function)

    def __len__(self) -> int:
        return len(self._tools)

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def definitions(self) -> list[dict[str, Any]]:
        """The ChatRequest ``tools`` list."""
        return [tool.definition() for tool in self._tools.values()]

    async def call(self, call: ToolCall) -> ToolResult:
        """Run one call; every failure becomes the result's text."""
        tool = self._tools.get(call.name)
        if tool is None:
            return ToolResult(call, f"Error: there is no tool named {call.name!r}.", True)
        try:
            arguments = call.parsed_arguments()
        except ValueError as exc:
            return ToolResult(call, f"Error: the arguments are not a JSON object ({exc}).", True)
        try:
            value = tool.function(**arguments)
            if inspect.isawaitable(value):
                value = await value
        except Exception as exc:  # the tool's failure is the model's to handle
            logger.info("tool %s failed", call.name, exc_info=True)
            return ToolResult(call, f"Error: {type(exc).__name__}: {exc}", True)
        return ToolResult(call, _as_text(value))


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


@dataclass(slots=True)
class ToolRun:
    """The outcome of :func:`run_tools`: the final answer and how it came about."""

    text: str  # the final answer
    done: Done  # the final request's ``done``
    messages: list[dict[str, Any]]  # the whole conversation, the final answer included
    results: list[ToolResult] = field(default_factory=list)  # every call run, in order
    rounds: int = 1  # requests sent


class StreamFactory(Protocol):
    def __call__(self, messages: Messages, **options: Any) -> Stream: ...


OnEvent = Callable[[StreamEvent], Awaitable[None] | None]


async def run_tools(
    stream: StreamFactory,
    messages: Messages,
    tools: Tools,
    *,
    max_rounds: int = 8,
    on_event: OnEvent | None = None,
    **options: Any,
) -> ToolRun:
    """Send ``messages`` with ``tools``; while the model asks for tool calls, run them and
    send the results back. ``on_event`` sees every stream event of every round (to show
    the answer as it streams). After ``max_rounds`` requests that all asked for tools,
    raise ``ChatError("max_tool_rounds")``; a failed request raises its ``ChatError``.
    """
    if options.get("room") is not None:
        raise ValueError("run_tools keeps the conversation itself: it cannot chat in a room")
    conversation = as_messages(messages)
    results: list[ToolResult] = []
    for round_number in range(1, max_rounds + 1):
        async with stream(conversation, tools=tools, **options) as current:
            async for event in current.events():
                if on_event is not None:
                    shown = on_event(event)
                    if inspect.isawaitable(shown):
                        await shown
            done = await current.result()
        calls = done.tool_calls if done.finish_reason in RUNNABLE else ()
        conversation.append(done.assistant_message(current.text))
        if not calls:
            return ToolRun(current.text, done, conversation, results, round_number)
        for call in calls:
            result = await tools.call(call)
            results.append(result)
            conversation.append(result.message())
    raise ChatError(MAX_ROUNDS, f"The model still asked for tools after {max_rounds} requests.")
