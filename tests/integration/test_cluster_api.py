"""The library API in-process: several :class:`skycluster.Cluster` objects in this
test process, each on its own ephemeral port on 127.0.0.1 (each node runs on its
own thread, so they really talk over loopback TCP).

Covers subscriptions (async iterator, callbacks, blocking), event ordering across
flapping peers, slow subscribers, wait_for_nodes, connect/disconnect, exactly one
link per pair under simultaneous connects, hidden nodes and full_mesh=False, TLS,
metadata, strategy supervision and hooks, clean shutdown and configuration.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from certs import TestCA
from cluster_helpers import (
    COOKIE,
    FAST,
    LOOPBACK,
    WITHIN,
    HoldingProxy,
    Recorder,
    assert_alternating,
    async_test,
    dial_name,
    downs,
    eventually,
    final_states,
    free_port,
    make,
    needs_own_thread,
    node_of,
    on_node,
    open_fds,
    port_of,
    running,
    skycluster_threads,
    ups,
)

import skycluster
from skycluster import (
    Cluster,
    ConfigError,
    DownReason,
    Event,
    InvalidNodeName,
    NodeDown,
    NodeName,
    NodeUp,
    StartError,
    Strategy,
    StrategyContext,
    Topology,
)
from skycluster.distribution.node import Node
from skycluster.membership.driver import MembershipDriver
from skycluster.strategy import Epmd, strategy_class

ROOT = Path(__file__).resolve().parents[2]
A, B, C, D = (f"{n}@{LOOPBACK}" for n in "abcd")


async def next_event(subscription: skycluster.AsyncSubscription) -> Event:
    async with asyncio.timeout(WITHIN):
        return await subscription.get()


def node_up(node: str) -> Callable[[Event], bool]:
    return lambda e: isinstance(e, NodeUp) and e.node == node


# --- subscriptions --------------------------------------------------------------------------


@async_test
async def test_async_iterator_initial_members_and_unsubscribe() -> None:
    a, b, c = make("a"), make("b"), make("c")
    async with running(a, b, c):
        events = a.subscribe()
        assert await b.connect(dial_name(a))
        up = await next_event(events)
        assert isinstance(up, NodeUp)
        assert (up.node, up.address, dict(up.metadata)) == (B, b.address, {})
        assert a.nodes() == [B] and a.members() == {B: up}

        # initial=True: the current members first, as the very NodeUp that announced them.
        late = a.subscribe(initial=True)
        assert await next_event(late) == up

        # Unsubscribed: what follows is not delivered and the iteration ends.
        a.unsubscribe(late)
        assert late.closed
        assert await c.connect(dial_name(a))
        assert node_up(C)(await next_event(events))
        with pytest.raises(StopAsyncIteration):
            await late.get()
        assert [e async for e in late] == []

        # The async-context form unsubscribes on exit.
        async with a.subscribe(initial=True) as scoped:
            assert {(await next_event(scoped)).node for _ in range(2)} == {B, C}
        assert scoped.closed
    # stop() ends every subscription: iteration finishes after the queued events.
    assert events.closed
    remaining = [e async for e in events]
    assert all(isinstance(e, NodeUp | NodeDown) for e in remaining)


@async_test
async def test_callbacks_sync_async_and_failing(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="skycluster")
    a, b = make("a"), make("b")
    async with running(a, b):
        me = threading.get_ident()
        sync_seen: list[Event] = []
        async_seen: list[Event] = []
        threads: set[int] = set()
        failing_calls: list[Event] = []
        unsubscribed_calls: list[Event] = []

        def failing(event: Event) -> None:
            failing_calls.append(event)
            raise RuntimeError("a bug in the application's callback")

        def sync_callback(event: Event) -> None:
            threads.add(threading.get_ident())
            sync_seen.append(event)

        async def async_callback(event: Event) -> None:
            await asyncio.sleep(0)
            threads.add(threading.get_ident())
            async_seen.append(event)

        gone = a.on_event(unsubscribed_calls.append)
        a.on_event(failing)
        a.on_event(sync_callback)
        a.on_event(async_callback)
        a.unsubscribe(gone)

        assert await a.connect(dial_name(b))
        assert await a.disconnect(B)
        await eventually(
            lambda: len(sync_seen) == 2 and len(async_seen) == 2, "both callbacks saw 2 events"
        )
        for seen in (sync_seen, async_seen):
            assert isinstance(seen[0], NodeUp) and seen[0].node == B
            assert isinstance(seen[1], NodeDown) and seen[1].node == B
            assert seen[1].reason is DownReason.DISCONNECT
        # Callbacks run in the loop that registered them, not on the node's thread.
        assert threads == {me}
        # The failing callback was called for each event (it is not dropped after a failure),
        # and each failure was logged.
        await eventually(lambda: len(failing_calls) == 2, "the failing callback saw 2 events")
        failures = [r for r in caplog.records if "event callback" in r.getMessage()]
        assert len(failures) == 2 and all(r.exc_info for r in failures)
        assert "a bug in the application's callback" in caplog.text
        # The unsubscribed callback was never called.
        assert unsubscribed_calls == []


@async_test
async def test_subscribe_blocking_from_a_plain_thread() -> None:
    a, b = make("a"), make("b")
    async with running(a, b):
        subscription = a.subscribe_blocking()
        received: list[Event] = []
        errors: list[BaseException] = []

        def reader() -> None:
            try:
                for event in subscription:  # ends when the subscription is closed
                    received.append(event)
            except BaseException as exc:  # reported to the test
                errors.append(exc)

        thread = threading.Thread(target=reader, name="test-reader")
        thread.start()
        try:
            assert await a.connect(dial_name(b))
            assert await a.disconnect(B)
            await eventually(lambda: len(received) >= 2, "the thread received 2 events")
        finally:
            a.unsubscribe(subscription)
            thread.join(WITHIN)
        assert not thread.is_alive() and errors == []
        assert [type(e) for e in received] == [NodeUp, NodeDown]

        # get(timeout) in a thread: initial members, then a timeout, then EOF once closed.
        assert await a.connect(dial_name(b))
        results: dict[str, Any] = {}

        def getter() -> None:
            with a.subscribe_blocking(initial=True) as sub:
                results["first"] = sub.get(WITHIN)
                try:
                    sub.get(0.05)
                except TimeoutError as exc:
                    results["timeout"] = str(exc)
            try:
                sub.get(WITHIN)
            except EOFError:
                results["eof"] = True

        thread = threading.Thread(target=getter, name="test-getter")
        thread.start()
        await asyncio.to_thread(thread.join, WITHIN)
        assert node_up(B)(results["first"])
        assert "0.05 s" in results["timeout"]
        assert results["eof"] is True


@async_test
async def test_callback_registered_before_start_is_ended_by_stop() -> None:
    me = asyncio.current_task()
    a, b = make("a"), make("b")
    called = asyncio.Event()

    async def slow_callback(event: Event) -> None:
        called.set()
        await asyncio.Event().wait()  # e.g. a callback that awaits a slow service

    a.on_event(slow_callback)  # before start
    try:
        async with running(b), a:
            assert await a.connect(dial_name(b))
            await asyncio.wait_for(called.wait(), WITHIN)
        assert asyncio.all_tasks() == {me}
    finally:
        for task in asyncio.all_tasks() - {me}:
            task.cancel()


@async_test
async def test_on_event_between_stop_and_restart() -> None:
    a, b = make("a"), make("b")
    async with running(b):
        async with a:
            pass
        seen: list[Event] = []
        a.on_event(seen.append)  # stopped: takes effect when it runs again
        async with a:
            assert await a.connect(dial_name(b))
            await eventually(lambda: seen, "the callback saw b")
        assert node_up(B)(seen[0])


@async_test
async def test_a_blocked_application_loop_does_not_make_the_node_look_dead() -> None:
    """The node runs on its own thread: blocking the application's event loop for
    longer than the heartbeat timeout (0.8 s) loses neither links nor events."""
    a, b = make("a"), make("b")
    async with running(a, b):
        rb = Recorder(b.subscribe())
        ra = a.subscribe()
        assert await a.connect(dial_name(b))
        await rb.wait_up(A)
        assert node_up(B)(await next_event(ra))
        time.sleep(2.0)  # noqa: ASYNC251 - the application blocks its own loop, deliberately
        assert a.nodes() == [B] and b.nodes() == [A]
        for cluster in (a, b):
            stats = cluster.stats()
            assert stats["links_up"] == 1, stats  # never relinked
            assert not [k for k in stats if k.startswith("links_down")], stats
            assert "heartbeat_timeouts" not in stats, stats
        await rb.wait(lambda events: len(events) >= 1, "b's recorder ran")
        assert [type(e) for e in rb.events] == [NodeUp]
        assert len(ra._queue) == 0  # nothing happened meanwhile


# --- ordering: strict alternation per peer ----------------------------------------------------


@async_test
async def test_flapping_peer_alternates_up_and_down_for_every_subscriber() -> None:
    a = make("a")
    async with running(a):
        control = Recorder(a.subscribe())
        iterator = Recorder(a.subscribe())
        sync_seen: list[Event] = []
        async_seen: list[Event] = []

        async def async_callback(event: Event) -> None:
            await asyncio.sleep(0)
            async_seen.append(event)

        a.on_event(sync_seen.append)
        a.on_event(async_callback)
        blocking = a.subscribe_blocking()
        blocking_seen: list[Event] = []
        reader = threading.Thread(target=lambda: blocking_seen.extend(blocking), name="test-flap")
        reader.start()

        port = free_port()
        b = make("b", port=port, peers=[dial_name(a)])
        try:
            # 1. graceful stop, then a fresh start once the stop was seen
            await b.start()
            await control.wait_up(B, 1)
            await b.stop()
            await control.wait_down(B, 1)
            # 2. restart at once: the new incarnation may arrive before the old goodbye
            for _ in range(2):
                b = make("b", port=port, peers=[dial_name(a)])
                await b.start()
                await control.wait_up(B, ups(control.events, B) + 1)
                await b.stop()
            b = make("b", port=port, peers=[dial_name(a)])
            await b.start()
            await control.wait(lambda evs: final_states(evs).get(B) is True, "b up again")
            # 3. disconnect: b's strategy links again
            count = ups(control.events, B)
            assert await a.disconnect(B)
            await control.wait_up(B, count + 1)
            # 4. b's node thread blocked: a sees a heartbeat timeout, then b comes back
            count = ups(control.events, B)
            node_b = node_of(b)
            if node_b.loop is node_of(a).loop:
                # One loop runs both nodes (node_loop='shared'): blocking it stalls a
                # too, and a node that measured its own stall blames nobody. Freeze
                # b's link instead: it neither reads nor writes, as if b were stuck.
                def freeze() -> None:
                    link = node_b.links[A]
                    assert link.transport is not None
                    link.transport.pause_reading()
                    link.send = lambda frame: None  # type: ignore[method-assign]
                    link.write_frame = lambda data: None  # type: ignore[method-assign]

                node_b.loop.call_soon_threadsafe(freeze)
            else:
                node_b.loop.call_soon_threadsafe(time.sleep, 1.5)
            await control.wait(
                lambda evs: any(
                    isinstance(e, NodeDown) and e.reason is DownReason.HEARTBEAT_TIMEOUT
                    for e in evs
                ),
                "a heartbeat timeout",
            )
            await control.wait_up(B, count + 1)
        finally:
            await b.stop()
        await control.wait(lambda evs: final_states(evs).get(B) is False, "b down at the end")
        await eventually(
            lambda: (
                len(sync_seen) == len(async_seen) == len(iterator.events) == len(control.events)
                and len(blocking_seen) == len(control.events)
            ),
            "every subscriber caught up",
        )
        reasons = {e.reason for e in control.events if isinstance(e, NodeDown)}
        assert {DownReason.SHUTDOWN, DownReason.DISCONNECT, DownReason.HEARTBEAT_TIMEOUT} <= reasons
        assert ups(control.events, B) >= 5
        for seen in (control.events, iterator.events, sync_seen, async_seen, blocking_seen):
            assert_alternating(seen)
            # One bus, one order: every subscriber saw exactly the same sequence.
            assert seen == control.events
        assert a.nodes() == []
        a.unsubscribe(blocking)
        reader.join(WITHIN)
        assert not reader.is_alive()


@async_test
async def test_stuck_subscriber_delays_nobody_and_is_compacted() -> None:
    a = make("a")
    async with running(a):
        fast = Recorder(a.subscribe())
        stuck = a.subscribe(maxsize=2)  # never read until the end
        stuck_blocking = a.subscribe_blocking(maxsize=1)
        unblock = asyncio.Event()
        callback_seen: list[Event] = []

        async def stuck_callback(event: Event) -> None:
            await unblock.wait()
            callback_seen.append(event)

        a.on_event(stuck_callback, maxsize=3)

        bport, cport = free_port(), free_port()
        rounds = 4
        for i in range(rounds):
            b = make("b", port=bport, peers=[dial_name(a)])
            c = make("c", port=cport, peers=[dial_name(a)])
            async with running(b, c):
                # the fast subscriber and the node see every change promptly
                await fast.wait_up(B, i + 1)
                await fast.wait_up(C, i + 1)
                assert sorted(await a.wait_for_nodes(2, timeout=WITHIN)) == [B, C]
                if i == rounds - 1:
                    await c.stop()
            await fast.wait_down(C, i + 1)
            if i < rounds - 1:
                await fast.wait_down(B, i + 1)
        b = make("b", port=bport, peers=[dial_name(a)])
        async with running(b):
            await fast.wait_up(B, rounds + 1)
            assert a.nodes() == [B]
            truth = {B: True, C: False}
            assert final_states(fast.events) == truth, fast.events
            assert len(fast.events) == 4 * rounds + 1, fast.events
            assert_alternating(fast.events)

            assert stuck.overflows > 0 and stuck_blocking.overflows > 0, a.stats()
            assert a.stats()["subscriber_overflows"] >= stuck.overflows + stuck_blocking.overflows

            # When it finally reads: alternating events that end in the true state.
            stuck.close()
            late = [e async for e in stuck]
            assert 2 <= len(late) <= 4, late
            assert_alternating(late)
            assert final_states(late) == truth

            late_blocking: list[Event] = []
            with contextlib.suppress(TimeoutError):
                while True:
                    late_blocking.append(stuck_blocking.get(0))
            assert_alternating(late_blocking)
            assert final_states(late_blocking) == truth, late_blocking

            unblock.set()
            await eventually(
                lambda: final_states(callback_seen) == truth, "the stuck callback caught up"
            )
            assert_alternating(callback_seen)
            assert len(callback_seen) < len(fast.events), callback_seen


# --- wait_for_nodes, connect, disconnect ------------------------------------------------------


@async_test
async def test_wait_for_nodes() -> None:
    a, b, c = make("a"), make("b"), make("c")
    async with running(a, b, c):
        subscribers = a._bus.subscriber_count
        waiting = asyncio.ensure_future(a.wait_for_nodes(2, timeout=WITHIN))
        assert await b.connect(dial_name(a))
        assert await c.connect(dial_name(a))
        assert await waiting == [B, C]
        assert await a.wait_for_nodes(1, timeout=0.01) == [B, C]  # already there

        with pytest.raises(TimeoutError) as info:
            await a.wait_for_nodes(3, timeout=0.2)
        message = str(info.value)  # names what it waited for and the nodes linked so far
        assert "2 of 3" in message and "0.2 s" in message and f"{B}, {C}" in message
        d = make("d")
        async with running(d):
            with pytest.raises(TimeoutError, match=r"0 of 1 .*none"):
                await d.wait_for_nodes(1, timeout=0.1)

        # The blocking form, from a plain thread, while the loop links one more node.
        result: dict[str, Any] = {}

        def wait_blocking() -> None:
            try:
                result["nodes"] = a.wait_for_nodes_blocking(3, timeout=WITHIN)
            except BaseException as exc:
                result["error"] = exc

        thread = threading.Thread(target=wait_blocking, name="test-wait")
        thread.start()
        e = make("e")
        async with running(e):
            assert await e.connect(dial_name(a))
            await asyncio.to_thread(thread.join, WITHIN)
            assert result == {"nodes": [B, C, f"e@{LOOPBACK}"]}
        with pytest.raises(TimeoutError, match=rf"2 of 5 .*{B}, {C}"):
            await asyncio.to_thread(a.wait_for_nodes_blocking, 5, 0.1)
        # waiting leaves no subscription behind
        assert a._bus.subscriber_count == subscribers


@async_test
async def test_connect_and_disconnect() -> None:
    a, b = make("a"), make("b")
    async with running(a, b):
        ra, rb = Recorder(a.subscribe()), Recorder(b.subscribe())
        assert await a.connect(dial_name(b)) is True
        await ra.wait_up(B)
        await rb.wait_up(A)
        assert await a.connect(dial_name(b)) is True  # already linked: a no-op
        assert await a.connect(A) is True  # itself
        assert await a.disconnect(B) is True
        await ra.wait_down(B)
        await rb.wait_down(A)
        down_a, down_b = ra.events[-1], rb.events[-1]
        assert isinstance(down_a, NodeDown) and down_a.reason is DownReason.DISCONNECT
        assert isinstance(down_b, NodeDown) and down_b.reason is DownReason.CONNECTION_CLOSED
        assert a.nodes() == [] and b.nodes() == []
        assert await a.disconnect(B) is False  # not linked
        assert a.stats()["links_down_disconnect"] == 1
        # and back, then the blocking forms (from a worker thread)
        assert await b.connect(dial_name(a)) is True
        await ra.wait_up(B, 2)
        await rb.wait_up(A, 2)
        assert await asyncio.to_thread(a.disconnect_blocking, B) is True
        await ra.wait_down(B, 2)
        assert await asyncio.to_thread(a.connect_blocking, dial_name(b)) is True
        await ra.wait_up(B, 3)
        await rb.wait_up(A, 3)
        assert_alternating(ra.events)
        assert_alternating(rb.events)
        assert len(ra.events) == len(rb.events) == 5


@async_test
async def test_a_node_links_again_at_once_after_its_own_disconnect() -> None:
    # b may not have read the end of the old link yet when a dials again: b refuses
    # the new one as "alive" (it holds a link to a), and a dials again shortly
    # rather than wait its whole connect timeout for a link that will not come.
    a, b = make("a", connect_timeout=60.0), make("b")
    async with running(a, b):
        async with asyncio.timeout(WITHIN):
            for _ in range(10):
                assert await a.connect(dial_name(b)) is True
                assert await a.disconnect(B) is True
            assert await a.connect(dial_name(b)) is True
        await eventually(lambda: b.nodes() == [A], "b is linked to a again")


@async_test
async def test_connect_to_unreachable_nodes_returns_false() -> None:
    a = make("a", connect_timeout=0.5)
    async with running(a):
        events = Recorder(a.subscribe())
        # nothing listens: refused at once
        started = time.monotonic()
        assert await a.connect(f"x@{LOOPBACK}:{free_port()}") is False
        # something listens but never answers: the connect timeout ends the attempt
        with socket.socket() as silent:
            silent.bind((LOOPBACK, 0))
            silent.listen()
            assert await a.connect(f"y@{LOOPBACK}:{silent.getsockname()[1]}") is False
        # no port known at all
        assert await a.connect(f"z@{LOOPBACK}") is False
        assert time.monotonic() - started < WITHIN
        assert a.stats()["dial_failures"] == 3
        assert a.nodes() == [] and events.events == []
        with pytest.raises(InvalidNodeName):
            await a.connect("not a node name")
    with pytest.raises(RuntimeError, match="not started"):
        await a.connect(f"x@{LOOPBACK}:1")


# --- exactly one link per pair ----------------------------------------------------------------


async def assert_one_link_per_pair(*clusters: Cluster, within: float = WITHIN) -> None:
    """Every pair shares exactly one TCP connection, seen from both ends, and no
    other connection is open (refused duplicates are closed)."""
    expected = len(clusters) - 1

    async def view(cluster: Cluster) -> tuple[dict[str, tuple[Any, Any]], int]:
        def snapshot() -> tuple[dict[str, tuple[Any, Any]], int]:
            node = node_of(cluster)
            pairs = {}
            for ident, link in node.links.items():
                assert link.transport is not None
                pairs[ident] = (
                    link.transport.get_extra_info("sockname"),
                    link.transport.get_extra_info("peername"),
                )
            return pairs, len(node.connections)

        return await on_node(cluster, snapshot)

    views: dict[str, dict[str, tuple[Any, Any]]] = {}
    for cluster in clusters:
        state: list[Any] = []

        async def settled(cluster: Cluster = cluster, state: list[Any] = state) -> bool:
            state[:] = await view(cluster)
            return len(state[0]) == expected and state[1] == expected

        deadline = time.monotonic() + within
        while not await settled():
            assert time.monotonic() < deadline, f"{cluster.name}: links/connections {state}"
            await asyncio.sleep(0.01)
        views[cluster.name] = state[0]
    for x in clusters:
        for y in clusters:
            if x is y:
                continue
            sock_x, peer_x = views[x.name][y.name]
            sock_y, peer_y = views[y.name][x.name]
            assert (sock_x, peer_x) == (peer_y, sock_y), f"{x.name} and {y.name} use 2 links"


@async_test
async def test_simultaneous_connect_makes_one_link_per_pair() -> None:
    for _ in range(6):
        pa, pb = free_port(), free_port()
        a = make("a", port=pa, peers=[f"b@{LOOPBACK}:{pb}"])
        b = make("b", port=pb, peers=[f"a@{LOOPBACK}:{pa}"])
        ra, rb = Recorder(a.subscribe()), Recorder(b.subscribe())
        async with running(a, b):
            await ra.wait_up(B)
            await rb.wait_up(A)
            await assert_one_link_per_pair(a, b)
            assert [e.node for e in ra.events] == [B] and [e.node for e in rb.events] == [A]
            for cluster in (a, b):
                stats = cluster.stats()
                assert stats["links_up"] == 1, stats
                assert not [k for k in stats if k.startswith("links_down")], stats


@async_test
async def test_simultaneous_connect_of_four_nodes() -> None:
    names = "abcd"
    ports = {n: free_port() for n in names}
    hosts = [f"{n}@{LOOPBACK}:{p}" for n, p in ports.items()]
    clusters = [make(n, port=ports[n], peers=hosts) for n in names]
    recorders = [Recorder(c.subscribe()) for c in clusters]
    async with running(*clusters):
        for cluster, recorder in zip(clusters, recorders, strict=True):
            others = sorted({A, B, C, D} - {cluster.name})

            def all_up(events: list[Event], others: list[str] = others) -> bool:
                return sorted(e.node for e in events) == others

            await recorder.wait(all_up, "3 NodeUps")
        await assert_one_link_per_pair(*clusters)
        for cluster, recorder in zip(clusters, recorders, strict=True):
            assert all(isinstance(e, NodeUp) for e in recorder.events), recorder.events
            assert len(recorder.events) == 3
            assert cluster.nodes() == sorted({A, B, C, D} - {cluster.name})
            stats = cluster.stats()
            assert stats["links_up"] == 3, stats
            assert not [k for k in stats if k.startswith("links_down")], stats


async def _dialled(proxy: HoldingProxy, dial: asyncio.Future[bool]) -> bool:
    """Whether ``dial`` opened a connection through ``proxy`` (given a second)."""
    with contextlib.suppress(TimeoutError):
        await _held(proxy.connected, dial, within=1.0)
    return proxy.connections > 0


async def _held(gate: asyncio.Event, dial: asyncio.Future[bool], within: float = WITHIN) -> None:
    """Until the proxy holds the connection at its gate (or the dial ended: a node
    may legitimately refuse the connection before that step)."""
    waiter = asyncio.ensure_future(gate.wait())
    try:
        either: set[asyncio.Future[Any]] = {waiter, dial}
        await asyncio.wait(either, timeout=within, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
    if not (gate.is_set() or dial.done()):
        raise TimeoutError("the handshake went nowhere")


@async_test
async def test_crossing_handshakes_keep_one_link() -> None:
    """Forces the interleaving with two proxies: b dials a (link X) and is held
    before its REPLY; then a dials b (link Y; b admits it, since b > a) and is held
    before its REPLY too. Both REPLYs go at once; each acceptor completes its link;
    then both ACKs go."""
    a, b = make("a"), make("b")
    async with running(a, b):
        ra, rb = Recorder(a.subscribe()), Recorder(b.subscribe())
        async with HoldingProxy(port_of(a)) as to_a, HoldingProxy(port_of(b)) as to_b:
            x = asyncio.ensure_future(b.connect(f"a@{LOOPBACK}:{to_a.port}"))
            await _held(to_a.reply_held, x)
            y = asyncio.ensure_future(a.connect(f"b@{LOOPBACK}:{to_b.port}"))
            # a may rightly wait for the handshake it is accepting instead of dialling
            y_dialled = await _dialled(to_b, y)
            if y_dialled:
                await _held(to_b.reply_held, y)
            to_a.release_reply.set()
            to_b.release_reply.set()
            await _held(to_a.ack_held, x)
            if y_dialled:
                await _held(to_b.ack_held, y)
            to_a.release_ack.set()
            to_b.release_ack.set()
            assert await asyncio.wait_for(x, WITHIN) is True
            assert await asyncio.wait_for(y, WITHIN) is True
            # exactly one link survives, and nobody saw the node go down
            await eventually(
                lambda: (
                    downs(ra.events, B)
                    or downs(rb.events, A)
                    or all(
                        len(node_of(n).links) == len(node_of(n).connections) == 1 for n in (a, b)
                    )
                ),
                "one link each, or a NodeDown",
            )
            assert downs(ra.events, B) == downs(rb.events, A) == 0
            # (through the proxies, the two ends of one link show different addresses)
            for node in (node_of(a), node_of(b)):
                assert len(node.links) == len(node.connections) == 1
            assert a.nodes() == [B] and b.nodes() == [A]
            assert [type(e) for e in ra.events] == [NodeUp]
            assert [type(e) for e in rb.events] == [NodeUp]


# --- hidden nodes and full_mesh=False ---------------------------------------------------------


def dialling(node: Node) -> set[str]:
    """The identities the node's membership core is dialling."""
    assert isinstance(node.decider, MembershipDriver)
    return set(node.decider.core.dialling)


