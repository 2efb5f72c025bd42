"""Cluster: the application's handle on its node, its strategies and its events.

asyncio-native (``async with Cluster(...)``) with a thread-safe face for code
that does not use asyncio (``with Cluster(...)``, ``*_blocking`` methods). The
node itself runs on its own thread (see :mod:`skycluster.runtime`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import os
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, TypeVar, overload

from skycluster import _blocking, config
from skycluster._tasks import TaskSet
from skycluster.config import DEFAULTS
from skycluster.cookie import ENV as COOKIE_ENV
from skycluster.cookie import load_cookie
from skycluster.errors import StartError
from skycluster.events import (
    DEFAULT_QUEUE_SIZE,
    AsyncSubscription,
    Event,
    EventBus,
    NodeUp,
    Subscription,
    SyncSubscription,
)
from skycluster.messaging.api import DEFAULT_CALL_TIMEOUT, Messaging, PubSub
from skycluster.messaging.inbox import DEFAULT_MAILBOX_SIZE, Mailbox
from skycluster.names import NodeName, format_address
from skycluster.ops.metrics import Snapshot
from skycluster.runtime import SHARED_NEEDS_A_LOOP, Runtime
from skycluster.strategy import Strategy, Topology, check_topologies, topologies_from

if TYPE_CHECKING:  # the Erlang layer is imported only by nodes that run it (erlang=True)
    from skycluster.erlang.erpc import Exposed
    from skycluster.erlang.node import ErlangNode
    from skycluster.erlang.values import Pid
    from skycluster.erlang_processes import ErlangProcesses

log = logging.getLogger("skycluster")

S = TypeVar("S", bound=Subscription)
EventCallback = Callable[[Event], Awaitable[None] | None]


class Cluster:
    """A node that joins a cluster through its topologies and reports membership.

    ``name`` is ``name@host`` or ``name@host:port`` (the port is where this
    node listens); when omitted it comes from ``SKYCLUSTER_NAME``, else
    ``node<pid>@127.0.0.1``. ``cookie`` falls back to ``SKYCLUSTER_COOKIE``,
    then to ``~/.skycluster/cookie``.
    """

    def __init__(
        self,
        name: str | None = DEFAULTS["name"],
        *,
        cookie: str | bytes | None = DEFAULTS["cookie"],
        topologies: Mapping[str, Strategy | Topology] | None = None,
        listen: str | None = DEFAULTS["listen"],
        dist_port: int | None = DEFAULTS["dist_port"],
        heartbeat_interval: float = DEFAULTS["heartbeat_interval"],
        heartbeat_timeout: float = DEFAULTS["heartbeat_timeout"],
        handshake_timeout: float = DEFAULTS["handshake_timeout"],
        connect_timeout: float = DEFAULTS["connect_timeout"],
        full_mesh: bool = DEFAULTS["full_mesh"],
        hidden: bool = DEFAULTS["hidden"],
        metadata: Mapping[str, Any] | None = DEFAULTS["metadata"],
        tls_cert: str | None = DEFAULTS["tls_cert"],
        tls_key: str | None = DEFAULTS["tls_key"],
        tls_ca: str | None = DEFAULTS["tls_ca"],
        max_frame_size: int = DEFAULTS["max_frame_size"],
        max_message_size: int = DEFAULTS["max_message_size"],
        send_buffer_size: int = DEFAULTS["send_buffer_size"],
        port_mapper: bool = DEFAULTS["port_mapper"],
        epmd_port: int | None = DEFAULTS["epmd_port"],
        epmd_bind: str | None = DEFAULTS["epmd_bind"],
        strategy_restart_backoff: tuple[float, float] = DEFAULTS["strategy_restart_backoff"],
        http: str | None = DEFAULTS["http"],
        min_nodes: int = DEFAULTS["min_nodes"],
        node_loop: str = DEFAULTS["node_loop"],
        busy_wait: float = DEFAULTS["busy_wait"],
        erlang: bool = DEFAULTS["erlang"],
        erlang_ticktime: float = DEFAULTS["erlang_ticktime"],
        environ: Mapping[str, str] | None = None,
    ) -> None:
        """Check the options and build the node's settings; nothing runs until :meth:`start`.

        The options, their defaults, help and checks are one table,
        :data:`skycluster.config.OPTIONS`; the CLI and ``SKYCLUSTER_*`` variables come
        from it too. The parameters are spelled out here, typed, so that type checkers
        (``mypy --strict``) and editors check and complete each call; their defaults are
        read from the table (``DEFAULTS[...]``) rather than written twice, and
        ``help(Cluster)`` shows their values. A bad value raises ConfigError naming
        the option, the value and the accepted form.
        """
        environ = os.environ if environ is None else environ
        self.settings = config.node_settings(
            {
                "name": name,
                "listen": listen,
                "dist_port": dist_port,
                "heartbeat_interval": heartbeat_interval,
                "heartbeat_timeout": heartbeat_timeout,
                "handshake_timeout": handshake_timeout,
                "connect_timeout": connect_timeout,
                "full_mesh": full_mesh,
                "hidden": hidden,
                "metadata": metadata,
                "tls_cert": tls_cert,
                "tls_key": tls_key,
                "tls_ca": tls_ca,
                "max_frame_size": max_frame_size,
                "max_message_size": max_message_size,
                "send_buffer_size": send_buffer_size,
                "port_mapper": port_mapper,
                "epmd_port": epmd_port,
                "epmd_bind": epmd_bind,
                "http": http,
                "min_nodes": min_nodes,
                "node_loop": node_loop,
                "busy_wait": busy_wait,
                "erlang": erlang,
                "erlang_ticktime": erlang_ticktime,
            },
            environ,
        )
        self._cookie = load_cookie(cookie, environ)
        # Erlang's rule: the cookie given (--cookie), else ~/.erlang.cookie.
        self._erlang_cookie: bytes | None = None
        self._exposed: Exposed | None = None  # the functions Erlang may rpc:call
        if self.settings.erlang:
            from skycluster.erlang.cookie import load_erlang_cookie
            from skycluster.erlang.erpc import Exposed

            self._erlang_cookie = load_erlang_cookie(
                cookie or environ.get(COOKIE_ENV) or None, environ
            )
            self._exposed = Exposed()
        self.topologies: dict[str, Topology] = check_topologies(topologies)
        self._restart_backoff = config.OPTIONS["strategy_restart_backoff"].checked(
            strategy_restart_backoff
        )
        self._bus = EventBus()
        self._runtime: Runtime | None = None
        self._messaging = Messaging(self._require)  # send, call, register, pubsub
        self._callbacks: TaskSet | None = None
        self._subscriptions: list[Subscription] = []

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Cluster:
        """Every option from ``SKYCLUSTER_*`` (and the seed's ``LIBCLUSTER_*``)
        variables, the strategy included; keyword arguments win."""
        environ = os.environ if environ is None else environ
        values = config.resolve(config.NODE_OPTIONS, environ)
        if "topologies" not in overrides:
            values["topologies"] = topologies_from(environ)
        values.update(overrides)
        return cls(environ=environ, **values)

    # -- identity -------------------------------------------------------------

    @property
    def name(self) -> str:
        """This node's identity, ``name@host``."""
        return self.settings.name.identity

    @property
    def address(self) -> str | None:
        """``host:port`` where this node accepts links (once started)."""
        node = self._runtime.node if self._runtime else None
        if node is None or not node.port:
            return None
        return format_address(self.settings.name.host, node.port)

    @property
    def http_address(self) -> str | None:
        """``host:port`` of the operations endpoint (``http=``), once started."""
        runtime = self._runtime
        server = runtime.operations.http if runtime and runtime.operations else None
        return server.address if server is not None and server.port else None

    # -- lifecycle ------------------------------------------------------------

    async def start(self) -> None:
        """Start the node (it listens when this returns) and its strategies."""
        if self._callbacks is None:
            self._callbacks = TaskSet(log)
        await asyncio.wrap_future(self._start_runtime())

    def start_blocking(self) -> None:
        """:meth:`start` for code without an event loop."""
        if self.settings.shared_loop:  # the task would wait for the loop this call blocks
            raise RuntimeError(SHARED_NEEDS_A_LOOP)
        self._start_runtime().result()

    def _start_runtime(self) -> concurrent.futures.Future[None]:
        if self._runtime is not None:
            raise RuntimeError("the cluster is already started")
        self._runtime = Runtime(
            self.settings,
            self._cookie,
            self._bus,
            self.topologies,
            restart_backoff=self._restart_backoff,
            erlang_cookie=self._erlang_cookie,
            exposed=self._exposed,
        )
        future = self._runtime.start()
        future.add_done_callback(self._join_if_failed)
        return future

    def _join_if_failed(self, future: concurrent.futures.Future[None]) -> None:
        if future.exception() is not None and self._runtime is not None:
            self._runtime = None

    async def stop(self) -> None:
        """Leave the cluster: peers see ``shutdown``; nothing is left running."""
        runtime = self._runtime
        if runtime is not None:
            await asyncio.wrap_future(runtime.stop())
            runtime.join()
        self._end_subscriptions()
        if self._callbacks is not None:
            await self._callbacks.aclose()
            self._callbacks = None
        self._runtime = None

    def stop_blocking(self) -> None:
        _blocking.refuse_on_node_loop("stop_blocking()")
        runtime = self._runtime
        if runtime is not None:
            runtime.stop().result()
            runtime.join()
        self._end_subscriptions()
        self._runtime = None

    def _end_subscriptions(self) -> None:
        self._bus.forget_members()
        for subscription in self._subscriptions:
            subscription.close()
        self._subscriptions.clear()

    async def __aenter__(self) -> Cluster:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    def __enter__(self) -> Cluster:
        self.start_blocking()
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop_blocking()

    @property
    def running(self) -> bool:
        return self._runtime is not None

    # -- membership -----------------------------------------------------------

    @overload
    def nodes(self, *, with_metadata: Literal[False] = False) -> list[str]: ...

    @overload
    def nodes(self, *, with_metadata: Literal[True]) -> dict[str, dict[str, Any]]: ...

    def nodes(self, *, with_metadata: bool = False) -> list[str] | dict[str, dict[str, Any]]:
        """Identities of the linked nodes (not this one, not hidden ones); with
        ``with_metadata=True`` a dict of identity to the metadata each node announced."""
        members = self._bus.members()
        if with_metadata:
            return {node: dict(members[node].metadata) for node in sorted(members)}
        return sorted(members)

    async def status(self) -> dict[str, Any]:
        """This node's membership view, as ``/status`` and ``skycluster members`` show it:
        every peer with its address, since when it is linked, its last heartbeat
        round-trip time and its metadata."""
        from skycluster.ops.status import node_status

        runtime = self._require()
        assert runtime.node is not None
        node = runtime.node
        return await asyncio.wrap_future(runtime.call(lambda: node_status(node)))

    async def remote_status(self, name: str, timeout: float = 5.0) -> dict[str, Any]:
        """Link to ``name`` (if not linked) and ask for its membership view."""
        runtime = self._require()
        assert runtime.remote_status is not None
        future = runtime.submit(runtime.remote_status.query(NodeName.parse(name), timeout))
        return await asyncio.wrap_future(future)

    def members(self) -> dict[str, NodeUp]:
        """Linked nodes with the NodeUp that announced them (address, metadata, time)."""
        return self._bus.members()

    async def connect(self, name: str) -> bool:
        """Link to ``name`` now; False when it cannot be reached."""
        return await asyncio.wrap_future(self._require().submit(self._node_connect(name)))

    def connect_blocking(self, name: str) -> bool:
        _blocking.refuse_on_node_loop("connect_blocking()")
        return self._require().submit(self._node_connect(name)).result()

    async def _node_connect(self, name: str) -> bool:
        node = self._require().node
        assert node is not None
        return await node.connect(NodeName.parse(name))

    async def disconnect(self, name: str) -> bool:
        """Drop the link to ``name`` (subscribers see reason ``disconnect``)."""
        return await asyncio.wrap_future(self._disconnect_future(name))

    def disconnect_blocking(self, name: str) -> bool:
        _blocking.refuse_on_node_loop("disconnect_blocking()")
        return self._disconnect_future(name).result()

    def _disconnect_future(self, name: str) -> concurrent.futures.Future[bool]:
        runtime = self._require()
        identity = NodeName.parse(name).identity
        assert runtime.node is not None
        node = runtime.node
        return runtime.call(lambda: node.disconnect(identity))

    def stats(self) -> dict[str, int]:
        """Counters: handshake failures by kind, links up/down by reason, overflows,
        requests to the HTTP endpoint..."""
        runtime = self._runtime
        counts = runtime.node.counters.snapshot() if runtime and runtime.node else {}
        counts["subscriber_overflows"] = self._bus.overflows
        return counts

    def metrics_snapshot(self) -> Snapshot | None:
        """The node's metrics as :mod:`skycluster.ops.prometheus` exports them;
        None while the cluster is stopped."""
        runtime = self._runtime
        operations = runtime.operations if runtime is not None else None
        return operations.metrics.snapshot() if operations is not None else None

    # -- events ---------------------------------------------------------------

    def subscribe(
        self, *, initial: bool = False, maxsize: int = DEFAULT_QUEUE_SIZE
    ) -> AsyncSubscription:
        """Events as an async iterator (``async for event in cluster.subscribe()``).
        ``initial=True`` first delivers a NodeUp for every current member."""
        subscription = AsyncSubscription(self._bus, maxsize, asyncio.get_running_loop())
        return self._attach(subscription, initial)

    def subscribe_blocking(
        self, *, initial: bool = False, maxsize: int = DEFAULT_QUEUE_SIZE
    ) -> SyncSubscription:
        """Events for a plain thread: ``subscription.get(timeout)`` or iteration."""
        return self._attach(SyncSubscription(self._bus, maxsize), initial)

    def on_event(
        self,
        callback: EventCallback,
        *,
        initial: bool = False,
        maxsize: int = DEFAULT_QUEUE_SIZE,
    ) -> AsyncSubscription:
        """Call ``callback(event)`` (sync or async) in this event loop for every event.
        Close the returned subscription to unsubscribe. A failing callback is logged."""
        if self._callbacks is None:
            self._callbacks = TaskSet(log)
        subscription = self.subscribe(initial=initial, maxsize=maxsize)
        self._callbacks.spawn(_dispatch(subscription, callback), name=f"callback {callback!r}")
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        subscription.close()
        if subscription in self._subscriptions:
            self._subscriptions.remove(subscription)

    def _attach(self, subscription: S, initial: bool) -> S:
        self._bus.attach(subscription, initial=initial)
        self._subscriptions.append(subscription)
        return subscription

    async def wait_for_nodes(self, count: int, timeout: float | None = None) -> list[str]:
        """Wait until at least ``count`` other nodes are linked; returns them.
        Raises TimeoutError naming the nodes linked so far."""
        subscription = self.subscribe(initial=True)
        try:
            async with asyncio.timeout(timeout):
                while len(self.nodes()) < count:
                    await subscription.get()
        except TimeoutError:
            raise TimeoutError(self._short_of(count, timeout)) from None
        finally:
            self.unsubscribe(subscription)
        return self.nodes()

    def wait_for_nodes_blocking(self, count: int, timeout: float | None = None) -> list[str]:
        """:meth:`wait_for_nodes` for a plain thread."""
        end = None if timeout is None else time.monotonic() + timeout
        subscription = self.subscribe_blocking(initial=True)
        try:
            while len(self.nodes()) < count:
                remaining = None if end is None else max(0.0, end - time.monotonic())
                subscription.get(remaining)
        except TimeoutError:
            raise TimeoutError(self._short_of(count, timeout)) from None
        finally:
            self.unsubscribe(subscription)
        return self.nodes()

    def _short_of(self, count: int, timeout: float | None) -> str:
        linked = self.nodes()
        return (
            f"only {len(linked)} of {count} nodes linked after {timeout} s: "
            f"{', '.join(linked) or 'none'}"
        )

    # -- messaging (see docs/messaging.md; the work is done by self._messaging) --

    def register(self, name: str, *, maxsize: int = DEFAULT_MAILBOX_SIZE) -> Mailbox:
        """A mailbox that receives what is sent to ``name`` on this node.
        ``async for message in mailbox`` or ``mailbox.receive(timeout)``;
        ``mailbox.close()`` unregisters it. Raises AlreadyRegistered."""
        return self._messaging.register(name, maxsize=maxsize)

    def serve(self, name: str, handler: Callable[[Any], Any]) -> Callable[[], None]:
        """Answer calls to ``name`` with ``handler(request)``, run where the frames
        are read, as they arrive: the loop that started the cluster (the node's own
        thread for a cluster started without one). No hop to another loop: the
        quickest round trip. Plain messages sent to ``name`` are passed to it too.
        The handler must be quick and never block: what that loop reads waits while
        it runs. A handler that raises gives the caller CallFailed. Returns a
        function that stops serving."""
        return self._messaging.serve(name, handler)

    # The async forms hand back the messaging object's coroutine rather than await
    # it in a coroutine of their own: one frame less on every send.

    def send(self, node: str, name: str, message: Any) -> Coroutine[Any, Any, None]:
        """Deliver ``message`` to mailbox ``name`` on ``node`` (links to it first if
        needed). Returns once the message is in the link's send buffer, waiting for
        room when the buffer is full. Raises NodeUnreachable, MessageTooLarge,
        UnencodableMessage. Delivery is at most once; order per sender and mailbox.

        With ``erlang=True``, ``node`` may be a BEAM node: ``message`` then goes to
        its process registered as ``name``, encoded as docs/erlang.md's table says
        (UnencodableTerm for a value without an Erlang form)."""
        if self.settings.erlang:
            return self._send_either(node, name, message)
        return self._messaging.send(node, name, message)

    def send_nowait(self, node: str, name: str, message: Any) -> None:
        """:meth:`send` that never waits: raises BufferFull when the send buffer is
        full and NodeUnreachable when ``node`` is not linked (``await send`` links)."""
        erlang = self._erlang_link(node)
        if erlang is not None:
            erlang.send_to_name(_identity(node), name, message)
            return
        self._messaging.send_nowait(node, name, message)

    def send_blocking(
        self, node: str, name: str, message: Any, timeout: float | None = None
    ) -> None:
        """:meth:`send` for a plain thread; TimeoutError when no room within ``timeout``."""
        if self.settings.erlang:
            ident = _identity(node)
            if self._erlang_link(node) is None and ident not in self.nodes():
                self.connect_blocking(node)
            erlang = self._erlang_link(node)
            if erlang is not None:
                erlang.send_to_name(ident, name, message)
                return
        self._messaging.send_blocking(node, name, message, timeout)

    async def _send_either(self, node: str, name: str, message: Any) -> None:
        """send() on a node that speaks Erlang too: link first, then by the link's kind."""
        ident = _identity(node)
        if self._unlinked(node, ident):
            await self.connect(node)
        erlang = self._erlang_link(node)
        if erlang is None:
            await self._messaging.send(node, name, message)
            return
        erlang.send_to_name(ident, name, message)
        if erlang.buffered(ident) > self.settings.send_buffer_size:
            await asyncio.wrap_future(self._require().submit(erlang.drain(ident)))

    def _erlang_link(self, node: str) -> ErlangNode | None:
        """The node's Erlang side when ``node`` is linked over Erlang distribution."""
        runtime = self._runtime
        erlang = runtime.erlang if runtime is not None else None
        if erlang is None or _identity(node) not in erlang.links:
            return None
        return erlang

    def call(
        self, node: str, name: str, request: Any, *, timeout: float = DEFAULT_CALL_TIMEOUT
    ) -> Coroutine[Any, Any, Any]:
        """Send ``request`` to mailbox ``name`` on ``node`` and wait for the answer
        its owner gives with ``request.reply(value)``. Raises CallTimeout (no answer
        in time), NodeDisconnected (the link went down first: at once),
        NoSuchMailbox, NodeUnreachable.

        With ``erlang=True``, ``node`` may be a BEAM node: ``name`` is then a process
        registered there and the call is ``gen_server:call`` (NoSuchMailbox when no
        process has the name, ErlangCallError when it exits before replying)."""
        if self.settings.erlang:
            return self._call_either(node, name, request, timeout)
        return self._messaging.call(node, name, request, timeout=timeout)

    def call_blocking(
        self, node: str, name: str, request: Any, *, timeout: float = DEFAULT_CALL_TIMEOUT
    ) -> Any:
        """:meth:`call` for a plain thread."""
        if self.settings.erlang:
            ident = NodeName.parse(node).identity
            if self._unlinked(node, ident):
                self.connect_blocking(node)
            if self._erlang_link(node) is not None:
                _blocking.refuse_on_node_loop("call_blocking()")
                future = self._require().submit(self._erlang_call(ident, name, request, timeout))
                return future.result()
        return self._messaging.call_blocking(node, name, request, timeout=timeout)

    async def _call_either(self, node: str, name: str, request: Any, timeout: float) -> Any:
        """call() on a node that speaks Erlang too: link first, then by the link's kind."""
        ident = NodeName.parse(node).identity
        if self._unlinked(node, ident):
            await self.connect(node)
        if self._erlang_link(node) is None:
            return await self._messaging.call(node, name, request, timeout=timeout)
        coro = self._erlang_call(ident, name, request, timeout)
        return await asyncio.wrap_future(self._require().submit(coro))

    def _unlinked(self, node: str, ident: str) -> bool:
        """``node`` is another node, linked by neither protocol: a call links it first
        (to learn which protocol it speaks)."""
        return ident != self.name and self._erlang_link(node) is None and ident not in self.nodes()

    async def _erlang_call(self, ident: str, name: str, request: Any, timeout: float) -> Any:
        from skycluster.erlang.atom import Atom

        layer = self._erlang_layer()
        return await layer.driver.call(Atom(ident), Atom(name), request, timeout=timeout)

    def _erlang_layer(self) -> ErlangProcesses:
        runtime = self._require()
        layer = runtime.erlang_processes
        if layer is None:
            raise RuntimeError("this node does not speak Erlang distribution: erlang=True")
        return layer

    # -- Erlang processes (erlang=True; see docs/erlang.md) ---------------------

    def expose(self, module: str, function: str, fn: Callable[..., Any]) -> None:
        """Let Erlang's ``rpc:call(ThisNode, module, function, Args)`` (and ``erpc``)
        run ``fn(*Args)``: a plain function in a worker thread, a coroutine function
        on the node's loop. Nothing that is not exposed runs: such a call returns
        ``{badrpc, {'EXIT', {undef, ...}}}``, as for a missing Erlang function."""
        if self._exposed is None:  # a node without erlang=True: kept, never called
            from skycluster.erlang.erpc import Exposed

            self._exposed = Exposed()
        self._exposed.expose(module, function, fn)

    def withdraw(self, module: str, function: str) -> None:
        """Stop exposing ``module:function``."""
        if self._exposed is not None:
            self._exposed.withdraw(module, function)

    def send_to_pid(self, pid: Pid, message: Any) -> None:
        """``Pid ! message`` to an Erlang process (a pid received in a message, say),
        over the Erlang link to its node (any thread; the link must be up:
        NodeUnreachable otherwise; UnencodableTerm at once for a value without an
        Erlang form). Delivery is at most once, as Erlang's."""
        from skycluster.erlang.messages import send as send_message

        layer = self._erlang_layer()
        layer.erlang.send_threadsafe(pid.node.name, send_message(pid, message))

    async def erlang_pid(self, name: str) -> Pid:
        """The Erlang pid of the mailbox (or ``serve()`` name) ``name``: Erlang may
        send to it and monitor it (``DOWN`` when the mailbox closes)."""
        layer = self._erlang_layer()
        return await asyncio.wrap_future(self._require().call(lambda: layer.pid(name)))

    async def pg_join(self, group: Any, name: str, *, scope: str = "pg") -> None:
        """The mailbox ``name`` joins the ``pg`` group ``group`` (an Erlang term:
        ``Atom("workers")`` for ``workers``; a ``str`` is a binary) in ``scope``:
        ``pg:get_members(Scope, Group)`` on the BEAM nodes lists it. It leaves when
        the mailbox closes."""
        layer = self._erlang_layer()
        run = self._require().call(lambda: layer.pg_join(scope, group, name))
        await asyncio.wrap_future(run)

    async def pg_leave(self, group: Any, name: str, *, scope: str = "pg") -> None:
        layer = self._erlang_layer()
        await asyncio.wrap_future(self._require().call(lambda: layer.pg_leave(scope, group, name)))

    async def pg_members(self, group: Any, *, scope: str = "pg") -> list[Pid]:
        """Every pid in ``group`` this node knows of: its own mailboxes' and the BEAM
        nodes' members (eventually consistent, as ``pg`` is)."""
        layer = self._erlang_layer()
        return await asyncio.wrap_future(
            self._require().call(lambda: layer.pg_members(scope, group))
        )

    @property
    def pubsub(self) -> PubSub:
        """Cluster-wide publish/subscribe (Phoenix.PubSub semantics)."""
        return self._messaging.pubsub

    def _require(self) -> Runtime:
        if self._runtime is None:
            raise RuntimeError("the cluster is not started; use 'async with Cluster(...)'")
        return self._runtime

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<Cluster {self.name} {state}, {len(self.nodes())} nodes>"


@functools.lru_cache(maxsize=10_000)
def _identity(node: str) -> str:
    """``name@host`` of a node as the application wrote it (parsed once per spelling)."""
    return NodeName.parse(node).identity


async def _dispatch(subscription: AsyncSubscription, callback: EventCallback) -> None:
    async for event in subscription:
        try:
            result = callback(event)
            if result is not None:
                await result
        except Exception:
            log.exception("event callback %r failed on %s", callback, event)


__all__ = ["Cluster", "EventCallback", "StartError", "topologies_from"]
