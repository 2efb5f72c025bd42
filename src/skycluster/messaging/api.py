"""The application's face of messaging: ``cluster.send``, ``call``, ``register``
and ``cluster.pubsub``. Mixed into :class:`~skycluster.Cluster`.

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
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from skycluster.runtime import Runtime

DEFAULT_CALL_TIMEOUT = 5.0


class Messaging:
    """Named mailboxes, send and call (mixed into Cluster)."""

    _identities: dict[str, str]

    def _require(self) -> Runtime:  # provided by Cluster
        raise NotImplementedError

    def _messenger(self) -> Messenger:
        messenger: Messenger | None = self.__dict__.get("_current_messenger")
        if messenger is not None and not messenger.closed:
            return messenger
        messenger = self._require().messenger
        if messenger is None:
            raise RuntimeError("the cluster is not started; use 'async with Cluster(...)'")
        self.__dict__["_current_messenger"] = messenger
        return messenger

    def _identity(self, node: str) -> str:
        cache = self.__dict__.setdefault("_identities", {})
        ident: str | None = cache.get(node)
        if ident is None:
            ident = NodeName.parse(node).identity
            if len(cache) < 10_000:
                cache[node] = ident
        return ident

    # -- mailboxes --------------------------------------------------------------

    def register(self, name: str, *, maxsize: int = DEFAULT_MAILBOX_SIZE) -> Mailbox:
        """A mailbox that receives what is sent to ``name`` on this node.
        ``async for message in mailbox`` or ``mailbox.receive(timeout)``;
        ``mailbox.close()`` unregisters it. Raises AlreadyRegistered."""
        return self._messenger().register(name, maxsize)

    def serve(self, name: str, handler: Callable[[Any], Any]) -> Callable[[], None]:
        """Answer calls to ``name`` with ``handler(request)``, run on the node's own
        thread as frames arrive (no hop to the application's loop: the quickest
        round trip). Plain messages sent to ``name`` are passed to it too. The
        handler must be quick and never block: heartbeats wait while it runs. A
        handler that raises gives the caller CallFailed. Returns a function that
        stops serving."""
        return self._messenger().serve(name, handler)

    # -- send -------------------------------------------------------------------

    async def send(self, node: str, name: str, message: Any) -> None:
        """Deliver ``message`` to mailbox ``name`` on ``node`` (links to it first if
        needed). Returns once the message is in the link's send buffer, waiting for
        room when the buffer is full. Raises NodeUnreachable, MessageTooLarge,
        UnencodableMessage. Delivery is at most once; order per sender and mailbox."""
        messenger = self._messenger()
        data = messenger.encode(message)
        channel = messenger.by_address.get(node)
        if channel is not None and channel.offer(wire.SEND, name, b"", data) == QUEUED:
            return
        ident = self._identity(node)
        if ident == messenger.identity:
            messenger.deliver_local(name, data)
            return
        channel = await self._offer(messenger, ident, node, wire.SEND, name, data)
        if len(messenger.by_address) < 10_000:
            messenger.by_address[node] = channel

    def send_nowait(self, node: str, name: str, message: Any) -> None:
        """:meth:`send` that never waits: raises BufferFull when the send buffer is
        full and NodeUnreachable when ``node`` is not linked (``await send`` links)."""
        messenger = self._messenger()
        data = messenger.encode(message)
        ident = self._identity(node)
        if ident == messenger.identity:
            messenger.deliver_local(name, data)
            return
        channel = messenger.channel(ident)
        if channel is None:
            raise NodeUnreachable(f"{ident} is not linked; 'await send' links to it first")
        status = channel.offer(wire.SEND, name, b"", data)
        if status == FULL:
            raise BufferFull(
                f"the send buffer to {ident} is full ({channel.limit} bytes, send_buffer_size)"
            )
        if status == DOWN:
            raise NodeDisconnected(f"the link to {ident} went down")

    def send_blocking(
        self, node: str, name: str, message: Any, timeout: float | None = None
    ) -> None:
        """:meth:`send` for a plain thread; TimeoutError when no room within ``timeout``."""
        messenger = self._messenger()
        data = messenger.encode(message)
        ident = self._identity(node)
        if ident == messenger.identity:
            messenger.deliver_local(name, data)
            return
        self._offer_blocking(messenger, ident, node, wire.SEND, name, b"", data, timeout)

    async def _offer(
        self,
        messenger: Messenger,
        ident: str,
        node: str,
        kind: int,
        key: Any,
        data: bytes,
        head: bytes = b"",
    ) -> Channel:
        loop = asyncio.get_running_loop()
        linked_once = False
        while True:
            channel = messenger.channel(ident)
            if channel is None:
                if linked_once:
                    raise NodeDisconnected(f"the link to {ident} went down")
                await self._link(node, ident)
                linked_once = True
                continue
            status = channel.offer(kind, key, head, data)
            if status == QUEUED:
                return channel
            if status == DOWN:
                continue
            waiter = channel.add_waiter(loop)
            if waiter is not None:
                await waiter

    def _offer_blocking(
        self,
        messenger: Messenger,
        ident: str,
        node: str,
        kind: int,
        key: Any,
        head: bytes,
        data: bytes,
        timeout: float | None,
    ) -> Channel:
        deadline = None if timeout is None else time.monotonic() + timeout
        linked_once = False
        while True:
            channel = messenger.channel(ident)
            if channel is None:
                if linked_once:
                    raise NodeDisconnected(f"the link to {ident} went down")
                _blocking.refuse_on_node_loop("send_blocking() (linking first)")
                runtime = self._require()
                future = runtime.submit(self._connect_on_node(node, ident))
                future.result(timeout=_remaining(deadline))
                linked_once = True
                continue
            status = channel.offer(kind, key, head, data)
            if status == QUEUED:
                return channel
            if status == DOWN:
                continue
            remaining = _remaining(deadline)
            if remaining is not None and remaining <= 0:
                raise TimeoutError(f"no room in the send buffer to {ident} within {timeout} s")
            _blocking.refuse_on_node_loop("send_blocking() (waiting for room)")
            channel.wait_room(remaining)

    async def _link(self, node: str, ident: str) -> None:
        runtime = self._require()
        await asyncio.wrap_future(runtime.submit(self._connect_on_node(node, ident)))

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
        """Send ``request`` to mailbox ``name`` on ``node`` and wait for the answer
        its owner gives with ``request.reply(value)``. Raises CallTimeout (no answer
        in time), NodeDisconnected (the link went down first: at once),
        NoSuchMailbox, NodeUnreachable."""
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
                if channel is None or channel.offer(wire.CALL, None, head, data) != QUEUED:
                    # not linked yet, or no room: the slow way, within the same deadline
                    try:
                        async with asyncio.timeout_at(deadline):
                            await self._offer(messenger, ident, node, wire.CALL, None, data, head)
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
        """:meth:`call` for a plain thread."""
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
                self._offer_blocking(messenger, ident, node, wire.CALL, None, head, data, timeout)
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

    def __init__(self, cluster: Messaging) -> None:
        self._cluster = cluster

    def subscribe(self, topic: str, *, maxsize: int = DEFAULT_MAILBOX_SIZE) -> TopicSubscription:
        """Receive what is broadcast on ``topic``: ``async for message in sub``,
        ``sub.receive(timeout)``; ``sub.close()`` or :meth:`unsubscribe` ends it."""
        return self._cluster._messenger().subscribe(topic, maxsize)

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
        messenger = self._cluster._messenger()
        messenger.publish_local(topic, messenger.encode(message))

    async def direct_broadcast(self, node: str, topic: str, message: Any) -> None:
        """To the subscribers of ``topic`` on ``node`` only (links to it if needed)."""
        cluster = self._cluster
        messenger = cluster._messenger()
        data = messenger.encode(message)
        ident = cluster._identity(node)
        if ident == messenger.identity:
            messenger.publish_local(topic, data)
            return
        await cluster._offer(messenger, ident, node, wire.PUBLISH, topic, data)

    def broadcast_blocking(self, topic: str, message: Any, timeout: float | None = None) -> None:
        """:meth:`broadcast` for a plain thread."""
        messenger = self._cluster._messenger()
        data = messenger.encode(message)
        messenger.publish_local(topic, data)
        for channel in messenger.linked_channels():
            try:
                self._cluster._offer_blocking(
                    messenger,
                    channel.ident,
                    channel.ident,
                    wire.PUBLISH,
                    topic,
                    b"",
                    data,
                    timeout,
                )
            except NodeDisconnected:
                continue

    async def _broadcast(self, topic: str, message: Any, skip: TopicSubscription | None) -> None:
        cluster = self._cluster
        messenger = cluster._messenger()
        data = messenger.encode(message)
        messenger.publish_local(topic, data, skip)
        head = codec.encode_key(topic)
        for channel in messenger.linked_channels():
            if channel.offer(wire.PUBLISH, topic, head, data) == FULL:
                try:
                    await cluster._offer(
                        messenger, channel.ident, channel.ident, wire.PUBLISH, topic, data, head
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
