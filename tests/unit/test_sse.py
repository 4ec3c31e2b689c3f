from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.upstream.sse import SSEDecoder, SSEError


def decode(*pieces: bytes) -> list[bytes]:
    decoder = SSEDecoder()
    events: list[bytes] = []
    for piece in pieces:
        events += decoder.feed(piece)
    return events + decoder.close()


def test_basic_events_and_comments() -> None:
    stream = b': OPENROUTER PROCESSING\n\ndata: {"a":1}\n\ndata:{"b":2}\n\n'
    assert decode(stream) == [b'{"a":1}', b'{"b":2}']


def test_multiline_data_joined_and_other_fields_ignored() -> None:
    stream = b"event: message\nid: 7\nretry: 10\ndata: one\ndata:  two\ndata\nfoo: bar\n\n"
    assert decode(stream) == [b"one\n two\n"]


def test_blank_lines_without_data_dispatch_nothing() -> None:
    assert decode(b"\n\n: ping\n\nevent: x\n\n") == []


def test_line_endings_lf_crlf_cr() -> None:
    assert decode(b"data: a\r\n\r\ndata: b\r\rdata: c\n\n") == [b"a", b"b", b"c"]


def test_crlf_split_between_chunks_is_one_line_ending() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"\n") == []  # the LF completes the CRLF: no blank line yet
    assert decoder.feed(b"\r") == [b"a"]
    assert decoder.feed(b"\ndata: b\r\n\r\n") == [b"b"]


def test_returns_only_events_completed_by_each_feed() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"da") == []
    assert decoder.feed(b"ta: x\n") == []
    assert decoder.feed(b"\ndata: y\n\ndata: z") == [b"x", b"y"]
    assert decoder.close() == [b"z"]
    assert decoder.close() == []


def test_split_inside_multibyte_utf8() -> None:
    payload = orjson.dumps({"t": "héllo ✓ 𝄞"})
    stream = b"data: " + payload + b"\n\n"
    cut = stream.index("✓".encode()) + 1
    assert decode(stream[:cut], stream[cut:]) == [payload]
    assert orjson.loads(decode(stream[:cut], stream[cut:])[0]) == {"t": "héllo ✓ 𝄞"}


def test_close_dispatches_pending_event() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\n") == []
    assert decoder.close() == [b"a"]


def test_leading_bom_is_ignored() -> None:
    assert decode(b"\xef\xbb\xbfdata: a\n\n") == [b"a"]


def test_line_over_limit_raises_even_when_unterminated() -> None:
    decoder = SSEDecoder(max_line_bytes=16)
    decoder.feed(b"data: 0123456789")
    with pytest.raises(SSEError):
        decoder.feed(b"abc")


def test_default_limit_is_one_mebibyte() -> None:
    decoder = SSEDecoder()
    line = b"data: " + b"x" * ((1 << 20) - 6)
    assert decoder.feed(line + b"\n\n") == [line[6:]]
    decoder.feed(line)
    with pytest.raises(SSEError):
        decoder.feed(b"x")


def test_event_over_limit_raises() -> None:
    decoder = SSEDecoder(max_event_bytes=32)
    with pytest.raises(SSEError):
        decoder.feed(b"data: 0123456789\n" * 4)


_text = st.text(st.characters(codec="utf-8"), max_size=12)
_comment = st.text(
    st.characters(codec="utf-8", exclude_characters="\r\n"),
    max_size=12,
).map(lambda t: [(":" + t).encode()])
_event = st.tuples(
    st.lists(st.dictionaries(st.sampled_from(["content", "role"]), _text), min_size=1, max_size=3),
    st.booleans(),
    st.booleans(),
).map(
    lambda t: (
        [b"event: message"] * t[2]
        + [(b"data: " if t[1] else b"data:") + orjson.dumps(obj) for obj in t[0]]
    )
)


@st.composite
def streams(draw: st.DrawFn) -> tuple[bytes, list[bytes]]:
    """A byte stream of random events and comments, with the payloads it carries."""
    lines: list[bytes] = []
    expected: list[bytes] = []
    for is_event, block in draw(
        st.lists(st.one_of(_event.map(lambda b: (True, b)), _comment.map(lambda b: (False, b))))
    ):
        lines += [*block, b""]
        if is_event:
            expected.append(
                b"\n".join(
                    line.partition(b":")[2].removeprefix(b" ")
                    for line in block
                    if line.startswith(b"data")
                )
            )
    out = bytearray()
    previous = b""
    for line in lines:
        endings = [b"\n", b"\r\n", b"\r"]
        if not line and previous == b"\r":
            endings = [b"\r\n", b"\r"]  # CR then LF would be one CRLF, not a blank line
        previous = draw(st.sampled_from(endings))
        out += line + previous
    return bytes(out), expected


@given(streams(), st.data())
def test_any_split_gives_the_same_events(
    stream: tuple[bytes, list[bytes]], data: st.DataObject
) -> None:
    raw, expected = stream
    assert decode(raw) == expected
    cuts = sorted(data.draw(st.lists(st.integers(0, len(raw)), max_size=20)))
    pieces = [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True)]
    assert decode(*pieces) == expected
    assert decode(*(raw[i : i + 1] for i in range(len(raw)))) == expected


@pytest.mark.parametrize(
    "raw",
    [
        b'data: {"a":1}\n\n',
        b'data: {"a":1}\n\ndata: {"b":2}\n\n',
        b"data: \n\n",
        b"data:x\n\n",  # no space: the general path
        b"data: a\ndata: b\n\n",  # one event of two lines
        b"data: a\n\n\n\n",  # a blank line more
        b": comment\n\ndata: a\n\n",
        b"event: x\ndata: a\n\n",
        b"data: a\r\n\r\n",
        b"data: a\n\ndata: b",  # an unterminated event
    ],
)
def test_whole_event_reads_decode_as_line_by_line(raw: bytes) -> None:
    warm = b'data: {"w":0}\n\n'  # past the first line: the one-pass path may apply
    byte_by_byte = decode(warm, *(raw[i : i + 1] for i in range(len(raw))))
    assert decode(warm, raw) == byte_by_byte
    decoder = SSEDecoder()
    decoder.feed(warm)
    assert decoder.feed(raw) + decoder.close() == byte_by_byte[1:]


def test_whole_event_reads_keep_the_limits() -> None:
    decoder = SSEDecoder(max_line_bytes=10)
    decoder.feed(b"data: a\n\n")
    with pytest.raises(SSEError):
        decoder.feed(b"data: " + b"x" * 10 + b"\n\n")
    decoder = SSEDecoder(max_event_bytes=4)
    decoder.feed(b"data: a\n\n")
    with pytest.raises(SSEError):
        decoder.feed(b"data: xxxx\n\n")
    decoder = SSEDecoder(max_event_bytes=4)
    decoder.feed(b"data: a\n\n")
    assert decoder.feed(b"data: xxx\n\n") == [b"xxx"]
