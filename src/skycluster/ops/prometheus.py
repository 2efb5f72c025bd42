"""Prometheus exposition of :class:`skycluster.ops.metrics.Metrics`, with the official
``prometheus-client`` (``pip install 'skycluster[metrics]'``).

The endpoint's ``/metrics`` uses a registry of its own per node. To add a node's
metrics to an application's registry instead::

    from prometheus_client import REGISTRY
    from skycluster.ops.prometheus import collector
    REGISTRY.register(collector(cluster))
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Protocol

from skycluster.ops.metrics import Metrics, Snapshot


class MetricsSource(Protocol):
    """What :func:`collector` reads at scrape time: a :class:`skycluster.Cluster`."""

    @property
    def name(self) -> str: ...

    def metrics_snapshot(self) -> Snapshot | None: ...


INSTALL_HINT = (
    "Prometheus metrics need the prometheus-client package: pip install 'skycluster[metrics]'\n"
)

try:
    from prometheus_client.core import (
        CollectorRegistry,
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
        Metric,
    )
    from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

    AVAILABLE = True
except ImportError:  # the optional extra is not installed
    AVAILABLE = False


class SkyclusterCollector:
    """A prometheus-client collector that reads a node's metrics at scrape time."""

    def __init__(self, snapshot: Callable[[], Snapshot | None], node: Callable[[], str]) -> None:
        self._snapshot = snapshot
        self._node = node

    def describe(self) -> list[Any]:
        return []  # metrics appear and disappear with the node: no fixed description

    def collect(self) -> Iterator[Metric]:
        s = self._snapshot()
        if s is None:
            return
        node = self._node()

        def family(kind: Any, name: str, doc: str, labels: list[str]) -> Any:
            return kind(name, doc, labels=["node", *labels])

        members = family(GaugeMetricFamily, "skycluster_members", "Links by state", ["state"])
        for state, count in s.members.items():
            members.add_metric([node, state], count)
        yield members
        transitions = family(
            CounterMetricFamily,
            "skycluster_link_transitions",
            "Membership changes: links up (dialled, accepted) and down (by reason)",
            ["transition", "reason"],
        )
        for (transition, reason), count in sorted(s.link_transitions.items()):
            transitions.add_metric([node, transition, reason], count)
        yield transitions
        connects = family(
            CounterMetricFamily,
            "skycluster_connects",
            "Dials of peers by result and failure reason",
            ["result", "reason"],
        )
        for (result, reason), count in sorted(s.connects.items()):
            connects.add_metric([node, result, reason], count)
        yield connects
        handshakes = family(
            CounterMetricFamily,
            "skycluster_handshake_failures",
            "Failed or refused handshakes by reason",
            ["reason"],
        )
        for reason, count in sorted(s.handshake_failures.items()):
            handshakes.add_metric([node, reason], count)
        yield handshakes
        for name, total, doc in (
            ("skycluster_heartbeat_timeouts", s.heartbeat_timeouts, "Peers silent too long"),
            (
                "skycluster_loop_stalls",
                s.loop_stalls,
                "Times the node's event loop ran nothing for a heartbeat interval or more",
            ),
            (
                "skycluster_link_flaps",
                s.link_flaps,
                "Links that went down less than 30 s after they came up (each dialled "
                "again after a growing wait)",
            ),
            (
                "skycluster_subscriber_overflows",
                s.subscriber_overflows,
                "Times a slow event subscriber's queue was compacted",
            ),
        ):
            counter = family(CounterMetricFamily, name, doc, [])
            counter.add_metric([node], total)
            yield counter
        unlinked = family(
            GaugeMetricFamily,
            "skycluster_unlinked_pairs",
            "Pairs of nodes that should be linked and are not, as the peer lists say",
            [],
        )
        unlinked.add_metric([node], s.unlinked_pairs)
        yield unlinked
        rtt = family(
            HistogramMetricFamily,
            "skycluster_heartbeat_rtt_seconds",
            "Heartbeat (PING to PONG) round-trip time",
            [],
        )
        rtt.add_metric([node], s.rtt.cumulative(), s.rtt.total)
        yield rtt
        for name, values, doc in (
            ("skycluster_bytes", s.bytes, "Bytes on the node's connections"),
            ("skycluster_frames", s.frames, "Frames on the node's links"),
        ):
            counter = family(CounterMetricFamily, name, doc, ["direction"])
            for direction, count in values.items():
                counter.add_metric([node, direction], count)
            yield counter
        dropped = family(
            CounterMetricFamily,
            "skycluster_gossip_packets_dropped",
            "Discovery packets discarded, by reason",
            ["reason"],
        )
        for reason, count in sorted(s.gossip_dropped.items()):
            dropped.add_metric([node, reason], count)
        yield dropped
        for name, values, doc in (
            ("skycluster_strategy_polls", s.strategy_polls, "Discovery rounds by topology"),
            ("skycluster_strategy_errors", s.strategy_errors, "Failed rounds and crashes"),
        ):
            counter = family(CounterMetricFamily, name, doc, ["topology"])
            for topology, count in sorted(values.items()):
                counter.add_metric([node, topology], count)
            yield counter


def exposition(metrics: Metrics, node: str) -> tuple[bytes, str]:
    """The text format of one node's metrics, and its content type."""
    if not AVAILABLE:
        raise ImportError(INSTALL_HINT)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SkyclusterCollector(metrics.snapshot, lambda: node))
    return generate_latest(registry), CONTENT_TYPE_LATEST


def collector(cluster: MetricsSource) -> SkyclusterCollector:
    """A collector for an application's own registry; it reads whichever node
    ``cluster`` runs at scrape time (nothing while it is stopped)."""
    if not AVAILABLE:
        raise ImportError(INSTALL_HINT)
    return SkyclusterCollector(cluster.metrics_snapshot, lambda: cluster.name)
