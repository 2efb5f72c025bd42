"""A bad reply fails its call only, and the receiver's ``max_message_size`` holds for
every message it takes: in both cases the link stays up and nothing else is lost.

Two nodes in this process, linked over loopback (the same code paths as between
processes: the link frames are written and read through real sockets)."""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any

import pytest

import skycluster
from skycluster import MessageTooLarge, NodeDown, UnencodableMessage

COOKIE = "limits-test-cookie"


def _name(label: str) -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"{label}@127.0.0.1:{sock.getsockname()[1]}"


def _cluster(label: str, **options: Any) -> skycluster.Cluster:
    return skycluster.Cluster(_name(label), cookie=COOKIE, port_mapper=False, **options)


async def _linked(a: skycluster.Cluster, b: skycluster.Cluster) -> str:
    assert b.address is not None
    target = f"{b.name}:{b.address.rsplit(':', 1)[1]}"
    assert await a.connect(target)
    return target


async def _downs(events: skycluster.AsyncSubscription) -> list[NodeDown]:
    """The NodeDowns published so far (a NodeDown caused by a bad message would be
    out well within the wait)."""
    found = []
    while True:
        try:
            event = await asyncio.wait_for(events.get(), 0.5)
        except TimeoutError:
            return found
        if isinstance(event, NodeDown):
            found.append(event)


def test_a_reply_that_cannot_be_sent_fails_that_call_only(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        async with _cluster("b", max_message_size=64 * 1024) as b, _cluster("a") as a:
            b.serve("bad", lambda request: object())  # msgpack cannot encode it
            b.serve("huge", lambda request: b"x" * (100 * 1024))  # above b's own limit
            b.serve("echo", lambda request: request)
            box = b.register("inbox")
            target = await _linked(a, b)
            events = a.subscribe()

            with pytest.raises(UnencodableMessage, match="'bad'"):
                await a.call(target, "bad", 1, timeout=10)
            with pytest.raises(MessageTooLarge, match="max_message_size"):
                await a.call(target, "huge", 1, timeout=10)
            with pytest.raises(MessageTooLarge, match="max_message_size"):
                await a.call(target, "huge", 2, timeout=10)

            # A mailbox's Request.reply with an unsendable value: the replier learns at
            # once (it raises there), the caller gets the same documented error.
            pending = asyncio.ensure_future(a.call(target, "inbox", "q", timeout=10))
            request = await box.get()
            with pytest.raises(UnencodableMessage):
                request.reply(object())
            with pytest.raises(UnencodableMessage):
                await pending

            # The link stayed: later calls work, and nobody saw a NodeDown.
            assert await a.call(target, "echo", [1, "two"], timeout=10) == [1, "two"]
            assert await _downs(events) == []
            assert a.nodes() == [b.name]
            assert b.nodes() == [a.name]
            counters = b.stats()
            assert counters.get("unsendable_replies") == 4
            assert counters.get("protocol_errors", 0) == 0

    with caplog.at_level(logging.WARNING, logger="skycluster"):
        asyncio.run(asyncio.wait_for(scenario(), 60))
    # logged once per handler and cause, not once per call
    unsendable = [r for r in caplog.records if "could not be sent" in r.getMessage()]
    assert 1 <= len(unsendable) <= 3, [r.getMessage() for r in unsendable]


@pytest.mark.parametrize("kib", [60, 100, 127, 129, 300])
def test_the_receivers_max_message_size_holds_for_every_message(kib: int) -> None:
    limit = 64 * 1024

    async def scenario() -> None:
        async with _cluster("strict", max_message_size=limit) as strict, _cluster("loose") as loose:
            box = strict.register("sink")
            target = await _linked(loose, strict)
            events = loose.subscribe()
            body = b"x" * (kib * 1024)
            await loose.send(target, "sink", body)
            await loose.send(target, "sink", b"after")
            first = await asyncio.wait_for(box.get(), 10)
            if kib * 1024 < limit:
                assert first == body
                assert await asyncio.wait_for(box.get(), 10) == b"after"
                assert strict.stats().get("messages_too_large", 0) == 0
            else:
                assert first == b"after", "a message above max_message_size was accepted"
                assert strict.stats().get("messages_too_large") == 1
            assert await _downs(events) == []
            assert strict.nodes() == [loose.name]

    asyncio.run(asyncio.wait_for(scenario(), 60))
