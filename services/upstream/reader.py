"""Reading one 200 response of a chat-completions stream: ``ResponseReader.batches()``.

A reader holds the state of one attempt: the SSE decoder, the read deadline, and what the
stream has shown so far (``progress``, ``finished``, ``done``, ``eof``, ``yielded``).

- Until the first *progress* (answer text, reasoning, reasoning details, a tool-call piece
  or a finish reason) the first-token deadline applies; after it, the idle deadline, moved
  forward by every read.  Chunks before the first progress are held back and yielded with
  it, so a failure before then can be retried without a client seeing anything twice.
- With ``gather_s`` > 0 a read after the first progress waits that long after its first
  bytes and takes everything that came meanwhile (the first progress is never held back).
  When the last window caught several chunks (a fast stream), the next window lasts
  ``busy_gather_s`` if that is longer (``TOKEN_COALESCE_BUSY_MS``: fewer, larger events
  where the upstream is faster than anyone reads) and the connection's transport stops
  reading meanwhile (``pause_reading``, asyncio's public transport API), so what the
  upstream sends in the window waits in the kernel and comes in one read at its end: one
  socket read per window, not one per segment. A stream at a model's pace (a chunk or two
  per window) keeps ``gather_s`` and is not paused: there a pause saves no read and costs
  two ``epoll_ctl`` calls.
- After ``[DONE]`` the body is read to its end (briefly bounded), so aiohttp returns the
  connection to its pool; a reader that stops early closes the connection instead, which
  stops the generation upstream.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

import aiohttp

from services.upstream.base import Chunk, UpstreamError, UpstreamFailure
from services.upstream.chunks import MalformedChunk, StreamErrorChunk, parse_chunk
from services.upstream.deadline import ReadDeadline, sleep
from services.upstream.failures import (
    STREAM_RETRY_STATUSES,
    Retryable,
    failure,
    kind_for_status,
    log_detail,
)
from services.upstream.sse import SSEDecoder, SSEError

__all__ = ["DRAIN_S", "ResponseReader"]

DRAIN_S = 0.5  # after [DONE]: how long the rest of the body may take before we drop it
_DRAIN_LIMIT = 64 * 1024
_BUSY_CHUNKS = 4  # a window that caught this many chunks pauses the socket in the next one
# loop turns after resume_reading() until the socket's data reached the response's buffer
_POLL_TURNS = {"uvloop": 1}


class ResponseReader:
    __slots__ = (
        "_busy",
        "_busy_gather_s",
        "_decoder",
        "_failure",
        "_first_deadline",
        "_gather_s",
        "_held",
        "_idle_s",
        "_loop",
        "_resp",
        "_secret",
        "_total_deadline",
        "_turns",
        "_watchdog",
        "done",
        "eof",
        "finished",
        "progress",
        "yielded",
    )

    def __init__(
        self,
        resp: aiohttp.ClientResponse,
        *,
        first_deadline: float,
        total_deadline: float,
        idle_s: float,
        gather_s: float = 0.0,
        busy_gather_s: float = 0.0,
        secret: str | None = None,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._resp = resp
        self._first_deadline = first_deadline
        self._total_deadline = total_deadline
        self._idle_s = idle_s
        self._gather_s = gather_s
        self._busy = False  # the last window caught _BUSY_CHUNKS or more
        self._busy_gather_s = max(busy_gather_s, gather_s)  # never shorter than gather_s
        self._turns = _POLL_TURNS.get(type(self._loop).__module__.partition(".")[0], 2)
        self._secret = secret  # redacted from logged upstream text
        self._decoder = SSEDecoder()
        self._watchdog = ReadDeadline(self._loop)
        self._held: list[Chunk] = []
        self._failure: UpstreamError | Retryable | None = None
        self.progress = False  # the first-token deadline is met
        self.finished = False  # a finish_reason arrived
        self.done = False  # [DONE] arrived
        self.eof = False  # the body was read to its end
        self.yielded = False

    async def batches(self) -> AsyncGenerator[list[Chunk], None]:
        """The chunks of each read (or gather window) until the stream ends."""
        try:
            while not (self.done or self.eof):
                chunks = self._decode(await self._read())
                self._busy = len(chunks) >= _BUSY_CHUNKS
                if chunks:
                    self.yielded = True
                    yield chunks
                if self._failure is not None:
                    raise self._failure
            if self._held:  # a stream with no progress at all: let the caller see it
                held, self._held = self._held, []
                self.yielded = True
                yield held
            if self.done:
                await self._drain()
            elif not self.finished:
                log_detail("stream ended before finishing", None, None)
                raise failure(UpstreamFailure.STREAM)
        finally:
            self._watchdog.close()
            if not self.eof:
                self._resp.close()  # stop the generation upstream: drop the connection

    async def _read(self) -> bytes:
        """The next bytes of the body (b"" at its end), within the current deadline."""
        loop, content = self._loop, self._resp.content
        if self.progress:
            deadline = min(self._total_deadline, loop.time() + self._idle_s)
        else:
            deadline = self._first_deadline
        self._watchdog.arm(deadline)
        try:
            raw = await content.readany()
            if raw and self._gather_s and self.progress:
                if self._busy:
                    await self._gather_paused()
                else:
                    await sleep(loop, self._gather_s)  # let the window fill
                more = content.read_nowait()
                if more:
                    raw += more
        except asyncio.CancelledError:
            if self._watchdog.expired():
                raise failure(UpstreamFailure.TIMEOUT) from None
            raise
        except (aiohttp.ClientError, OSError) as exc:  # the body broke off
            if self.yielded:
                raise failure(UpstreamFailure.STREAM) from exc
            raise Retryable(failure(UpstreamFailure.UNAVAILABLE), "connection") from exc
        finally:
            self._watchdog.disarm()
        return raw

    async def _gather_paused(self) -> None:
        """Let a busy stream's window fill with the socket's reading paused, then read what
        came once.

        The transport is paused only when it is reading (aiohttp pauses it itself when its
        buffer is full; that pause is left alone) and is always resumed. After the resume the
        loop reads the socket on its next poll: one turn of uvloop's loop, two of asyncio's
        (its ready callbacks run before the I/O callbacks of the same turn); anything later
        belongs to the next window.
        """
        connection = self._resp.connection  # None once the body is in: the pool has it back
        transport = connection.transport if connection is not None else None
        if transport is None or not transport.is_reading():
            await sleep(self._loop, self._busy_gather_s)  # let the window fill
            return
        transport.pause_reading()
        try:
            await sleep(self._loop, self._busy_gather_s)
        finally:
            if not transport.is_closing():
                transport.resume_reading()
        for _ in range(self._turns):
            await asyncio.sleep(0)

    def _decode(self, raw: bytes) -> list[Chunk]:
        """The chunks ``raw`` completed that may be yielded now; sets the stream's flags."""
        try:
            if raw:
                events = self._decoder.feed(raw)
            else:
                self.eof = True
                events = self._decoder.close()
        except SSEError as exc:
            raise failure(UpstreamFailure.STREAM) from exc
        chunks = self._held
        for payload in events:
            if payload == b"[DONE]" or payload.strip() == b"[DONE]":
                self.done = True
                break
            try:
                chunk = parse_chunk(payload)
            except MalformedChunk:
                log_detail(f"malformed data line ({len(payload)} bytes)", None, None)
                self._failure = failure(UpstreamFailure.STREAM)
                break
            except StreamErrorChunk as exc:
                self._failure = self._stream_error(exc)
                break
            chunks.append(chunk)
            if not self.progress and (
                chunk.content
                or chunk.reasoning
                or chunk.tool_calls
                or chunk.reasoning_details
                or chunk.finish_reason
            ):
                self.progress = True
            if chunk.finish_reason is not None:
                self.finished = True
        if not self.progress:
            if isinstance(self._failure, Retryable):
                chunks.clear()  # the next attempt starts afresh
            return []  # held until the first progress
        self._held = []
        return chunks

    def _stream_error(self, exc: StreamErrorChunk) -> UpstreamError | Retryable:
        status = exc.status
        log_detail(f"stream error (code {status})", exc.detail, self._secret)
        if status in STREAM_RETRY_STATUSES and not self.progress and not self.yielded:
            # Before anything was yielded: like the same HTTP status (retried, then mapped).
            error = failure(kind_for_status(status), status=status)
            return Retryable(error, f"stream_{status}")
        return failure(UpstreamFailure.STREAM, status=status)

    async def _drain(self) -> None:
        """Read what follows ``[DONE]`` to the end of the body, so the connection is reused."""
        content = self._resp.content
        left = _DRAIN_LIMIT
        try:
            async with asyncio.timeout(DRAIN_S):
                while left > 0 and not content.at_eof():
                    part = await content.readany()
                    if not part:
                        break
                    left -= len(part)
        except (TimeoutError, aiohttp.ClientError, OSError):
            return  # the finally of batches() drops the connection
        self.eof = content.at_eof()
