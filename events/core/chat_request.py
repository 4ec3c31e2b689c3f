"""The ``chat`` request of protocol v2 (PROTOCOL.md §1 "ChatRequest" and "Message").

Every field is checked for shape and range here; what passes is forwarded to the upstream
exactly as the client sent it (``events.core.admission.Admission.upstream_body``), so
these models never rebuild a payload: ``provider``, ``plugins``, JSON schemas, tool
parameters and reasoning details are opaque objects within the payload limits.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import orjson
from pydantic import Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from events.core.inbound import Inbound, ModelName, RequestId, RoomName

# -- chat: messages (PROTOCOL.md §1 "Message") -----------------------------------------

ToolName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$", examples=["get_weather"])]
ToolCallId = Annotated[str, Field(min_length=1, max_length=256)]
Opaque = dict[str, Any]  # forwarded as given (within the payload limits)


class CacheControl(Inbound):
    type: Literal["ephemeral"]


class TextPart(Inbound):
    type: Literal["text"]
    text: str
    cache_control: CacheControl | None = None


class ImageUrl(Inbound):
    url: str = Field(min_length=1, max_length=10_000_000)
    detail: Literal["auto", "low", "high"] | None = None


class ImagePart(Inbound):
    type: Literal["image_url"]
    image_url: ImageUrl


class FileData(Inbound):
    filename: str = Field(min_length=1, max_length=1024)
    file_data: str = Field(min_length=1)


class FilePart(Inbound):
    type: Literal["file"]
    file: FileData


class InputAudio(Inbound):
    data: str = Field(min_length=1)
    format: str = Field(pattern=r"^[a-z0-9]{1,16}$", examples=["wav", "mp3"])


class AudioPart(Inbound):
    type: Literal["input_audio"]
    input_audio: InputAudio


ContentPart = Annotated[TextPart | ImagePart | FilePart | AudioPart, Field(discriminator="type")]
Content = str | list[ContentPart]
TextContent = str | list[TextPart]


class _Message(Inbound):
    name: str | None = Field(None, min_length=1, max_length=64)

    def text_chars(self) -> int:
        """Characters of text, for ``MAX_MESSAGE_CHARS``."""
        content: Any = getattr(self, "content", None)
        if isinstance(content, str):
            return len(content)
        if isinstance(content, list):
            return sum(len(part.text) for part in content if isinstance(part, TextPart))
        return 0

    def text(self) -> str:
        """The message's text (its text parts joined), as rooms keep it."""
        content: Any = getattr(self, "content", None)
        if isinstance(content, str):
            return content
        if isinstance(content, list):
            return "".join(part.text for part in content if isinstance(part, TextPart))
        return ""


class SystemMessage(_Message):
    role: Literal["system"]
    content: Content


class UserMessage(_Message):
    role: Literal["user"]
    content: Content


class FunctionCall(Inbound):
    name: ToolName
    arguments: str = Field(max_length=10_000_000, description="A JSON text.")

    @field_validator("arguments")
    @classmethod
    def _json_text(cls, value: str) -> str:
        try:
            orjson.loads(value)
        except orjson.JSONDecodeError:
            raise ValueError("must be a JSON text") from None
        return value


class ToolCall(Inbound):
    id: ToolCallId
    type: Literal["function"]
    function: FunctionCall


class AssistantMessage(_Message):
    role: Literal["assistant"]
    content: TextContent | None = None
    tool_calls: list[ToolCall] | None = Field(None, min_length=1, max_length=128)
    reasoning: str | None = None
    reasoning_details: list[Opaque] | None = Field(
        None, description="As the server gave it in `done`, sent back unchanged."
    )

    @model_validator(mode="after")
    def _content_or_tool_calls(self) -> AssistantMessage:
        if self.content is None and not self.tool_calls:
            raise PydanticCustomError(
                "missing_content", "content is required unless tool_calls is given"
            )
        return self


class ToolMessage(_Message):
    role: Literal["tool"]
    tool_call_id: ToolCallId
    content: TextContent


