"""One TCP connection to one peer: the handshake first, then the link.

An asyncio Protocol that only moves bytes between the socket and the pure
cores (:mod:`handshake`, :mod:`frames`); decisions about links belong to the
:class:`~skycluster.distribution.node.Node`.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import socket
import termios
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, cast

from skycluster.distribution import frames
from skycluster.distribution.busypolicy import AFTER_READ, AFTER_WRITE
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
    from skycluster.distribution.hooks import FrameHandler
    from skycluster.distribution.node import Node

log = logging.getLogger("skycluster.link")

# Bytes read from a socket at once (fewer, larger reads: fewer wake-ups of the
# application per message), into one buffer per node: every link of a node
# reads on the node's thread, one at a time, and copies out what it read.
READ_SIZE = 1024 * 1024

# Pieces write_out() writes as they are (one writev); more are joined first.
WRITEV_PIECES = 256

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
        self.held_back = False  # reading paused by a full mailbox (see reading_paused)
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
        self.handled_frames = 0  # by a handler the node has for their type (not the link's own)
        # Reading on the data loop (the application's, see Node.data_loop): a duplicate
        # of the socket that loop reads; whether it reads it now (guarded by _read_lock).
        self._data_sock: socket.socket | None = None
        self._data_active = False
        self._data_registered = False  # the reader is on the data loop (its thread only)
        self._waiting_seen = 0  # unread bytes at the node's last look (_watch_data_reading)
        self._socket_full = 0  # unread bytes from which the socket counts as full
        self._read_lock = threading.Lock()

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
                if self.node.second_protocol is not None and self.node.sniffed(self, bytes(data)):
                    return
            busy_wait = self.node.busy_wait
            if self.up:
                if busy_wait is not None:
                    busy_wait.poke(AFTER_READ)
                handled = self.handled_frames
                self._link_data(data)
                if busy_wait is not None and self.handled_frames == handled:
                    busy_wait.forget_read()  # heartbeats only: no reason to poll
            elif not self.closing:
                self._handshake_data(bytes(data))
        except Exception as exc:  # a bug must cost this connection only, never the node
            log.exception("unexpected error on the connection with %s", self.peer_address)
            self.node.protocol_error(self, f"internal error: {exc.__class__.__name__}")
            self.abort()

    def eof_received(self) -> bool | None:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        with self._write_lock:
            self._fd = None  # before asyncio closes the socket: nobody writes to a reused fd
        if self._data_sock is not None:
            self._data_closed()
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
        if self._fd is not None and self.node.data_loop is not None:
            self._hand_reading_over()

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

    def _dispatch(
        self,
        data: bytes | memoryview,
        handlers: Sequence[FrameHandler | None],
        unhandled: Callable[[int, bytes], None],
    ) -> str | None:
        """The frames in ``data``, each to its handler (``unhandled`` when it has none),
        in order; the protocol error that stopped it, if any."""
        frame_kind = frames.frame_kind
        traffic = self.node.traffic
        try:
            for payload in self._decoder.feed(data):
                traffic.frames_in += 1
                kind = frame_kind(payload)
                handler = handlers[kind]
                if handler is not None:
                    self.handled_frames += 1
                    handler(self, kind, payload)
                else:
                    unhandled(kind, payload)
        except (frames.FrameError, ValueError, TypeError, IndexError) as exc:
            return str(exc)
        return None

    def _link_data(self, data: bytes | memoryview) -> None:
        node = self.node
        try:
            error = self._dispatch(data, node.frame_handlers, self._link_frame)
            if error is not None:
                node.protocol_error(self, error)
                self.abort()
        finally:
            node.link_listener.read_done()

    # -- reading on the data loop -----------------------------------------------
    #
    # The node's thread authenticates the link, then hands its reading to the data
    # loop (the application's): a reply or a request reaches its caller or its
    # mailbox without a hop between threads. Frames only the node's thread may
    # handle (heartbeats, peer lists, operations) are passed to it. Writing stays
    # as it was (the transport on the node's loop, or write_direct). While the data
    # loop does not read (blocked, busy), bytes wait in the socket: the node's
    # thread counts them as a sign of life (ping), so a blocked application never
    # makes a peer look dead; and a blocking call on the data loop's thread, or a
    # data loop that stopped, gives the reading back to the node's thread.

    def _hand_reading_over(self) -> None:
        """Let the data loop read this link from now on (the node's loop)."""
        transport = self.transport
        if self._fd is None or transport is None or transport.is_closing() or self.closing:
            return  # going down
        if self._data_sock is None:
            try:
                self._data_sock = socket.socket(fileno=os.dup(self._fd))
            except OSError:
                return  # read on the node's loop, as without a data loop
        if self.node.reading_lent:
            return  # the data loop's thread waits in a blocking call: reclaim hands it over
        with self._read_lock:
            self._data_active = True
        if not self.held_back:
            transport.pause_reading()
        if not self._to_data_loop(self._data_register):
            self._take_reading_back()

    def _take_reading_back(self) -> None:
        """The node's loop reads this link again (the node's loop)."""
        with self._read_lock:  # never while the data loop is in the middle of a read
            if not self._data_active:
                return
            self._data_active = False
        if (
            not self.held_back
            and self.transport is not None
            and not self.transport.is_closing()
        ):
            self.transport.resume_reading()

    def _to_data_loop(self, callback: Callable[[], None]) -> bool:
        loop = self.node.data_loop
        if loop is None:
            return False
        try:
            loop.call_soon_threadsafe(callback)
        except RuntimeError:  # that loop is closed
            return False
        return True

    def _data_register(self) -> None:
        """(the data loop) Read the socket, unless held back or taken back."""
        sock = self._data_sock
        if (
            sock is None
            or self._data_registered
            or not self._data_active
            or self.held_back
            or self.closing
        ):
            return
        loop = self.node.data_loop
        assert loop is not None
        loop.add_reader(sock.fileno(), self._data_readable)
        self._data_registered = True

    def _data_unregister(self) -> None:
        """(the data loop) Stop reading the socket there."""
        if self._data_registered:
            self._data_registered = False
            loop = self.node.data_loop
            sock = self._data_sock
            if loop is not None and sock is not None and not loop.is_closed():
                loop.remove_reader(sock.fileno())

    def _data_readable(self) -> None:
        """(the data loop) Bytes arrived: read them and handle the frames."""
        with self._read_lock:
            sock = self._data_sock
            if sock is None or not self._data_active or self.held_back:
                self._data_unregister()
                return
            node = self.node
            buffer = node.data_read_buffer
            try:
                nbytes = sock.recv_into(buffer)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self._data_unregister()
                self._to_node(self.abort)
                return
            if nbytes == 0:  # the peer closed: close our side too (eof_received)
                self._data_unregister()
                self._to_node(self.close)
                return
            self.last_received = time.monotonic()
            self._waiting_seen = 0
            node.traffic.bytes_in += nbytes
            busy_wait = node.data_busy_wait
            if busy_wait is not None:
                busy_wait.poke(AFTER_READ)
            handled = self.handled_frames
            node.data_reading = True
            try:
                self._data_frames(buffer[:nbytes])
            except Exception as exc:  # a bug must cost this connection only
                log.exception("unexpected error on the connection with %s", self.peer_address)
                self._data_unregister()
                self._to_node(self._failed, f"internal error: {exc.__class__.__name__}")
            finally:
                node.data_reading = False
            if busy_wait is not None and self.handled_frames == handled:
                busy_wait.forget_read()  # heartbeats only: no reason to poll

    def lend_reading(self) -> None:
        """(the data loop's thread, not in a read) The node's loop reads this link
        while that thread blocks (see _blocking.waiting_for_data). Asked whatever
        _data_active says now: a hand-over still queued on the node's loop (the last
        reclaim) runs before this and would otherwise leave the reading here."""
        if self._data_sock is not None:
            self._to_node(self._take_reading_back)

    def reclaim_reading(self) -> None:
        """(the data loop's thread) The data loop reads this link again."""
        if self._data_sock is not None and self.node.data_loop is not None:
            self._to_node(self._hand_reading_over)

    def _data_frames(self, data: memoryview) -> None:
        """(the data loop) The frames of one read: those whose handler may run on any
        thread here, the others passed to the node's loop, in order."""
        node = self.node
        try:
            error = self._dispatch(data, node.data_frame_handlers, self._frame_to_node)
            if error is not None:
                self._data_unregister()
                self._to_node(self._failed, error)
        finally:
            node.link_listener.read_done()

    def _link_frame(self, kind: int, payload: bytes) -> None:
        """A frame of the link's own (handshake, heartbeat, goodbye)."""
        self._handle(frames.unpack(payload))

    def _frame_to_node(self, kind: int, payload: bytes) -> None:
        self._to_node(self._node_frame, kind, payload)

    def _to_node(self, callback: Callable[..., None], *args: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the node's loop is gone
            self.node.loop.call_soon_threadsafe(callback, *args)

    def _node_frame(self, kind: int, payload: bytes) -> None:
        """(the node's loop) A frame the data loop read that is the node's to handle."""
        if not self.up or self.transport is None or self.transport.is_closing():
            return
        node = self.node
        try:
            handler = node.frame_handlers[kind]
            if handler is not None:
                handler(self, kind, payload)
            else:
                self._handle(frames.unpack(payload))
        except (frames.FrameError, ValueError, TypeError, IndexError) as exc:
            self._failed(str(exc))
        finally:
            node.link_listener.read_done()

    def _failed(self, why: str) -> None:
        """(the node's loop) A protocol error on a link the data loop read."""
        self.node.protocol_error(self, why)
        self.abort()

    def _data_closed(self) -> None:
        """(the node's loop) The connection is lost: end the data loop's reading; the
        duplicate socket is closed there (it may be registered), after a shutdown
        here so that the peer sees the end now, whatever that loop does."""
        sock = self._data_sock
        assert sock is not None
        with self._read_lock:
            self._data_active = False
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)

        def close() -> None:
            self._data_unregister()
            self._data_sock = None
            sock.close()

        if not self._to_data_loop(close):
            self._data_sock = None
            sock.close()

    def _watch_data_reading(self, now: float) -> bool:
        """(the node's loop) Whether bytes arrived that a busy or blocked data loop
        has not read yet: more waiting in the socket than at the last look (the peer
        spoke since), or a full socket (we hold the peer back, as a full inbox does).
        A sign of life: stamped. A data loop that stopped running gives the reading
        back (what waited is read now: True too)."""
        loop = self.node.data_loop
        sock = self._data_sock
        if loop is None or sock is None or not self._data_active:
            return False
        if not loop.is_running():
            self._take_reading_back()
            return True
        try:
            fd = sock.fileno()
            waiting = int.from_bytes(fcntl.ioctl(fd, termios.FIONREAD, bytes(4)), "little")
            if self._socket_full == 0:
                self._socket_full = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 4
        except OSError:
            return False
        seen, self._waiting_seen = self._waiting_seen, waiting
        if waiting > seen or waiting >= self._socket_full:
            self.last_received = now
            return True
        return False

    @property
    def reading_paused(self) -> bool:
        """Whether silence is not death now (asked by the heartbeat verdicts, on the
        node's loop): its bytes wait for us, because a full inbox holds the link back
        or because the data loop has not read them yet."""
        if self.held_back:
            return True
        return self._data_sock is not None and self._watch_data_reading(time.monotonic())

    @reading_paused.setter
    def reading_paused(self, paused: bool) -> None:
        self.held_back = paused

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
        if self._data_sock is not None:
            self._watch_data_reading(now)
        self._ping_seq += 1
        self.last_ping = now
        self.send([PING, self._ping_seq])

    def _write(self, data: bytes) -> None:
        if data and self.transport is not None and not self.transport.is_closing():
            self.node.traffic.bytes_out += len(data)
            with self._write_lock:
                self._write_locked(data)

    def write_out(self, parts: list[bytes]) -> None:
        """Write whole encoded frames, as pieces in order, on the node's loop (the
        caller counts them in the node's traffic), after the end of a frame another
        thread wrote in part; nothing when both are empty.

        On a plain TCP link with nothing waiting in the transport, the pieces go
        to the socket in one ``writev``, which releases the GIL: the application's
        thread goes on encoding while the kernel copies a batch (a transport's
        write holds the GIL throughout), and nothing is joined into one buffer
        first. What the socket does not take goes to the transport, which sends it
        when the socket has room."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        with self._write_lock:
            if self._unsent:
                parts.insert(0, self._unsent)
                self._unsent = b""
            if not parts:
                return
            if len(parts) > WRITEV_PIECES:  # a writev takes at most 1024
                parts = [b"".join(parts)]
            fd = self._fd
            if fd is not None and transport.get_write_buffer_size() == 0:
                try:
                    written = os.writev(fd, parts)
                except OSError:  # full (BlockingIOError), or failing: the transport's turn
                    written = 0
                parts = _unwritten(parts, written)
            if parts:
                transport.writelines(parts)
            self.last_sent = time.monotonic()
            if self.node.busy_wait is not None:
                self.node.busy_wait.poke(AFTER_WRITE)

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
            self.node.busy_wait.poke(AFTER_WRITE)

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
            busy_wait = self.node.data_busy_wait
            if busy_wait is not None and threading.get_ident() == self.node.data_thread:
                busy_wait.poke(AFTER_WRITE)
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
        """Stop reading (a full inbox), on the thread that reads the link."""
        if self.transport is not None and not self.held_back:
            self.held_back = True
            if self._data_active:
                self._data_unregister()  # the data loop reads it: we are on that loop
            else:
                self.transport.pause_reading()

    def resume_reading(self) -> None:
        """Read again (the node's loop)."""
        if self.transport is not None and self.held_back:
            self.held_back = False
            self.last_received = time.monotonic()
            if self.transport.is_closing():
                return
            if self._data_active:
                if not self._to_data_loop(self._data_register):
                    self._data_active = False
                    self.transport.resume_reading()
            else:
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


def _unwritten(parts: list[bytes], written: int) -> list[bytes]:
    """What is left of ``parts`` once the first ``written`` bytes went out."""
    if written <= 0:
        return parts
    for index, part in enumerate(parts):
        if written < len(part):
            return [part[written:], *parts[index + 1 :]]
        written -= len(part)
    return []