async def _peers_seen(cluster: Cluster, peer: str) -> tuple[set[str], set[str]]:
    """Once the link to ``peer`` carried a PING/PONG round trip (so the PEERS frame
    that ``peer`` sent first has been handled): (linked, being dialled)."""
    node = node_of(cluster)
    await eventually(
        lambda: peer in node.links and node.links[peer].rtt is not None, f"a PONG from {peer}"
    )
    return await on_node(cluster, lambda: (set(node.links), dialling(node)))


@async_test
async def test_hidden_node_is_linked_but_not_reported() -> None:
    a, b = make("a"), make("b")
    hidden = make("c", hidden=True)
    async with running(a, b, hidden):
        ra, rb = Recorder(a.subscribe()), Recorder(b.subscribe())
        assert await b.connect(dial_name(a))
        await ra.wait_up(B)
        assert await hidden.connect(dial_name(a))
        # the hidden node sees a (a is not hidden) but does not mesh with b
        assert await _peers_seen(hidden, A) == ({A}, set())
        assert hidden.nodes() == [A]
        # a holds the link, but neither nodes() nor events show it
        assert await on_node(a, lambda: C in node_of(a).links)
        assert a.nodes() == [B] and b.nodes() == [A]
        assert C not in a.members()
        # a later member is told about b but not about c
        d = make("d")
        async with running(d):
            assert await d.connect(dial_name(a))
            await rb.wait_up(D)
            await _peers_seen(d, A)
            assert await d.wait_for_nodes(2, timeout=WITHIN) == [A, B]
        await hidden.stop()
        await eventually(lambda: C not in node_of(a).links, "a dropped the hidden link")
        await rb.wait_down(D)
        assert all(e.node != C for e in ra.events + rb.events), ra.events + rb.events
        assert a.stats()["links_up"] == 3  # b, c and d


