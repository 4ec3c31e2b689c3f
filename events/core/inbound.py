"""What every inbound payload model shares: strict, closed, immutable; the id patterns."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

REQUEST_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
ROOM_PATTERN = r"^[A-Za-z0-9_.:-]{1,64}$"

RequestId = Annotated[str, Field(pattern=REQUEST_ID_PATTERN, examples=["req-1"])]
RoomName = Annotated[str, Field(pattern=ROOM_PATTERN, examples=["lobby"])]
ModelName = Annotated[str, Field(min_length=1, max_length=200, examples=["openai/gpt-4o-mini"])]


class Inbound(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
