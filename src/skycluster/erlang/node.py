"""The node's Erlang links: Erlang distribution as the node's second protocol.

A skycluster node started with ``erlang=True`` speaks both protocols on its one
listening port (:class:`~skycluster.distribution.hooks.SecondProtocol`): an
accepted connection whose first bytes are an Erlang name message (a 2-byte
length, at most 1035, then ``N``) is handed here; one that opens with ``SKYC``
stays a skycluster link. Asked to link a name, the node asks here first: a name
registered with its host's port mapper without skycluster's mark is a BEAM node,
dialled with Erlang's handshake.

:class:`ErlangNode` owns those links (one :class:`~skycluster.erlang.link.ErlangLink`
per BEAM node), publishes NodeUp/NodeDown for them, and is the seam for
everything that works with Erlang processes:

* :meth:`ErlangNode.handle` — the handler of each kind of control message that
  arrives (``REG_SEND``: the runtime delivers it into messaging's mailboxes);
  a kind nobody handles is dropped, logged and counted;
* :meth:`ErlangNode.listen` — told when an Erlang link comes up and goes down;
* :meth:`ErlangNode.send` (the node's loop) and :meth:`ErlangNode.send_threadsafe`
  (any thread) — a control message to a BEAM node.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, Protocol

from skycluster._ratelimit import RateLimit
from skycluster._tasks import TaskSet
from skycluster.distribution import portmapper
from skycluster.distribution.epmd_protocol import SKYCLUSTER_EXTRA
from skycluster.erlang import flags as dflags
from skycluster.erlang.atom import Atom
from skycluster.erlang.handshake import HandshakeError, Peer, Status
from skycluster.erlang.link import SETUP_TIME, ErlangLink, LinkRefused, accept, dial
from skycluster.erlang.messages import Control, DistMessage, encode, reg_send
from skycluster.erlang.values import Pid
from skycluster.errors import NodeUnreachable
from skycluster.events import DownReason, NodeDown, NodeUp
from skycluster.names import NodeName, format_address

if TYPE_CHECKING:
    from skycluster.distribution.node import Node

log = logging.getLogger("skycluster.erlang")

ControlHandler = Callable[[ErlangLink, DistMessage], None]
"""``handler(link, message)``: a control message of the kind it was registered for,
on the node's loop. It must be quick; an exception closes that link only."""

# An Erlang name message is a 2-byte length (1 + 8 + 4 + 2 + a name of at most
# 1020 bytes: the first byte is 0 to 4) and then N (or n, the old one, refused
# with a clear line by the handshake); a skycluster link opens with SKYC.
_MAX_FIRST_BYTE: Final = 4
_NAME_TAGS: Final = b"Nn"
_KNOWN_NAMES: Final = 10_000  # port lookups remembered (bounded)


class ErlangLinkListener(Protocol):
    """Hears about the life of the node's Erlang links."""

    def erlang_link_up(self, link: ErlangLink) -> None:
        """``link`` is authenticated and kept; its messages follow."""

    def erlang_link_down(self, link: ErlangLink, reason: DownReason) -> None:
        """``link``, once up, ended; no message of it follows."""


