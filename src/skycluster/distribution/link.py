"""One TCP connection to one peer: the handshake first, then the link.

An asyncio Protocol that only moves bytes between the socket and the pure
cores (:mod:`handshake`, :mod:`frames`); decisions about links belong to the
:class:`~skycluster.distribution.node.Node`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from typing import TYPE_CHECKING, Any, cast

from skycluster.distribution import frames
from skycluster.distribution.frame_types import GOODBYE, PING, PONG
from skycluster.distribution.handshake import (
    Established,
    Handshake,
    HandshakeError,
    Introduction,
    PeerHello,
    Refused,
)
from skycluster.events import DownReason
from skycluster.names import NodeName

if TYPE_CHECKING:
    from skycluster.distribution.node import Node

log = logging.getLogger("skycluster.link")

# Bytes read from a socket at once (fewer, larger reads: fewer wake-ups of the
# application per message), into one buffer per node: every link of a node
# reads on the node's thread, one at a time, and copies out what it read.
READ_SIZE = 1024 * 1024

# What write_direct() did with a frame.
WROTE = 0  # the socket took all of it
WROTE_PART = 1  # the socket took a part; the rest goes out first on the node's loop (write_out)
NOT_WRITTEN = 2  # nothing was written (busy link, or not a plain socket): send it on the loop
WRITE_FAILED = 3  # the socket failed: the frame is lost, as if in flight when the link went down


class LinkRefused(Exception):
    """The acceptor refused our HELLO (reason in ``reason``)."""

    def __init__(self, reason: str) -> None:
        hint = _REFUSAL_HINTS.get(reason, "")
        super().__init__(f"the peer refused the link: {reason}{hint}")
        self.reason = reason


_REFUSAL_HINTS = {
    "auth": " (the cookies differ: give both nodes the same cookie)",
    "version": " (no protocol version in common: upgrade the older node)",
    "name": " (it has the name we dialled as our own: two nodes share a name)",
    "busy": " (it is stopping or has too many connections being set up)",
    "removed": (
        " (a discovery strategy of that node removed this one; it links again once"
        " that strategy lists this node again)"
    ),
}


class Link(asyncio.BufferedProtocol):
    """A connection being authenticated, then an established link.

    Owns its socket (the transport and, on a plain TCP link, the file descriptor
    that :meth:`write_direct` writes to), the end of a frame written only in part
    (``_unsent``) and the lock that keeps frames from interleaving
    (``_write_lock``): nothing outside this class touches them. Handles its own
    frames (PING, PONG, GOODBYE); any other type goes to the handler the
    node has for it (:meth:`Node.handle_frames`), or is ignored.
    """

    def __init__(self, node: Node, *, initiator: bool, expect: NodeName | None = None) -> None:
        self.node = node
        self.initiator = initiator
        self.handshake = Handshake(
            initiator=initiator, me=node.introduction, cookie=node.cookie, expect=expect
        )
        self.peer: Introduction | None = None
        self.peer_address = "?"  # the socket's remote address, for logs
        self.transport: asyncio.Transport | None = None
        self.established: asyncio.Future[None] = node.loop.create_future()
        self.up = False
        self.since = 0.0
        # Stamped on every read and every write: the membership core judges silence
        # and idleness from them (the link is its clock, skycluster.membership.verdicts).
        self.last_received = time.monotonic()
        self.last_sent = self.last_received
        self.last_ping = 0.0
        self.rtt: float | None = None
        self.down_reason: DownReason | None = None
        self.closing = False
        self.reading_paused = False  # held back by a full mailbox; silence is not death
        # Writes hold this lock: another thread may write a small frame straight
        # to the socket (_fd) when the link is idle (write_direct).
        self._write_lock = threading.Lock()
        # The end of a frame that another thread wrote only in part; it goes out before
        # anything else so that frames never interleave (guarded by _write_lock).
        self._unsent = b""
        self._fd: int | None = None  # set once up, on a plain TCP link (not TLS)
        self._decoder = frames.FrameDecoder(node.settings.max_frame_size)
        self._ping_seq = 0
        self._timer: asyncio.TimerHandle | None = None
        # An accepted connection's first read may belong to the node's second
        # protocol (Node.speak_also): its first bytes tell.
        self._sniff = not initiator

    # -- asyncio.Protocol -----------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # cast, not isinstance: uvloop's transports do not subclass asyncio.Transport
        self.transport = transport = cast(asyncio.Transport, transport)
        peername = transport.get_extra_info("peername")
        if peername:
            self.peer_address = f"{peername[0]}:{peername[1]}"
        if not self.node.connection_opened(self):
            return  # refused: no handshake timer, nothing sent
        self._timer = self.node.loop.call_later(
            self.node.settings.handshake_timeout, self._handshake_timed_out
        )
        if self.initiator:
            transport.write(self.handshake.initiate())

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.node.read_buffer

    def buffer_updated(self, nbytes: int) -> None:
        self.last_received = time.monotonic()
        self.node.traffic.bytes_in += nbytes
        data = self.node.read_buffer[:nbytes]  # valid until we return: copied by the decoders
        try:
            if self._sniff:
                self._sniff = False
                if self.node.sniffed(self, bytes(data)):
                    return
            if self.up:
                self._link_data(data)
            elif not self.closing:
                self._handshake_data(bytes(data))
        except Exception as exc:  # a bug must cost this connection only, never the node
            log.exception("unexpected error on the connection with %s", self.peer_address)
            self.node.protocol_error(self, f"internal error: {exc.__class__.__name__}")
            self.abort()
        if self.node.busy_wait is not None:
            self.node.busy_wait.poke()

    def eof_received(self) -> bool | None:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        with self._write_lock:
            self._fd = None  # before asyncio closes the socket: nobody writes to a reused fd
        if self._timer is not None:
            self._timer.cancel()
        if not self.established.done():
            self.established.set_exception(
                ConnectionError(f"connection to {self.peer_address} closed during the handshake")
            )
            self.established.exception()  # retrieved: a dial may have given up already
        if self.up:
            self.node.link_listener.link_down(self)
        self.node.connection_closed(self, self.down_reason or DownReason.CONNECTION_CLOSED)

    # -- handshake ------------------------------------------------------------

    def _handshake_data(self, data: bytes) -> None:
        hs = self.handshake
        try:
            events = hs.receive(data)
        except (HandshakeError, frames.FrameError) as exc:
            self._write(hs.outgoing())
            self.reject(str(exc))
            return
        self._write(hs.outgoing())
        for event in events:
            if isinstance(event, PeerHello):
                reason = self.node.admit(event.peer, self)
                if reason is not None:
                    self._write(hs.refuse(reason))
                    self._fail(LinkRefused(reason.value))
                    self.close()
                    return
                self._write(hs.admit())
            elif isinstance(event, Refused):
                self._fail(LinkRefused(event.reason))
                self.close()
            elif isinstance(event, Established):
                self._established(event)

    def _established(self, event: Established) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self.peer = event.peer
        if not self.node.link_up(self):
            self._fail(LinkRefused("alive"))
            self.close()
            return
        self.up = True
        self.since = time.time()
        if not self.established.done():
            self.established.set_result(None)
        assert self.transport is not None
        if self.transport.get_extra_info("sslcontext") is None:
            sock = self.transport.get_extra_info("socket")
            if sock is not None:
                with self._write_lock:
                    self._fd = sock.fileno()  # write_direct() may write to it
        self.node.link_listener.link_up(self)
        if event.rest:
            self._link_data(event.rest)

    def release(self) -> None:
        """Give the connection up to another protocol (:meth:`Node.sniffed`): no
        timer, no callback from it reaches the node any more."""
        if self._timer is not None:
            self._timer.cancel()
        self.closing = True
        self.transport = None
        self._fail(ConnectionError("the connection speaks the node's second protocol"))

    def _handshake_timed_out(self) -> None:
        self.reject(f"no handshake within {self.node.settings.handshake_timeout} s")

    def reject(self, why: str) -> None:
        """Close an unauthenticated connection for a protocol or auth failure."""
        self.node.handshake_failed(self, why)
        self._fail(ConnectionError(why))
        self.abort()

    def _fail(self, exc: Exception) -> None:
        if not self.established.done():
            self.established.set_exception(exc)
            self.established.exception()

    # -- link -----------------------------------------------------------------

    def _link_data(self, data: bytes | memoryview) -> None:
        node = self.node
        handlers = node.frame_handlers
        frame_kind = frames.frame_kind
        traffic = node.traffic
        try:
            for payload in self._decoder.feed(data):
                traffic.frames_in += 1
                kind = frame_kind(payload)
                handler = handlers[kind]
                if handler is not None:
                    handler(self, kind, payload)
                else:
                    self._handle(frames.unpack(payload))
        except (frames.FrameError, ValueError, TypeError, IndexError) as exc:
            node.protocol_error(self, str(exc))
            self.abort()
        finally:
            node.link_listener.read_done()

    def _handle(self, frame: Any) -> None:
        """A frame of the link's own, or of a type nobody handles."""
        if not isinstance(frame, list) or not frame or not isinstance(frame[0], int):
            raise ValueError("a link frame must be an array starting with its type")
        kind = frame[0]
        if kind == PING:
            self.send([PONG, frame[1]])
        elif kind == PONG:
            if frame[1] == self._ping_seq and self.last_ping:
                self.rtt = time.monotonic() - self.last_ping
                self.node.emit("heartbeat.rtt", {"rtt": self.rtt}, peer=self.identity)
        elif kind == GOODBYE:
            reason = frame[1]
            if reason == "shutdown":
                self.down_reason = DownReason.SHUTDOWN
            self.closing = True
        # Unknown frame types are ignored so that newer peers can add some.

    def send(self, frame: Any) -> None:
        self.write_frame(frames.encode(frame))

    def write_frame(self, data: bytes) -> None:
        """Write one encoded frame (the node's loop)."""
        self.node.traffic.frames_out += 1
        self._write(data)

    def ping(self, now: float) -> None:
        self._ping_seq += 1
        self.last_ping = now
        self.send([PING, self._ping_seq])

    def _write(self, data: bytes) -> None:
        if data and self.transport is not None and not self.transport.is_closing():
            self.node.traffic.bytes_out += len(data)
            with self._write_lock:
                self._write_locked(data)

    def write_out(self, data: bytes) -> None:
        """Write whole encoded frames on the node's loop (the caller counts them in
        the node's traffic), after the end of a frame another thread wrote in part;
        nothing when both are empty."""
        if self.transport is None or self.transport.is_closing():
            return
        with self._write_lock:
            if data or self._unsent:
                self._write_locked(data)

    def _write_locked(self, data: bytes) -> None:
        """Write on the node's loop, _write_lock held: first the rest of a frame
        another thread wrote in part, then ``data``."""
        assert self.transport is not None
        if self._unsent:
            data = self._unsent + data
            self._unsent = b""
        self.transport.write(data)
        self.last_sent = time.monotonic()
        if self.node.busy_wait is not None:
            self.node.busy_wait.poke()

    @property
    def direct_writes(self) -> bool:
        """Whether :meth:`write_direct` may write (a hint: read without the lock)."""
        return self._fd is not None

    def write_direct(self, frame: bytes) -> int:
        """Write one encoded ``frame`` straight to the socket from a thread other
        than the node's, when nothing else waits to go out on this link: WROTE,
        WROTE_PART (the rest goes out first on the node's loop: call
        :meth:`write_out` there), NOT_WRITTEN (send it on the node's loop) or
        WRITE_FAILED (lost, as in flight: the link is going down). Counted in the
        node's traffic whatever happens."""
        transport = self.transport
        traffic = self.node.traffic
        with self._write_lock:
            traffic.bytes_out += len(frame)  # a race with another link's writer may lose a count
            traffic.frames_out += 1
            fd = self._fd
            if (
                fd is None
                or transport is None
                or transport.is_closing()
                or self._unsent
                or transport.get_write_buffer_size() != 0
            ):
                return NOT_WRITTEN
            try:
                written = os.write(fd, frame)
            except BlockingIOError:
                return NOT_WRITTEN
            except OSError:
                return WRITE_FAILED
            self.last_sent = time.monotonic()
            if written >= len(frame):
                return WROTE
            if written == 0:
                return NOT_WRITTEN
            # The rest goes out on the node's loop before any other frame.
            self._unsent = frame[written:]
            return WROTE_PART

    def set_write_buffer_limit(self, high: int) -> None:
        """Pause writing (the listener's pause_writing) above ``high`` buffered bytes."""
        if self.transport is not None:
            self.transport.set_write_buffer_limits(high=high)

    @property
    def writable(self) -> bool:
        """Connected and not closing."""
        transport = self.transport
        return transport is not None and not transport.is_closing()

    def pause_writing(self) -> None:
        self.node.link_listener.pause_writing(self)

    def resume_writing(self) -> None:
        self.node.link_listener.resume_writing(self)

    def pause_reading(self) -> None:
        if self.transport is not None and not self.reading_paused:
            self.reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and self.reading_paused:
            self.reading_paused = False
            self.last_received = time.monotonic()
            if not self.transport.is_closing():
                self.transport.resume_reading()

    def goodbye(self, reason: str) -> None:
        """Tell the peer why we close, then close once the buffer is flushed."""
        self.send([GOODBYE, reason])
        self.close()

    def close(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.abort()

    @property
    def identity(self) -> str | None:
        return None if self.peer is None else self.peer.name.identity