@async_test
async def test_full_mesh_false_links_only_where_asked() -> None:
    a, b = make("a"), make("b")
    async with running(a, b):
        rb = Recorder(b.subscribe())
        assert await b.connect(dial_name(a))
        # control: a full-mesh node told about b by a is dialling b (or linked) by then
        meshed = make("d")
        async with running(meshed):
            assert await meshed.connect(dial_name(a))
            linked, dialling = await _peers_seen(meshed, A)
            assert B in linked | dialling
            await rb.wait_up(D)
        await rb.wait_down(D)
        lonely = make("c", full_mesh=False)
        async with running(lonely):
            assert await lonely.connect(dial_name(a))
            assert await _peers_seen(lonely, A) == ({A}, set())
            assert lonely.nodes() == [A]
            assert sorted(a.nodes()) == [B, C]
            assert b.nodes() == [A]
        assert all(e.node != C for e in rb.events)


# --- TLS --------------------------------------------------------------------------------------


def _node_files(directory: Path, name: str, ca: TestCA) -> dict[str, Any]:
    files = ca.issue(directory, name, ["skycluster", LOOPBACK])
    return {"tls_cert": str(files.cert), "tls_key": str(files.key), "tls_ca": str(files.ca)}


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    directory = tmp_path_factory.mktemp("tls")
    ca, other_ca = TestCA.create("skycluster test CA"), TestCA.create("another CA")
    return {
        "a": _node_files(directory, "a", ca),
        "b": _node_files(directory, "b", ca),
        "rogue": _node_files(directory, "rogue", other_ca),
    }


