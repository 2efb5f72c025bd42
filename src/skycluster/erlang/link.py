"""One Erlang distribution connection on asyncio: the thin driver of the cores
(``handshake``, ``messages``, ``ticks``, ``netkernel``). It moves bytes and time;
every decision is in the cores.

:func:`dial` and :func:`accept` run the handshake within Erlang's setup time and
return an :class:`ErlangLink`; :meth:`ErlangLink.run` reads until the link ends and
returns why. The link answers ``net_adm:ping`` and drops the traffic of Erlang's own
services quietly; every other message goes to ``on_message``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from skycluster.erlang import flags as dflags
from skycluster.erlang import netkernel
from skycluster.erlang.handshake import (
    ErlangHandshake,
    Established,
    HandshakeError,
    NameReceived,
    Peer,
    Refused,
    Status,
)
from skycluster.erlang.messages import TICK, DistMessage, FrameReader, encode
from skycluster.erlang.terms import DEFAULT_LIMITS, Limits, TermError
from skycluster.erlang.ticks import DEFAULT_TICKTIME, TickPolicy, Verdict

log = logging.getLogger("skycluster.erlang")

SETUP_TIME: Final = 7.0  # Erlang's net_setuptime: a handshake that takes longer is dropped
MAX_FRAME: Final = 64 * 1024 * 1024
READ_SIZE: Final = 256 * 1024
DIRECT_IDLE: Final = 50e-6  # a link idle this long may take a message straight from a thread

MessageHandler = Callable[["ErlangLink", DistMessage], None]


class LinkRefused(ConnectionError):
    """The peer answered the name with ``nok`` or ``not_allowed``."""


@dataclass(slots=True)
class LinkCounters:
    messages_received: int = 0
    ticks_received: int = 0
    pings_answered: int = 0
    service_messages_dropped: int = 0  # to rex, global_name_server, ... (see netkernel)


async def handshake(
    core: ErlangHandshake,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    decide: Callable[[Peer], Status] = lambda _: Status.OK,
) -> Established | Refused:
    """Move bytes between the connection and the handshake core until it ends: the
    link's :class:`Established`, or :class:`Refused` (the acceptor answered ``nok``
    or ``not_allowed``, or, acceptor side, ``decide`` did). HandshakeError when the
    peer breaks the protocol or cannot prove the cookie; ConnectionError when it
    closes the connection first."""
    if core.initiator:
        writer.write(core.initiate())
    while True:
        data = await reader.read(4096)
        if not data:
            raise ConnectionError(f"the peer closed the connection while {core.state.value}")
        try:
            events = core.receive(data)
        finally:
            writer.write(core.outgoing())  # a refusal goes out before the connection closes
        for event in events:
            if isinstance(event, NameReceived):
                status = decide(event.peer)
                if status in (Status.NOK, Status.NOT_ALLOWED):
                    writer.write(core.refuse(status))
                    await writer.drain()
                    return Refused(status.value)
                writer.write(core.accept(status))
            else:
                await writer.drain()
                return event
        await writer.drain()


async def _establish(
    core: ErlangHandshake,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    decide: Callable[[Peer], Status],
    setup_time: float,
    what: str,
) -> Established:
    try:
        async with asyncio.timeout(setup_time):
            ended = await handshake(core, reader, writer, decide)
        if isinstance(ended, Refused):
            who = core.peer.name if core.peer else "the peer"
            raise LinkRefused(
                f"{who} answered {ended.status}"
                if core.initiator
                else f"refused {who!r}: {ended.status}"
            )
        return ended
    except TimeoutError:
        writer.close()
        raise HandshakeError(f"{what}: no handshake within {setup_time} s") from None
    except (HandshakeError, ConnectionError, OSError) as exc:
        writer.close()
        log.warning("Erlang handshake %s failed: %s", what, exc)
        raise


async def dial(
    host: str,
    port: int,
    *,
    name: str,
    cookie: bytes,
    creation: int,
    expect: str | None = None,
    flags: int = dflags.BASE | dflags.Flag.PUBLISHED,
    on_message: MessageHandler | None = None,
    on_read_done: Callable[[], None] | None = None,
    ticktime: float = DEFAULT_TICKTIME,
    setup_time: float = SETUP_TIME,
) -> ErlangLink:
    """Connect to the Erlang node listening at ``host:port`` (its port mapper tells
    the port) and run the handshake as the initiator."""
    core = ErlangHandshake(
        initiator=True, name=name, creation=creation, cookie=cookie, flags=flags, expect=expect
    )
    async with asyncio.timeout(setup_time):
        reader, writer = await asyncio.open_connection(host, port)
    what = f"with {expect or f'{host}:{port}'}"
    done = await _establish(core, reader, writer, lambda _: Status.OK, setup_time, what)
    return ErlangLink(
        reader,
        writer,
        done,
        on_message=on_message,
        on_read_done=on_read_done,
        ticktime=ticktime,
        initiator=True,
    )


async def accept(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    *,
    name: str,
    cookie: bytes,
    creation: int,
    decide: Callable[[Peer], Status] = lambda _: Status.OK,
    flags: int = dflags.BASE | dflags.Flag.PUBLISHED,
    on_message: MessageHandler | None = None,
    on_read_done: Callable[[], None] | None = None,
    ticktime: float = DEFAULT_TICKTIME,
    setup_time: float = SETUP_TIME,
) -> ErlangLink:
    """Run the handshake as the acceptor on a connection that an Erlang node opened;
    ``decide`` gives the status for the peer's name (``ok``, or ``nok`` when a link
    with it exists already)."""
    core = ErlangHandshake(
        initiator=False, name=name, creation=creation, cookie=cookie, flags=flags
    )
    peername = writer.get_extra_info("peername")
    done = await _establish(core, reader, writer, decide, setup_time, f"from {peername}")
    return ErlangLink(
        reader, writer, done, on_message=on_message, on_read_done=on_read_done, ticktime=ticktime
    )


class ErlangLink:
    """One connected Erlang distribution link. :meth:`run` owns the reading and the
    ticks until the link ends; :meth:`close` ends it. Not thread-safe: use it on the
    loop that runs :meth:`run`."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        established: Established,
        *,
        on_message: MessageHandler | None = None,
        on_read_done: Callable[[], None] | None = None,
        ticktime: float = DEFAULT_TICKTIME,
        max_frame: int = MAX_FRAME,
        limits: Limits = DEFAULT_LIMITS,
        clock: Callable[[], float] = time.monotonic,
        initiator: bool = False,
    ) -> None:
        self.peer = established.peer
        self.flags = established.flags
        self.initiator = initiator  # this side dialled
        self.since = time.time()  # established, Unix seconds
        self.ticktime = ticktime  # net_ticktime this side applies to the link
        self.counters = LinkCounters()
        self.ticking = True  # False only in tests: a stopped node's silence
        self._reader = reader
        self._writer = writer
        self._on_message = on_message
        self._on_read_done = on_read_done  # after the messages of one read: wake readers once
        self._clock = clock
        self.address: str | None = None  # host:port the peer accepts links on, when known
        self._frames = FrameReader(max_frame, limits)
        self._policy = TickPolicy(ticktime, clock())
        self._last_received = clock()
        self._closing: str | None = None
        self._ended: str | None = None
        self._pending = established.rest
        self._tick_timer: asyncio.TimerHandle | None = None
        # Direct writes from other threads (write_direct): a duplicate of the socket's
        # fd while run() runs, closed before the transport's (never a reused fd); the
        # lock orders them with the loop's writes; _unsent is the end of a message
        # the socket took in part, written by the loop before anything else.
        self._write_lock = threading.Lock()
        self._direct_fd: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # run()'s
        self._unsent = b""
        self._last_direct = 0.0

    @property
    def ended(self) -> str | None:
        """Why the link ended, once :meth:`run` has returned; None before."""
        return self._ended

    def send(self, message: DistMessage) -> None:
        """Queue ``message`` on the connection (it goes out as the loop writes)."""
        if self._closing is not None or self._writer.is_closing():
            raise ConnectionError(f"the Erlang link to {self.peer.name} is closed")
        self._write(encode(message))
        self._policy.sent()

    def send_encoded(self, data: bytes) -> None:
        """Queue a message already framed by :func:`messages.encode` (encoded in
        another thread, written on this link's loop)."""
        if self._closing is not None or self._writer.is_closing():
            raise ConnectionError(f"the Erlang link to {self.peer.name} is closed")
        self._write(data)
        self._policy.sent()

    def write_direct(self, data: bytes) -> bool:
        """Write framed messages straight to the socket from a thread other than the
        link's loop, when that saves a wake-up of the loop: the link is idle (nothing
        sent for :data:`DIRECT_IDLE`) or the peer has answered since the last direct
        write (a request and its reply), and nothing waits to go out. True when
        written (what the socket did not take goes out on the loop, first); False:
        send it on the loop instead."""
        with self._write_lock:
            fd = self._direct_fd
            if fd is None or self._unsent or self._writer.transport.get_write_buffer_size():
                return False
            now = self._clock()
            if now - self._last_direct < DIRECT_IDLE and self._last_received < self._last_direct:
                return False  # a stream: the loop writes it in batches
            try:
                written = os.write(fd, data)
            except OSError:  # full, or going down: the loop's write says which
                return False
            self._last_direct = now
            self._policy.sent()
            if written < len(data):
                self._unsent = data[written:]
                assert self._loop is not None  # set before the fd
                self._loop.call_soon_threadsafe(self._write, b"")
            return True

    def _write(self, data: bytes) -> None:
        """Write on the link's loop: the end of a direct write first, then ``data``."""
        with self._write_lock:
            if self._unsent:
                data, self._unsent = self._unsent + data, b""
            if data and not self._writer.is_closing():
                self._writer.write(data)

    @property
    def silent_for(self) -> float:
        """Seconds since bytes (a message or a tick) last arrived."""
        return max(0.0, self._clock() - self._last_received)

    @property
    def buffered(self) -> int:
        """Bytes written and not yet taken by the socket."""
        return self._writer.transport.get_write_buffer_size()

    async def drain(self) -> None:
        """Wait until the socket has taken what is buffered (down to its low mark)."""
        await self._writer.drain()

    def close(self, reason: str = "closed") -> None:
        """End the link; :meth:`run` returns ``reason``."""
        if self._closing is None:
            self._closing = reason
        self._stop_direct_writes()
        self._writer.close()
        # run() may wait in a read: end it now, even when the transport waits to
        # flush what a stopped peer does not take (it reads no more once closed).
        self._reader.feed_eof()

    async def run(self) -> str:
        """Read, tick and dispatch until the link ends; returns why: ``closed`` (or the
        reason given to :meth:`close`), ``connection_closed`` (by the peer),
        ``net_tick_timeout``, ``handler failed: ...`` (``on_message`` raised: logged),
        or what was wrong with the peer's bytes."""
        # Ticks run on a timer of their own, so that a read is a plain await (no
        # task and timeout per read: a round trip is a read or two).
        self._schedule_tick()
        self._start_direct_writes()
        try:
            if self._pending:
                self._feed(self._pending)
                self._pending = b""
            while self._closing is None:
                try:
                    data = await self._reader.read(READ_SIZE)
                except OSError as exc:
                    self.close(f"connection_closed: {exc}")
                    break
                if not data:
                    self.close("connection_closed")  # keeps a reason given before
                    break
                self._feed(data)
        except TermError as exc:  # MessageError included
            log.warning(
                "closing the Erlang link to %s: corrupted external term: %s", self.peer.name, exc
            )
            self.close(f"corrupted external term: {exc}")
        finally:
            if self._tick_timer is not None:
                self._tick_timer.cancel()
                self._tick_timer = None
            self._stop_direct_writes()
            self._writer.close()
        assert self._closing is not None
        self._ended = self._closing
        return self._closing

    def _feed(self, data: bytes) -> None:
        self._policy.received()
        self._last_received = self._clock()
        ticks = self._frames.ticks
        for message in self._frames.feed(data):
            self.counters.messages_received += 1
            self._dispatch(message)
            if self._closing is not None:  # a handler closed the link: read no further
                break
        self.counters.ticks_received += self._frames.ticks - ticks
        if self._on_read_done is not None:
            self._on_read_done()

    def _dispatch(self, message: DistMessage) -> None:
        reply = netkernel.answer(message)
        if reply is not None:
            self.counters.pings_answered += 1
            self.send(reply)
        elif netkernel.registered_name(message) in netkernel.ERLANG_SERVICES:
            self.counters.service_messages_dropped += 1
        elif self._on_message is not None:
            try:
                self._on_message(self, message)
            except Exception as exc:  # the handler's bug closes this link only
                log.exception(
                    "closing the Erlang link to %s: its message handler raised", self.peer.name
                )
                self.close(f"handler failed: {exc.__class__.__name__}")

    def _start_direct_writes(self) -> None:
        self._loop = asyncio.get_running_loop()
        sock = self._writer.get_extra_info("socket")
        if sock is None or self._writer.get_extra_info("sslcontext") is not None:
            return
        with self._write_lock:
            if self._closing is None and not self._writer.is_closing():
                self._direct_fd = os.dup(sock.fileno())

    def _stop_direct_writes(self) -> None:
        with self._write_lock:
            fd, self._direct_fd = self._direct_fd, None
        if fd is not None:
            os.close(fd)

    def _schedule_tick(self) -> None:
        wait = max(0.0, self._policy.next_check - self._clock())
        self._tick_timer = asyncio.get_running_loop().call_later(wait, self._on_tick_timer)

    def _on_tick_timer(self) -> None:
        self._tick_timer = None
        if self._closing is not None:
            return
        self._tick()
        if self._closing is None:
            self._schedule_tick()

    def _tick(self) -> None:
        verdict = self._policy.check(self._clock())
        if verdict is Verdict.DOWN:
            log.warning(
                "Erlang link to %s: no data within net_ticktime: net_tick_timeout", self.peer.name
            )
            self.close("net_tick_timeout")
        elif verdict is Verdict.SEND_TICK and self.ticking:
            self._write(TICK)
            self._policy.sent()
