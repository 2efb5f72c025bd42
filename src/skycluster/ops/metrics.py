"""Built-in metrics: plain counters and a histogram fed by telemetry events.

:class:`Metrics` is a telemetry handler (it needs no third-party package);
:mod:`skycluster.ops.prometheus` turns a :meth:`Metrics.snapshot` into the
Prometheus text format with the official ``prometheus-client``.
"""

from __future__ import annotations

import bisect
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from skycluster.telemetry import Detach, Measurements, Metadata

if TYPE_CHECKING:
    from skycluster.distribution.node import Node
    from skycluster.events import EventBus

# Heartbeat round trips on a LAN are well under a millisecond; across zones tens.
RTT_BUCKETS: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip


@dataclass
class Histogram:
    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)  # per bucket, not cumulative; last is +Inf
    total: float = 0.0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    def cumulative(self) -> list[tuple[str, int]]:
        """Prometheus buckets: (upper bound, observations <= bound), ending with +Inf."""
        running, out = 0, []
        for bound, count in zip((*map(repr, self.bounds), "+Inf"), self.counts, strict=True):
            running += count
            out.append((bound, running))
        return out


@dataclass
class Snapshot:
    """Every metric at one moment (label tuples as keys)."""

    members: dict[str, int]  # state -> count: up, hidden, connecting, handshaking
    link_transitions: dict[tuple[str, str], int]  # (up|down, reason) -> count
    connects: dict[tuple[str, str], int]  # (ok|error, reason) -> count
    handshake_failures: dict[str, int]  # reason -> count
    heartbeat_timeouts: int
    loop_stalls: int
    link_flaps: int  # links that went down soon after they came up
    unlinked_pairs: int  # pairs that should be linked and are not (membership core)
    rtt: Histogram
    bytes: dict[str, int]  # in|out -> count
    frames: dict[str, int]
    gossip_dropped: dict[str, int]  # reason -> count
    strategy_polls: dict[str, int]  # topology -> count
    strategy_errors: dict[str, int]
    subscriber_overflows: int


class Metrics:
    """Counts a node's telemetry events; reads its gauges when asked."""

    def __init__(self, node: Node, bus: EventBus) -> None:
        self._node = node
        self._bus = bus
        self._lock = threading.Lock()
        self.link_transitions: Counter[tuple[str, str]] = Counter()
        self.connects: Counter[tuple[str, str]] = Counter()
        self.handshake_failures: Counter[str] = Counter()
        self.heartbeat_timeouts = 0
        self.loop_stalls = 0
        self.link_flaps = 0
        self.rtt = Histogram(RTT_BUCKETS)
        self.gossip_dropped: Counter[str] = Counter()
        self.strategy_polls: Counter[str] = Counter()
        self.strategy_errors: Counter[str] = Counter()
        handlers: dict[str, Callable[[Measurements, Metadata], None]] = {
            "link.up": self._link_up,
            "link.down": self._link_down,
            "connect.ok": self._connect,
            "connect.error": self._connect,
            "handshake.rejected": self._handshake,
            "heartbeat.timeout": self._timeout,
            "loop.stall": self._stall,
            "link.flap": self._flap,
            "heartbeat.rtt": self._rtt,
            "gossip.dropped": self._gossip,
            "strategy.poll": self._poll,
            "strategy.error": self._strategy_error,
        }
        self._handlers = handlers
        self._detach: Detach = node.telemetry.attach(list(handlers), self._handle)

    def close(self) -> None:
        self._detach.close()

    def _handle(self, event: str, measurements: Measurements, metadata: Metadata) -> None:
        with self._lock:
            self._handlers[event](measurements, metadata)

    def _link_up(self, m: Measurements, md: Metadata) -> None:
        if not md.get("hidden"):
            self.link_transitions[
                "up", "dialled" if md.get("direction") == "out" else "accepted"
            ] += 1

    def _link_down(self, m: Measurements, md: Metadata) -> None:
        if not md.get("hidden"):
            self.link_transitions["down", str(md.get("reason"))] += 1

    def _connect(self, m: Measurements, md: Metadata) -> None:
        reason = md.get("reason")
        self.connects["ok" if reason is None else "error", str(reason or "")] += 1

    def _handshake(self, m: Measurements, md: Metadata) -> None:
        self.handshake_failures[str(md.get("reason"))] += 1

    def _timeout(self, m: Measurements, md: Metadata) -> None:
        self.heartbeat_timeouts += 1

    def _stall(self, m: Measurements, md: Metadata) -> None:
        self.loop_stalls += 1

    def _flap(self, m: Measurements, md: Metadata) -> None:
        self.link_flaps += 1

    def _rtt(self, m: Measurements, md: Metadata) -> None:
        self.rtt.observe(float(m.get("rtt", 0.0)))

    def _gossip(self, m: Measurements, md: Metadata) -> None:
        self.gossip_dropped[str(md.get("reason"))] += int(m.get("count", 1))

    def _poll(self, m: Measurements, md: Metadata) -> None:
        self.strategy_polls[str(md.get("topology"))] += 1

    def _strategy_error(self, m: Measurements, md: Metadata) -> None:
        self.strategy_errors[str(md.get("topology"))] += 1

    def snapshot(self) -> Snapshot:
        node = self._node
        links = list(node.links.values())
        hidden = sum(1 for link in links if link.peer is not None and link.peer.hidden)
        handshaking = sum(1 for link in list(node.connections) if not link.up)
        traffic = node.traffic
        unlinked = node.decider.unlinked_pairs if node.decider is not None else 0
        with self._lock:
            rtt = Histogram(self.rtt.bounds)
            rtt.counts, rtt.total = list(self.rtt.counts), self.rtt.total
            return Snapshot(
                members={
                    "up": len(links) - hidden,
                    "hidden": hidden,
                    "connecting": node.dials_in_flight,
                    "handshaking": handshaking,
                },
                link_transitions=dict(self.link_transitions),
                connects=dict(self.connects),
                handshake_failures=dict(self.handshake_failures),
                heartbeat_timeouts=self.heartbeat_timeouts,
                loop_stalls=self.loop_stalls,
                link_flaps=self.link_flaps,
                unlinked_pairs=unlinked,
                rtt=rtt,
                bytes={"in": traffic.bytes_in, "out": traffic.bytes_out},
                frames={"in": traffic.frames_in, "out": traffic.frames_out},
                gossip_dropped=dict(self.gossip_dropped),
                strategy_polls=dict(self.strategy_polls),
                strategy_errors=dict(self.strategy_errors),
                subscriber_overflows=self._bus.overflows,
            )

    def as_dict(self) -> dict[str, Any]:
        """The snapshot as plain data (for tests and JSON)."""
        s = self.snapshot()
        return {
            "members": s.members,
            "link_transitions": {f"{a}/{b}": n for (a, b), n in s.link_transitions.items()},
            "connects": {f"{a}/{b}": n for (a, b), n in s.connects.items()},
            "handshake_failures": s.handshake_failures,
            "heartbeat_timeouts": s.heartbeat_timeouts,
            "loop_stalls": s.loop_stalls,
            "link_flaps": s.link_flaps,
            "unlinked_pairs": s.unlinked_pairs,
            "rtt_count": sum(s.rtt.counts),
            "bytes": s.bytes,
            "frames": s.frames,
            "gossip_dropped": s.gossip_dropped,
            "strategy_polls": s.strategy_polls,
            "strategy_errors": s.strategy_errors,
            "subscriber_overflows": s.subscriber_overflows,
        }