ChatMessage = Annotated[
    SystemMessage | UserMessage | AssistantMessage | ToolMessage, Field(discriminator="role")
]


# -- chat: tools, formats, reasoning -------------------------------------------------------


class FunctionDef(Inbound):
    name: ToolName
    description: str | None = Field(None, max_length=100_000)
    parameters: Opaque | None = Field(None, description="A JSON Schema object, as given.")
    strict: bool | None = None


class Tool(Inbound):
    type: Literal["function"]
    function: FunctionDef


class NamedFunction(Inbound):
    name: ToolName


class NamedToolChoice(Inbound):
    type: Literal["function"]
    function: NamedFunction


class TextFormat(Inbound):
    type: Literal["text"]


class JsonObjectFormat(Inbound):
    type: Literal["json_object"]


class JsonSchemaSpec(Inbound):
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    schema_: Opaque = Field(alias="schema", description="A JSON Schema object, as given.")
    strict: bool | None = None
    description: str | None = None


class JsonSchemaFormat(Inbound):
    type: Literal["json_schema"]
    json_schema: JsonSchemaSpec


ResponseFormat = Annotated[
    TextFormat | JsonObjectFormat | JsonSchemaFormat, Field(discriminator="type")
]


class Reasoning(Inbound):
    effort: Literal["minimal", "low", "medium", "high"] | None = None
    max_tokens: int | None = Field(None, ge=0, le=1_000_000)
    exclude: bool | None = None
    enabled: bool | None = None


# Fields only OpenRouter knows: refused in the ``openai`` dialect (UPSTREAM_DIALECT).
OPENROUTER_ONLY_FIELDS = ("models", "provider", "transforms", "plugins")


class ChatRequest(Inbound):
    """``chat``: start a streamed completion.

    Every field but ``request_id`` and ``room`` is forwarded to the upstream exactly as
    sent, once it passed these checks (``provider``, ``plugins``, JSON schemas and tool
    parameters are opaque objects).
    """

    request_id: RequestId | None = Field(
        None, description="Client-chosen id of this request; the server makes one if absent."
    )
    messages: list[ChatMessage] = Field(
        min_length=1, description="The conversation; with `room`, only the new message(s)."
    )
    model: ModelName | None = Field(
        None, description="Default from `DEFAULT_MODEL`; must pass `ALLOWED_MODELS` if set."
    )
    models: list[ModelName] | None = Field(
        None,
        min_length=1,
        max_length=10,
        description="Fallback models, tried in order by the upstream (OpenRouter only).",
    )
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=0, le=1_000_000)
    min_p: float | None = Field(None, ge=0, le=1)
    top_a: float | None = Field(None, ge=0, le=1)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    repetition_penalty: float | None = Field(None, gt=0, le=2)
    max_tokens: int | None = Field(None, ge=1, le=1_000_000)
    stop: str | Annotated[list[str], Field(max_length=16)] | None = None
    seed: int | None = Field(None, ge=-(2**63), le=2**63 - 1)
    logit_bias: dict[Annotated[str, Field(pattern=r"^[0-9]{1,10}$")], float] | None = Field(
        None, max_length=1024, description="Token id (digits) → bias from -100 to 100."
    )
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    tools: list[Tool] | None = Field(None, min_length=1, max_length=128)
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    reasoning: Reasoning | None = None
    provider: Opaque | None = Field(
        None, description="OpenRouter provider routing, forwarded as given (OpenRouter only)."
    )
    transforms: list[Annotated[str, Field(min_length=1, max_length=64)]] | None = Field(
        None, max_length=16, description="OpenRouter only."
    )
    plugins: list[Opaque] | None = Field(
        None, max_length=16, description="OpenRouter plugins, forwarded as given."
    )
    room: RoomName | None = Field(None, description="Chat in this room (join it first).")

    @field_validator("logit_bias")
    @classmethod
    def _bias_range(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        if value is not None and any(not -100 <= bias <= 100 for bias in value.values()):
            raise ValueError("each bias must be between -100 and 100")
        return value