class ErlangNode:
    """The Erlang side of one node: its accepted and dialled Erlang links by peer
    (``links``), the handshakes under way, the dials in flight, the handlers of
    control messages and the listeners of link life. Runs on the node's loop;
    only :meth:`send_threadsafe` and reading ``links`` are for other threads."""

    def __init__(self, node: Node, cookie: bytes, *, after_read: Callable[[], None] | None = None):
        self.node = node
        self.loop = node.loop
        self.name = node.identity  # an Erlang node name is name@host, as ours
        self.atom = Atom(self.name)
        self.creation = (node.creation & 0xFFFFFFFF) or 1  # Erlang's creation: 32 bits
        # Messages this node sends without a mailbox of their own come from this pid.
        self.pid = Pid(self.atom, 0, 0, self.creation)
        settings = node.settings
        self.ticktime = settings.erlang_ticktime
        self.hidden = settings.hidden
        self.flags = dflags.BASE if self.hidden else dflags.BASE | dflags.Flag.PUBLISHED
        self.counters = node.counters
        self.links: dict[str, ErlangLink] = {}
        self._cookie = cookie
        self._after_read = after_read
        self._handlers: dict[int, ControlHandler] = {}
        self._listeners: list[ErlangLinkListener] = []
        self._dialling: dict[str, asyncio.Task[bool]] = {}
        self._waiting: dict[str, list[asyncio.Future[None]]] = {}
        self._skycluster: set[str] = set()  # names registered with skycluster's mark
        self._ports: dict[str, int] = {}  # BEAM nodes' ports from their port mapper
        self._handshakes = 0
        self._tasks = TaskSet(log)
        self._closed = False
        self._loop_thread = threading.get_ident()
        self._outbox: dict[str, list[bytes]] = {}  # encoded by other threads, not yet written
        self._outbox_lock = threading.Lock()
        self._flush_due = False
        self._outbox_bytes = 0
        self._logged = RateLimit(window=math.inf, capacity=10_000)  # once per cause

    # -- the seam: handlers, listeners, sending ---------------------------------

    def handle(self, kinds: Control | tuple[Control, ...], handler: ControlHandler) -> None:
        """Give every control message of ``kinds`` that arrives to ``handler`` (one
        handler per kind; the node's loop)."""
        for kind in (kinds,) if isinstance(kinds, Control) else kinds:
            if kind in self._handlers:
                raise ValueError(f"{kind.name} has a handler already")
        for kind in (kinds,) if isinstance(kinds, Control) else kinds:
            self._handlers[kind] = handler

    def listen(self, listener: ErlangLinkListener) -> None:
        """Tell ``listener`` about every Erlang link that comes up or goes down."""
        self._listeners.append(listener)

    def send(self, identity: str, message: DistMessage) -> None:
        """Send a control message (and its payload) to the BEAM node ``identity``, on
        the node's loop; NodeUnreachable when no Erlang link to it is up."""
        link = self.links.get(identity)
        if link is None:
            raise NodeUnreachable(f"{identity} is not linked over Erlang distribution")
        try:
            link.send(message)
        except ConnectionError as exc:
            raise NodeUnreachable(str(exc)) from None

    def send_threadsafe(self, identity: str, message: DistMessage) -> None:
        """:meth:`send` from any thread: the message is encoded here (UnencodableTerm
        at once) and written on the node's loop; lost if the link goes down first."""
        if identity not in self.links:
            raise NodeUnreachable(f"{identity} is not linked over Erlang distribution")
        data = encode(message)
        if threading.get_ident() == self._loop_thread:
            self._write(identity, [data])
            return
        # Messages from other threads wait in one outbox; the loop is woken once
        # for all that gathered before it ran (not once per message). When none
        # wait, a message on an idle link (or a request whose reply came) goes
        # straight to the socket from this thread: no wake-up of the loop at all.
        with self._outbox_lock:
            if not self._flush_due:
                link = self.links.get(identity)
                if link is not None and link.write_direct(data):
                    self.counters.add("erlang_direct_writes")
                    return
            self._outbox_bytes += len(data)
            waiting = self._outbox.get(identity)
            if waiting is None:
                self._outbox[identity] = [data]
            else:
                waiting.append(data)
            if self._flush_due:
                return
            self._flush_due = True
        self.loop.call_soon_threadsafe(self._flush)

    def send_to_name(self, identity: str, name: str, term: object) -> None:
        """``{name, identity} ! term`` from any thread (sent by this node's pid)."""
        self.send_threadsafe(identity, reg_send(self.pid, Atom(name), term))

    def buffered(self, identity: str) -> int:
        """Bytes waiting to go out to ``identity``: in its socket's buffer, and in the
        outbox of every link (0 when not linked)."""
        link = self.links.get(identity)
        return 0 if link is None else link.buffered + self._outbox_bytes

    async def drain(self, identity: str) -> None:
        """Wait until the link to ``identity`` has room again (the node's loop)."""
        link = self.links.get(identity)
        if link is not None:
            with contextlib.suppress(ConnectionError):  # gone: the next send says so
                await link.drain()

    def _flush(self) -> None:
        # Written with the lock held: a direct write that follows cannot overtake them.
        with self._outbox_lock:
            outbox, self._outbox = self._outbox, {}
            self._outbox_bytes = 0
            self._flush_due = False
            for identity, messages in outbox.items():
                self._write(identity, messages)

    def _write(self, identity: str, messages: list[bytes]) -> None:
        link = self.links.get(identity)
        if link is None:
            self.counters.add("erlang_messages_lost", len(messages))
            return
        try:
            link.send_encoded(messages[0] if len(messages) == 1 else b"".join(messages))
        except ConnectionError:
            self.counters.add("erlang_messages_lost", len(messages))

    def dropped(self, link: ErlangLink, message: DistMessage, why: str) -> None:
        """A message nothing takes: counted, logged once per peer and cause."""
        self.counters.add("erlang_messages_dropped")
        self._logged.log(
            log,
            logging.WARNING,
            (link.peer.name, why),
            "dropping a message from %s: %s (logged once)",
            link.peer.name,
            why,
        )

    # -- SecondProtocol: what the node asks -------------------------------------

    def claims(self, first: bytes) -> bool:
        return opens_erlang_handshake(first)

    def take(self, transport: asyncio.Transport, first: bytes) -> None:
        if self._closed or self._handshakes >= self.node.settings.max_handshakes:
            self.counters.add("erlang_handshakes_refused_busy")
            transport.abort()
            return
        reader = asyncio.StreamReader()
        protocol = asyncio.StreamReaderProtocol(reader)
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        writer = asyncio.StreamWriter(transport, protocol, reader, self.loop)
        reader.feed_data(first)
        self._handshakes += 1
        self._tasks.spawn(self._accept(reader, writer), name="erlang accept")

    async def owns(self, name: NodeName) -> bool:
        ident = name.identity
        if ident in self.links or ident in self._dialling or ident in self._ports:
            return True
        settings = self.node.settings.port_mapper
        if ident in self._skycluster or settings is None or ident in self.node.links:
            return False
        try:
            found = await portmapper.lookup_node(
                name.host, name.name, epmd_port=settings.port, timeout=settings.timeout
            )
        except (portmapper.PortMapperError, OSError, ValueError):
            return False  # the node's own dial reports what is wrong
        if found is None:
            return False
        known = self._skycluster if found.extra == SKYCLUSTER_EXTRA else None
        if known is not None:
            if len(known) < _KNOWN_NAMES:
                known.add(ident)
            return False
        if len(self._ports) < _KNOWN_NAMES:
            self._ports[ident] = found.port
        return True

    async def connect(self, name: NodeName) -> bool:
        ident = name.identity
        if ident in self.links:
            return True
        if self._closed:
            return False
        pending = self._dialling.get(ident)
        if pending is None:
            pending = self._tasks.spawn(self._dial(name), name=f"erlang dial {ident}")
            self._dialling[ident] = pending
        return await asyncio.shield(pending)

    def disconnect(self, identity: str) -> bool:
        link = self.links.get(identity)
        if link is None:
            return False
        link.close("disconnect")
        return True

    def nodes(self) -> list[str]:
        return [ident for ident, link in self.links.items() if _published(link)]

    def links_status(self) -> list[dict[str, Any]]:
        return [
            {
                "node": ident,
                "protocol": "erlang",
                "address": link.address,
                "since": link.since,
                "last_heard": link.silent_for,
                "direction": "out" if link.initiator else "in",
                "hidden": not _published(link),
                "ticktime": link.ticktime,
            }
            for ident, link in sorted(self.links.items())
        ]

    async def aclose(self) -> None:
        """Close every Erlang link (NodeDown ``shutdown``) and end every task."""
        self._closed = True
        for link in list(self.links.values()):
            link.close("shutdown")
        await self._tasks.aclose()

    # -- links ------------------------------------------------------------------

    def _decide(self, peer: Peer) -> Status:
        """Acceptor: may ``peer`` go on? As Erlang decides: ``nok`` to a second link,
        and in a simultaneous connect the node with the greater name dials."""
        ident = peer.name
        if self._closed or ident == self.name:
            return Status.NOT_ALLOWED
        if ident in self.links or ident in self.node.links:
            return Status.NOK
        if ident in self._dialling:
            return Status.NOK if self.name > ident else Status.OK_SIMULTANEOUS
        return Status.OK

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            link = await accept(
                reader,
                writer,
                name=self.name,
                cookie=self._cookie,
                creation=self.creation,
                decide=self._decide,
                flags=self.flags,
                on_message=self._dispatch,
                on_read_done=self._after_read,
                ticktime=self.ticktime,
                setup_time=SETUP_TIME,
            )
        except LinkRefused:
            return  # nok to a second link: not a failure
        except (HandshakeError, ConnectionError, OSError):
            self.counters.add("erlang_handshakes_failed")  # logged by accept()
            return
        finally:
            self._handshakes -= 1
        if self._adopt(link):
            await self._run(link)
        else:
            link.close("alive")

    async def _dial(self, name: NodeName) -> bool:
        ident = name.identity
        try:
            port = name.port or self._ports.get(ident) or await self._lookup(name)
            link = await dial(
                name.host,
                port,
                name=self.name,
                cookie=self._cookie,
                creation=self.creation,
                expect=ident,
                flags=self.flags,
                on_message=self._dispatch,
                on_read_done=self._after_read,
                ticktime=self.ticktime,
                setup_time=SETUP_TIME,
            )
        except LinkRefused:
            # nok: the peer dials us at the same time and its connection goes on
            return await self._await_link(ident)
        except (HandshakeError, ConnectionError, OSError, TimeoutError, NodeUnreachable) as exc:
            self._ports.pop(ident, None)  # it may come back elsewhere: ask again
            self.counters.add("erlang_dial_failures")
            why = str(exc) or exc.__class__.__name__
            self._logged.log(
                log, logging.INFO, ("dial", ident, why), "cannot link %s: %s", ident, why
            )
            return False
        finally:
            self._dialling.pop(ident, None)
        link.address = format_address(name.host, port)
        if not self._adopt(link):
            link.close("alive")
            return ident in self.links
        self._tasks.spawn(self._run(link), name=f"erlang link {ident}")
        return True

    async def _lookup(self, name: NodeName) -> int:
        settings = self.node.settings.port_mapper
        if settings is None:
            raise NodeUnreachable(f"no port known for {name.identity}: give one (name@host:port)")
        try:
            port = await portmapper.lookup(
                name.host, name.name, epmd_port=settings.port, timeout=settings.timeout
            )
        except portmapper.PortMapperError as exc:
            raise NodeUnreachable(f"cannot ask {name.host} for {name.identity}: {exc}") from None
        if port is None:
            raise NodeUnreachable(f"{name.identity} is not registered with its port mapper")
        return port

    async def _await_link(self, ident: str) -> bool:
        if ident in self.links:
            return True
        waiter: asyncio.Future[None] = self.loop.create_future()
        self._waiting.setdefault(ident, []).append(waiter)
        try:
            async with asyncio.timeout(SETUP_TIME):
                await waiter
        except TimeoutError:
            pass
        finally:
            waiters = self._waiting.get(ident, [])
            if waiter in waiters:
                waiters.remove(waiter)
            if not waiters:
                self._waiting.pop(ident, None)
        return ident in self.links

    def _adopt(self, link: ErlangLink) -> bool:
        """Keep an authenticated link, unless the peer is linked already."""
        ident = link.peer.name
        if self._closed or ident in self.links or ident in self.node.links:
            return False
        self.links[ident] = link
        self.counters.add("erlang_links_up")
        log.info("Erlang link to %s up (%s)", ident, "published" if _published(link) else "hidden")
        if _published(link):
            self.node.bus.publish(NodeUp(ident, link.address))
        for listener in self._listeners:
            listener.erlang_link_up(link)
        for waiter in self._waiting.pop(ident, []):
            if not waiter.done():
                waiter.set_result(None)
        return True

    async def _run(self, link: ErlangLink) -> None:
        ended = "shutdown"  # unless run() says otherwise: cancelled as the node stops
        try:
            ended = await link.run()
        finally:
            link.close(ended)
            self._gone(link, down_reason(ended))

    def _gone(self, link: ErlangLink, reason: DownReason) -> None:
        ident = link.peer.name
        if self.links.get(ident) is not link:
            return
        del self.links[ident]
        self.counters.add(f"erlang_links_down_{reason.value}")
        if reason is DownReason.PROTOCOL_ERROR:
            self.counters.add("erlang_protocol_errors")
        log.info("Erlang link to %s down: %s", ident, link.ended or reason.value)
        for listener in self._listeners:
            listener.erlang_link_down(link, reason)
        if _published(link):
            self.node.bus.publish(NodeDown(ident, reason))

    def _dispatch(self, link: ErlangLink, message: DistMessage) -> None:
        handler = self._handlers.get(message.kind)
        if handler is None:
            kind = message.kind
            what = kind.name if isinstance(kind, Control) else f"control message {kind}"
            self.dropped(link, message, f"nothing on this node handles {what}")
            return
        handler(link, message)


def opens_erlang_handshake(first: bytes) -> bool:
    """Whether a connection's first bytes (at least one) can be an Erlang name
    message; a skycluster link's (``SKYC``), an HTTP request's or TLS's cannot."""
    return first[0] <= _MAX_FIRST_BYTE and (len(first) < 3 or first[2] in _NAME_TAGS)


def down_reason(ended: str) -> DownReason:
    """The NodeDown reason for why an Erlang link ended (:meth:`ErlangLink.run`)."""
    if ended == "shutdown":
        return DownReason.SHUTDOWN
    if ended == "disconnect":
        return DownReason.DISCONNECT
    if ended == "net_tick_timeout":
        return DownReason.NET_TICK_TIMEOUT
    if ended.startswith(("corrupted external term", "handler failed")):
        return DownReason.PROTOCOL_ERROR
    return DownReason.CONNECTION_CLOSED


def _published(link: ErlangLink) -> bool:
    """A hidden node (``erl -hidden``, no PUBLISHED flag) is linked but not reported."""
    return bool(link.peer.flags & dflags.Flag.PUBLISHED)
