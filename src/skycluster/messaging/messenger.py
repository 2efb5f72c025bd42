"""The node's side of messaging: send buffers per peer, mailboxes, topics, calls.

Lives with the :class:`~skycluster.distribution.node.Node` on its thread. Application
threads put encoded messages into a peer's :class:`Channel` (a bounded buffer)
and the node's loop writes everything buffered in one write: one wake-up of
the node's loop per batch, not per message. Frames that arrive are decoded a
frame (many messages) at a time and handed to mailboxes and subscriptions.

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
import contextlib
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from skycluster.distribution import frames
from skycluster.distribution.link import NOT_WRITTEN, WRITE_FAILED, WROTE_PART
from skycluster.errors import (
    AlreadyRegistered,
    CallFailed,
    MessageTooLarge,
    MessagingError,
    NodeDisconnected,
    NoSuchMailbox,
)
from skycluster.messaging import codec, wire
from skycluster.messaging.codec import encode as _encode
from skycluster.messaging.deadlines import Deadlines
from skycluster.messaging.inbox import (
    Inbox,
    Mailbox,
    Request,
    TopicSubscription,
    Waiter,
    wake_all,
    waker,
)

if TYPE_CHECKING:
    from skycluster.distribution.link import Link
    from skycluster.distribution.node import Node

log = logging.getLogger("skycluster.messaging")

FLUSH_BYTES = 1024 * 1024  # written per turn of the node's loop, per link
WRITE_BUFFER = 1024 * 1024  # the transport's high-water mark
DIRECT_IDLE = 50e-6  # a link idle this long may take a small frame straight from the sender

# offer() results
QUEUED = 0
FULL = 1
DOWN = 2

_BATCH_START = {wire.SEND: bytes((0x93, wire.SEND)), wire.PUBLISH: bytes((0x93, wire.PUBLISH))}

Resolver = Callable[[BaseException | None, Any], None]


class Channel:
    """The send buffer towards one peer (identity); survives the peer's reconnections."""

    def __init__(self, messenger: Messenger, ident: str) -> None:
        self.messenger = messenger
        self.ident = ident
        self.loop = messenger.loop
        self.limit = messenger.send_buffer_size
        self.lock = threading.Lock()
        self.room = threading.Condition(self.lock)
        # [kind, key, head bytes, [message bytes...], size]
        self.groups: deque[list[Any]] = deque()
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

    def offer(self, kind: int, key: Any, head: bytes, data: bytes, *, force: bool = False) -> int:
        """Queue one encoded message: QUEUED, FULL (no room) or DOWN (not linked)."""
        size = len(data)
        with self.lock:
            if self.link is None:
                return DOWN
            if self.size >= self.limit and not force:
                return FULL
            groups = self.groups
            if key is not None and groups:
                tail = groups[-1]
                if tail[1] == key and tail[0] == kind and tail[4] + size <= wire.GROUP_BYTES:
                    tail[3].append(data)
                    tail[4] += size
                    self.size += size
                    return QUEUED
            if not head:
                head = codec.encode_key(key)
            if self.flush_pending:
                groups.append([kind, key, head, [data], size])
                self.size += size
                return QUEUED
            on_loop = threading.get_ident() == self.messenger.loop_thread
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
                    self.messenger.count("direct_writes")
                    if on_loop:
                        # The node's own thread owns the transport: write it now, the
                        # lock held, so that no other sender can come in between.
                        self.link.write_frame(_frame(kind, head, data))
                        return QUEUED
                    direct = self._direct_busy = True
                    link = self.link
            self.flush_pending = True
            if not direct:
                groups.append([kind, key, head, [data], size])
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
            self.messenger.count("messages_lost_link_down")
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
                self.size -= group[4]
            kind = group[0]
            if kind == wire.CALL or kind == wire.REPLY:
                head = group[2]
                parts = [head, group[3][0]]
                size = group[4] + len(head)
            else:
                messages = group[3]
                opening = _BATCH_START[kind]
                count = wire.array_header(len(messages))
                parts = [opening, group[2], count, *messages]
                size = group[4] + len(opening) + len(group[2]) + len(count)
            if size > 2 * wire.FRAGMENT_SIZE:
                self._partial = memoryview(b"".join(parts))
                self._offset = 0
                continue
            out.append(header(size))
            nframes += 1
            out.extend(parts)
            budget -= size
        data = b"".join(out)
        traffic = self.messenger.node.traffic
        traffic.bytes_out += len(data) - counted
        traffic.frames_out += nframes
        link.write_out(data)  # after the end of a frame written directly in part, if any
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
            lost = sum(len(group[3]) for group in self.groups)
            self.groups.clear()
            self.size = 0
            self.flush_pending = False
        if self._partial is not None:
            lost += 1
            self._partial = None
        self._raw = None
        if lost:
            self.messenger.count("messages_lost_link_down", lost)
        self.wake_senders()

    def resume(self) -> None:
        self.paused = False
        if self.flush_pending:
            self.flush()


