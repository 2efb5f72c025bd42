"""Membership events and the bus that hands them to subscribers.

Events are produced on the node's own thread and consumed wherever the
subscriber lives: an asyncio loop (async iterator or callback) or a plain
thread. Each subscriber has its own bounded queue, so a slow one delays nobody.

Overflow policy: when a subscriber's queue passes ``maxsize``, it is
*compacted* rather than truncated: for each node only its last event is kept,
or its last two when they cancel out (a restart shows as NodeDown then NodeUp).
The subscriber still sees, for every node, strictly alternating up and down
events that end in the node's current state; only intermediate flaps are lost.
Each compaction adds one to ``Subscription.overflows`` and logs a warning.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import TracebackType
from typing import Any

from skycluster import _blocking

log = logging.getLogger("skycluster.events")

DEFAULT_QUEUE_SIZE = 1000


class DownReason(StrEnum):
    CONNECTION_CLOSED = "connection_closed"  # the connection was closed or reset
    HEARTBEAT_TIMEOUT = "heartbeat_timeout"  # the peer was silent for longer than the timeout
    SHUTDOWN = "shutdown"  # the peer stopped gracefully and said so
    DISCONNECT = "disconnect"  # this node asked for the link to go
    # Erlang links (skycluster.erlang.node):
    NET_TICK_TIMEOUT = "net_tick_timeout"  # nothing arrived within the net_ticktime
    PROTOCOL_ERROR = "protocol_error"  # the peer sent bytes that cannot be read: closed


@dataclass(frozen=True, slots=True)
class NodeUp:
    node: str  # identity, name@host
    address: str | None = None  # host:port the peer accepts links on
    metadata: Mapping[str, Any] = field(default_factory=dict)
    time: float = field(default_factory=time.time)


@dataclass(frozen=True, slots=True)
class NodeDown:
    node: str
    reason: DownReason
    time: float = field(default_factory=time.time)


Event = NodeUp | NodeDown


def event_record(event: Event) -> dict[str, Any]:
    """An event as JSON-ready data, ``event`` naming its kind (``nodeup``, ``nodedown``):
    one shape for the CLI's event lines and the operations endpoint's ``/events``."""
    if isinstance(event, NodeUp):
        return {
            "event": "nodeup",
            "node": event.node,
            "address": event.address,
            "metadata": dict(event.metadata),
            "time": event.time,
        }
    return {
        "event": "nodedown",
        "node": event.node,
        "reason": str(event.reason),
        "time": event.time,
    }


class EventQueue:
    """A bounded FIFO of events that compacts instead of dropping (not thread-safe)."""

    def __init__(self, maxsize: int = DEFAULT_QUEUE_SIZE) -> None:
        if maxsize < 1:
            raise ValueError(f"queue size must be at least 1, got {maxsize}")
        self.maxsize = maxsize
        self.overflows = 0
        self._events: deque[Event] = deque()

    def __len__(self) -> int:
        return len(self._events)

    def push(self, event: Event) -> bool:
        """Add an event; returns True when this push compacted the queue."""
        self._events.append(event)
        if len(self._events) <= self.maxsize:
            return False
        self.overflows += 1
        self._compact()
        return True

    def pop(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def _compact(self) -> None:
        per_node: dict[str, list[int]] = {}
        for index, event in enumerate(self._events):
            per_node.setdefault(event.node, []).append(index)
        keep: list[int] = []
        for positions in per_node.values():
            # An odd count ends in the other state than the subscriber last saw:
            # the last event says it all. An even count returns to that state:
            # keep the last two, so a restart is still visible.
            keep.extend(positions[-1:] if len(positions) % 2 else positions[-2:])
        events = self._events
        self._events = deque(events[i] for i in sorted(keep))


class Subscription:
    """Base of all subscription forms: a thread-safe bounded queue with a wake-up hook."""

    def __init__(self, bus: EventBus, maxsize: int) -> None:
        self._bus = bus
        self._lock = threading.Lock()
        self._queue = EventQueue(maxsize)
        self._closed = False

    @property
    def overflows(self) -> int:
        """How many times this subscriber fell behind and its queue was compacted."""
        return self._queue.overflows

    @property
    def closed(self) -> bool:
        return self._closed

    def _deliver(self, event: Event) -> None:
        with self._lock:
            if self._closed:
                return
            if self._queue.push(event):
                self._bus.overflows += 1
                log.warning(
                    "a subscriber fell more than %d events behind; its queue was compacted",
                    self._queue.maxsize,
                )
            self._wake()

    def _wake(self) -> None:  # called with the lock held
        raise NotImplementedError

    def close(self) -> None:
        """Unsubscribe; iteration ends once the events already queued are consumed."""
        self._bus.detach(self)
        with self._lock:
            self._closed = True
            self._wake()


class AsyncSubscription(Subscription):
    """Events as an async iterator in the loop that subscribed."""

    def __init__(self, bus: EventBus, maxsize: int, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(bus, maxsize)
        self._loop = loop
        self._waiter: asyncio.Future[None] | None = None
        self._wake_scheduled = False

    def __aiter__(self) -> AsyncSubscription:
        return self

    async def __anext__(self) -> Event:
        while True:
            with self._lock:
                event = self._queue.pop()
                if event is not None:
                    return event
                if self._closed:
                    raise StopAsyncIteration
                waiter = self._waiter = self._loop.create_future()
            try:
                await waiter
            finally:
                with self._lock:
                    self._waiter = None

    async def get(self) -> Event:
        """The next event; raises StopAsyncIteration once closed and drained."""
        return await self.__anext__()

    def _wake(self) -> None:
        if self._waiter is None or self._wake_scheduled:
            return
        self._wake_scheduled = True
        try:
            self._loop.call_soon_threadsafe(self._fire)
        except RuntimeError:  # the subscriber's loop is closed: nobody will read
            self._closed = True

    def _fire(self) -> None:
        with self._lock:
            self._wake_scheduled = False
            if self._waiter is not None and not self._waiter.done():
                self._waiter.set_result(None)

    async def __aenter__(self) -> AsyncSubscription:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class SyncSubscription(Subscription):
    """Events for code in a plain thread: ``get(timeout)`` or iteration."""

    def __init__(self, bus: EventBus, maxsize: int) -> None:
        super().__init__(bus, maxsize)
        self._ready = threading.Condition(self._lock)

    def get(self, timeout: float | None = None) -> Event:
        """The next event. Raises TimeoutError after ``timeout`` seconds and
        EOFError once the subscription is closed and drained."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._ready:
            while True:
                event = self._queue.pop()
                if event is not None:
                    return event
                if self._closed:
                    raise EOFError("the subscription is closed")
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(f"no cluster event within {timeout} s")
                _blocking.refuse_on_node_loop("subscribe_blocking().get()")
                self._ready.wait(remaining)

    def __iter__(self) -> Iterator[Event]:
        while True:
            try:
                yield self.get()
            except EOFError:
                return

    def _wake(self) -> None:
        self._ready.notify_all()

    def __enter__(self) -> SyncSubscription:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class EventBus:
    """Publishes events in one order to every subscriber and tracks who is up."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribers: list[Subscription] = []
        self._members: dict[str, NodeUp] = {}
        self.overflows = 0  # compactions across all subscribers

    def publish(self, event: Event) -> None:
        with self._lock:
            if isinstance(event, NodeUp):
                self._members[event.node] = event
            else:
                self._members.pop(event.node, None)
            for subscriber in self._subscribers:
                subscriber._deliver(event)

    def attach(self, subscriber: Subscription, *, initial: bool) -> None:
        with self._lock:
            if initial:
                for up in self._members.values():
                    subscriber._deliver(up)
            self._subscribers.append(subscriber)

    def detach(self, subscriber: Subscription) -> None:
        with self._lock:
            if subscriber in self._subscribers:
                self._subscribers.remove(subscriber)

    def forget_members(self) -> None:
        """The node stopped: nobody is linked any more (subscriptions end separately)."""
        with self._lock:
            self._members.clear()

    def members(self) -> dict[str, NodeUp]:
        with self._lock:
            return dict(self._members)

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)
