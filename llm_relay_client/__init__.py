"""A small, typed Python client for llm-relay (Socket.IO streaming LLM chat).

import asyncio
from llm_relay_client import ChatClient

async def main() -> None:
    async with ChatClient("http://127.0.0.1:8000", token="...") as client:
        async for text in client.stream("Tell me a joke"):
            print(text, end="", flush=True)

asyncio.run(main())
"""

from llm_relay_client.auth import fetch_token
from llm_relay_client.client import ChatClient
from llm_relay_client.errors import ChatError
from llm_relay_client.models import (
    Done,
    Failure,
    Member,
    Message,
    Presence,
    Reasoning,
    RoomEvent,
    Session,
    StreamEvent,
    Token,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from llm_relay_client.rooms import Room
from llm_relay_client.stream import Stream
from llm_relay_client.sync import SyncChatClient, SyncRoom, SyncStream
from llm_relay_client.tools import Tool, ToolResult, ToolRun, Tools

__all__ = [
    "ChatClient",
    "ChatError",
    "Done",
    "Failure",
    "Member",
    "Message",
    "Presence",
    "Reasoning",
    "Room",
    "RoomEvent",
    "Session",
    "Stream",
    "StreamEvent",
    "SyncChatClient",
    "SyncRoom",
    "SyncStream",
    "Token",
    "Tool",
    "ToolCall",
    "ToolCallDelta",
    "ToolResult",
    "ToolRun",
    "Tools",
    "Usage",
    "fetch_token",
]
