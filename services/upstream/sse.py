"""Incremental Server-Sent-Events decoder working on bytes (no network code).

Modelled on httpx's ``LineDecoder``: feed it whatever the network delivered, get back the
``data`` payload of every event those bytes completed. Lines end in LF, CRLF or CR; a CR at
the very end of a chunk may be the first half of a CRLF split across two reads. Bytes are
never decoded (a read may end inside a multi-byte UTF-8 character; the caller parses JSON
from the bytes it gets back) and every input byte is scanned exactly once.  A read of
whole one-line ``data: `` events (what chat-completions streams send) is split in one
pass instead of line by line (issue 17, point 5).
"""

from __future__ import annotations

__all__ = ["MAX_EVENT_BYTES", "MAX_LINE_BYTES", "SSEDecoder", "SSEError"]

MAX_LINE_BYTES = 1 << 20
MAX_EVENT_BYTES = 8 << 20

_BOM = b"\xef\xbb\xbf"
_LF = 0x0A
_COLON = 0x3A


class SSEError(Exception):
    """The event stream breaks the decoder's limits."""


class SSEDecoder:
    """Turns a byte stream into event data payloads; see the module docstring."""

    __slots__ = (
        "_data",
        "_data_size",
        "_first_line",
        "_max_event",
        "_max_line",
        "_partial",
        "_skip_lf",
    )

    def __init__(
        self, *, max_line_bytes: int = MAX_LINE_BYTES, max_event_bytes: int = MAX_EVENT_BYTES
    ) -> None:
        self._max_line = max_line_bytes
        self._max_event = max_event_bytes
        self._partial = bytearray()  # the unterminated line at the end of the input so far
        self._skip_lf = False  # the input so far ended in CR: a leading LF completes a CRLF
        self._first_line = True  # a UTF-8 BOM may open the stream
        self._data: list[bytes] = []  # data lines of the event being read
        self._data_size = 0

    def feed(self, data: bytes) -> list[bytes]:
        """Decode the next piece of input; return the payloads of the events it completed."""
        if not data:
            return []
        if not (self._skip_lf or self._partial or self._data or self._first_line):
            whole = self._whole_events(data)
            if whole is not None:
                return whole
        if self._skip_lf:
            self._skip_lf = False
            if data[0] == _LF:
                data = data[1:]
                if not data:
                    return []
        events: list[bytes] = []
        for piece in data.splitlines(keepends=True):  # bytes split on LF, CRLF, CR only
            if piece.endswith(b"\n"):
                line = piece[:-2] if piece.endswith(b"\r\n") else piece[:-1]
            elif piece.endswith(b"\r"):
                line = piece[:-1]
            else:  # the last piece: no line ending yet
                if len(self._partial) + len(piece) > self._max_line:
                    raise SSEError("event stream line too long")
                self._partial += piece
                break
            if self._partial:
                self._partial += line
                line = bytes(self._partial)
                self._partial.clear()
            if len(line) > self._max_line:
                raise SSEError("event stream line too long")
            self._line(line, events)
        self._skip_lf = data.endswith(b"\r")
        return events

    def _whole_events(self, data: bytes) -> list[bytes] | None:
        """The common read, decoded in one pass: whole events of one ``data: `` line each,
        LF-terminated (what the general path would return); None for anything else."""
        if not data.endswith(b"\n\n") or b"\r" in data:
            return None
        parts = data[:-2].split(b"\n\n")
        if data.count(b"\n") != 2 * len(parts):  # an event of several lines, a blank line
            return None
        events: list[bytes] = []
        for part in parts:
            if (
                not part.startswith(b"data: ")
                or len(part) > self._max_line
                or len(part) - 5 > self._max_event
            ):
                return None  # another field, a comment, or a limit the general path reports
            events.append(part[6:])
        return events

    def close(self) -> list[bytes]:
        """End of input: return an event whose data was read but that no blank line ended."""
        events: list[bytes] = []
        if self._partial:
            line = bytes(self._partial)
            self._partial.clear()
            self._line(line, events)
        self._skip_lf = False
        self._dispatch(events)
        return events

    def _line(self, line: bytes, events: list[bytes]) -> None:
        if self._first_line:
            self._first_line = False
            if line.startswith(_BOM):
                line = line[len(_BOM) :]
        if not line:
            self._dispatch(events)
            return
        if line.startswith(b"data:"):
            value = line[5:]
        elif line[0] == _COLON:  # a comment, e.g. ": OPENROUTER PROCESSING"
            return
        elif line == b"data":  # a field name alone means an empty value
            value = b""
        else:  # event:, id:, retry: and unknown fields
            return
        if value[:1] == b" ":
            value = value[1:]
        self._data_size += len(value) + 1
        if self._data_size > self._max_event:
            raise SSEError("event stream event too large")
        self._data.append(value)

    def _dispatch(self, events: list[bytes]) -> None:
        if self._data:
            events.append(self._data[0] if len(self._data) == 1 else b"\n".join(self._data))
            self._data = []
            self._data_size = 0
