"""The application's face of messaging: ``cluster.send``, ``call``, ``register``
and ``cluster.pubsub``. A :class:`~skycluster.Cluster` holds one :class:`Messaging`
and hands these calls to it.

Every method is safe from any thread. The ``async`` forms wait (for a link, for
room in a send buffer, for a reply) without blocking the loop; ``*_blocking``
forms do the same in a plain thread; ``send_nowait`` never waits.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any, Protocol, TypeVar

from skycluster import _blocking
from skycluster.errors import (
    BufferFull,
    CallTimeout,
    NodeDisconnected,
    NodeUnreachable,
)
from skycluster.messaging import codec, wire
from skycluster.messaging.channel import DOWN, FULL, QUEUED, Channel
from skycluster.messaging.deadlines import expire
from skycluster.messaging.inbox import DEFAULT_MAILBOX_SIZE, Mailbox, TopicSubscription
from skycluster.messaging.messenger import Messenger
from skycluster.names import NodeName

T = TypeVar("T")

DEFAULT_CALL_TIMEOUT = 5.0


class Host(Protocol):
    """What messaging needs of the running node (a :class:`skycluster.runtime.Runtime`)."""

    @property
    def messenger(self) -> Messenger | None: ...

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]: ...


class Messaging:
    """Named mailboxes, send, call and pub/sub for one :class:`~skycluster.Cluster`.

    Owns what the application side of messaging keeps between calls: the
    messenger of the node that runs now (asked of ``host()`` again after a
    restart) and the node names already parsed. ``host()`` raises when the
    cluster is not started."""

    def __init__(self, host: Callable[[], Host]) -> None:
        self._host = host
        self._current: Messenger | None = None
        self._identities: dict[str, str] = {}

    def _messenger(self) -> Messenger:
        messenger = self._current
        if messenger is not None and not messenger.closed:
            return messenger
        messenger = self._host().messenger
        if messenger is None:
            raise RuntimeError("the cluster is not started; use 'async with Cluster(...)'")
        self._current = messenger
        return messenger

    def _identity(self, node: str) -> str:
        cache = self._identities
        ident: str | None = cache.get(node)
        if ident is None:
            ident = NodeName.parse(node).identity
            if len(cache) < 10_000:
                cache[node] = ident
        return ident

    # -- mailboxes --------------------------------------------------------------

    def register(self, name: str, *, maxsize: int = DEFAULT_MAILBOX_SIZE) -> Mailbox:
        """The body of :meth:`Cluster.register <skycluster.Cluster.register>`."""
        return self._messenger().register(name, maxsize)

    def serve(self, name: str, handler: Callable[[Any], Any]) -> Callable[[], None]:
        """The body of :meth:`Cluster.serve <skycluster.Cluster.serve>`."""
        return self._messenger().serve(name, handler)

    # -- send -------------------------------------------------------------------

    async def send(self, node: str, name: str, message: Any) -> None:
        """The body of :meth:`Cluster.send <skycluster.Cluster.send>`."""
        messenger = self._messenger()
        data = messenger.encode(message)
        channel = messenger.by_address.get(node)
        if channel is not None and channel.offer(wire.SEND, name, head=b"", data=data) == QUEUED:
            return
        ident = self._identity(node)
        if ident == messenger.identity:
            messenger.deliver_local(name, data)
            return
        channel = await self._offer(messenger, ident, node, kind=wire.SEND, key=name, data=data)
        if len(messenger.by_address) < 10_000:
            messenger.by_address[node] = channel

    def send_nowait(self, node: str, name: str, message: Any) -> None:
        """The body of :meth:`Cluster.send_nowait <skycluster.Cluster.send_nowait>`."""
        messenger = self._messenger()
        data = messenger.encode(message)
        ident = self._identity(node)
        if ident == messenger.identity:
            messenger.deliver_local(name, data)
            return
        channel = messenger.channel(ident)
        if channel is None:
            raise NodeUnreachable(f"{ident} is not linked; 'await send' links to it first")
        status = channel.offer(wire.SEND, name, head=b"", data=data)
        if status == FULL:
            raise BufferFull(
                f"the send buffer to {ident} is full ({channel.limit} bytes, send_buffer_size)"
            )
        if status == DOWN:
            raise NodeDisconnected(f"the link to {ident} went down")

    def send_blocking(
        self, node: str, name: str, message: Any, timeout: float | None = None
    ) -> None:
        """The body of :meth:`Cluster.send_blocking <skycluster.Cluster.send_blocking>`."""
        messenger = self._messenger()
        data = messenger.encode(message)
        ident = self._identity(node)
        if ident == messenger.identity:
            messenger.deliver_local(name, data)
            return
        self._offer_blocking(messenger, ident, node, timeout, kind=wire.SEND, key=name, data=data)

    def _offer_step(
        self,
        messenger: Messenger,
        ident: str,
        linked_once: bool,
        *,
        kind: int,
        key: Any,
        head: bytes,
        data: bytes,
    ) -> tuple[int, Channel | None]:
        """One try at queueing a message for ``ident``, shared by the async and the
        blocking forms: (QUEUED, channel); (FULL, channel): wait for room, then try
        again; (DOWN, None): link first. NodeDisconnected when the link it made
        went down."""
        while True:
            channel = messenger.channel(ident)
            if channel is None:
                if linked_once:
                    raise NodeDisconnected(f"the link to {ident} went down")
                return DOWN, None
            status = channel.offer(kind, key, head=head, data=data)
            if status != DOWN:  # DOWN: the link went down since we looked: look again
                return status, channel

    async def _offer(
        self,
        messenger: Messenger,
        ident: str,
        node: str,
        *,
        kind: int,
        key: Any,
        head: bytes = b"",
        data: bytes,
    ) -> Channel:
        """Queue a message, linking first and waiting for room as needed."""
        loop = asyncio.get_running_loop()
        linked_once = False
        while True:
            status, channel = self._offer_step(
                messenger, ident, linked_once, kind=kind, key=key, head=head, data=data
            )
            if channel is None:
                await self._link(node, ident)
                linked_once = True
            elif status == QUEUED:
                return channel
            else:
                waiter = channel.add_waiter(loop)
                if waiter is not None:
                    await waiter

    def _offer_blocking(
        self,
        messenger: Messenger,
        ident: str,
        node: str,
        timeout: float | None,
        *,
        kind: int,
        key: Any,
        head: bytes = b"",
        data: bytes,
    ) -> Channel:
        """:meth:`_offer` for a plain thread; TimeoutError when no room within ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        linked_once = False
        while True:
            status, channel = self._offer_step(
                messenger, ident, linked_once, kind=kind, key=key, head=head, data=data
            )
            if channel is None:
                _blocking.refuse_on_node_loop("send_blocking() (linking first)")
                future = self._host().submit(self._connect_on_node(node, ident))
                future.result(timeout=_remaining(deadline))
                linked_once = True
            elif status == QUEUED:
                return channel
            else:
                remaining = _remaining(deadline)
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(f"no room in the send buffer to {ident} within {timeout} s")
                _blocking.refuse_on_node_loop("send_blocking() (waiting for room)")
                channel.wait_room(remaining)

    async def _link(self, node: str, ident: str) -> None:
        await asyncio.wrap_future(self._host().submit(self._connect_on_node(node, ident)))

    async def _connect_on_node(self, node: str, ident: str) -> None:
        messenger = self._messenger()
        if not await messenger.node.connect(NodeName.parse(node)):
            why = messenger.node.last_dial_error.get(ident, "unreachable")
            raise NodeUnreachable(
                f"cannot link to {ident}: {why} (give its address as name@host:port, "
                "or let a strategy or the port mapper find it)"
            )

    # -- call -------------------------------------------------------------------

    async def call(
        self, node: str, name: str, request: Any, *, timeout: float = DEFAULT_CALL_TIMEOUT
    ) -> Any:
        """The body of :meth:`Cluster.call <skycluster.Cluster.call>`."""
        messenger = self._messenger()
        data = messenger.encode(request)
        ident = self._identity(node)
        caller = threading.get_ident()
        # the node's own thread runs the node's loop; get_running_loop() costs a getpid()
        loop = messenger.loop if caller == messenger.loop_thread else asyncio.get_running_loop()
        deadline = loop.time() + timeout
        future: asyncio.Future[Any] = loop.create_future()

        def resolve(exc: BaseException | None, value: Any) -> None:
            if threading.get_ident() == caller:  # a local call, or node_loop="shared"
                _settle(future, exc, value)
                return
            with contextlib.suppress(RuntimeError):  # the caller's loop is closed
                loop.call_soon_threadsafe(_settle, future, exc, value)

        ref = 0
        try:
            if ident == messenger.identity:
                messenger.call_local(name, data, resolve)
            else:
                ref = messenger.start_call(ident, resolve)
                head = wire.call_head(codec.encode_key(name), codec.encode_key(ref))
                channel = messenger.channel(ident)
                if (
                    channel is None
                    or channel.offer(wire.CALL, None, head=head, data=data) != QUEUED
                ):
                    # not linked yet, or no room: the slow way, within the same deadline
                    try:
                        async with asyncio.timeout_at(deadline):
                            await self._offer(
                                messenger,
                                ident,
                                node,
                                kind=wire.CALL,
                                key=None,
                                head=head,
                                data=data,
                            )
                    except TimeoutError:
                        expire(future, name, ident, timeout)
            deadlines = messenger.deadlines(loop)
            deadlines.add(deadline, future, name, ident, timeout)
            try:
                return await future
            finally:
                deadlines.finished()
        finally:
            if ref:
                messenger.calls.pop(ref, None)

    def call_blocking(
        self, node: str, name: str, request: Any, *, timeout: float = DEFAULT_CALL_TIMEOUT
    ) -> Any:
        """The body of :meth:`Cluster.call_blocking <skycluster.Cluster.call_blocking>`."""
        _blocking.refuse_on_node_loop("call_blocking()")
        messenger = self._messenger()
        data = messenger.encode(request)
        ident = self._identity(node)
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def resolve(exc: BaseException | None, value: Any) -> None:
            if future.done():
                return
            if exc is not None:
                future.set_exception(exc)
            else:
                future.set_result(value)

        deadline = time.monotonic() + timeout
        ref = 0
        try:
            if ident == messenger.identity:
                messenger.call_local(name, data, resolve)
            else:
                ref = messenger.start_call(ident, resolve)
                head = wire.call_head(codec.encode_key(name), codec.encode_key(ref))
                self._offer_blocking(
                    messenger, ident, node, timeout, kind=wire.CALL, key=None, head=head, data=data
                )
            with _blocking.waiting_for_data():
                return future.result(timeout=max(0.0, deadline - time.monotonic()))
        except (TimeoutError, concurrent.futures.TimeoutError):
            raise CallTimeout(
                f"no reply from mailbox {name!r} on {ident} within {timeout} s"
            ) from None
        finally:
            if ref:
                messenger.calls.pop(ref, None)

    # -- pub/sub ----------------------------------------------------------------

    @property
    def pubsub(self) -> PubSub:
        """Cluster-wide publish/subscribe (Phoenix.PubSub semantics)."""
        return PubSub(self)