@async_test
async def test_tls_links(tls_files: dict[str, dict[str, Any]]) -> None:
    a = make("a", **tls_files["a"])
    b = make("b", **tls_files["b"])
    rogue = make("rogue", **tls_files["rogue"])
    plain = make("plain")
    async with running(a, b, rogue, plain):
        ra = Recorder(a.subscribe())
        assert await b.connect(dial_name(a))
        await ra.wait_up(B)

        def cipher() -> Any:
            transport = node_of(a).links[B].transport
            return None if transport is None else transport.get_extra_info("cipher")

        assert await on_node(a, cipher) is not None  # the link is a TLS connection
        # a certificate from another CA is refused, whoever dials
        started = time.monotonic()
        assert await rogue.connect(dial_name(a)) is False
        assert await a.connect(dial_name(rogue)) is False
        # a node without TLS cannot link to a TLS node, nor the other way round
        assert await plain.connect(dial_name(a)) is False
        assert await a.connect(dial_name(plain)) is False
        assert time.monotonic() - started < WITHIN
        assert plain.stats().get("handshakes_failed", 0) >= 1
        assert a.nodes() == [B]
        assert rogue.nodes() == [] and plain.nodes() == []
        assert [e.node for e in ra.events] == [B]


def test_tls_options_must_come_together(tls_files: dict[str, dict[str, Any]]) -> None:
    files = tls_files["a"]
    for missing in files:
        partial = {k: v for k, v in files.items() if k != missing}
        with pytest.raises(ConfigError, match=r"tls_cert.*tls_key.*tls_ca"):
            make("a", **partial)