class Messenger:
    """The messaging layer of one node, on the node's loop: owns the mailboxes,
    serve() handlers and topic subscriptions registered here, a send
    :class:`Channel` per peer, the calls waiting for a reply, the reassembly of
    fragments and the links held back while an inbox is full. The node gives it
    the messaging frames (:meth:`frame_received`) and the life of each link (it
    is the node's :class:`~skycluster.distribution.hooks.LinkListener`)."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.loop = node.loop
        self.identity = node.identity
        settings = node.settings
        self.max_message_size = settings.max_message_size
        self.send_buffer_size = settings.send_buffer_size
        self.counters = node.counters
        self.channels: dict[str, Channel] = {}
        self.by_address: dict[str, Channel] = {}  # a name as the application wrote it
        self.mailboxes: dict[str, Mailbox] = {}
        self.handlers: dict[str, Callable[[Any], Any]] = {}
        self.loop_thread = threading.get_ident()
        self.topics: dict[str, tuple[TopicSubscription, ...]] = {}
        self.calls: dict[int, tuple[str, Resolver]] = {}
        self.refs = itertools.count(1)
        self._lock = threading.Lock()  # registrations
        self._decoder = codec.Decoder()
        self._reassembly: dict[Link, wire.Reassembler] = {}
        self._held: dict[Link, set[Inbox]] = {}
        self._to_wake: set[Inbox] = set()  # inboxes filled by the current read
        self._logged: set[str] = set()
        self._deadlines: dict[asyncio.AbstractEventLoop, Deadlines] = {}
        self.closed = False

    # -- registrations (any thread) ---------------------------------------------

    def register(self, name: str, maxsize: int) -> Mailbox:
        with self._lock:
            self._check_free(name)
            box = self.mailboxes[name] = Mailbox(self, name, maxsize)
        return box

    def serve(self, name: str, handler: Callable[[Any], Any]) -> Callable[[], None]:
        with self._lock:
            self._check_free(name)
            self.handlers[name] = handler

        def stop() -> None:
            with self._lock:
                if self.handlers.get(name) is handler:
                    del self.handlers[name]

        return stop

    def _check_free(self, name: str) -> None:
        """A mailbox or handler may take ``name`` (called with the lock held)."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"a mailbox name is a non-empty str, got {name!r}")
        if self.closed:
            raise RuntimeError("the cluster is stopping")
        if name in self.mailboxes or name in self.handlers:
            raise AlreadyRegistered(f"a mailbox named {name!r} is registered already")

    def unregister(self, box: Mailbox) -> None:
        with self._lock:
            if self.mailboxes.get(box.name) is box:
                del self.mailboxes[box.name]

    def subscribe(self, topic: str, maxsize: int) -> TopicSubscription:
        if not isinstance(topic, str):
            raise TypeError(f"a topic is a str, got {topic!r}")
        subscription = TopicSubscription(self, topic, maxsize)
        with self._lock:
            if self.closed:
                raise RuntimeError("the cluster is stopping")
            self.topics[topic] = (*self.topics.get(topic, ()), subscription)
        return subscription

    def unsubscribe(self, subscription: TopicSubscription) -> None:
        with self._lock:
            subs = self.topics.get(subscription.topic, ())
            rest = tuple(s for s in subs if s is not subscription)
            if rest:
                self.topics[subscription.topic] = rest
            else:
                self.topics.pop(subscription.topic, None)

    # -- sending (any thread) ---------------------------------------------------

    def encode(self, message: Any) -> bytes:
        data = _encode(message)
        if len(data) > self.max_message_size:
            raise MessageTooLarge(
                f"the message is {len(data)} bytes encoded, more than max_message_size "
                f"({self.max_message_size}); send it in parts or raise the limit on every node"
            )
        return data

    def channel(self, ident: str) -> Channel | None:
        channel = self.channels.get(ident)
        if channel is None or channel.link is None:
            return None
        return channel

    def linked_channels(self) -> list[Channel]:
        return [c for c in list(self.channels.values()) if c.link is not None]

    def deliver_local(self, name: str, data: bytes) -> None:
        box = self.mailboxes.get(name)
        if box is None and name in self.handlers:
            self._handle(name, self._decode_message(data))
            return
        if box is None:
            raise NoSuchMailbox(f"no mailbox named {name!r} on {self.identity}")
        box.put_many([self._decode_message(data)])

    def publish_local(self, topic: str, data: bytes, skip: TopicSubscription | None = None) -> None:
        subs = self.topics.get(topic)
        if not subs:
            return
        message = self._decode_message(data)
        for sub in subs:
            if sub is not skip:
                sub.put_many([message])

    def _decode_message(self, data: bytes) -> Any:
        decoder = codec.Decoder()
        return decoder.decode(data)

    def call_local(self, name: str, data: bytes, resolve: Resolver) -> None:
        box = self.mailboxes.get(name)
        handler = self.handlers.get(name)
        if box is None and handler is not None:
            try:
                resolve(None, codec.copy(handler(self._decode_message(data))))
            except Exception as exc:
                resolve(CallFailed(f"the handler of {name!r} raised {exc!r}"), None)
            return
        if box is None:
            resolve(NoSuchMailbox(f"no mailbox named {name!r} on {self.identity}"), None)
            return

        def answer(value: Any) -> None:
            try:
                reply = codec.copy(value)
            except Exception as exc:
                resolve(exc, None)
                raise
            resolve(None, reply)

        box.put_many([Request(self._decode_message(data), self.identity, answer)])

    def start_call(self, ident: str, resolve: Resolver) -> int:
        ref = next(self.refs)
        self.calls[ref] = (ident, resolve)
        return ref

    def deadlines(self, loop: asyncio.AbstractEventLoop) -> Deadlines:
        """The timeouts of the calls waiting on ``loop`` (that loop's thread)."""
        deadlines = self._deadlines.get(loop)
        if deadlines is None:
            with self._lock:
                for old in [old for old in self._deadlines if old.is_closed()]:
                    del self._deadlines[old]
                deadlines = self._deadlines.setdefault(loop, Deadlines(loop))
        return deadlines

    def answer(self, ident: str, ref: int, status: int, value: Any) -> None:
        """Send a REPLY (any thread); lost if the caller is gone."""
        try:
            data = self.encode(value)
        except Exception as exc:
            if status != wire.OK:
                raise
            self.answer(ident, ref, wire.BAD_REQUEST, f"the reply could not be sent: {exc}")
            raise
        channel = self.channel(ident)
        if channel is None:
            self.count("replies_lost")
            return
        head = codec.encode_key(ref) + codec.encode_key(status)
        channel.offer(wire.REPLY, None, b"\x94\x07" + head, data, force=True)

    # -- links (the node's loop) ------------------------------------------------

    def link_up(self, link: Link) -> None:
        ident = link.identity
        assert ident is not None
        link.set_write_buffer_limit(WRITE_BUFFER)
        channel = self.channels.get(ident)
        if channel is None:
            channel = self.channels[ident] = Channel(self, ident)
        channel.drop()  # anything left from an old link is not for this incarnation
        channel.paused = False
        with channel.lock:
            channel.link = link

    def link_down(self, link: Link) -> None:
        self._reassembly.pop(link, None)
        held = self._held.pop(link, None)
        if held:
            for inbox in held:
                inbox.blocking = False
        ident = link.identity
        if ident is None:
            return
        channel = self.channels.get(ident)
        if channel is None or channel.link is not link:
            return
        with channel.lock:
            channel.link = None
        channel.drop()
        failed = [ref for ref, (who, _) in list(self.calls.items()) if who == ident]
        for ref in failed:
            entry = self.calls.pop(ref, None)
            if entry is not None:
                entry[1](NodeDisconnected(f"the link to {ident} went down before it replied"), None)

    def pause_writing(self, link: Link) -> None:
        channel = self._channel_of(link)
        if channel is not None:
            channel.paused = True

    def resume_writing(self, link: Link) -> None:
        channel = self._channel_of(link)
        if channel is not None:
            channel.resume()

    def _channel_of(self, link: Link) -> Channel | None:
        ident = link.identity
        channel = self.channels.get(ident) if ident is not None else None
        return channel if channel is not None and channel.link is link else None

    def close(self) -> None:
        """The node stops: end every mailbox and subscription."""
        with self._lock:
            self.closed = True
            boxes = list(self.mailboxes.values())
            subs = [s for group in self.topics.values() for s in group]
            self.mailboxes.clear()
            self.topics.clear()
        for inbox in (*boxes, *subs):
            Inbox.close(inbox)
        for ref in list(self.calls):
            entry = self.calls.pop(ref, None)
            if entry is not None:
                entry[1](NodeDisconnected("the cluster stopped before the reply came"), None)
        with self._lock:
            deadlines = list(self._deadlines.values())
            self._deadlines.clear()
        for timers in deadlines:
            if timers.loop is self.loop:
                timers.cancel()
            else:
                with contextlib.suppress(RuntimeError):  # that loop is closed: nothing runs
                    timers.loop.call_soon_threadsafe(timers.cancel)

    # -- frames that arrive (the node's loop) -----------------------------------

    def read_done(self) -> None:
        """The end of one read from a socket: wake the getters of what it filled."""
        if self._to_wake:
            inboxes = list(self._to_wake)
            self._to_wake.clear()
            for inbox in inboxes:
                inbox._wake()

    def frame_received(self, link: Link, kind: int, payload: bytes) -> None:
        if kind == wire.FRAGMENT:
            whole = self._fragment(link, payload)
            if whole is None:
                return
            payload = whole
            kind = frames.frame_kind(payload)
        decoder = self._decoder
        decoder.failed = None
        try:
            frame = decoder.decode(payload)
            if kind == wire.SEND or kind == wire.PUBLISH:
                _, key, messages = frame
                if not isinstance(key, str) or not isinstance(messages, list):
                    raise ValueError("bad field types")
            elif kind == wire.CALL:
                _, key, ref, request = frame
                if not isinstance(key, str) or not isinstance(ref, int):
                    raise ValueError("bad field types")
            elif kind == wire.REPLY:
                _, ref, status, value = frame
                if not isinstance(ref, int) or not isinstance(status, int):
                    raise ValueError("bad field types")
            else:
                return  # a later version's frame: ignored
        except Exception as exc:
            self._undecodable(link, f"a frame of type {kind} could not be decoded ({exc})")
            return
        if kind == wire.SEND:
            if decoder.failed is not None:
                messages = self._good(link, messages, decoder.failed)
            box = self.mailboxes.get(key)
            if box is None and key in self.handlers:
                for message in messages:
                    self._handle(key, message)
                return
            if box is None:
                self.count("messages_to_unknown_mailbox", len(messages))
                self._log_once(
                    f"box:{key}", "messages for mailbox %r, not registered here, are dropped", key
                )
                return
            if box.put_many(messages, self._to_wake):
                self._hold(link, box)
        elif kind == wire.PUBLISH:
            if decoder.failed is not None:
                messages = self._good(link, messages, decoder.failed)
            for sub in self.topics.get(key, ()):
                if sub.put_many(messages, self._to_wake):
                    self._hold(link, sub)
        elif kind == wire.CALL:
            ident = link.identity
            assert ident is not None
            if decoder.failed is not None:
                self._undecodable(link, f"a request: {decoder.failed.why}")
                self.answer(ident, ref, wire.BAD_REQUEST, decoder.failed.why)
                return
            box = self.mailboxes.get(key)
            if box is None:
                handler = self.handlers.get(key)
                if handler is None:
                    self.answer(ident, ref, wire.NO_MAILBOX, key)
                    return
                try:
                    result = handler(request)
                except Exception as exc:
                    self.count("handler_errors")
                    log.exception("the handler of %r raised", key)
                    self.answer(ident, ref, wire.FAILED, f"the handler of {key!r} raised {exc!r}")
                    return
                self.answer(ident, ref, wire.OK, result)
                return
            if box.put_many([Request(request, ident, self._replier(ident, ref))], self._to_wake):
                self._hold(link, box)
        else:  # REPLY
            entry = self.calls.pop(ref, None)
            if entry is None:
                return  # the caller gave up already
            resolve = entry[1]
            if decoder.failed is not None:
                self._undecodable(link, f"a reply: {decoder.failed.why}")
                resolve(codec_error(decoder.failed.why), None)
            elif status == wire.OK:
                resolve(None, value)
            elif status == wire.NO_MAILBOX:
                resolve(NoSuchMailbox(f"no mailbox named {value!r} on {entry[0]}"), None)
            elif status == wire.FAILED:
                resolve(CallFailed(f"{entry[0]}: {value}"), None)
            else:
                resolve(codec_error(f"{entry[0]} could not take the request: {value}"), None)

    def _handle(self, name: str, message: Any) -> None:
        handler = self.handlers.get(name)
        if handler is None:
            return
        try:
            handler(message)
        except Exception:
            self.count("handler_errors")
            log.exception("the handler of %r raised", name)

    def _replier(self, ident: str, ref: int) -> Callable[[Any], None]:
        def reply(value: Any) -> None:
            self.answer(ident, ref, wire.OK, value)

        return reply

    def _fragment(self, link: Link, payload: bytes) -> bytes | None:
        try:
            _, more, chunk = codec.Decoder().decode(payload)
            if not isinstance(chunk, bytes):
                raise ValueError("a fragment carries bytes")
        except Exception as exc:
            self._undecodable(link, f"a bad fragment ({exc})")
            return None
        assembler = self._reassembly.get(link)
        if assembler is None:
            assembler = self._reassembly[link] = wire.Reassembler(self.max_message_size)
        try:
            return assembler.feed(bool(more), chunk)
        except wire.TooLarge as exc:
            self.count("messages_too_large")
            self._log_once(
                f"large:{link.identity}",
                "dropping a message from %s: %s (max_message_size)",
                link.identity,
                exc,
            )
            return None

    def _good(self, link: Link, messages: list[Any], failed: codec.Undecodable) -> list[Any]:
        good = [m for m in messages if not codec.contains_undecodable(m)]
        self._undecodable(link, failed.why, len(messages) - len(good))
        return good

    def _undecodable(self, link: Link, why: str, count: int = 1) -> None:
        self.count("undecodable_messages", count)
        self._log_once(
            f"undecodable:{link.identity}:{why}",
            "dropping undecodable message(s) from %s: %s (logged once)",
            link.identity,
            why,
        )

    # -- holding a link back while an inbox is full -----------------------------

    def _hold(self, link: Link, inbox: Inbox) -> None:
        held = self._held.setdefault(link, set())
        if inbox in held:
            return
        held.add(inbox)
        self.count("links_held_back")
        link.pause_reading()
        inbox.hold(self._drained_threadsafe)

    def _drained_threadsafe(self, inbox: Inbox) -> None:
        with contextlib.suppress(RuntimeError):  # the node's loop is gone
            self.loop.call_soon_threadsafe(self._drained, inbox)

    def _drained(self, inbox: Inbox) -> None:
        for link, held in list(self._held.items()):
            held.discard(inbox)
            if not held:
                del self._held[link]
                link.resume_reading()

    # -- helpers ----------------------------------------------------------------

    def count(self, key: str, n: int = 1) -> None:
        self.counters.add(key, n)

    def _log_once(self, key: str, message: str, *args: Any) -> None:
        if key in self._logged:
            return
        if len(self._logged) < 10_000:
            self._logged.add(key)
        log.warning(message, *args)


def _frame(kind: int, head: bytes, data: bytes) -> bytes:
    """One frame holding one message: a CALL or REPLY, or a SEND or PUBLISH of one."""
    if kind == wire.CALL or kind == wire.REPLY:
        payload = head + data
    else:
        payload = b"".join((_BATCH_START[kind], head, b"\x91", data))
    return frames.HEADER.pack(len(payload)) + payload


def codec_error(why: str) -> Exception:
    return MessagingError(why)
