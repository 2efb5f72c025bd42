"""The local node: listener, links by peer, heartbeats and the mesh.

Runs entirely on the node's own event loop (see :mod:`skycluster.runtime`), so
the application can block its own loop without starving heartbeats.

Exactly one link per pair of nodes: when both dial each other at once, the
connection dialled by the node with the smaller identity wins (the acceptor of
the other one answers REJECT "simultaneous"); a second link to the same
incarnation is refused ("alive"); a link from a new incarnation of a known node
replaces the old one, which is then reported down.
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

from skycluster._backoff import Backoff
from skycluster._counters import Counters
from skycluster._ratelimit import RateLimit
from skycluster._tasks import TaskSet
from skycluster.distribution import frame_types
from skycluster.distribution.busywait import BusyWait
from skycluster.distribution.frame_types import PEERS
from skycluster.distribution.handshake import Introduction, RejectReason
from skycluster.distribution.hooks import FrameHandler, LinkListener, NoListener
from skycluster.distribution.link import READ_SIZE, Link, LinkRefused
from skycluster.distribution.settings import NodeSettings
from skycluster.errors import NodeUnreachable, StartError
from skycluster.events import DownReason, EventBus, NodeDown, NodeUp
from skycluster.names import InvalidNodeName, NodeName, format_address, parse_address
from skycluster.telemetry import GLOBAL, Telemetry, handshake_reason

log = logging.getLogger("skycluster.node")

_MESH_CHECK = 1.0  # seconds between checks that peers know our links and the mesh is whole

Resolver = Callable[[NodeName], Coroutine[Any, Any, tuple[str, int]]]


class Node:
    """The local node of the distribution layer.

    Owns the listening socket, every connection (``connections``) and the
    established link to each peer (``links``, one per peer), the dials under way,
    the heartbeats, the full mesh (what each peer says it is linked to), the
    addresses learnt, the counters (``counters``, ``traffic``) and the telemetry of
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
        self.link_listener: LinkListener = NoListener()
        self.started = time.time()
        self.resolve: Resolver | None = None  # asks a port mapper; set by the runtime
        self._dialling: dict[str, asyncio.Task[bool]] = {}
        self._accepting: dict[str, Link] = {}  # admitted handshakes not yet finished
        self._link_waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._server: asyncio.Server | None = None
        self._tasks = TaskSet(log)
        self._stopping = False
        # Names each peer said it is linked to (PEERS), and when to dial each next.
        self._peer_lists: dict[str, frozenset[str]] = {}
        self._mesh_names: dict[str, NodeName] = {}
        self._mesh_retry: dict[str, tuple[float, Backoff]] = {}  # ident -> (next try, backoff)
        self._last_mesh_check = 0.0
        self.port = 0
        self.introduction = Introduction(
            self.name, self.creation, settings.hidden, None, dict(settings.metadata)
        )
        self.loop = asyncio.get_running_loop()
        self._server_ssl: ssl.SSLContext | None = None
        self._client_ssl: ssl.SSLContext | None = None
        self.busy_wait = BusyWait(self.loop, settings.busy_wait) if settings.busy_wait else None
        self.last_dial_error: dict[str, str] = {}

    # -- lifecycle ------------------------------------------------------------

    async def start(self) -> None:
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
        self._tasks.spawn(self._heartbeats(), name="heartbeats")

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

    # -- what the layers above plug in -----------------------------------------

    def handle_frames(self, kinds: range, handler: FrameHandler) -> None:
        """Give every frame whose type is in ``kinds`` to ``handler`` (see
        :mod:`skycluster.distribution.hooks`); a type has one handler at most, and
        the link's own types (:data:`frame_types.LINK`) none."""
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

    def listen_links(self, listener: LinkListener) -> None:
        """Tell ``listener`` about the life of every established link (one listener)."""
        if not isinstance(self.link_listener, NoListener):
            raise ValueError("the node has a link listener already")
        self.link_listener = listener

    # -- what the cluster asks ------------------------------------------------

    def nodes(self) -> list[str]:
        return [ident for ident, link in self.links.items() if link.peer and not link.peer.hidden]

    async def connect(self, target: NodeName | str) -> bool:
        """Link to a node (no-op when linked); False when it cannot be reached."""
        name = NodeName.parse(target) if isinstance(target, str) else target
        ident = name.identity
        if ident == self.identity or ident in self.links:
            return True
        if self._stopping:
            return False
        if ident in self._accepting and await self._await_link(ident):
            return True  # the peer is dialling us right now: take that link
        dial = self._dialling.get(ident)
        if dial is None:
            dial = self._tasks.spawn(self._dial(name), name=f"dial {ident}")
            self._dialling[ident] = dial
            dial.add_done_callback(lambda _: self._dialling.pop(ident, None))
        return await asyncio.shield(dial)

    def disconnect(self, identity: str) -> bool:
        link = self.links.pop(identity, None)
        if link is None:
            self.emit("disconnect.error", {}, peer=identity, reason="not_linked")
            return False
        link.down_reason = DownReason.DISCONNECT
        self.emit("disconnect.ok", {}, peer=identity)
        link.goodbye("disconnect")
        self._publish_down(link, DownReason.DISCONNECT)
        return True

    # -- dialling -------------------------------------------------------------

    async def _dial(self, name: NodeName) -> bool:
        ident = name.identity
        link = Link(self, initiator=True, expect=name)
        where = ident
        began = self.loop.time()
        address: str | None = None
        try:
            async with asyncio.timeout(self.settings.connect_timeout):
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
            if exc.reason in (RejectReason.SIMULTANEOUS, RejectReason.ALIVE):
                linked = await self._await_link(ident)
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
        took = {"duration": self.loop.time() - began}
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

    async def _await_link(self, ident: str) -> bool:
        """Wait for the link the peer is dialling (a simultaneous connect it wins, or a
        handshake we are accepting); woken when that link comes up or its handshake fails."""
        if ident in self.links:
            return True
        waiter: asyncio.Future[None] = self.loop.create_future()
        self._link_waiters.setdefault(ident, []).append(waiter)
        try:
            async with asyncio.timeout(self.settings.connect_timeout):
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

    def admit(self, peer: Introduction, link: Link) -> RejectReason | None:
        """Acceptor side: may this (not yet authenticated) peer go on?"""
        reason = self._admission(peer)
        if reason is None:
            # Until this handshake ends, a connect() to the peer waits for it instead
            # of dialling a second connection that would cross this one.
            self._accepting[peer.name.identity] = link
        return reason

    def _admission(self, peer: Introduction) -> RejectReason | None:
        ident = peer.name.identity
        if self._stopping:
            return RejectReason.BUSY
        if ident == self.identity:
            return RejectReason.NAME
        existing = self.links.get(ident)
        if existing is not None and existing.peer and existing.peer.creation == peer.creation:
            return RejectReason.ALIVE
        accepting = self._accepting.get(ident)
        if (
            accepting is not None
            and accepting.handshake.peer is not None
            and accepting.handshake.peer.creation == peer.creation
        ):
            return RejectReason.ALIVE  # a handshake with this very node is under way
        if ident in self._dialling and self.identity < ident:
            return RejectReason.SIMULTANEOUS  # our own dial wins
        return None

    def link_up(self, link: Link) -> bool:
        """An authenticated link; False refuses it (duplicate)."""
        assert link.peer is not None
        self._handshaking.discard(link)
        peer = link.peer
        ident = peer.name.identity
        existing = self.links.get(ident)
        if existing is not None:
            assert existing.peer is not None
            if existing.peer.creation == peer.creation:
                return False
            # The peer restarted; the old link belongs to a process that is gone.
            del self.links[ident]
            existing.abort()
            self._publish_down(existing, DownReason.CONNECTION_CLOSED)
        self.links[ident] = link
        if peer.address:
            with contextlib.suppress(ValueError):
                self.addresses[ident] = parse_address(peer.address)
        self.counters.add("links_up")
        self._mesh_retry.pop(ident, None)
        self.emit(
            "link.up",
            {},
            peer=ident,
            address=peer.address or link.peer_address,
            hidden=peer.hidden,
            metadata=peer.metadata,
            direction="out" if link.initiator else "in",
        )
        if not peer.hidden:
            self.bus.publish(NodeUp(ident, peer.address, peer.metadata))
        if self._accepting.get(ident) is link:
            del self._accepting[ident]
        self._wake_link_waiters(ident)
        if not self.settings.hidden:
            self._send_peers(link)
        return True

    def connection_closed(self, link: Link, reason: DownReason) -> None:
        self.connections.discard(link)
        self._handshaking.discard(link)
        claimed = link.handshake.peer.name.identity if link.handshake.peer else None
        if claimed is not None and self._accepting.get(claimed) is link:
            del self._accepting[claimed]
            self._wake_link_waiters(claimed)  # that handshake failed: dial instead
        ident = link.identity
        if ident is not None and self.links.get(ident) is link:
            del self.links[ident]
            self._peer_lists.pop(ident, None)
            # Peers still list it until their next PEERS: let them catch up before the
            # mesh dials it again (a node that left is not "unreachable").
            self._mesh_retry[ident] = (time.monotonic() + 3 * _MESH_CHECK, _mesh_backoff())
            self._publish_down(link, reason)

    def peers_received(self, link: Link, names: list[str]) -> None:
        if self.settings.hidden or not self.settings.full_mesh or not link.peer or link.peer.hidden:
            return
        listed: set[str] = set()
        for text in names[:4096]:
            try:
                name = NodeName.parse(text)
            except InvalidNodeName:
                self.counters.add("bad_peer_names")
                continue
            if name.identity != self.identity:
                listed.add(name.identity)
                self._mesh_names[name.identity] = name
        assert link.identity is not None
        self._peer_lists[link.identity] = frozenset(listed)
        self._complete_mesh(time.monotonic())

    def _complete_mesh(self, now: float) -> None:
        """Dial every node a peer is linked to and we are not (transitive connect);
        a failed dial is tried again with backoff while some peer still lists it."""
        wanted = set().union(*self._peer_lists.values()) if self._peer_lists else set()
        for ident in list(self._mesh_names):
            if ident not in wanted:
                del self._mesh_names[ident]
                self._mesh_retry.pop(ident, None)
        for ident in wanted:
            if ident in self.links or ident in self._dialling or self._stopping:
                continue
            due, backoff = self._mesh_retry.get(ident) or (0.0, _mesh_backoff())
            if now < due:
                continue
            self._mesh_retry[ident] = (now + backoff.next(), backoff)
            self._tasks.spawn(self.connect(self._mesh_names[ident]), name=f"mesh {ident}")

    def _send_peers(self, link: Link) -> None:
        assert link.identity is not None
        peers = self._visible_peers(excluding=link.identity)
        link.sent_peers = frozenset(peers)
        link.send([PEERS, peers])

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

    # -- heartbeats -----------------------------------------------------------

    async def _heartbeats(self) -> None:
        interval = self.settings.heartbeat_interval
        timeout = self.settings.heartbeat_timeout
        # Check a few times per interval so that detection stays within interval + timeout.
        step = min(interval, timeout) / 4
        while True:
            due = time.monotonic() + step
            await asyncio.sleep(step)
            now = time.monotonic()
            if now - due >= interval:
                # The loop ran nothing for a heartbeat interval or more: our pings
                # were late too, and peers may have reported us down meanwhile.
                self.counters.add("loop_stalls")
                self.emit("loop.stall", {"seconds": now - due}, shared=self.settings.shared_loop)
            for link in list(self.links.values()):
                if link.reading_paused:  # we stopped reading it: its bytes wait for us
                    link.last_received = now
                if now - link.last_received > timeout:
                    self.counters.add("heartbeat_timeouts")
                    silence = {"silence": now - link.last_received}
                    self.emit("heartbeat.timeout", silence, peer=link.identity)
                    link.down_reason = DownReason.HEARTBEAT_TIMEOUT
                    link.abort()
                elif now - link.last_ping >= interval:
                    link.ping(now)
            self._mesh_upkeep(now)

    def _mesh_upkeep(self, now: float) -> None:
        """Tell peers when our set of links changed, and retry missing mesh links."""
        if self.settings.hidden:
            return
        if now - self._last_mesh_check < _MESH_CHECK:
            return
        self._last_mesh_check = now
        for link in list(self.links.values()):
            ident = link.identity
            if ident is not None and link.up and link.sent_peers != frozenset(
                self._visible_peers(excluding=ident)
            ):
                self._send_peers(link)
        if self.settings.full_mesh:
            self._complete_mesh(now)

    # -- helpers --------------------------------------------------------------

    def _visible_peers(self, *, excluding: str) -> list[str]:
        names = []
        for ident, other in self.links.items():
            if ident == excluding or other.peer is None or other.peer.hidden:
                continue
            address = self.addresses.get(ident)
            names.append(f"{ident}:{address[1]}" if address else ident)
        return names

    def _publish_down(self, link: Link, reason: DownReason) -> None:
        ident = link.identity
        if ident is None or link.peer is None:
            return
        lasted = {"duration": time.time() - link.since if link.since else 0.0}
        self.emit("link.down", lasted, peer=ident, reason=reason.value, hidden=link.peer.hidden)
        if link.peer.hidden:
            return
        self.counters.add(f"links_down_{reason.value}")
        self.bus.publish(NodeDown(ident, reason))

    def emit(self, event: str, measurements: dict[str, float], **metadata: Any) -> None:
        """A telemetry event (see :mod:`skycluster.telemetry`), tagged with this node."""
        self.telemetry.emit(event, measurements, {"node": self.identity, **metadata})


class Traffic:
    """Bytes and link frames in and out, over every connection this node had."""

    __slots__ = ("bytes_in", "bytes_out", "frames_in", "frames_out")

    def __init__(self) -> None:
        self.bytes_in = self.bytes_out = self.frames_in = self.frames_out = 0


def _mesh_backoff() -> Backoff:
    """Pauses between the mesh's dials of one node: 0.5 s, doubling up to 30 s."""
    return Backoff(0.5, 30.0)


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
