"""The distribution layer's hooks, on bare nodes linked over loopback: the frame
handler registry, the link listener and a link's direct write from another thread."""

from __future__ import annotations

import asyncio
import errno
import itertools
import os
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import pytest

from skycluster.config import node_settings
from skycluster.distribution import frame_types, frames
from skycluster.distribution.link import (
    NOT_WRITTEN,
    WRITE_FAILED,
    WROTE,
    WROTE_PART,
    Link,
)
from skycluster.distribution.node import Node
from skycluster.distribution.settings import NodeSettings
from skycluster.events import EventBus
from skycluster.membership.driver import MembershipDriver
from skycluster.names import NodeName

COOKIE = b"frame-handlers-cookie"
SPARE = range(40, 45)  # types no layer uses


def run(test: Callable[[], Coroutine[Any, Any, None]]) -> Callable[[], None]:
    def sync() -> None:
        asyncio.run(asyncio.wait_for(test(), 30))

    sync.__name__ = test.__name__
    sync.__doc__ = test.__doc__
    return sync


def settings(name: str) -> NodeSettings:
    # the table's defaults; no port mapper (the nodes are dialled by port)
    return node_settings({"name": f"{name}@127.0.0.1", "port_mapper": False}, {})


@asynccontextmanager
async def nodes(*names: str) -> AsyncIterator[list[Node]]:
    started: list[Node] = []
    deciders: list[MembershipDriver] = []
    try:
        for name in names:
            node = Node(settings(name), COOKIE, EventBus())
            deciders.append(MembershipDriver(node))  # decides about its links
            await node.start()
            deciders[-1].start()
            started.append(node)
        yield started
    finally:
        for decider in deciders:
            await decider.aclose()
        for node in started:
            await node.stop()


async def link(a: Node, b: Node) -> Link:
    """a's link to b, once both ends are up."""
    assert await a.connect(NodeName.parse(f"{b.identity}:{b.port}"))
    await until(lambda: a.identity in b.links)
    return a.links[b.identity]


async def until(check: Callable[[], bool], within: float = 10.0) -> None:
    async with asyncio.timeout(within):
        while not check():  # noqa: ASYNC110 - state changed by the nodes' callbacks
            await asyncio.sleep(0.005)


class Recorder:
    """A frame handler that keeps what it got: (link's peer, kind, decoded frame)."""

    def __init__(self, fail_on: int | None = None) -> None:
        self.got: list[tuple[str | None, int, Any]] = []
        self.fail_on = fail_on

    def __call__(self, link: Link, kind: int, payload: bytes) -> None:
        if kind == self.fail_on:
            raise RuntimeError("a bug in a handler")
        self.got.append((link.identity, kind, frames.unpack(payload)))


class Listener:
    def __init__(self) -> None:
        self.events: list[tuple[str, str | None]] = []
        self.reads = 0

    def link_up(self, link: Link) -> None:
        self.events.append(("up", link.identity))

    def link_down(self, link: Link) -> None:
        self.events.append(("down", link.identity))

    def read_done(self) -> None:
        self.reads += 1

    def pause_writing(self, link: Link) -> None:
        self.events.append(("pause", link.identity))

    def resume_writing(self, link: Link) -> None:
        self.events.append(("resume", link.identity))


@run
async def test_a_registered_range_gets_its_frames_and_other_types_are_ignored() -> None:
    async with nodes("a", "b") as (a, b):
        recorder = Recorder()
        b.handle_frames(SPARE, recorder)
        to_b = await link(a, b)
        to_b.send([SPARE.start, "first"])
        to_b.send([90, "nobody handles this type"])
        to_b.send([SPARE.stop - 1, {"last": True}])
        to_b.send([SPARE.stop, "just past the range"])
        to_b.send([SPARE.start, "after them"])
        await until(lambda: len(recorder.got) == 3)
        assert recorder.got == [
            ("a@127.0.0.1", SPARE.start, [SPARE.start, "first"]),
            ("a@127.0.0.1", SPARE.stop - 1, [SPARE.stop - 1, {"last": True}]),
            ("a@127.0.0.1", SPARE.start, [SPARE.start, "after them"]),
        ]
        assert a.identity in b.links and not b.counters.get("protocol_errors")


@run
async def test_a_handler_that_raises_costs_its_link_only() -> None:
    async with nodes("a", "b", "c") as (a, b, c):
        recorder = Recorder(fail_on=SPARE.start + 1)
        b.handle_frames(SPARE, recorder)
        from_a, from_c = await link(a, b), await link(c, b)
        from_a.send([SPARE.start + 1, "this one breaks the handler"])
        await until(lambda: a.identity not in b.links)
        from_c.send([SPARE.start, "still heard"])
        await until(lambda: len(recorder.got) == 1)
        assert recorder.got == [("c@127.0.0.1", SPARE.start, [SPARE.start, "still heard"])]
        assert c.identity in b.links and b.counters.get("protocol_errors") == 1
        assert await a.connect(NodeName.parse(f"{b.identity}:{b.port}"))  # and links again


