"""The strategy contract (libcluster's ``Cluster.Strategy`` behaviour).

A strategy discovers node names and asks the node to link to them. It never
touches the node's sockets. Its :meth:`Strategy.run` coroutine runs on the
node's own event loop, under the cluster's supervision: when it raises, the
error is logged and it is started again after a backoff; when the cluster
stops, it is cancelled. Several strategies run side by side, one per topology.
"""

from __future__ import annotations

import abc
import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from skycluster.config import Option
from skycluster.distribution.settings import PortMapperSettings
from skycluster.names import NodeName

if TYPE_CHECKING:
    from skycluster.distribution.node import Node

ConnectHook = Callable[[NodeName], Awaitable[bool]]
DisconnectHook = Callable[[str], Awaitable[bool]]
ListHook = Callable[[], list[str]]


class Strategy(abc.ABC):
    """Base class of all strategies. Subclasses take their options as
    constructor arguments and list them in ``options`` for the CLI and the
    environment (``--hosts`` / ``SKYCLUSTER_HOSTS`` for an option ``hosts``)."""

    options: ClassVar[tuple[Option, ...]] = ()

    @classmethod
    def from_options(cls, values: Mapping[str, Any]) -> Strategy:
        """Build from parsed option values (CLI flags, environment)."""
        return cls(**values)

    @abc.abstractmethod
    async def run(self, ctx: StrategyContext) -> None:
        """Discover and connect until cancelled. Raising means: restart me later."""


@dataclass(frozen=True)
class Topology:
    """A strategy plus optional replacements of how it connects, disconnects and
    lists nodes (libcluster's ``connect``/``disconnect``/``list_nodes`` hooks)."""

    strategy: Strategy
    connect: ConnectHook | None = None
    disconnect: DisconnectHook | None = None
    list_nodes: ListHook | None = None


class StrategyContext:
    """What a running strategy may use: its node's name, connect/disconnect/nodes."""

    def __init__(self, topology: str, node: Node, hooks: Topology) -> None:
        self.topology = topology
        self.node_name: NodeName = node.name
        self.dist_port: int | None = node.settings.dist_port
        self.port_mapper: PortMapperSettings | None = node.settings.port_mapper
        self.log = logging.getLogger(f"skycluster.strategy.{topology}")
        self._node = node
        # The node hears which topology asks: a strategy's removal stands until that
        # strategy lists the node again (docs/membership.md).
        self._connect: ConnectHook = hooks.connect or functools.partial(
            node.connect, topology=topology
        )
        self._disconnect: DisconnectHook = hooks.disconnect or _async(
            functools.partial(node.disconnect, topology=topology)
        )
        self._list: ListHook = hooks.list_nodes or node.nodes

    async def connect(self, names: Iterable[NodeName | str]) -> dict[str, bool]:
        """Link to every node in ``names`` at once; returns identity -> linked.
        Invalid names are logged and skipped. Emits telemetry ``strategy.poll``."""
        began = asyncio.get_running_loop().time()
        results = await self._connect_all(names)
        took = asyncio.get_running_loop().time() - began
        failed = sum(1 for ok in results.values() if not ok)
        measurements = {"duration": took, "nodes": float(len(results)), "failed": float(failed)}
        self.emit("strategy.poll", measurements)
        return results

    def emit(self, event: str, measurements: dict[str, float], **metadata: Any) -> None:
        """A telemetry event tagged with this topology (``strategy.error`` when a poll
        fails, ``gossip.dropped`` for a discarded packet; see :mod:`skycluster.telemetry`)."""
        self._node.emit(event, measurements, topology=self.topology, **metadata)

    def poll_failed(self, error: object) -> None:
        """Report a failed discovery round (telemetry ``strategy.error``)."""
        self.emit("strategy.error", {}, error=str(error))

    async def _connect_all(self, names: Iterable[NodeName | str]) -> dict[str, bool]:
        targets: dict[str, NodeName] = {}
        for name in names:
            try:
                parsed = NodeName.parse(name) if isinstance(name, str) else name
            except ValueError as exc:
                self.log.warning("%s", exc)
                continue
            if parsed.identity != self.node_name.identity:
                targets[parsed.identity] = parsed
        results = await asyncio.gather(*(self._connect(n) for n in targets.values()))
        return dict(zip(targets, results, strict=True))

    async def disconnect(self, identities: Iterable[str]) -> None:
        for identity in identities:
            await self._disconnect(identity)

    def nodes(self) -> list[str]:
        """Identities of the nodes currently linked (hidden ones excluded)."""
        return self._list()

    @property
    def advertised_name(self) -> NodeName:
        """This node's name with the port where it accepts links, ``name@host:port``:
        what a strategy announces so that others can dial it."""
        return self.node_name.with_port(self._node.port or self.node_name.port)

    def count(self, key: str, n: int = 1) -> None:
        """Add ``n`` to the counter ``key`` in ``Cluster.stats()``."""
        self._node.counters.add(key, n)


def _async(function: Callable[[str], bool]) -> DisconnectHook:
    async def call(identity: str) -> bool:
        return function(identity)

    return call