@needs_own_thread
def test_unreadable_tls_files_fail_the_start(tmp_path: Path) -> None:
    files: dict[str, Any] = {
        f"tls_{k}": str(tmp_path / f"missing.{k}") for k in ("cert", "key", "ca")
    }
    cluster = make("a", **files)
    with pytest.raises(StartError, match="cannot load the TLS files"), cluster:
        pass
    assert not cluster.running
    _wait_no_threads()


# --- metadata ---------------------------------------------------------------------------------


@async_test
async def test_metadata_reaches_the_peers() -> None:
    metadata = {"role": "api", "zone": 3, "tags": ["blue", "canary"], "weight": 0.5}
    a = make("a", metadata=metadata)
    b = make("b")
    async with running(a, b):
        rb = Recorder(b.subscribe())
        ra = Recorder(a.subscribe())
        assert await b.connect(dial_name(a))
        up = (await rb.wait_up(A))[0]
        assert isinstance(up, NodeUp)
        assert dict(up.metadata) == metadata
        assert up.address == a.address
        assert dict(b.members()[A].metadata) == metadata
        from_b = (await ra.wait_up(B))[0]
        assert isinstance(from_b, NodeUp) and dict(from_b.metadata) == {}


# --- strategies -------------------------------------------------------------------------------


class Crashing(Strategy):
    def __init__(self) -> None:
        self.runs: list[float] = []

    async def run(self, ctx: StrategyContext) -> None:
        self.runs.append(time.monotonic())
        raise RuntimeError("strategy bug")


