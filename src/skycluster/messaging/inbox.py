"""Mailboxes and topic subscriptions: thread-safe FIFO queues of messages.

The node's thread puts messages in (many at once, from one frame); the
application takes them out from an asyncio loop (``await inbox.get()``,
``async for``) or from a plain thread (``inbox.receive(timeout)``). Waking a
loop costs one ``call_soon_threadsafe`` per batch and per loop, not one per
message.

Each inbox holds up to ``maxsize`` messages from the network; past that, the
link that delivers them stops reading until the inbox is half empty, so a slow
receiver holds up its senders (their bounded send buffers fill, then ``send``
waits) instead of growing memory. The bound is soft by one read from the
socket (what was read is delivered), and local deliveries are not held back.
"""

from __future__ import annotations

import asyncio
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any

from skycluster import _blocking

if TYPE_CHECKING:
    from skycluster.messaging.messenger import Messenger

DEFAULT_MAILBOX_SIZE = 10_000


class Waker:
    """Wakes the futures of one loop with one call_soon_threadsafe per batch."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.thread = threading.get_ident()  # the thread that runs the loop (see waker())
        self._lock = threading.Lock()
        self._pending: list[asyncio.Future[None]] = []
        self._scheduled = False

    def wake(self, futures: list[asyncio.Future[None]]) -> None:
        if threading.get_ident() == self.thread:
            # node_loop="shared": the getters' own loop, so wake them now (each resumes
            # on the loop's next turn) rather than one turn later through _run
            _settle_all(futures)
            return
        with self._lock:
            self._pending.extend(futures)
            if self._scheduled:
                return
            self._scheduled = True
        try:
            self.loop.call_soon_threadsafe(self._run)
        except RuntimeError:  # the loop is closed: nobody waits any more
            with self._lock:
                self._pending.clear()
                self._scheduled = False

    def _run(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
            self._scheduled = False
        _settle_all(pending)


def _settle_all(futures: list[asyncio.Future[None]]) -> None:
    for future in futures:
        if not future.done():
            future.set_result(None)


_wakers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Waker] = weakref.WeakKeyDictionary()
_wakers_lock = threading.Lock()

Waiter = tuple[Waker, "asyncio.Future[None]"]


def waker(loop: asyncio.AbstractEventLoop) -> Waker:
    """The waker of ``loop``, for a future about to wait on it: call it on the thread
    that runs ``loop``, which it records (a loop may run on another thread later)."""
    found = _wakers.get(loop)
    if found is None:
        with _wakers_lock:
            found = _wakers.get(loop)
            if found is None:
                found = _wakers[loop] = Waker(loop)
    found.thread = threading.get_ident()
    return found


def wake_all(waiters: list[Waiter]) -> None:
    if len(waiters) == 1:
        waiters[0][0].wake([waiters[0][1]])
        return
    by_waker: dict[Waker, list[asyncio.Future[None]]] = {}
    for each, future in waiters:
        by_waker.setdefault(each, []).append(future)
    for each, group in by_waker.items():
        each.wake(group)


class Inbox:
    """A thread-safe FIFO of messages with async and blocking getters."""

    def __init__(self, maxsize: int = DEFAULT_MAILBOX_SIZE) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize must be at least 1, got {maxsize}")
        self.maxsize = maxsize
        self._low = maxsize // 2
        self._items: deque[Any] = deque()
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._async_waiters: list[Waiter] = []
        self._sync_waiting = 0
        self._closed = False
        # Set by the node while a link is held back because this inbox is full.
        self.blocking = False
        self._on_drain: Callable[[Inbox], None] | None = None

    def __len__(self) -> int:
        return len(self._items)

    @property
    def closed(self) -> bool:
        return self._closed

    # -- the node's side ------------------------------------------------------

    def put_many(self, items: list[Any], wake: set[Inbox] | None = None) -> bool:
        """Append messages (any thread); True when the inbox is now over ``maxsize``.
        With ``wake``, a waiting getter is not woken now: the inbox is added to the
        set, for the node to wake everyone once per read from the socket."""
        if self._closed:
            return False
        self._items.extend(items)
        if self._async_waiters or self._sync_waiting:
            if wake is None:
                self._wake()
            else:
                wake.add(self)
        return len(self._items) > self.maxsize

    def _wake(self) -> None:
        with self._lock:
            waiters, self._async_waiters = self._async_waiters, []
            if self._sync_waiting:
                self._ready.notify_all()
        if waiters:
            wake_all(waiters)

    def hold(self, on_drain: Callable[[Inbox], None]) -> None:
        """The node stopped reading a link for us: call ``on_drain`` once we are half empty."""
        self._on_drain = on_drain
        self.blocking = True
        if len(self._items) <= self._low or self._closed:
            self._drained()

    def _drained(self) -> None:
        callback = self._on_drain
        self.blocking = False
        self._on_drain = None
        if callback is not None:
            callback(self)

    def _took(self) -> None:
        if self.blocking and len(self._items) <= self._low:
            self._drained()

    # -- the application's side -----------------------------------------------

    async def get(self) -> Any:
        """The next message; raises StopAsyncIteration once closed and drained."""
        try:
            item = self._items.popleft()
        except IndexError:
            return await self._get_slow()
        if self.blocking:
            self._took()
        return item

    async def _get_slow(self) -> Any:
        loop = asyncio.get_running_loop()
        while True:
            with self._lock:
                if self._items:
                    item = self._items.popleft()
                    break
                if self._closed:
                    raise StopAsyncIteration
                future: asyncio.Future[None] = loop.create_future()
                waiter = (waker(loop), future)
                self._async_waiters.append(waiter)
            try:
                await future
            finally:
                if not future.done():
                    with self._lock:
                        if waiter in self._async_waiters:
                            self._async_waiters.remove(waiter)
        if self.blocking:
            self._took()
        return item

    async def get_many(self, limit: int = 1000) -> list[Any]:
        """Every queued message up to ``limit`` (at least one: waits for it)."""
        first = await self.get()
        items = [first]
        popleft = self._items.popleft
        try:
            while len(items) < limit:
                items.append(popleft())
        except IndexError:
            pass
        if self.blocking:
            self._took()
        return items

    def get_nowait(self) -> Any:
        """The next message; raises LookupError when there is none."""
        try:
            item = self._items.popleft()
        except IndexError:
            raise LookupError("the inbox is empty") from None
        if self.blocking:
            self._took()
        return item

    def receive(self, timeout: float | None = None) -> Any:
        """The next message, for a plain thread. Raises TimeoutError after
        ``timeout`` seconds, EOFError once closed and drained."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._ready:
            while not self._items:
                if self._closed:
                    raise EOFError("the inbox is closed")
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(f"no message within {timeout} s")
                _blocking.refuse_on_node_loop("receive() of a mailbox or subscription")
                self._sync_waiting += 1
                try:
                    with _blocking.waiting_for_data():
                        self._ready.wait(remaining)
                finally:
                    self._sync_waiting -= 1
            item = self._items.popleft()
        if self.blocking:
            self._took()
        return item

    def __aiter__(self) -> Inbox:
        return self

    async def __anext__(self) -> Any:
        return await self.get()

    def __iter__(self) -> Inbox:
        return self

    def __next__(self) -> Any:
        try:
            return self.receive()
        except EOFError:
            raise StopIteration from None

    def close(self) -> None:
        """Stop receiving; getters end once the queued messages are taken."""
        self._closed = True
        self._wake()
        if self.blocking:
            self._drained()

    async def __aenter__(self) -> Inbox:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __enter__(self) -> Inbox:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class Mailbox(Inbox):
    """A named inbox: ``cluster.send(node, name, message)`` lands here.

    A call arrives as a :class:`Request`; answer it with ``request.reply(value)``."""

    def __init__(self, messenger: Messenger, name: str, maxsize: int) -> None:
        super().__init__(maxsize)
        self.name = name
        self._messenger = messenger

    def close(self) -> None:
        """Unregister the name; queued messages can still be taken."""
        self._messenger.unregister(self)
        super().close()

    def __repr__(self) -> str:
        return f"<Mailbox {self.name!r} {len(self)} queued>"


class TopicSubscription(Inbox):
    """Messages broadcast on ``topic``: ``async for message in subscription``."""

    def __init__(self, messenger: Messenger, topic: str, maxsize: int) -> None:
        super().__init__(maxsize)
        self.topic = topic
        self._messenger = messenger

    def close(self) -> None:
        """Unsubscribe; queued messages can still be taken."""
        self._messenger.unsubscribe(self)
        super().close()

    def __repr__(self) -> str:
        return f"<TopicSubscription {self.topic!r} {len(self)} queued>"


class Request:
    """A call waiting in a mailbox: ``message`` is the request, ``node`` the caller.
    ``reply(value)`` answers it (once; from any thread)."""

    __slots__ = ("_answer", "message", "node")

    def __init__(self, message: Any, node: str, answer: Callable[[Any], None]) -> None:
        self.message = message
        self.node = node
        self._answer: Callable[[Any], None] | None = answer

    def reply(self, value: Any) -> None:
        answer = self._answer
        if answer is None:
            raise RuntimeError("this request has been answered already")
        self._answer = None
        answer(value)

    @property
    def answered(self) -> bool:
        return self._answer is None

    def __repr__(self) -> str:
        return f"<Request from {self.node}: {self.message!r}>"
