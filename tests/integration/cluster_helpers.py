"""Helpers of the in-process library tests (``test_cluster_api.py``): several
:class:`skycluster.Cluster` objects in one test process, each on its own
ephemeral loopback port, and a frame-aware TCP proxy that can hold a handshake
at a chosen step to force an interleaving.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import socket
import struct
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable
from typing import Any, TypeVar

import pytest

import skycluster
from skycluster import Cluster, Event, NodeDown, NodeUp
from skycluster.distribution.node import Node
from skycluster.strategy import Epmd

LOOPBACK = "127.0.0.1"
COOKIE = "cluster-api-test-cookie"
# Liveness bound for anything that should happen: generous, never a timing claim.
WITHIN = 10.0
# Short heartbeats and timeouts keep the tests fast.
FAST: dict[str, Any] = {
    "heartbeat_interval": 0.2,
    "heartbeat_timeout": 0.8,
    "connect_timeout": 2.0,
    "handshake_timeout": 2.0,
    "strategy_restart_backoff": (0.05, 0.2),
    # No host port mapper: these tests name every port, and must not share the
    # host's port 4369 with other tests or a real epmd.
    "port_mapper": False,
}
RETRY = 0.1

# SKYCLUSTER_NODE_LOOP=shared runs every node on the test's own event loop: the
# blocking API and writes from a second thread are then not for that loop.
SHARED = os.environ.get("SKYCLUSTER_NODE_LOOP") == "shared"
needs_own_thread = pytest.mark.skipif(
    SHARED, reason="needs the node on its own thread (blocking API, writes from a thread)"
)

T = TypeVar("T")


def async_test(fn: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test body in a fresh event loop, with an overall bound."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        async def bounded() -> None:
            async with asyncio.timeout(45):
                await fn(*args, **kwargs)

        asyncio.run(bounded())

    return wrapper


def free_port() -> int:
    """A loopback port that is free now (bound to port 0, then released)."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def make(
    name: str,
    *,
    port: int | None = None,
    peers: Iterable[str] = (),
    cookie: str = COOKIE,
    **options: Any,
) -> Cluster:
    """A cluster named ``name@127.0.0.1[:port]`` (no port: an ephemeral one) whose
    Epmd topology (when ``peers`` is given) retries every RETRY seconds."""
    hosts = list(peers)
    topologies = options.pop("topologies", None)
    if topologies is None:
        topologies = {"epmd": Epmd(hosts=hosts, retry_interval=RETRY)} if hosts else {}
    full_name = f"{name}@{LOOPBACK}" + (f":{port}" if port else "")
    return Cluster(
        full_name, cookie=cookie, topologies=topologies, environ={}, **{**FAST, **options}
    )


def dial_name(cluster: Cluster) -> str:
    """``name@127.0.0.1:port`` of a started cluster, for connect() or a hosts list."""
    assert cluster.address is not None, f"{cluster.name} is not listening"
    return f"{cluster.settings.name.name}@{cluster.address}"


def port_of(cluster: Cluster) -> int:
    """The port a started cluster listens on."""
    assert cluster.address is not None, f"{cluster.name} is not listening"
    return int(cluster.address.rsplit(":", 1)[1])


@contextlib.asynccontextmanager
async def running(*clusters: Cluster) -> AsyncIterator[None]:
    """Start every cluster at once; stop them all at the end, whatever happens."""
    try:
        await asyncio.gather(*(c.start() for c in clusters))
        yield
    finally:
        await asyncio.gather(*(c.stop() for c in clusters if c.running), return_exceptions=True)


def node_of(cluster: Cluster) -> Node:
    runtime = cluster._runtime
    assert runtime is not None and runtime.node is not None
    return runtime.node


async def on_node(cluster: Cluster, function: Callable[[], T]) -> T:
    """Run ``function`` on the cluster's node thread (a consistent view of its state)."""
    runtime = cluster._runtime
    assert runtime is not None
    return await asyncio.wrap_future(runtime.call(function))


def _attempt(check: Callable[[], Any], what: str, within: float, deadline: float) -> Any:
    """One call of ``check``: its result, or the failure of the test once past ``deadline``."""
    result = check()
    if not result and time.monotonic() > deadline:
        raise AssertionError(f"not within {within} s: {what} (last: {result!r})")
    return result


async def eventually(
    check: Callable[[], Any], what: str, *, within: float = WITHIN, step: float = 0.01
) -> Any:
    """Poll ``check`` until it is truthy (for state that has no event of its own)."""
    deadline = time.monotonic() + within
    while True:
        if result := _attempt(check, what, within, deadline):
            return result
        await asyncio.sleep(step)


