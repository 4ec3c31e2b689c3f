"""A raw WebSocket client over a plain socket: it sends exactly the frames it is told
(a close frame with no status code, say) and can stop reading, with a small receive
buffer, as a client that no longer drains would."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct
from dataclasses import dataclass
from typing import Any

import orjson

OP_TEXT, OP_CLOSE = 0x1, 0x8


def masked(opcode: int, payload: bytes) -> bytes:
    """One client frame (clients must mask)."""
    length = len(payload)
    if length < 126:
        header = bytes([0x80 | opcode, 0x80 | length])
    elif length < 1 << 16:
        header = bytes([0x80 | opcode, 0x80 | 126]) + struct.pack("!H", length)
    else:
        header = bytes([0x80 | opcode, 0x80 | 127]) + struct.pack("!Q", length)
    mask = os.urandom(4)
    keystream = (mask * (length // 4 + 1))[:length]
    body = (int.from_bytes(payload, "big") ^ int.from_bytes(keystream, "big")).to_bytes(
        length, "big"
    )
    return header + mask + body


@dataclass
class RawWebSocket:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    @classmethod
    async def open(
        cls, port: int, path: str, token: str, *, rcvbuf: int | None = None
    ) -> RawWebSocket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:  # before connect, so the window is small from the start
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        # asyncio would read into its own buffer for us: keep that small too
        reader, writer = await asyncio.open_connection(sock=sock, limit=rcvbuf or 1 << 16)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            (
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                f"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {token}\r\n\r\n"
            ).encode()
        )
        status = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert status.startswith(b"HTTP/1.1 101"), status
        return cls(reader, writer)

    async def send_json(self, data: Any) -> None:
        self.writer.write(masked(OP_TEXT, orjson.dumps(data)))
        await self.writer.drain()

    async def send_frame(self, opcode: int, payload: bytes) -> None:
        self.writer.write(masked(opcode, payload))
        await self.writer.drain()

    async def send_frame_start(self, opcode: int, length: int, first: bytes = b"{") -> None:
        """Only the start of a frame that says it is ``length`` bytes long: a server that
        caps frames refuses it from its header.  Sending the whole of a frame over the cap
        would race the server's close: the bytes it no longer reads turn its close into a
        TCP reset, which can arrive before its close frame is read here."""
        mask = os.urandom(4)
        head = bytes([0x80 | opcode, 0x80 | 127]) + struct.pack("!Q", length) + mask
        body = bytes(b ^ mask[i % 4] for i, b in enumerate(first))
        self.writer.write(head + body)
        await self.writer.drain()

    async def frame(self, timeout: float = 10) -> tuple[int, bytes]:
        """The next server frame (opcode, payload); ``(OP_CLOSE, b"")`` at end of stream."""
        try:
            head = await asyncio.wait_for(self.reader.readexactly(2), timeout)
        except asyncio.IncompleteReadError:
            return OP_CLOSE, b""
        length = head[1] & 0x7F
        if length == 126:
            length = struct.unpack("!H", await self.reader.readexactly(2))[0]
        elif length == 127:
            length = struct.unpack("!Q", await self.reader.readexactly(8))[0]
        return head[0] & 0x0F, await self.reader.readexactly(length)

    async def json(self, timeout: float = 10) -> Any:
        opcode, payload = await self.frame(timeout)
        while opcode != OP_TEXT:
            if opcode == OP_CLOSE:
                raise ConnectionError(f"closed: {payload!r}")
            opcode, payload = await self.frame(timeout)
        return orjson.loads(payload)

    async def close_code(self, timeout: float = 10) -> int | None:
        """Read until the server's close frame; its status code (None without one)."""
        while True:
            opcode, payload = await self.frame(timeout)
            if opcode == OP_CLOSE:
                return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None

    def stop_reading(self) -> None:
        """Read nothing more: the kernel's small receive buffer fills, the window shuts."""
        self.writer.transport.pause_reading()  # type: ignore[attr-defined]

    def abort(self) -> None:
        self.writer.transport.abort()
