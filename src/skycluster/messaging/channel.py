"""The send buffer towards one peer: batches, direct writes, backpressure.

Application threads put encoded messages into a peer's :class:`Channel` (a
bounded buffer) and the node's loop writes everything buffered in one write:
one wake-up of the node's loop per batch, not per message. A small frame on an
idle link goes straight to the socket from the sender's thread instead
(:meth:`Link.write_direct <skycluster.distribution.link.Link.write_direct>`).

Backpressure: a channel holds at most ``send_buffer_size`` bytes (soft by one
message); ``send`` waits for room, ``send_nowait`` raises BufferFull. The
node's loop moves bytes from a channel to its socket only while the socket
keeps up (the transport's write buffer is capped at ``WRITE_BUFFER`` bytes), so
memory stays bounded however slow the peer. Frames larger than
``FRAGMENT_SIZE`` go out in pieces, at most ``FLUSH_BYTES`` per turn of the
loop, so heartbeats are never queued behind a large message.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from skycluster.distribution import frames
from skycluster.distribution.link import NOT_WRITTEN, WRITE_FAILED, WROTE_PART
from skycluster.messaging import codec, wire
from skycluster.messaging.inbox import Waiter, wake_all, waker

if TYPE_CHECKING:
    from skycluster._counters import Counters
    from skycluster.distribution.link import Link
    from skycluster.distribution.node import Traffic

FLUSH_BYTES = 1024 * 1024  # written per turn of the node's loop, per link
WRITE_BUFFER = 1024 * 1024  # the transport's high-water mark
DIRECT_IDLE = 50e-6  # a link idle this long may take a small frame straight from the sender

# offer() results
QUEUED = 0
FULL = 1
DOWN = 2


@dataclass(slots=True)
class Batch:
    """Messages waiting in a channel that go out in one frame: consecutive SENDs to
    one mailbox or PUBLISHes on one topic (``key``), or one CALL or REPLY."""

    kind: int
    key: Any  # the mailbox or topic; None: a frame of its own (CALL, REPLY)
    head: bytes  # SEND/PUBLISH: the key, encoded; CALL/REPLY: the frame up to its message
    messages: list[bytes]  # encoded
    size: int  # bytes of the messages


class Channel:
    """The send buffer towards one peer (identity); survives the peer's reconnections.

    Owns the batches waiting to go out to that peer (at most ``limit`` bytes, soft
    by one message), the frame being sent in pieces, the senders waiting for room,
    and the choice between a direct write (:meth:`Link.write_direct`, from the
    sender's thread) and a batch written by the node's loop (:meth:`flush`). Which
    link it writes to (``link``) is set by the messenger as links come and go."""

    def __init__(
        self,
        ident: str,
        *,
        loop: asyncio.AbstractEventLoop,
        loop_thread: int,
        limit: int,
        traffic: Traffic,
        counters: Counters,
    ) -> None:
        self.ident = ident
        self.loop = loop
        self.loop_thread = loop_thread  # the node's
        self.limit = limit
        self._traffic = traffic
        self._counters = counters
        self.lock = threading.Lock()
        self.room = threading.Condition(self.lock)
        self.groups: deque[Batch] = deque()
        self.size = 0
        self.link: Link | None = None
        self.flush_pending = False
        self.paused = False  # the transport asked us to stop writing
        self._partial: memoryview | None = None
        self._offset = 0
        self._raw: bytes | None = None  # the unsent end of a frame written directly
        self._direct_busy = False
        self._last_direct = 0.0
        self.async_waiters: list[Waiter] = []
        self.sync_waiting = 0

    # -- any thread -------------------------------------------------------------

    def offer(self, kind: int, key: Any, *, head: bytes, data: bytes, force: bool = False) -> int:
        """Queue one encoded message (``data``) of a frame of type ``kind`` for
        ``key`` (a mailbox or topic, merged with the batch before it; None: a frame
        of its own), ``head`` the frame's start (empty: made from ``key``); QUEUED,
        FULL (no room) or DOWN (not linked)."""
        size = len(data)
        with self.lock:
            if self.link is None:
                return DOWN
            if self.size >= self.limit and not force:
                return FULL
            groups = self.groups
            if key is not None and groups:
                tail = groups[-1]
                if tail.key == key and tail.kind == kind and tail.size + size <= wire.GROUP_BYTES:
                    tail.messages.append(data)
                    tail.size += size
                    self.size += size
                    return QUEUED
            if not head:
                head = codec.encode_key(key)
            if self.flush_pending:
                groups.append(Batch(kind, key, head, [data], size))
                self.size += size
                return QUEUED
            on_loop = threading.get_ident() == self.loop_thread
            direct = False
            if size <= wire.GROUP_BYTES and (
                self.link.direct_writes if not on_loop else not self.paused
            ):
                now = time.monotonic()
                last = self._last_direct
                if now - last >= DIRECT_IDLE or self.link.last_received >= last:
                    # An idle link, or the peer has answered since our last direct
                    # write (a request and its reply): write this frame now rather than
                    # wake (or wait for) the node's loop; a round trip saves a thread
                    # hop. A one-way stream still goes out in batches.
                    self._last_direct = now
                    self._counters.add("direct_writes")
                    if on_loop:
                        # The node's own thread owns the transport: write it now, the
                        # lock held, so that no other sender can come in between.
                        self.link.write_frame(_frame(kind, head, data))
                        return QUEUED
                    direct = self._direct_busy = True
                    link = self.link
            self.flush_pending = True
            if not direct:
                groups.append(Batch(kind, key, head, [data], size))
                self.size += size
        if direct:
            self._write_direct(link, _frame(kind, head, data))
            return QUEUED
        if on_loop:
            self.loop.call_soon(self.flush)
        else:
            self.loop.call_soon_threadsafe(self.flush)
        return QUEUED

    def _write_direct(self, link: Link, frame: bytes) -> None:
        """Write ``frame`` to the socket from an application thread (any but the
        node's); what the socket does not take goes out on the node's loop."""
        result = link.write_direct(frame)
        if result == WRITE_FAILED:
            self._counters.add("messages_lost_link_down")
        with self.lock:
            self._direct_busy = False
            if result == NOT_WRITTEN:
                self._raw = frame
            elif not self.groups and result != WROTE_PART:  # a tail needs the flush to go out
                self.flush_pending = False
                return
        self.loop.call_soon_threadsafe(self.flush)

    def add_waiter(self, loop: asyncio.AbstractEventLoop) -> asyncio.Future[None] | None:
        """A future that completes when there may be room; None if there is room now."""
        future: asyncio.Future[None] = loop.create_future()
        with self.lock:
            if self.size < self.limit or self.link is None:
                return None
            self.async_waiters.append((waker(loop), future))
        return future

    def wait_room(self, timeout: float | None) -> bool:
        with self.room:
            if self.size < self.limit or self.link is None:
                return True
            self.sync_waiting += 1
            try:
                return self.room.wait(timeout)
            finally:
                self.sync_waiting -= 1

    # -- the node's loop --------------------------------------------------------

    def flush(self) -> None:
        link = self.link
        if link is None or not link.writable:
            self.drop()
            return
        if self.paused or self._direct_busy:
            return  # resume_writing(), or the direct writer, calls us again
        out: list[bytes] = []
        counted = 0  # bytes the direct writer counted already
        if self._raw is not None:
            out.append(self._raw)
            counted = len(self._raw)
            self._raw = None
        nframes = 0
        budget = FLUSH_BYTES
        header = frames.HEADER.pack
        while budget > 0:
            partial = self._partial
            if partial is not None:
                start = self._offset
                chunk = partial[start : start + wire.FRAGMENT_SIZE]
                end = start + len(chunk)
                more = end < len(partial)
                piece = wire.fragment_payload(chunk, more)
                out.append(header(len(piece)))
                nframes += 1
                out.append(piece)
                budget -= len(piece)
                if more:
                    self._offset = end
                else:
                    self._partial = None
                continue
            with self.lock:
                if not self.groups:
                    break
                group = self.groups.popleft()
                self.size -= group.size
            kind = group.kind
            if kind == wire.CALL or kind == wire.REPLY:
                parts = [group.head, group.messages[0]]
                size = group.size + len(group.head)
            else:
                parts = wire.batch_parts(kind, group.head, group.messages)
                size = group.size + len(parts[0]) + len(parts[1]) + len(parts[2])
            if size > 2 * wire.FRAGMENT_SIZE:
                self._partial = memoryview(b"".join(parts))
                self._offset = 0
                continue
            out.append(header(size))
            nframes += 1
            out.extend(parts)
            budget -= size
        traffic = self._traffic
        traffic.bytes_out += sum(map(len, out)) - counted
        traffic.frames_out += nframes
        link.write_out(out)  # after the end of a frame written directly in part, if any
        with self.lock:
            done = not self.groups and self._partial is None
            if done:
                self.flush_pending = False  # only now: a direct write must not overtake
        if self.async_waiters or self.sync_waiting:
            self.wake_senders()
        if not done and not self.paused:
            self.loop.call_soon(self.flush)

    def wake_senders(self) -> None:
        with self.lock:
            # Wake waiting senders once the buffer is half empty, not at the first
            # byte of room: fewer wake-ups, each with room for many messages.
            if self.size > self.limit // 2 and self.link is not None:
                return
            waiters, self.async_waiters = self.async_waiters, []
            if self.sync_waiting:
                self.room.notify_all()
        if waiters:
            wake_all(waiters)

    def drop(self) -> None:
        """The link is gone: what is buffered is lost (delivery is at most once)."""
        with self.lock:
            lost = sum(len(group.messages) for group in self.groups)
            self.groups.clear()
            self.size = 0
            self.flush_pending = False
        if self._partial is not None:
            lost += 1
            self._partial = None
        self._raw = None
        if lost:
            self._counters.add("messages_lost_link_down", lost)
        self.wake_senders()

    def resume(self) -> None:
        self.paused = False
        if self.flush_pending:
            self.flush()


def _frame(kind: int, head: bytes, data: bytes) -> bytes:
    """One frame holding one message: a CALL or REPLY, or a SEND or PUBLISH of one."""
    if kind == wire.CALL or kind == wire.REPLY:
        payload = head + data
    else:
        payload = wire.batch_payload(kind, head, [data])
    return frames.HEADER.pack(len(payload)) + payload