class Recording(Strategy):
    """Links to ``hosts`` once through the context, records what it saw, idles."""

    def __init__(self, hosts: list[str]) -> None:
        self.hosts = hosts
        self.topology: str | None = None
        self.results: dict[str, bool] = {}

    async def run(self, ctx: StrategyContext) -> None:
        self.topology = ctx.topology
        self.results = await ctx.connect(self.hosts)
        await asyncio.Event().wait()


@async_test
async def test_crashing_strategy_is_restarted_with_backoff(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="skycluster")
    b, c = make("b"), make("c")
    async with running(b, c):
        crashing = Crashing()
        a = make(
            "a",
            topologies={"boom": crashing, "epmd": Epmd([dial_name(b)], retry_interval=0.1)},
        )
        async with running(a):
            await eventually(lambda: a.stats().get("strategy_restarts_boom", 0) >= 5, "5 restarts")
            # backoff 0.05, 0.1, 0.2, 0.2 between the first five runs (a lower bound only)
            assert crashing.runs[4] - crashing.runs[0] >= 0.5
            # the node and its other topology keep working
            assert await a.wait_for_nodes(1, timeout=WITHIN) == [B]
            assert await a.connect(dial_name(c))
            assert a.nodes() == [B, C]
            assert "strategy_restarts_epmd" not in a.stats()
        assert "strategy boom crashed" in caplog.text
        assert "strategy bug" in caplog.text


@async_test
async def test_several_topologies_side_by_side() -> None:
    b, c, d = make("b"), make("c"), make("d")
    async with running(b, c, d):
        custom = Recording([dial_name(d)])
        a = make(
            "a",
            full_mesh=False,
            topologies={
                "first": Epmd([dial_name(b)], retry_interval=0.1),
                "second": Topology(Epmd([dial_name(c)], retry_interval=0.1)),
                "custom": custom,
            },
        )
        async with running(a):
            assert await a.wait_for_nodes(3, timeout=WITHIN) == [B, C, D]
            await eventually(lambda: custom.results == {D: True}, "the custom strategy linked d")
            assert custom.topology == "custom"


@async_test
async def test_strategy_by_import_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT))
    path = "tests.integration.cluster_strategy_module:ListStrategy"
    cls = strategy_class(path)
    module = sys.modules["tests.integration.cluster_strategy_module"]
    assert cls is module.ListStrategy
    with pytest.raises(ConfigError, match=r"is not a .*Strategy subclass"):
        strategy_class("tests.integration.cluster_strategy_module:NOT_A_STRATEGY")
    with pytest.raises(ConfigError, match="cannot load strategy"):
        strategy_class("tests.integration.no_such_module:ListStrategy")
    b = make("b")
    async with running(b):
        environ = {
            "SKYCLUSTER_NAME": f"p@{LOOPBACK}",
            "SKYCLUSTER_COOKIE": COOKIE,
            "SKYCLUSTER_STRATEGY": path,
            "SKYCLUSTER_HOSTS": dial_name(b),
            "SKYCLUSTER_HEARTBEAT_INTERVAL": "0.2",
            "SKYCLUSTER_HEARTBEAT_TIMEOUT": "0.8",
            "SKYCLUSTER_PORT_MAPPER": "false",
        }
        p = Cluster.from_env(environ)
        (topology,) = p.topologies.values()
        assert isinstance(topology.strategy, cls)
        async with p:
            assert await p.wait_for_nodes(1, timeout=WITHIN) == [B]
        assert module.RAN[f"p@{LOOPBACK}"] == [dial_name(b)]


@async_test
async def test_topology_hooks_replace_the_defaults() -> None:
    b = make("b")
    async with running(b):
        connects: list[NodeName] = []
        disconnects: list[str] = []
        listed: list[int] = []
        cluster: list[Cluster] = []

        async def connect(name: NodeName) -> bool:
            connects.append(name)
            return await cluster[0].connect(str(name))  # through the real node after all

        async def disconnect(identity: str) -> bool:
            disconnects.append(identity)
            return False  # the default would drop the link

        def list_nodes() -> list[str]:
            listed.append(1)
            return []  # the strategy never sees its nodes linked: it keeps connecting

        manual_saw: list[list[str]] = []

        class ConnectThenDisconnect(Strategy):
            async def run(self, ctx: StrategyContext) -> None:
                await ctx.connect([dial_name(b)])
                manual_saw.append(ctx.nodes())  # no list hook here: the node's own list
                await ctx.disconnect(manual_saw[-1])
                await asyncio.Event().wait()

        hooks: dict[str, Any] = {"connect": connect, "disconnect": disconnect}
        a = make(
            "a",
            topologies={
                "epmd": Topology(
                    Epmd([dial_name(b)], retry_interval=0.1), **hooks, list_nodes=list_nodes
                ),
                "manual": Topology(ConnectThenDisconnect(), **hooks),
            },
        )
        cluster.append(a)
        ra = Recorder(a.subscribe())
        async with running(a):
            await eventually(lambda: len(listed) >= 3, "the list hook was polled 3 times")
            await eventually(lambda: disconnects == [B], "the disconnect hook was called")
            # Epmd asked to connect on every round: it only saw the list hook's answer
            assert len(connects) >= 3
            assert {n.identity for n in connects} == {B}
            assert manual_saw == [[B]]
            assert a.nodes() == [B]  # the default disconnect was not used
            assert [type(e) for e in ra.events] == [NodeUp]
            assert "links_down_disconnect" not in a.stats()


# --- stop() leaves nothing behind -------------------------------------------------------------


