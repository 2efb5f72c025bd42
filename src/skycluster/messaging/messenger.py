"""The node's side of messaging: mailboxes, topics, calls, and the frames that arrive.

Lives with the :class:`~skycluster.distribution.node.Node` on its thread. Sends
go through a :class:`~skycluster.messaging.channel.Channel` per peer. Frames
that arrive are decoded a frame (many messages) at a time and handed to
mailboxes and subscriptions; a mailbox that fills holds its link back.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from skycluster._ratelimit import RateLimit
from skycluster.distribution import frames
from skycluster.errors import (
    AlreadyRegistered,
    CallFailed,
    MessageTooLarge,
    MessagingError,
    NodeDisconnected,
    NoSuchMailbox,
    UnencodableMessage,
)
from skycluster.messaging import codec, wire
from skycluster.messaging.channel import WRITE_BUFFER, Channel
from skycluster.messaging.codec import encode as _encode
from skycluster.messaging.deadlines import Deadlines
from skycluster.messaging.inbox import (
    Inbox,
    Mailbox,
    Request,
    TopicSubscription,
)

if TYPE_CHECKING:
    from skycluster.distribution.link import Link
    from skycluster.distribution.node import Node

log = logging.getLogger("skycluster.messaging")

Resolver = Callable[[BaseException | None, Any], None]
_OnFrame = Callable[["Link", list[Any], codec.Undecodable | None, set[Inbox]], None]


class _ReadState:
    """The decoder and the inboxes to wake of the reads on one thread."""

    __slots__ = ("decoder", "to_wake")

    def __init__(self) -> None:
        self.decoder = codec.Decoder()
        self.to_wake: set[Inbox] = set()  # inboxes filled by the current read


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
        # What a read needs, one per thread that reads links: the node's, and the
        # data loop's when the node has one (Node.data_loop).
        self._node_read = _ReadState()
        self._data_read = _ReadState()
        self._reassembly: dict[Link, wire.Reassembler] = {}
        self._held: dict[Link, set[Inbox]] = {}
        self._held_lock = threading.Lock()
        # Each cause (a mailbox, a sender, a kind of bad message) is logged once.
        self._logged = RateLimit(window=math.inf, capacity=10_000)
        self._deadlines: dict[asyncio.AbstractEventLoop, Deadlines] = {}
        self.closed = False
        # Told (name, True) when a mailbox or handler takes a name, (name, False) when
        # it gives it up; from the registering thread, outside the lock.
        self.name_listeners: list[Callable[[str, bool], None]] = []
        # Per frame type: the check of its shape (raises when malformed), its handler.
        self._by_kind: dict[int, tuple[Callable[[Any], list[Any]], _OnFrame]] = {
            wire.SEND: (_batch, self._on_send),
            wire.PUBLISH: (_batch, self._on_publish),
            wire.CALL: (_call, self._on_call),
            wire.REPLY: (_reply, self._on_reply),
        }

    # -- registrations (any thread) ---------------------------------------------

    def register(self, name: str, maxsize: int) -> Mailbox:
        with self._lock:
            self._check_free(name)
            box = self.mailboxes[name] = Mailbox(self, name, maxsize)
        self._named(name, True)
        return box

    def serve(self, name: str, handler: Callable[[Any], Any]) -> Callable[[], None]:
        with self._lock:
            self._check_free(name)
            self.handlers[name] = handler
        self._named(name, True)

        def stop() -> None:
            with self._lock:
                if self.handlers.get(name) is not handler:
                    return
                del self.handlers[name]
            self._named(name, False)

        return stop

    def _named(self, name: str, present: bool) -> None:
        for listener in self.name_listeners:
            listener(name, present)

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
            if self.mailboxes.get(box.name) is not box:
                return
            del self.mailboxes[box.name]
        self._named(box.name, False)

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

    def deliver_value(self, name: str, value: Any) -> bool:
        """Hand a message that arrived already decoded (from an Erlang link) to the
        mailbox or handler ``name`` (the node's loop; getters are woken at
        :meth:`read_done`); False when nothing here has that name."""
        box = self.mailboxes.get(name)
        if box is not None:
            if box.put_many([value], self._node_read.to_wake):
                self.counters.add("mailbox_over_limit")  # an Erlang link is not held back
            return True
        if name in self.handlers:
            self._handle(name, value)
            return True
        return False

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
                result = handler(self._decode_message(data))
            except Exception as exc:
                resolve(CallFailed(f"the handler of {name!r} raised {exc!r}"), None)
                return
            try:
                resolve(None, codec.copy(result))
            except Exception as exc:
                resolve(_reply_error(exc), None)
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

    def reply(self, ident: str, ref: int, name: str, value: Any) -> MessagingError | None:
        """Answer the call ``ref`` from ``ident`` to ``name`` with ``value`` (any
        thread); lost if the caller is gone. A value that cannot be sent (not
        encodable, or larger than max_message_size) fails that call only: the
        caller gets UnencodableMessage or MessageTooLarge, this node counts it and
        logs it once per name and cause, and the error is returned for a replier
        that can hear it (``Request.reply`` raises it). The link stays."""
        try:
            data = self.encode(value)
        except Exception as exc:
            error = _reply_error(exc)
            status = wire.TOO_LARGE if isinstance(error, MessageTooLarge) else wire.UNENCODABLE
            self.counters.add("unsendable_replies")
            self._logged.log(
                log,
                logging.WARNING,
                f"reply:{name}:{status}",
                "a reply of %r could not be sent; that call fails, the link stays: %s",
                name,
                error,
            )
            why = f"the reply of {name!r} on {self.identity} could not be sent: {error}"
            self.answer(ident, ref, status, why)
            return error
        self._send_reply(ident, ref, wire.OK, data)
        return None

    def answer(self, ident: str, ref: int, status: int, why: str) -> None:
        """Answer a call with an error status and its description (any thread); the
        description is cut short so that it always fits."""
        self._send_reply(ident, ref, status, _encode(why[:1000]))

    def _send_reply(self, ident: str, ref: int, status: int, data: bytes) -> None:
        channel = self.channel(ident)
        if channel is None:
            self.counters.add("replies_lost")
            return
        head = wire.reply_head(codec.encode_key(ref) + codec.encode_key(status))
        channel.offer(wire.REPLY, None, head=head, data=data, force=True)

    # -- links (the node's loop) ------------------------------------------------

    def link_up(self, link: Link) -> None:
        ident = link.identity
        assert ident is not None
        link.set_write_buffer_limit(WRITE_BUFFER)
        channel = self.channels.get(ident)
        if channel is None:
            channel = self.channels[ident] = Channel(
                ident,
                loop=self.loop,
                loop_thread=self.loop_thread,
                limit=self.send_buffer_size,
                traffic=self.node.traffic,
                counters=self.counters,
            )
        channel.drop()  # anything left from an old link is not for this incarnation
        channel.paused = False
        with channel.lock:
            channel.link = link

    def link_down(self, link: Link) -> None:
        self._reassembly.pop(link, None)
        with self._held_lock:
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

    def _read_state(self) -> _ReadState:
        if threading.get_ident() == self.loop_thread:
            return self._node_read
        return self._data_read

    def read_done(self) -> None:
        """The end of one read from a socket: wake the getters of what it filled."""
        to_wake = self._read_state().to_wake
        if to_wake:
            inboxes = list(to_wake)
            to_wake.clear()
            for inbox in inboxes:
                inbox._wake()

    def frame_received(self, link: Link, kind: int, payload: bytes) -> None:
        """A messaging frame (the node's frame handler for :data:`frame_types.MESSAGING`):
        put a FRAGMENT's pieces together, decode, check its shape, hand it to the
        handler of its type; a later version's type is ignored."""
        if kind == wire.FRAGMENT:
            whole = self._fragment(link, payload)
            if whole is None:
                return
            payload = whole
            kind = frames.frame_kind(payload)
        by_kind = self._by_kind.get(kind)
        if by_kind is None:
            return  # a later version's frame: ignored
        check, handle = by_kind
        state = self._read_state()
        decoder = state.decoder
        decoder.failed = None
        try:
            frame = check(decoder.decode(payload))
        except Exception as exc:
            self._undecodable(link, f"a frame of type {kind} could not be decoded ({exc})")
            return
        # A frame within max_message_size holds no message above it (the usual case,
        # one comparison); a larger one is measured message by message.
        if len(payload) > self.max_message_size and self._drop_too_large(link, payload, frame):
            return
        handle(link, frame, decoder.failed, state.to_wake)

    def _drop_too_large(self, link: Link, payload: bytes, frame: list[Any]) -> bool:
        """Apply max_message_size to each message of ``frame``, received: drop and
        count what exceeds it (a call gets TOO_LARGE back, a waiting caller
        MessageTooLarge). True when nothing of the frame is left to handle."""
        limit = self.max_message_size
        try:
            sizes = wire.message_sizes(payload)
        except ValueError as exc:
            self._undecodable(link, str(exc))
            return True
        too_large = [size for size in sizes if size > limit]
        if not too_large:
            return False
        self.counters.add("messages_too_large", len(too_large))
        self._logged.log(
            log,
            logging.WARNING,
            f"large:{link.identity}",
            "dropping a message from %s: %d bytes, more than max_message_size (%d)",
            link.identity,
            max(too_large),
            limit,
        )
        kind = frame[0]
        if kind == wire.SEND or kind == wire.PUBLISH:
            frame[2] = [m for m, size in zip(frame[2], sizes, strict=True) if size <= limit]
            return not frame[2]
        why = f"{sizes[0]} bytes, more than max_message_size on {self.identity} ({limit})"
        if kind == wire.CALL:
            assert link.identity is not None
            self.answer(link.identity, frame[2], wire.TOO_LARGE, f"the request is {why}")
        else:  # REPLY
            entry = self.calls.pop(frame[1], None)
            if entry is not None:
                entry[1](MessageTooLarge(f"the reply from {entry[0]} is {why}"), None)
        return True

    def _on_send(
        self, link: Link, frame: list[Any], failed: codec.Undecodable | None, to_wake: set[Inbox]
    ) -> None:
        _, key, messages = frame
        if failed is not None:
            messages = self._good(link, messages, failed)
        box = self.mailboxes.get(key)
        if box is None and key in self.handlers:
            for message in messages:
                self._handle(key, message)
            return
        if box is None:
            self.counters.add("messages_to_unknown_mailbox", len(messages))
            self._logged.log(
                log,
                logging.WARNING,
                f"box:{key}",
                "messages for mailbox %r, not registered here, are dropped",
                key,
            )
            return
        if box.put_many(messages, to_wake):
            self._hold(link, box)

    def _on_publish(
        self, link: Link, frame: list[Any], failed: codec.Undecodable | None, to_wake: set[Inbox]
    ) -> None:
        _, key, messages = frame
        if failed is not None:
            messages = self._good(link, messages, failed)
        for sub in self.topics.get(key, ()):
            if sub.put_many(messages, to_wake):
                self._hold(link, sub)

    def _on_call(
        self, link: Link, frame: list[Any], failed: codec.Undecodable | None, to_wake: set[Inbox]
    ) -> None:
        _, key, ref, request = frame
        ident = link.identity
        assert ident is not None
        if failed is not None:
            self._undecodable(link, f"a request: {failed.why}")
            self.answer(ident, ref, wire.BAD_REQUEST, failed.why)
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
                self.counters.add("handler_errors")
                log.exception("the handler of %r raised", key)
                self.answer(ident, ref, wire.FAILED, f"the handler of {key!r} raised {exc!r}")
                return
            self.reply(ident, ref, key, result)  # a result it cannot send fails the call only
            return
        if box.put_many([Request(request, ident, self._replier(ident, ref, key))], to_wake):
            self._hold(link, box)

    def _on_reply(
        self, link: Link, frame: list[Any], failed: codec.Undecodable | None, to_wake: set[Inbox]
    ) -> None:
        _, ref, status, value = frame
        entry = self.calls.pop(ref, None)
        if entry is None:
            return  # the caller gave up already
        who, resolve = entry
        if failed is not None:
            self._undecodable(link, f"a reply: {failed.why}")
            resolve(codec_error(failed.why), None)
        elif status == wire.OK:
            resolve(None, value)
        elif status == wire.NO_MAILBOX:
            resolve(NoSuchMailbox(f"no mailbox named {value!r} on {who}"), None)
        elif status == wire.FAILED:
            resolve(CallFailed(f"{who}: {value}"), None)
        elif status == wire.UNENCODABLE:
            resolve(UnencodableMessage(str(value)), None)
        elif status == wire.TOO_LARGE:
            resolve(MessageTooLarge(str(value)), None)
        else:
            resolve(codec_error(f"{who} could not take the request: {value}"), None)

    def _handle(self, name: str, message: Any) -> None:
        handler = self.handlers.get(name)
        if handler is None:
            return
        try:
            handler(message)
        except Exception:
            self.counters.add("handler_errors")
            log.exception("the handler of %r raised", name)

    def _replier(self, ident: str, ref: int, name: str) -> Callable[[Any], None]:
        def reply(value: Any) -> None:
            error = self.reply(ident, ref, name, value)
            if error is not None:
                raise error  # the replier learns at once; the caller got it too

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
            # Room for the frame's head (mailbox, reference) beside one message of the
            # largest size; each message is then measured against the limit itself.
            limit = self.max_message_size + wire.FRAGMENT_SIZE
            assembler = self._reassembly[link] = wire.Reassembler(limit)
        try:
            return assembler.feed(bool(more), chunk)
        except wire.TooLarge as exc:
            self.counters.add("messages_too_large")
            self._logged.log(
                log,
                logging.WARNING,
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
        self.counters.add("undecodable_messages", count)
        self._logged.log(
            log,
            logging.WARNING,
            f"undecodable:{link.identity}:{why}",
            "dropping undecodable message(s) from %s: %s (logged once)",
            link.identity,
            why,
        )

    # -- holding a link back while an inbox is full -----------------------------

    def _hold(self, link: Link, inbox: Inbox) -> None:
        """(the thread that reads ``link``)"""
        with self._held_lock:
            held = self._held.setdefault(link, set())
            if inbox in held:
                return
            held.add(inbox)
        self.counters.add("links_held_back")
        link.pause_reading()
        inbox.hold(self._drained_threadsafe)

    def _drained_threadsafe(self, inbox: Inbox) -> None:
        with contextlib.suppress(RuntimeError):  # the node's loop is gone
            self.loop.call_soon_threadsafe(self._drained, inbox)

    def _drained(self, inbox: Inbox) -> None:
        resume = []
        with self._held_lock:
            for link, held in list(self._held.items()):
                held.discard(inbox)
                if not held:
                    del self._held[link]
                    resume.append(link)
        for link in resume:
            link.resume_reading()

    # -- helpers ----------------------------------------------------------------


def _batch(frame: Any) -> list[Any]:
    """[SEND | PUBLISH, key, [message, ...]]"""
    _, key, messages = frame
    if not isinstance(key, str) or not isinstance(messages, list):
        raise ValueError("bad field types")
    return frame  # type: ignore[no-any-return]


def _call(frame: Any) -> list[Any]:
    """[CALL, mailbox, ref, request]"""
    _, key, ref, _request = frame
    if not isinstance(key, str) or not isinstance(ref, int):
        raise ValueError("bad field types")
    return frame  # type: ignore[no-any-return]


def _reply(frame: Any) -> list[Any]:
    """[REPLY, ref, status, value]"""
    _, ref, status, _value = frame
    if not isinstance(ref, int) or not isinstance(status, int):
        raise ValueError("bad field types")
    return frame  # type: ignore[no-any-return]


def _reply_error(exc: Exception) -> MessagingError:
    """What the caller of a reply that could not be encoded gets."""
    if isinstance(exc, MessageTooLarge | UnencodableMessage):
        return exc
    return UnencodableMessage(f"cannot encode the reply: {exc!r}")


def codec_error(why: str) -> Exception:
    return MessagingError(why)