@run
async def test_registrations_that_would_clash_are_refused() -> None:
    async with nodes("a") as (a,):
        a.handle_frames(SPARE, Recorder())
        with pytest.raises(ValueError, match="has a handler already"):
            a.handle_frames(range(SPARE.stop - 1, SPARE.stop + 2), Recorder())
        assert a.frame_handlers[SPARE.stop] is None  # nothing of a refused range is taken
        with pytest.raises(ValueError, match="the link's own"):
            a.handle_frames(range(frame_types.GOODBYE, 7), Recorder())
        for bad in (range(0, 3), range(120, 200), range(50, 60, 2)):
            with pytest.raises(ValueError, match="frame types are"):
                a.handle_frames(bad, Recorder())
        a.listen_links(Listener())
        with pytest.raises(ValueError, match="link listener already"):
            a.listen_links(Listener())


def test_the_layers_take_separate_ranges_of_the_one_table() -> None:
    ranges = [
        frame_types.LINK,
        frame_types.MESSAGING,
        frame_types.OPERATIONS,
        frame_types.MEMBERSHIP,
    ]
    for first, second in itertools.pairwise(ranges):
        assert first.stop <= second.start
    assert all(r.start >= frame_types.ALL.start and r.stop <= frame_types.ALL.stop for r in ranges)
    assert frame_types.STATUS_REQUEST in frame_types.OPERATIONS
    assert frame_types.FRAGMENT in frame_types.MESSAGING


@run
async def test_the_listener_hears_links_come_and_go_and_every_read() -> None:
    async with nodes("a", "b") as (a, b):
        listener = Listener()
        b.listen_links(listener)
        b.handle_frames(SPARE, Recorder())
        to_b = await link(a, b)
        to_b.send([SPARE.start, 1])
        await until(lambda: listener.reads > 0)
        a.disconnect(b.identity)
        await until(lambda: ("down", a.identity) in listener.events)
        assert listener.events[0] == ("up", a.identity)


@run
async def test_a_direct_write_from_another_thread() -> None:
    async with nodes("a", "b") as (a, b):
        recorder = Recorder()
        b.handle_frames(SPARE, recorder)
        to_b = await link(a, b)
        assert to_b.direct_writes  # a plain TCP link
        frame = frames.encode([SPARE.start, "direct"])
        result = await asyncio.to_thread(to_b.write_direct, frame)
        assert result == WROTE
        await until(lambda: len(recorder.got) == 1)
        assert recorder.got[0][2] == [SPARE.start, "direct"]
        assert a.traffic.frames_out >= 1 and a.traffic.bytes_out >= len(frame)


@run
async def test_a_direct_write_the_socket_takes_in_part_is_finished_by_the_nodes_loop() -> None:
    async with nodes("a", "b") as (a, b):
        recorder = Recorder()
        b.handle_frames(SPARE, recorder)
        to_b = await link(a, b)
        frame = frames.encode([SPARE.start, "x" * 1000])
        real_write = os.write

        def half(fd: int, data: bytes | memoryview) -> int:
            return real_write(fd, data[: len(data) // 2])

        def write_half() -> int:
            os.write = half  # this thread only writes; the node's loop does not use os.write
            try:
                return to_b.write_direct(frame)
            finally:
                os.write = real_write

        assert await asyncio.to_thread(write_half) == WROTE_PART
        # the rest waits in the link: another direct write must not overtake it
        assert await asyncio.to_thread(to_b.write_direct, frame) == NOT_WRITTEN
        to_b.write_out([frames.encode([SPARE.start + 1, "next"])])
        await until(lambda: len(recorder.got) == 2)
        assert [got[2] for got in recorder.got] == [
            [SPARE.start, "x" * 1000],
            [SPARE.start + 1, "next"],
        ]
        assert a.identity in b.links  # the framing is intact


@run
async def test_a_direct_write_to_a_failing_or_closed_socket() -> None:
    async with nodes("a", "b") as (a, b):
        to_b = await link(a, b)
        frame = frames.encode([SPARE.start, "lost"])
        real_write = os.write

        def broken(fd: int, data: bytes | memoryview) -> int:
            raise OSError(errno.EPIPE, "Broken pipe")

        def write_broken() -> int:
            os.write = broken
            try:
                return to_b.write_direct(frame)
            finally:
                os.write = real_write

        assert await asyncio.to_thread(write_broken) == WRITE_FAILED
        to_b.abort()
        await until(lambda: b.identity not in a.links)
        assert not to_b.direct_writes
        assert await asyncio.to_thread(to_b.write_direct, frame) == NOT_WRITTEN