def eventually_blocking(
    check: Callable[[], Any], what: str, *, within: float = WITHIN, step: float = 0.05
) -> Any:
    """:func:`eventually` for code outside an event loop (it blocks the thread)."""
    deadline = time.monotonic() + within
    while True:
        if result := _attempt(check, what, within, deadline):
            return result
        time.sleep(step)


class Recorder:
    """Reads an async subscription in a background task and keeps every event;
    tests wait for a predicate over what arrived, with a deadline."""

    def __init__(self, subscription: skycluster.AsyncSubscription) -> None:
        self.subscription = subscription
        self.events: list[Event] = []
        self.ended = False
        self._changed = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._read(), name="recorder")

    async def _read(self) -> None:
        try:
            async for event in self.subscription:
                self.events.append(event)
                self._changed.set()
        finally:
            self.ended = True
            self._changed.set()

    async def wait(
        self, predicate: Callable[[list[Event]], bool], what: str, within: float = WITHIN
    ) -> list[Event]:
        try:
            async with asyncio.timeout(within):
                while not predicate(self.events):
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(f"not within {within} s: {what}; got {self.events}") from None
        return self.events

    async def wait_up(self, node: str, count: int = 1) -> list[Event]:
        return await self.wait(lambda evs: ups(evs, node) >= count, f"{count} NodeUp of {node}")

    async def wait_down(self, node: str, count: int = 1) -> list[Event]:
        return await self.wait(lambda evs: downs(evs, node) >= count, f"{count} NodeDown of {node}")

    async def aclose(self) -> None:
        self.subscription.close()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


def ups(events: Iterable[Event], node: str) -> int:
    return sum(1 for e in events if isinstance(e, NodeUp) and e.node == node)


def downs(events: Iterable[Event], node: str) -> int:
    return sum(1 for e in events if isinstance(e, NodeDown) and e.node == node)


def assert_alternating(
    events: Iterable[Event], *, initially_up: frozenset[str] = frozenset()
) -> None:
    """Per node: NodeUp and NodeDown strictly alternate, starting with NodeUp
    (or NodeDown for the nodes in ``initially_up``)."""
    state: dict[str, bool] = {n: True for n in initially_up}
    for index, event in enumerate(events):
        is_up = isinstance(event, NodeUp)
        was_up = state.get(event.node, False)
        assert is_up != was_up, (
            f"event #{index} {event} repeats the state of {event.node}: "
            f"{[e for e in events if e.node == event.node]}"
        )
        state[event.node] = is_up


def final_states(events: Iterable[Event]) -> dict[str, bool]:
    state: dict[str, bool] = {}
    for event in events:
        state[event.node] = isinstance(event, NodeUp)
    return state


def skycluster_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("skycluster")]


def open_fds() -> int:
    """File descriptors open in this process. The first uvloop loop of a process opens
    libuv's global signal pipe, kept for the process's life: one is made and closed
    first, so a node's own descriptors are what a before/after count compares."""
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.new_event_loop().close()
    return len(os.listdir("/proc/self/fd"))


class HoldingProxy:
    """A TCP proxy to ``target_port`` that understands skycluster framing and can
    hold the first connection at the 2nd frame of each direction: the REPLY
    (initiator to acceptor) and the ACK (acceptor to initiator). Later
    connections pass through unchanged."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.reply_held = asyncio.Event()
        self.release_reply = asyncio.Event()
        self.ack_held = asyncio.Event()
        self.release_ack = asyncio.Event()
        self.port = 0
        self.connections = 0
        self.connected = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> HoldingProxy:
        self._server = await asyncio.start_server(self._serve, LOOPBACK, 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.connected.set()
        gated = self.connections == 1
        self._writers.append(writer)
        try:
            up_reader, up_writer = await asyncio.open_connection(LOOPBACK, self.target_port)
        except OSError:
            writer.close()
            return
        self._writers.append(up_writer)
        forward = asyncio.ensure_future(
            self._pump(reader, up_writer, 4, self.reply_held, self.release_reply, gated)
        )
        backward = asyncio.ensure_future(
            self._pump(up_reader, writer, 0, self.ack_held, self.release_ack, gated)
        )
        self._tasks.update((forward, backward))
        try:
            await asyncio.wait([forward, backward], return_when=asyncio.FIRST_COMPLETED)
        finally:
            writer.close()
            up_writer.close()

    @staticmethod
    async def _pump(
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        preamble: int,
        held: asyncio.Event,
        release: asyncio.Event,
        gated: bool,
    ) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            if preamble:
                writer.write(await reader.readexactly(preamble))
            count = 0
            while True:
                header = await reader.readexactly(4)
                body = await reader.readexactly(struct.unpack(">I", header)[0])
                count += 1
                if gated and count == 2:
                    held.set()
                    await release.wait()
                writer.write(header + body)
                await writer.drain()
