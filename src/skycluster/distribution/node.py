"""The local node: listener, connections, dials and the established links.

Runs entirely on the node's own event loop (see :mod:`skycluster.runtime`), so
the application can block its own loop without starving heartbeats.

The node moves bytes and carries out decisions; it takes none about links. Its
:class:`~skycluster.distribution.hooks.Decider` (the membership driver,
:mod:`skycluster.membership.driver`) says whether a handshake goes on, which of
two links to the same node wins, when a silent link is closed, whom the mesh
dials and what a strategy's removal means.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import ssl
import time
from collections.abc import Callable, Coroutine
from typing import Any

from skycluster._counters import Counters
from skycluster._ratelimit import RateLimit
from skycluster._tasks import TaskSet
from skycluster.distribution import frame_types
from skycluster.distribution.busywait import BusyWait
from skycluster.distribution.handshake import Introduction, RejectReason
from skycluster.distribution.hooks import (
    Decider,
    FrameHandler,
    LinkListener,
    NoListener,
    SecondProtocol,
)
from skycluster.distribution.link import READ_SIZE, Link, LinkRefused
from skycluster.distribution.settings import NodeSettings
from skycluster.errors import NodeUnreachable, StartError
from skycluster.events import DownReason, EventBus
from skycluster.names import NodeName, format_address, parse_address
from skycluster.telemetry import GLOBAL, Telemetry, handshake_reason

log = logging.getLogger("skycluster.node")

Resolver = Callable[[NodeName], Coroutine[Any, Any, tuple[str, int]]]


_ALIVE_PAUSE = 0.05  # seconds before dialling again a peer that still held our old link


class Node:
    """The local node of the distribution layer.

    Owns the listening socket, every connection (``connections``) and the
    established link to each peer (``links``, one per peer), the dials under way,
    the addresses learnt, the counters (``counters``, ``traffic``) and the telemetry of
    all that, and the read buffer its links share. Moves frames but knows none
    of the layers above: they register a handler per range of frame types
    (:meth:`handle_frames`) and a listener of link life (:meth:`listen_links`).
    """

    def __init__(self, settings: NodeSettings, cookie: bytes, bus: EventBus) -> None:
        self.settings = settings
        self.cookie = cookie
        self.bus = bus
        self.name = settings.name
        self.identity = settings.name.identity
        self.creation = int.from_bytes(os.urandom(8), "big") >> 1
        self.links: dict[str, Link] = {}
        self.connections: set[Link] = set()  # every open connection, authenticated or not
        self._handshaking: set[Link] = set()  # the connections not authenticated yet
        self._refusals = RateLimit(burst=5, window=60.0)  # log lines about refused connections
        self.addresses: dict[str, tuple[str, int]] = {}
        self.counters = Counters()  # every layer's, read by Cluster.stats()
        self.telemetry = Telemetry(parent=GLOBAL)  # see skycluster.telemetry for the events
        self.traffic = Traffic()
        self.read_buffer = memoryview(bytearray(READ_SIZE))  # shared by the links (link.py)
        # The handler of each frame type the link does not handle itself, by type
        # (a list: indexed once per frame); None: the link's own, or ignored.
        self.frame_handlers: list[FrameHandler | None] = [None] * frame_types.ALL.stop
        # The loop that reads established plain-TCP links (link.py), when the runtime
        # names one (the application's): only these handlers run there, the link's
        # own frames and the others go to the node's loop.
        self.data_loop: asyncio.AbstractEventLoop | None = None
        self.data_frame_handlers: list[FrameHandler | None] = [None] * frame_types.ALL.stop
        self.data_read_buffer = memoryview(b"")  # the data loop's (link.py), once it has one
        self.data_reading = False  # the data loop is handling a read (its thread only)
        # The data loop's thread waits in a blocking call (lend_reading): links that
        # come up meanwhile stay read by the node's loop until reclaim_reading.
        self.reading_lent = False
        self.link_listener: LinkListener = NoListener()
        self.decider: Decider | None = None  # decides about links: decide_with()
        self.second_protocol: SecondProtocol | None = None  # speak_also()
        self.started = time.time()
        self.resolve: Resolver | None = None  # asks a port mapper; set by the runtime
        self.dials_in_flight = 0
        self._accepting: dict[str, Link] = {}  # admitted handshakes not yet finished
        self._link_waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._server: asyncio.Server | None = None
        self._tasks = TaskSet(log)
        self._stopping = False
        self.port = 0
        self.introduction = Introduction(
            self.name, self.creation, settings.hidden, None, dict(settings.metadata)
        )
        self.loop = asyncio.get_running_loop()
        self._server_ssl: ssl.SSLContext | None = None
        self._client_ssl: ssl.SSLContext | None = None
        # busy_wait polls the loop that reads the links: this one when it is the
        # application's (shared), else the data loop (read_on); never a node thread,
        # which would take the GIL from the application's thread over and over.
        polls = settings.shared_loop and settings.busy_wait > 0
        self.busy_wait = BusyWait(self.loop, settings.busy_wait, self.counters) if polls else None
        self.data_busy_wait: BusyWait | None = None  # the data loop's (its thread only)
        self.data_thread = 0  # the thread that runs the data loop
        self.last_dial_error: dict[str, str] = {}

    # -- lifecycle ------------------------------------------------------------

    async def start(self) -> None:
        if self.decider is None:
            raise StartError("a node needs a decider (Node.decide_with) before it starts")
        settings = self.settings
        if settings.tls is not None:
            self._server_ssl, self._client_ssl = _tls_contexts(settings)
        try:
            self._server = await self.loop.create_server(
                lambda: Link(self, initiator=False),
                settings.listen_host or None,
                settings.listen_port,
                ssl=self._server_ssl,
                ssl_handshake_timeout=settings.handshake_timeout if self._server_ssl else None,
                reuse_address=True,
                backlog=512,
            )
        except OSError as exc:
            where = format_address(settings.listen_host or "0.0.0.0", settings.listen_port)
            if exc.errno == errno.EADDRINUSE:
                raise StartError(
                    f"cannot listen on {where}: the address is already in use; "
                    "choose another port (--listen HOST:PORT, or the port in the node name) "
                    "or stop the process that holds it"
                ) from None
            raise StartError(f"cannot listen on {where}: {exc.strerror or exc}") from None
        self.port = self._server.sockets[0].getsockname()[1]
        self.introduction = Introduction(
            self.name,
            self.creation,
            settings.hidden,
            format_address(self.name.host, self.port),
            dict(settings.metadata),
        )

    async def stop(self) -> None:
        """Say goodbye to every peer, close every connection, end every task."""
        self._stopping = True
        if self._server is not None:
            self._server.close()
        await self._tasks.aclose()
        for link in list(self.connections):
            if link.up:
                link.goodbye("shutdown")
            else:
                link.abort()
        self.links.clear()
        deadline = self.loop.time() + 2.0
        while self.connections and self.loop.time() < deadline:  # noqa: ASYNC110 - emptied by connection_lost
            await asyncio.sleep(0.01)
        for link in list(self.connections):
            link.abort()
        if self._server is not None:
            await self._server.wait_closed()
        if self.busy_wait is not None:
            self.busy_wait.close()
        data_busy_wait, loop = self.data_busy_wait, self.data_loop
        if data_busy_wait is not None and loop is not None:
            with contextlib.suppress(RuntimeError):  # that loop is closed: nothing polls
                loop.call_soon_threadsafe(data_busy_wait.close)

    # -- what the layers above plug in -----------------------------------------

    def handle_frames(
        self, kinds: range, handler: FrameHandler, *, any_thread: bool = False
    ) -> None:
        """Give every frame whose type is in ``kinds`` to ``handler`` (see
        :mod:`skycluster.distribution.hooks`); a type has one handler at most, and
        the link's own types (:data:`frame_types.LINK`) none. ``any_thread``: the
        handler may run on the data loop's thread too (it is thread-safe), so that
        these frames are handled where they are read."""
        every = frame_types.ALL
        if kinds.step != 1 or kinds.start < every.start or kinds.stop > every.stop:
            raise ValueError(f"frame types are {frame_types.ALL}, got {kinds}")
        for kind in kinds:
            if kind in frame_types.LINK:
                raise ValueError(f"frame type {kind} is the link's own")
            if self.frame_handlers[kind] is not None:
                raise ValueError(f"frame type {kind} has a handler already")
        for kind in kinds:
            self.frame_handlers[kind] = handler
            if any_thread:
                self.data_frame_handlers[kind] = handler

    def read_on(self, loop: asyncio.AbstractEventLoop, thread: int) -> None:
        """Let ``loop`` (run by ``thread``, not the node's) read the links established
        from now on; with busy_wait, that loop polls after their traffic."""
        self.data_loop = loop
        self.data_thread = thread
        self.data_read_buffer = memoryview(bytearray(READ_SIZE))
        if self.settings.busy_wait:
            self.data_busy_wait = BusyWait(loop, self.settings.busy_wait, self.counters)

    def lend_reading(self) -> None:
        """(the data loop's thread, about to block in a wait for a link's data, not
        while it reads) The node's loop reads every link until :meth:`reclaim_reading`."""
        if self.data_reading:
            return  # a handler blocks in the middle of a read: nothing can be lent
        self.reading_lent = True  # first: a link that comes up from now on stays here
        for link in list(self.connections):  # registered as links or not yet
            link.lend_reading()

    def reclaim_reading(self) -> None:
        """(the data loop's thread) The data loop reads the links again."""
        self.reading_lent = False
        for link in list(self.connections):
            link.reclaim_reading()

    def decide_with(self, decider: Decider) -> None:
        """Let ``decider`` take every decision about links (one decider)."""
        if self.decider is not None:
            raise ValueError("the node has a decider already")
        self.decider = decider

    def listen_links(self, listener: LinkListener) -> None:
        """Tell ``listener`` about the life of every established link (one listener)."""
        if not isinstance(self.link_listener, NoListener):
            raise ValueError("the node has a link listener already")
        self.link_listener = listener

    def speak_also(self, protocol: SecondProtocol) -> None:
        """Share the listening port and the node's names with ``protocol`` (one)."""
        if self.second_protocol is not None:
            raise ValueError("the node speaks a second protocol already")
        if self.settings.tls is not None:
            raise ValueError("a second protocol cannot share a TLS listener")
        self.second_protocol = protocol

    # -- what the cluster asks ------------------------------------------------

    def nodes(self) -> list[str]:
        linked = [ident for ident, link in self.links.items() if link.peer and not link.peer.hidden]
        if self.second_protocol is not None:
            linked.extend(self.second_protocol.nodes())
        return linked

    async def connect(self, target: NodeName | str, topology: str | None = None) -> bool:
        """Link to a node (no-op when linked); False when it cannot be reached.
        ``topology``: the strategy that asks (its removal of the node is lifted)."""
        name = NodeName.parse(target) if isinstance(target, str) else target
        if name.identity == self.identity or name.identity in self.links:
            if topology is not None:
                await self._decider.connect(name, topology)  # lifts a removal
            return True
        if self._stopping:
            return False
        second = self.second_protocol
        if second is not None and await second.owns(name):
            return await second.connect(name)
        return await self._decider.connect(name, topology)

    def disconnect(self, identity: str, topology: str | None = None) -> bool:
        """Drop the link to ``identity``. With ``topology`` (a strategy's removal) the
        node stays unlinked by the mesh until that strategy lists it again."""
        if self.second_protocol is not None and self.second_protocol.disconnect(identity):
            return True
        return self._decider.disconnect(identity, topology)

    @property
    def _decider(self) -> Decider:
        if self.decider is None:
            raise RuntimeError("the node has no decider (Node.decide_with)")
        return self.decider

    # -- dialling -------------------------------------------------------------

    async def dial(self, name: NodeName) -> bool:
        """Dial ``name`` and hand the link to the decider; True once linked (also
        when the peer's own dial wins a simultaneous connect)."""
        self.dials_in_flight += 1
        try:
            return await self._dial(name)
        finally:
            self.dials_in_flight -= 1

    async def _dial(self, name: NodeName) -> bool:
        began = time.monotonic()  # for telemetry: uvloop's loop.time() counts whole ms
        deadline = self.loop.time() + self.settings.connect_timeout
        pause = _ALIVE_PAUSE
        while True:
            linked = await self._dial_once(name, began, deadline, pause)
            if linked is not None:
                return linked
            pause *= 2

    async def _dial_once(
        self, name: NodeName, began: float, deadline: float, pause: float
    ) -> bool | None:
        """One attempt within the dial's time; None: refused "alive", dial again."""
        ident = name.identity
        if ident in self.links:
            return True
        link = Link(self, initiator=True, expect=name)
        where = ident
        address: str | None = None
        try:
            async with asyncio.timeout_at(deadline):
                host, port = await self._address_of(name)
                address = format_address(host, port)
                where = f"{ident} at {address}"
                await self.loop.create_connection(
                    lambda: link,
                    host,
                    port,
                    ssl=self._client_ssl,
                    server_hostname=_sni(self),
                    ssl_handshake_timeout=(
                        self.settings.connect_timeout if self._client_ssl else None
                    ),
                )
                await link.established
        except LinkRefused as exc:
            if exc.reason == RejectReason.ALIVE and ident not in self.links:
                # The peer holds a link to us that we do not: one we closed, whose end
                # it has not read yet (Erlang's "alive" case). Give it a moment, dial
                # again, rather than wait the whole timeout for a link that will not come.
                left = deadline - self.loop.time()
                if left > pause and not await self.await_link(ident, pause):
                    return None
            if exc.reason in (RejectReason.SIMULTANEOUS, RejectReason.ALIVE):
                linked = await self.await_link(ident, deadline - self.loop.time())
                self._dialled(ident, address, began, None if linked else "timeout", "timed out")
                return linked
            self._dial_failed(ident, where, str(exc))
            self._dialled(ident, address, began, f"refused_{exc.reason}", str(exc))
            return False
        except (OSError, TimeoutError, NodeUnreachable) as exc:  # ssl.SSLError is an OSError
            link.abort()
            if name.port is None:
                self.addresses.pop(ident, None)  # may have restarted elsewhere: ask again
            self._dial_failed(ident, where, _describe(exc))
            self._dialled(ident, address, began, _dial_reason(exc), _describe(exc))
            return False
        self._dialled(ident, address, began, None, None)
        return True

    def _dialled(
        self, ident: str, address: str | None, began: float, reason: str | None, error: str | None
    ) -> None:
        took = {"duration": time.monotonic() - began}
        if reason is None:
            self.emit("connect.ok", took, peer=ident, address=address)
        else:
            self.emit(
                "connect.error", took, peer=ident, address=address, reason=reason, error=error
            )

    async def _address_of(self, name: NodeName) -> tuple[str, int]:
        if name.port is not None:
            return name.host, name.port
        known = self.addresses.get(name.identity)
        if known is not None:
            return known
        if self.settings.dist_port is not None:
            return name.host, self.settings.dist_port
        if self.resolve is not None:
            return await self.resolve(name)
        raise NodeUnreachable(
            f"no port known for {name.identity}: give one (name@host:port) or set --dist-port"
        )

    async def await_link(self, ident: str, timeout: float | None = None) -> bool:
        """Wait for the link the peer is dialling (a simultaneous connect it wins, or a
        handshake we are accepting); woken when that link comes up or its handshake fails."""
        if ident in self.links:
            return True
        waiter: asyncio.Future[None] = self.loop.create_future()
        self._link_waiters.setdefault(ident, []).append(waiter)
        try:
            async with asyncio.timeout(
                self.settings.connect_timeout if timeout is None else max(0.0, timeout)
            ):
                await waiter
        except TimeoutError:
            pass
        finally:
            waiters = self._link_waiters.get(ident, [])
            if waiter in waiters:
                waiters.remove(waiter)
        return ident in self.links

    def _wake_link_waiters(self, ident: str) -> None:
        for waiter in self._link_waiters.pop(ident, []):
            if not waiter.done():
                waiter.set_result(None)

    def _dial_failed(self, ident: str, where: str, why: str) -> None:
        self.counters.add("dial_failures")  # logged by skycluster.ops.logs, from connect.error
        self.last_dial_error[ident] = f"{why} ({where})"  # for NodeUnreachable messages

    # -- callbacks from links -------------------------------------------------

    def connection_opened(self, link: Link) -> bool:
        """A new connection; False when it was refused (aborted) before any handshake
        work, which a flood of connections must not be able to make expensive."""
        if not link.initiator and (
            self._stopping or len(self._handshaking) >= self.settings.max_handshakes
        ):
            self.counters.add("handshakes_refused_busy")
            self._refusals.log(
                log,
                logging.WARNING,
                "busy",
                "refusing connection from %s: too many handshakes",
                link.peer_address,
            )
            link.abort()
            return False
        self.connections.add(link)
        self._handshaking.add(link)
        return True

    def sniffed(self, link: Link, first: bytes) -> bool:
        """An accepted connection's first read: True when it went to the second
        protocol (the link is no longer this node's)."""
        second = self.second_protocol
        if second is None or link.transport is None or not second.claims(first):
            return False
        transport = link.transport
        link.release()
        self.connections.discard(link)
        self._handshaking.discard(link)
        second.take(transport, first)
        return True

    def admit(self, peer: Introduction, link: Link) -> RejectReason | None:
        """Acceptor side: may this (not yet authenticated) peer go on?"""
        if self._stopping:
            return RejectReason.BUSY
        reason = self._decider.admit(peer)
        if reason is not None:
            return RejectReason(reason)
        # Until this handshake ends, a connect() to the peer waits for it instead
        # of dialling a second connection that would cross this one.
        self._accepting[peer.name.identity] = link
        return None

    def link_up(self, link: Link) -> bool:
        """An authenticated link; False refuses it (the decider said so)."""
        assert link.peer is not None
        self._handshaking.discard(link)
        return self._decider.link_up(link)

    def register_link(self, link: Link) -> None:
        """The decider keeps ``link``: it is the link to its peer from now on."""
        assert link.peer is not None
        peer = link.peer
        ident = peer.name.identity
        self.links[ident] = link
        if peer.address:
            with contextlib.suppress(ValueError):
                self.addresses[ident] = parse_address(peer.address)
        self.emit(
            "link.up",
            {},
            peer=ident,
            address=peer.address or link.peer_address,
            hidden=peer.hidden,
            metadata=peer.metadata,
            direction="out" if link.initiator else "in",
        )
        if self._accepting.get(ident) is link:
            del self._accepting[ident]
        self._wake_link_waiters(ident)

    def drop_link(self, link: Link) -> None:
        """The decider closes ``link``: it is nobody's link from now on."""
        ident = link.identity
        if ident is not None and self.links.get(ident) is link:
            del self.links[ident]

    def connection_closed(self, link: Link, reason: DownReason) -> None:
        self.connections.discard(link)
        self._handshaking.discard(link)
        claimed = link.handshake.peer.name.identity if link.handshake.peer else None
        if claimed is not None and self._accepting.get(claimed) is link:
            del self._accepting[claimed]
            if self.decider is not None:
                self.decider.handshake_ended(claimed)
            self._wake_link_waiters(claimed)  # that handshake failed: dial instead
        if link.up:
            self.drop_link(link)
            if self.decider is not None:
                self.decider.link_closed(link, reason)

    def handshake_failed(self, link: Link, why: str) -> None:
        self.counters.add("handshakes_failed")
        claimed = link.handshake.peer.name.identity if link.handshake.peer else None
        self.emit(  # logged (rate-limited per cause) by skycluster.ops.logs
            "handshake.rejected",
            {},
            peer_address=link.peer_address,
            reason=handshake_reason(why),
            error=why,
            claimed=claimed,
        )

    def protocol_error(self, link: Link, why: str) -> None:
        self.counters.add("protocol_errors")
        log.warning("closing link to %s: %s", link.identity or link.peer_address, why)

    # -- helpers --------------------------------------------------------------

    def emit(self, event: str, measurements: dict[str, float], **metadata: Any) -> None:
        """A telemetry event (see :mod:`skycluster.telemetry`), tagged with this node."""
        self.telemetry.emit(event, measurements, {"node": self.identity, **metadata})


class Traffic:
    """Bytes and link frames in and out, over every connection this node had."""

    __slots__ = ("bytes_in", "bytes_out", "frames_in", "frames_out")

    def __init__(self) -> None:
        self.bytes_in = self.bytes_out = self.frames_in = self.frames_out = 0


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or exc.__class__.__name__


def _dial_reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timeout"
    if type(exc) is ConnectionError:  # raised by the link: the handshake went wrong
        return "handshake"
    if isinstance(exc, NodeUnreachable | OSError):
        return "unreachable"
    return "handshake"


def _sni(node: Node) -> str | None:
    return None if node._client_ssl is None else "skycluster"


def _tls_contexts(settings: NodeSettings) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """Mutual TLS: each side presents its certificate and checks the other's
    against the CA. Identity is still proven by the cookie handshake."""
    assert settings.tls is not None
    files = settings.tls
    try:
        server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server.verify_mode = ssl.CERT_REQUIRED
        client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        client.check_hostname = False  # members are named by node name, not DNS name
        client.verify_mode = ssl.CERT_REQUIRED
        for context in (server, client):
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            context.load_cert_chain(files.cert, files.key)
            context.load_verify_locations(files.ca)
    except (OSError, ssl.SSLError) as exc:
        raise StartError(
            f"cannot load the TLS files (cert {files.cert}, key {files.key}, ca {files.ca}): {exc}"
        ) from None
    return server, client
