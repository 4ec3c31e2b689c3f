"""A connection's packet queue: ``asyncio.Queue``'s interface, lighter.

python-engineio (outgoing packets) and uvicorn (received messages) give every connection
an ``asyncio.Queue``: three deques and an ``asyncio.Event`` with a fourth; and on Python
3.11 ``get()`` looks the running loop up whenever it has to wait, a ``getpid()`` system
call per ``token`` event.  These queues are unbounded and have one reader at a time, so
one deque and a few attributes do.  Measured per use (``python -m bench --repeat 3``,
RSS per idle connection): python-engineio's queue -2.3 KiB, uvicorn's -2.7 KiB (of
about 31 KiB); see engineio_socket.py and uvicorn_websocket.py.  No library code is
overridden here; ``asyncio.Queue``'s interface is the contract.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any


class PacketQueue:
    """Unbounded FIFO with ``get``/``put``/``task_done``/``join`` as ``asyncio.Queue``."""

    __slots__ = ("_getters", "_items", "_joiners", "_loop", "_unfinished")

    def __init__(self) -> None:
        self._items: deque[Any] = deque()
        self._getters: list[asyncio.Future[None]] | None = None
        self._joiners: list[asyncio.Future[None]] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._unfinished = 0

    def __repr__(self) -> str:
        return f"<PacketQueue size={len(self._items)} unfinished={self._unfinished}>"

    def qsize(self) -> int:
        return len(self._items)

    def empty(self) -> bool:
        return not self._items

    def full(self) -> bool:
        return False

    def put_nowait(self, item: Any) -> None:
        self._items.append(item)
        self._unfinished += 1
        self._wake_getter()

    async def put(self, item: Any) -> None:
        self.put_nowait(item)

    def get_nowait(self) -> Any:
        if not self._items:
            raise asyncio.QueueEmpty
        return self._items.popleft()

    async def get(self) -> Any:
        while not self._items:
            future = self._future()
            if self._getters is None:
                self._getters = []
            self._getters.append(future)
            try:
                await future
            except BaseException:
                future.cancel()
                if self._getters is not None and future in self._getters:
                    self._getters.remove(future)
                if self._items and not future.cancelled():
                    self._wake_getter()  # woken, then cancelled: pass the turn on
                raise
        return self._items.popleft()

    def task_done(self) -> None:
        if self._unfinished <= 0:
            raise ValueError("task_done() called too many times")
        self._unfinished -= 1
        if self._unfinished == 0 and self._joiners:
            joiners, self._joiners = self._joiners, None
            for future in joiners:
                if not future.done():
                    future.set_result(None)

    async def join(self) -> None:
        if self._unfinished:
            future = self._future()
            if self._joiners is None:
                self._joiners = []
            self._joiners.append(future)
            await future

    def _future(self) -> asyncio.Future[None]:
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        return loop.create_future()

    def _wake_getter(self) -> None:
        getters = self._getters
        while getters:
            future = getters.pop(0)
            if not future.done():
                future.set_result(None)
                return
