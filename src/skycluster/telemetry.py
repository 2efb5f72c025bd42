"""Telemetry hooks, in the manner of Erlang's ``:telemetry`` (libcluster emits the same kind).

The node *emits* named events with measurements (numbers) and metadata (who,
why); anyone may *attach* a handler. The built-in metrics
(:mod:`skycluster.ops.metrics`) and log lines (:mod:`skycluster.ops.logs`) are
themselves handlers of these events, so a user's handler sees everything they
see.

Handlers run synchronously on the node's own thread, right where the event
happens: keep them quick (count, append, hand over to a queue). A handler that
raises is logged and detached, as ``:telemetry`` does, so a bug in it cannot
hurt the node.

Events (every metadata also carries ``node``, this node's identity):

============================  =======================  ===========================================
event                         measurements             metadata
============================  =======================  ===========================================
``connect.ok``                ``duration`` (s)         ``peer``, ``address``
``connect.error``             ``duration`` (s)         ``peer``, ``address``, ``reason``, ``error``
``disconnect.ok``                                      ``peer``
``disconnect.error``                                   ``peer``, ``reason`` (``not_linked``)
``link.up``                                            ``peer``, ``address``, ``hidden``,
                                                       ``metadata``, ``direction``
``link.down``                 ``duration`` (s linked)  ``peer``, ``reason``, ``hidden``
``link.flap``                 ``lasted`` (s linked),   ``peer``, ``reason``, ``flaps`` (in a row)
                              ``retry_in`` (s)
``link.steady``                                        ``peer``, ``flaps``
``heartbeat.timeout``         ``silence`` (s)          ``peer``
``heartbeat.rtt``             ``rtt`` (s)              ``peer``
``loop.stall``                ``seconds``              ``shared`` (node_loop="shared")
``handshake.rejected``                                 ``peer_address``, ``reason``, ``error``,
                                                       ``claimed`` (name or None)
``strategy.poll``             ``duration``, ``nodes``, ``topology``
                              ``failed``
``strategy.error``                                     ``topology``, ``error``
``gossip.dropped``            ``count``                ``topology``, ``reason``
============================  =======================  ===========================================

``duration`` of ``connect.*`` is the dial: TCP connect plus handshake.
``handshake.rejected`` reasons: ``auth``, ``version``, ``timeout``,
``not_skycluster`` (wrong preamble, an HTTP request), ``malformed``, ``name``,
``other``. ``connect.error`` reasons: ``refused`` (the peer refused the link:
``refused_auth`` and so on), ``unreachable``, ``timeout``, ``handshake``.
``link.down`` reasons are those of :class:`~skycluster.events.DownReason`.
``link.flap``: a mesh member's link went down (``connection_closed`` or
``heartbeat_timeout``) less than 30 s after it came up; it is dialled again with
a growing wait. ``link.steady``: a peer that flapped kept its link for 30 s.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

log = logging.getLogger("skycluster.telemetry")

EVENTS: tuple[str, ...] = (
    "connect.ok",
    "connect.error",
    "disconnect.ok",
    "disconnect.error",
    "link.up",
    "link.down",
    "link.flap",
    "link.steady",
    "heartbeat.timeout",
    "heartbeat.rtt",
    "loop.stall",
    "handshake.rejected",
    "strategy.poll",
    "strategy.error",
    "gossip.dropped",
)

Measurements = Mapping[str, float]
Metadata = Mapping[str, Any]
Handler = Callable[[str, Measurements, Metadata], None]


class Detach:
    """Returned by :meth:`Telemetry.attach`; call :meth:`close` (or use ``with``) to detach."""

    def __init__(self, telemetry: Telemetry, key: int) -> None:
        self._telemetry = telemetry
        self._key = key

    def close(self) -> None:
        self._telemetry._detach(self._key)

    def __enter__(self) -> Detach:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Telemetry:
    """A table of handlers by event name. ``emit`` also hands every event to
    ``parent`` (the process-wide :data:`GLOBAL` table for a node's own one)."""

    def __init__(self, parent: Telemetry | None = None) -> None:
        self._parent = parent
        self._lock = threading.Lock()
        self._handlers: dict[int, tuple[frozenset[str] | None, Handler]] = {}
        self._next = 0

    def attach(self, events: str | Iterable[str] | None, handler: Handler) -> Detach:
        """Call ``handler(event, measurements, metadata)`` for the named events
        (a name, several, a prefix ending in ``.*`` such as ``connect.*``, or None for all)."""
        names: frozenset[str] | None
        if events is None:
            names = None
        else:
            wanted = [events] if isinstance(events, str) else list(events)
            expanded: set[str] = set()
            for name in wanted:
                if name.endswith(".*"):
                    matches = {e for e in EVENTS if e.startswith(name[:-1])}
                    if not matches:
                        raise ValueError(f"no telemetry event matches {name!r}; events: {EVENTS}")
                    expanded |= matches
                elif name in EVENTS:
                    expanded.add(name)
                else:
                    raise ValueError(f"unknown telemetry event {name!r}; events: {EVENTS}")
            names = frozenset(expanded)
        with self._lock:
            key = self._next
            self._next += 1
            self._handlers[key] = (names, handler)
        return Detach(self, key)

    def _detach(self, key: int) -> None:
        with self._lock:
            self._handlers.pop(key, None)

    def emit(self, event: str, measurements: Measurements, metadata: Metadata) -> None:
        with self._lock:
            handlers = list(self._handlers.items())
        for key, (names, handler) in handlers:
            if names is not None and event not in names:
                continue
            try:
                handler(event, measurements, metadata)
            except Exception:
                log.exception("telemetry handler %r failed on %s; detached", handler, event)
                self._detach(key)
        if self._parent is not None:
            self._parent.emit(event, measurements, metadata)

    def __len__(self) -> int:
        with self._lock:
            return len(self._handlers)


GLOBAL = Telemetry()
"""Handlers attached here see the events of every node in this process."""


def attach(events: str | Iterable[str] | None, handler: Handler) -> Detach:
    """Attach a handler to every node of this process (``skycluster.telemetry.attach``)."""
    return GLOBAL.attach(events, handler)


def handshake_reason(error: str) -> str:
    """A short, stable reason for a failed handshake, from its message."""
    text = error.lower()
    for needle, reason in (
        ("cookie", "auth"),
        ("proof", "auth"),
        ("version", "version"),
        ("no handshake within", "timeout"),
        ("http request", "not_skycluster"),
        ("preamble", "not_skycluster"),
        ("name", "name"),
        ("frame", "malformed"),
        ("handshake", "malformed"),
        ("unexpected", "malformed"),
        ("map", "malformed"),
    ):
        if needle in text:
            return reason
    return "other"