class PubSub:
    """Topics across the cluster: every node's subscribers receive a broadcast.

    A broadcast crosses each link once and is fanned out by the receiving node.
    Delivery is at most once: a node that is not linked when the broadcast is
    sent (a partition, a restart) never gets it, and nothing is replayed."""

    def __init__(self, messaging: Messaging) -> None:
        self._messaging = messaging

    def subscribe(self, topic: str, *, maxsize: int = DEFAULT_MAILBOX_SIZE) -> TopicSubscription:
        """Receive what is broadcast on ``topic``: ``async for message in sub``,
        ``sub.receive(timeout)``; ``sub.close()`` or :meth:`unsubscribe` ends it."""
        return self._messaging._messenger().subscribe(topic, maxsize)

    def unsubscribe(self, subscription: TopicSubscription) -> None:
        subscription.close()

    async def broadcast(self, topic: str, message: Any) -> None:
        """To every subscriber of ``topic`` on every linked node, this one included."""
        await self._broadcast(topic, message, skip=None)

    async def broadcast_from(
        self, subscription: TopicSubscription, topic: str, message: Any
    ) -> None:
        """:meth:`broadcast`, except to ``subscription`` (the sender's own)."""
        await self._broadcast(topic, message, skip=subscription)

    def local_broadcast(self, topic: str, message: Any) -> None:
        """To the subscribers of ``topic`` on this node only."""
        messenger = self._messaging._messenger()
        messenger.publish_local(topic, messenger.encode(message))

    async def direct_broadcast(self, node: str, topic: str, message: Any) -> None:
        """To the subscribers of ``topic`` on ``node`` only (links to it if needed)."""
        messaging = self._messaging
        messenger = messaging._messenger()
        data = messenger.encode(message)
        ident = messaging._identity(node)
        if ident == messenger.identity:
            messenger.publish_local(topic, data)
            return
        await messaging._offer(messenger, ident, node, kind=wire.PUBLISH, key=topic, data=data)

    def broadcast_blocking(self, topic: str, message: Any, timeout: float | None = None) -> None:
        """:meth:`broadcast` for a plain thread."""
        messenger = self._messaging._messenger()
        data = messenger.encode(message)
        messenger.publish_local(topic, data)
        for channel in messenger.linked_channels():
            try:
                self._messaging._offer_blocking(
                    messenger,
                    channel.ident,
                    channel.ident,
                    timeout,
                    kind=wire.PUBLISH,
                    key=topic,
                    data=data,
                )
            except NodeDisconnected:
                continue

    async def _broadcast(self, topic: str, message: Any, skip: TopicSubscription | None) -> None:
        messaging = self._messaging
        messenger = messaging._messenger()
        data = messenger.encode(message)
        messenger.publish_local(topic, data, skip)
        head = codec.encode_key(topic)
        for channel in messenger.linked_channels():
            if channel.offer(wire.PUBLISH, topic, head=head, data=data) == FULL:
                try:
                    await messaging._offer(
                        messenger,
                        channel.ident,
                        channel.ident,
                        kind=wire.PUBLISH,
                        key=topic,
                        head=head,
                        data=data,
                    )
                except (NodeDisconnected, NodeUnreachable):
                    continue  # went down meanwhile: at most once


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def _settle(future: asyncio.Future[Any], exc: BaseException | None, value: Any) -> None:
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(value)