def _wait_no_threads(baseline: set[threading.Thread] | None = None) -> None:
    deadline = time.monotonic() + WITHIN
    while skycluster_threads() or (baseline is not None and set(threading.enumerate()) - baseline):
        assert time.monotonic() < deadline, f"threads left: {threading.enumerate()}"
        time.sleep(0.01)


def _wait_fds(count: int) -> None:
    deadline = time.monotonic() + WITHIN
    while open_fds() != count:
        assert time.monotonic() < deadline, f"{open_fds()} open file descriptors, not {count}"
        time.sleep(0.01)


@contextlib.contextmanager
def _silent_listener() -> Iterator[int]:
    """A port that accepts TCP connections and never says a word."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        sock.listen()
        yield int(sock.getsockname()[1])


@async_test
async def test_async_with_leaves_nothing_behind() -> None:
    me = asyncio.current_task()
    threads = set(threading.enumerate())
    fds = open_fds()
    # Both nodes use a private port mapper (b serves it, a registers with it and
    # finds b through it): its server and registrations must go as well.
    mapper: dict[str, Any] = {"port_mapper": True, "epmd_port": free_port()}
    b = make("b", **mapper)
    blocking_seen: list[Event] = []
    with _silent_listener() as silent:
        async with b:
            a = make(
                "a",
                **mapper,
                topologies={
                    # b by name only (port from the port mapper), and one dial that is
                    # still waiting for a handshake when the node stops
                    "epmd": Epmd([B, f"s@{LOOPBACK}:{silent}"], retry_interval=0.1),
                    "boom": Crashing(),
                },
            )
            async with a:
                a.on_event(lambda event: None)
                never_read = a.subscribe()
                blocking = a.subscribe_blocking()
                reader = threading.Thread(target=lambda: blocking_seen.extend(blocking))
                reader.start()
                assert await a.wait_for_nodes(1, timeout=WITHIN) == [B]
                # an unauthenticated connection that is open when the node stops
                _, writer = await asyncio.open_connection(LOOPBACK, port_of(a))
                raw = "{}:{}".format(*writer.get_extra_info("sockname"))
                await eventually(
                    lambda: raw in {c.peer_address for c in list(node_of(a).connections)},
                    "a holds the raw connection",
                )
                assert await on_node(a, lambda: f"s@{LOOPBACK}" in dialling(node_of(a)))
            assert not a.running
            reader.join(WITHIN)
            assert not reader.is_alive() and [e.node for e in blocking_seen] == [B]
            assert [e.node async for e in never_read] == [B]
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
    assert asyncio.all_tasks() == {me}
    _wait_no_threads(threads)
    _wait_fds(fds)


@needs_own_thread
def test_sync_with_leaves_nothing_behind() -> None:
    threads = set(threading.enumerate())
    fds = open_fds()
    with make("b") as b, make("a", peers=[dial_name(b)]) as a:
        assert a.wait_for_nodes_blocking(1, timeout=WITHIN) == [B]
        with b.subscribe_blocking(initial=True) as events:
            first = events.get(WITHIN)
            assert isinstance(first, NodeUp) and first.node == A
            assert b.disconnect_blocking(A) is True
            down = events.get(WITHIN)
            assert isinstance(down, NodeDown) and down.reason is DownReason.DISCONNECT
            again = events.get(WITHIN)  # a's strategy links again
            assert isinstance(again, NodeUp) and again.node == A
        assert b.connect_blocking(dial_name(a)) is True
        assert b.stats()["links_up"] == 2  # the event above came from the second link
    assert not a.running and not b.running
    _wait_no_threads(threads)
    _wait_fds(fds)


@needs_own_thread
def test_start_on_a_port_in_use() -> None:
    threads = set(threading.enumerate())
    with socket.socket() as holder:
        holder.bind((LOOPBACK, 0))
        holder.listen()
        port = holder.getsockname()[1]
        cluster = make("a", port=port)
        with pytest.raises(StartError, match="already in use") as info, cluster:
            pass
        assert f"{LOOPBACK}:{port}" in str(info.value)
        assert not cluster.running
        _wait_no_threads(threads)

        async def start_async() -> None:
            with pytest.raises(StartError, match="already in use"):
                async with make("a", port=port):
                    pass

        asyncio.run(start_async())
        _wait_no_threads(threads)


@async_test
async def test_members_are_cleared_after_stop_and_a_cluster_can_start_again() -> None:
    a, b = make("a"), make("b")
    async with running(b):
        rb = Recorder(b.subscribe())
        async with a:
            assert await a.connect(dial_name(b))
            assert a.nodes() == [B]
        assert a.nodes() == [] and a.members() == {} and not a.running
        await rb.wait_down(A)
        assert rb.events[-1] == NodeDown(A, DownReason.SHUTDOWN, rb.events[-1].time)
        async with a:
            events = Recorder(a.subscribe())
            assert await a.connect(dial_name(b))
            await events.wait_up(B)
            assert a.nodes() == [B]
        await rb.wait_up(A, 2)
        assert_alternating(rb.events)


# --- configuration ----------------------------------------------------------------------------


# Each message names the option and the bad value and says what is accepted; the
# tests check those parts, not the exact wording.
@pytest.mark.parametrize(
    ("options", "parts"),
    [
        (
            {"heartbeat_interval": 1.0, "heartbeat_timeout": 1.0},
            ["heartbeat_timeout", "(1.0) must be longer than heartbeat_interval", "(1.0)"],
        ),
        (
            {"heartbeat_interval": 2.0, "heartbeat_timeout": 1.0},
            ["heartbeat_timeout", "(1.0) must be longer than heartbeat_interval", "(2.0)"],
        ),
        ({"heartbeat_interval": 0}, ["heartbeat_interval", "positive number", "got 0"]),
        ({"connect_timeout": -1}, ["connect_timeout", "positive number", "got -1"]),
        ({"handshake_timeout": "5"}, ["handshake_timeout", "positive number", "got '5'"]),
        ({"dist_port": 70000}, ["dist_port", "1 to 65535", "70000"]),
        ({"listen": "nowhere"}, ["listen", "'nowhere'", "port is required"]),
        ({"topologies": {"x": object()}}, ["topology 'x'", "<object object", "not a Strategy"]),
    ],
)
def test_bad_options_raise_config_error(options: dict[str, Any], parts: list[str]) -> None:
    settings = {**FAST, **options}
    with pytest.raises(ConfigError) as info:
        Cluster(f"a@{LOOPBACK}", cookie=COOKIE, environ={}, **settings)
    for part in parts:
        assert part in str(info.value)


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("nohost", "exactly one '@'"),
        ("a@b@c", "exactly one '@'"),
        ("bad name@127.0.0.1", "is not a valid name"),
        ("a@127.0.0.1:0", "the port '0' is not a number from 1 to 65535"),
        ("a@127.0.0.1:http", "the port 'http' is not a number"),
        ("a@::1", "put an IPv6 address in brackets"),
        ("a@", "the host is empty"),
    ],
)
def test_bad_names_raise_config_error(name: str, why: str) -> None:
    with pytest.raises(InvalidNodeName) as info:
        Cluster(name, cookie=COOKIE, environ={})
    text = str(info.value)
    assert repr(name) in text and why in text and "accepted forms" in text
    assert isinstance(info.value, ConfigError)


@pytest.mark.parametrize("backoff", [(0.0, 0.0), (-1.0, 5.0), (5.0, 1.0)])
def test_bad_restart_backoff_raises_config_error(backoff: tuple[float, float]) -> None:
    with pytest.raises(ConfigError, match="strategy_restart_backoff"):
        Cluster(f"a@{LOOPBACK}", cookie=COOKIE, environ={}, strategy_restart_backoff=backoff)


def test_from_env_builds_name_cookie_and_strategy() -> None:
    hosts = f"b@{LOOPBACK}:4402, c@{LOOPBACK}:4403"
    environ = {
        "SKYCLUSTER_NAME": f"a@{LOOPBACK}:4401",
        "SKYCLUSTER_COOKIE": "from-the-env",
        "SKYCLUSTER_STRATEGY": "epmd",
        "SKYCLUSTER_HOSTS": hosts,
        "SKYCLUSTER_RETRY_INTERVAL": "0.5",
        "SKYCLUSTER_HEARTBEAT_INTERVAL": "0.25",
        "SKYCLUSTER_HEARTBEAT_TIMEOUT": "2",
        "SKYCLUSTER_HIDDEN": "yes",
        "SKYCLUSTER_EPMD_PORT": "4999",
    }
    cluster = Cluster.from_env(environ)
    assert cluster.settings.port_mapper is not None
    assert cluster.settings.port_mapper.port == 4999
    assert cluster.name == A and str(cluster.settings.name) == f"{A}:4401"
    assert cluster.settings.listen_port == 4401
    assert cluster._cookie == b"from-the-env"
    assert cluster.settings.heartbeat_interval == 0.25
    assert cluster.settings.heartbeat_timeout == 2.0
    assert cluster.settings.hidden is True
    strategy = cluster.topologies["epmd"].strategy
    assert isinstance(strategy, Epmd)
    assert [str(h) for h in strategy.hosts] == [f"b@{LOOPBACK}:4402", f"c@{LOOPBACK}:4403"]
    assert strategy.retry_interval == 0.5

    # the seed's name for the strategy, and keyword arguments win over the environment
    seed = {**environ, "SKYCLUSTER_STRATEGY": "", "LIBCLUSTER_STRATEGY": "Cluster.Strategy.Epmd"}
    seed["SKYCLUSTER_PORT_MAPPER"] = "false"
    cluster = Cluster.from_env(seed, name=f"z@{LOOPBACK}", hidden=False)
    assert cluster.name == f"z@{LOOPBACK}" and cluster.settings.hidden is False
    assert cluster.settings.port_mapper is None
    (topology,) = cluster.topologies.values()
    assert isinstance(topology.strategy, Epmd) and len(topology.strategy.hosts) == 2

    # no strategy at all: no topology
    assert Cluster.from_env({"SKYCLUSTER_COOKIE": "x"}).topologies == {}


@pytest.mark.parametrize(
    ("environ", "parts"),
    [
        (
            {"SKYCLUSTER_HEARTBEAT_TIMEOUT": "soon"},
            ["environment variable SKYCLUSTER_HEARTBEAT_TIMEOUT", "'soon'", "seconds"],
        ),
        ({"SKYCLUSTER_NAME": "nobody"}, ["invalid node name 'nobody'", "accepted forms"]),
        (
            {"SKYCLUSTER_STRATEGY": "carrier-pigeon"},
            ["unknown strategy 'carrier-pigeon'", "epmd", "module:Class"],
        ),
        ({"SKYCLUSTER_STRATEGY": "epmd"}, ["epmd", "SKYCLUSTER_HOSTS"]),
        (
            {
                "SKYCLUSTER_STRATEGY": "epmd",
                "SKYCLUSTER_HOSTS": "a@h",
                "SKYCLUSTER_RETRY_INTERVAL": "0",
            },
            ["SKYCLUSTER_RETRY_INTERVAL", "'0'", "positive"],
        ),
        ({"SKYCLUSTER_TLS_CERT": "/x.pem"}, ["tls_cert", "tls_key", "tls_ca"]),
    ],
)
def test_from_env_errors(environ: dict[str, str], parts: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        Cluster.from_env({"SKYCLUSTER_COOKIE": "x", **environ})
    for part in parts:
        assert part in str(info.value)


@async_test
async def test_from_env_clusters_link_with_the_env_cookie() -> None:
    base = {
        "SKYCLUSTER_HEARTBEAT_INTERVAL": "0.2",
        "SKYCLUSTER_HEARTBEAT_TIMEOUT": "0.8",
        "SKYCLUSTER_PORT_MAPPER": "off",
    }
    a = Cluster.from_env({**base, "SKYCLUSTER_NAME": A, "SKYCLUSTER_COOKIE": "shared-secret"})
    stranger = Cluster.from_env({**base, "SKYCLUSTER_NAME": C, "SKYCLUSTER_COOKIE": "other"})
    async with running(a, stranger):
        b = Cluster.from_env(
            {
                **base,
                "SKYCLUSTER_NAME": B,
                "SKYCLUSTER_COOKIE": "shared-secret",
                "SKYCLUSTER_STRATEGY": "epmd",
                "SKYCLUSTER_HOSTS": f"{dial_name(a)},{dial_name(stranger)}",
                "SKYCLUSTER_RETRY_INTERVAL": "0.1",
            }
        )
        async with b:
            assert await b.wait_for_nodes(1, timeout=WITHIN) == [A]
            await eventually(
                lambda: stranger.stats().get("handshakes_failed", 0) >= 1,
                "the stranger refused b",
            )
            assert b.nodes() == [A] and stranger.nodes() == []
