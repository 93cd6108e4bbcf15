"""A caller's body relayed as it arrives: flow control, a second attempt, a caller gone."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable

import pytest

from lumen_jupyter.server.relayed_body import BodyAborted, RelayedBody


async def read_all(pieces: AsyncIterable[bytes]) -> bytes:
    return b"".join([piece async for piece in pieces])


async def test_pieces_pass_in_order_as_they_arrive() -> None:
    body = RelayedBody()
    reader = body.open()
    assert reader is not None
    reading = asyncio.ensure_future(read_all(reader))
    for piece in (b"one ", b"two ", b"three"):
        await body.feed(piece)
    await asyncio.sleep(0)
    assert not reading.done()  # the body is not complete yet
    body.end()
    assert await reading == b"one two three"


async def test_a_caller_faster_than_the_reader_is_held_at_the_window() -> None:
    body = RelayedBody(window_bytes=10, replay_bytes=0)
    assert await asyncio.wait_for(body.feed(b"x" * 10), 1) is None  # within the window
    feeding = asyncio.ensure_future(body.feed(b"y" * 5))
    await asyncio.sleep(0.05)
    assert not feeding.done()  # 15 bytes unread: the caller waits
    reader = body.open()
    assert reader is not None
    first = await reader.__anext__()
    assert first == b""  # the head goes out before any byte of the body
    assert await reader.__anext__() == b"x" * 10
    await asyncio.wait_for(feeding, 1)  # read: the caller goes on
    body.end()
    assert await read_all(reader) == b"y" * 5


async def test_a_second_attempt_sends_the_whole_body_again() -> None:
    body = RelayedBody()
    first = body.open()
    assert first is not None
    await body.feed(b"abc")
    await body.feed(b"def")
    assert [await first.__anext__() for _ in range(3)] == [b"", b"abc", b"def"]
    second = body.open()  # the connection broke before any answer
    assert second is not None
    await body.feed(b"ghi")
    body.end()
    assert await read_all(second) == b"abcdefghi"
    assert await read_all(first) == b""  # the old attempt stops


async def test_a_body_larger_than_the_replay_limit_cannot_be_sent_again() -> None:
    body = RelayedBody(replay_bytes=4)
    reader = body.open()
    assert reader is not None
    await body.feed(b"12345")
    body.end()
    assert await read_all(reader) == b"12345"
    assert body.open() is None


async def test_once_answered_the_body_is_not_kept() -> None:
    body = RelayedBody()
    reader = body.open()
    assert reader is not None
    await body.feed(b"abc")
    assert await reader.__anext__() == b""
    assert await reader.__anext__() == b"abc"
    body.answered()
    assert body.open() is None


async def test_a_service_that_answered_and_stopped_reading_does_not_hold_the_caller() -> None:
    body = RelayedBody(window_bytes=4)
    reader = body.open()
    assert reader is not None
    body.answered()  # refused early; the reader is never read again
    await asyncio.wait_for(body.feed(b"12345678"), 1)
    await asyncio.wait_for(body.feed(b"more"), 1)
    with pytest.raises(BodyAborted):
        await read_all(reader)


async def test_a_caller_that_goes_away_fails_the_body() -> None:
    body = RelayedBody()
    reader = body.open()
    assert reader is not None
    await body.feed(b"half")
    reading = asyncio.ensure_future(read_all(reader))
    await asyncio.sleep(0)
    body.abort()
    with pytest.raises(BodyAborted):
        await reading
