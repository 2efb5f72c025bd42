"""Events: queue compaction (property-tested), the bus, and both subscription forms."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import defaultdict
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from skycluster.events import (
    AsyncSubscription,
    DownReason,
    Event,
    EventBus,
    EventQueue,
    NodeDown,
    NodeUp,
    SyncSubscription,
)

LIVENESS = 10.0  # generous bound for anything that should happen at once


def up(node: str, t: float = 0.0) -> NodeUp:
    return NodeUp(node, address=None, metadata={}, time=t)


def down(node: str, t: float = 0.0) -> NodeDown:
    return NodeDown(node, DownReason.CONNECTION_CLOSED, time=t)


def flaps(node: str, count: int, *, start_up: bool = True) -> list[Event]:
    """``count`` alternating events for ``node``, the first an up when ``start_up``."""
    events: list[Event] = []
    for i in range(count):
        is_up = (i % 2 == 0) == start_up
        events.append(up(node) if is_up else down(node))
    return events


def drain(queue: EventQueue) -> list[Event]:
    out: list[Event] = []
    while (event := queue.pop()) is not None:
        out.append(event)
    return out


# --- EventQueue -----------------------------------------------------------------------------


def test_queue_is_fifo_below_its_size() -> None:
    queue = EventQueue(10)
    events: list[Event] = [up("a"), up("b"), down("a"), up("c")]
    assert [queue.push(e) for e in events] == [False] * 4
    assert len(queue) == 4
    assert drain(queue) == events
    assert queue.pop() is None
    assert queue.overflows == 0


def test_queue_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1, got 0"):
        EventQueue(0)


def test_odd_flaps_compact_to_the_last_event() -> None:
    queue = EventQueue(2)
    events: list[Event] = [up("a", 1), down("a", 2), up("a", 3)]
    assert queue.push(events[0]) is False
    assert queue.push(events[1]) is False
    assert queue.push(events[2]) is True
    assert queue.overflows == 1
    assert drain(queue) == [events[2]]


def test_even_flaps_keep_the_restart_visible() -> None:
    queue = EventQueue(3)
    events: list[Event] = [down("a", 1), up("a", 2), down("a", 3), up("a", 4)]
    for event in events:
        queue.push(event)
    assert drain(queue) == events[2:]  # the node went down and came back


def test_compaction_keeps_other_nodes_and_their_order() -> None:
    queue = EventQueue(4)
    events: list[Event] = [up("a", 1), up("b", 2), down("a", 3), down("b", 4), up("a", 5)]
    for event in events:
        queue.push(event)
    # a: 3 events -> the last; b: 2 events -> both; relative order kept
    assert drain(queue) == [events[1], events[3], events[4]]


def test_queue_over_many_nodes_stays_bounded_by_the_nodes() -> None:
    queue = EventQueue(1)
    for round_ in range(50):
        for node in "abc":
            queue.push(up(node, round_) if round_ % 2 == 0 else down(node, round_))
            assert len(queue) <= 2 * 3
    assert queue.overflows > 0


@settings(max_examples=300)
@given(st.data())
def test_compaction_keeps_alternation_and_final_state(data: st.DataObject) -> None:
    nodes = [f"n{i}@127.0.0.1" for i in range(data.draw(st.integers(1, 5), label="nodes"))]
    base = {n: data.draw(st.booleans(), label=f"{n} up before") for n in nodes}
    counts = {n: data.draw(st.integers(0, 25), label=f"{n} events") for n in nodes}
    order = data.draw(st.permutations([n for n in nodes for _ in range(counts[n])]))
    maxsize = data.draw(st.integers(1, 6), label="maxsize")

    queue = EventQueue(maxsize)
    state = dict(base)
    pushed: list[Event] = []
    popped: list[Event] = []
    for i, node in enumerate(order):
        state[node] = not state[node]
        event: Event = up(node, i) if state[node] else down(node, i)
        pushed.append(event)
        queue.push(event)
        assert len(queue) <= max(maxsize, 2 * len(nodes))
        for _ in range(data.draw(st.integers(0, 2), label="pops")):
            if (got := queue.pop()) is not None:
                popped.append(got)
    popped += drain(queue)

    # only pushed events come out, in the order they went in
    times = [e.time for e in popped]
    assert times == sorted(times) and len(set(times)) == len(times)
    assert all(pushed[int(e.time)] is e for e in popped)
    per_node: dict[str, list[bool]] = defaultdict(list)
    for event in popped:
        per_node[event.node].append(isinstance(event, NodeUp))
    for node in nodes:
        seen = per_node[node]
        if counts[node] == 0:
            assert seen == []
            continue
        assert seen, f"{node} changed state but the subscriber saw nothing"
        assert seen[0] is not base[node], f"{node} starts in the state the subscriber knew"
        assert all(a is not b for a, b in pairwise(seen)), f"{node}: {seen}"
        assert seen[-1] is state[node], f"{node} does not end in its true state"
    if len(order) <= maxsize:
        assert queue.overflows == 0 and popped == pushed


# --- EventBus -------------------------------------------------------------------------------


def test_bus_tracks_members() -> None:
    bus = EventBus()
    a, b = up("a"), up("b")
    bus.publish(a)
    bus.publish(b)
    bus.publish(down("a"))
    assert bus.members() == {"b": b}
    members = bus.members()
    members.clear()  # a copy
    assert list(bus.members()) == ["b"]


def test_initial_members_are_delivered_first() -> None:
    bus = EventBus()
    a, b, c = up("a"), up("b"), up("c")
    for event in (a, b, down("a"), c):
        bus.publish(event)
    with SyncSubscription(bus, 100) as with_initial, SyncSubscription(bus, 100) as without:
        bus.attach(with_initial, initial=True)
        bus.attach(without, initial=False)
        later = down("b")
        bus.publish(later)
        assert [with_initial.get(0) for _ in range(3)] == [b, c, later]
        assert without.get(0) == later
        with pytest.raises(TimeoutError):
            with_initial.get(0)
        with pytest.raises(TimeoutError):
            without.get(0)


def test_close_detaches_and_ends_after_the_queue() -> None:
    bus = EventBus()
    sub = SyncSubscription(bus, 10)
    bus.attach(sub, initial=False)
    assert bus.subscriber_count == 1
    first = up("a")
    bus.publish(first)
    sub.close()
    assert sub.closed and bus.subscriber_count == 0
    bus.publish(down("a"))  # not delivered any more
    assert sub.get(0) == first
    with pytest.raises(EOFError):
        sub.get(0)
    with pytest.raises(EOFError):
        sub.get()  # no timeout: closed still ends it
    sub.close()  # twice is fine


# --- SyncSubscription -----------------------------------------------------------------------


def test_sync_get_times_out() -> None:
    bus = EventBus()
    sub = SyncSubscription(bus, 10)
    bus.attach(sub, initial=False)
    with pytest.raises(TimeoutError, match=r"no cluster event within 0\.05 s"):
        sub.get(0.05)
    with pytest.raises(TimeoutError):
        sub.get(0)
    with pytest.raises(TimeoutError):
        sub.get(-1)


def test_sync_get_wakes_on_publish_from_another_thread() -> None:
    bus = EventBus()
    sub = SyncSubscription(bus, 10)
    bus.attach(sub, initial=False)
    event = up("a")
    ready = threading.Event()

    def publisher() -> None:
        ready.wait(LIVENESS)
        bus.publish(event)

    thread = threading.Thread(target=publisher)
    thread.start()
    ready.set()
    try:
        assert sub.get(LIVENESS) == event
    finally:
        thread.join(LIVENESS)


def test_sync_get_wakes_with_eof_when_closed_from_another_thread() -> None:
    bus = EventBus()
    sub = SyncSubscription(bus, 10)
    bus.attach(sub, initial=False)
    result: list[BaseException] = []

    def reader() -> None:
        try:
            sub.get(LIVENESS)
        except BaseException as exc:
            result.append(exc)

    thread = threading.Thread(target=reader)
    thread.start()
    sub.close()
    thread.join(LIVENESS)
    assert not thread.is_alive()
    assert len(result) == 1 and isinstance(result[0], EOFError)


def test_sync_iteration_ends_on_close() -> None:
    bus = EventBus()
    sub = SyncSubscription(bus, 100)
    bus.attach(sub, initial=False)
    events: list[Event] = [up("a"), up("b"), down("a")]

    def publisher() -> None:
        for event in events:
            bus.publish(event)
        sub.close()

    thread = threading.Thread(target=publisher)
    thread.start()
    assert list(sub) == events
    thread.join(LIVENESS)


# --- AsyncSubscription ----------------------------------------------------------------------


def test_async_subscription_receives_publishes_from_another_thread() -> None:
    bus = EventBus()
    events = [e for i in range(200) for e in (up(f"n{i % 7}", i), down(f"n{i % 7}", i))]

    async def main() -> list[Event]:
        sub = AsyncSubscription(bus, 10_000, asyncio.get_running_loop())
        bus.attach(sub, initial=False)

        def publisher() -> None:
            for event in events:
                bus.publish(event)
            sub.close()

        thread = threading.Thread(target=publisher)
        thread.start()
        got: list[Event] = []
        try:
            async with asyncio.timeout(LIVENESS):
                async for event in sub:
                    got.append(event)
        finally:
            thread.join(LIVENESS)
        return got

    assert asyncio.run(main()) == events


def test_async_get_and_close_from_the_loop() -> None:
    bus = EventBus()

    async def main() -> None:
        async with AsyncSubscription(bus, 10, asyncio.get_running_loop()) as sub:
            bus.attach(sub, initial=False)
            waiting = asyncio.ensure_future(sub.get())
            await asyncio.sleep(0)
            assert not waiting.done()
            event = up("a")
            bus.publish(event)
            assert await asyncio.wait_for(waiting, LIVENESS) == event
        assert sub.closed and bus.subscriber_count == 0
        with pytest.raises(StopAsyncIteration):
            await sub.get()

    asyncio.run(main())


def test_async_waiter_cancelled_then_reused() -> None:
    bus = EventBus()

    async def main() -> None:
        sub = AsyncSubscription(bus, 10, asyncio.get_running_loop())
        bus.attach(sub, initial=False)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(sub.get(), 0.01)
        event = up("a")
        bus.publish(event)
        assert await asyncio.wait_for(sub.get(), LIVENESS) == event
        sub.close()

    asyncio.run(main())


def test_publish_to_a_subscriber_whose_loop_is_closed_does_not_raise() -> None:
    bus = EventBus()
    loop = asyncio.new_event_loop()
    sub = AsyncSubscription(bus, 10, loop)
    bus.attach(sub, initial=False)

    async def start_waiting() -> asyncio.Future[Event]:
        task = asyncio.ensure_future(sub.get())
        await asyncio.sleep(0)
        return task

    task = loop.run_until_complete(start_waiting())
    loop.close()
    task._log_destroy_pending = False  # type: ignore[attr-defined]  # it is meant to die
    bus.publish(up("a"))
    assert sub.closed
    bus.publish(down("a"))


# --- slow subscribers -----------------------------------------------------------------------


def test_stuck_subscriber_does_not_block_publish_to_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bus = EventBus()
    stuck = SyncSubscription(bus, 4)  # nobody ever reads it
    bus.attach(stuck, initial=False)
    idle_loop = asyncio.new_event_loop()  # a loop that is not running
    stuck_async = AsyncSubscription(bus, 4, idle_loop)
    bus.attach(stuck_async, initial=False)
    reader = SyncSubscription(bus, 100_000)
    bus.attach(reader, initial=False)
    events = [e for i in range(2000) for e in (up(f"n{i % 3}", i), down(f"n{i % 3}", i))]
    done = threading.Event()

    def publisher() -> None:
        for event in events:
            bus.publish(event)
        done.set()

    thread = threading.Thread(target=publisher)
    try:
        with caplog.at_level(logging.WARNING, logger="skycluster.events"):
            thread.start()
            got = [reader.get(LIVENESS) for _ in events]
            assert done.wait(LIVENESS)
        assert got == events
        assert reader.overflows == 0
        assert stuck.overflows > 0 and stuck_async.overflows > 0
        assert bus.overflows == stuck.overflows + stuck_async.overflows
        assert "its queue was compacted" in caplog.text
        # the stuck one still gets, per node, alternation that ends in the final state
        tail: dict[str, list[bool]] = defaultdict(list)
        for _ in range(100):
            try:
                event = stuck.get(0)
            except TimeoutError:
                break
            tail[event.node].append(isinstance(event, NodeUp))
        assert set(tail) == {"n0", "n1", "n2"}
        for seen in tail.values():
            assert seen[0] is True and seen[-1] is False
            assert all(a is not b for a, b in pairwise(seen))
    finally:
        thread.join(LIVENESS)
        idle_loop.close()
