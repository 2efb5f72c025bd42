"""Epmd strategy (the seed's ``Cluster.Strategy.Epmd``): link to a fixed list of
hosts, and retry the unreachable ones so that the cluster heals after restarts."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import ClassVar

from skycluster._backoff import Backoff
from skycluster.config import Option, parse_names, parse_seconds
from skycluster.errors import ConfigError
from skycluster.names import NodeName
from skycluster.strategy.base import Strategy, StrategyContext


class Epmd(Strategy):
    options: ClassVar[tuple[Option, ...]] = (
        Option("hosts", parse_names, "nodes to link to, name@host[:port],...", metavar="NAMES"),
        Option("retry_interval", parse_seconds, "seconds between retries [5]", metavar="S"),
    )

    def __init__(self, hosts: Sequence[str] | None = None, retry_interval: float = 5.0) -> None:
        if not hosts:
            raise ConfigError(
                "the epmd strategy needs the nodes to link to: --hosts a@host:port,b@host:port "
                "or SKYCLUSTER_HOSTS"
            )
        if isinstance(hosts, str):
            hosts = parse_names(hosts)
        self.hosts = [NodeName.parse(h) for h in hosts]
        if not retry_interval > 0:
            raise ConfigError(
                f"retry_interval must be a positive number of seconds, got {retry_interval!r}"
            )
        self.retry_interval = retry_interval

    async def run(self, ctx: StrategyContext) -> None:
        # Nodes of one deployment start together: retry soon at first (0.5 s, 1 s, ...),
        # then every retry_interval.
        backoff = Backoff(min(0.5, self.retry_interval), self.retry_interval)
        while True:
            linked = set(ctx.nodes())
            missing = [
                name
                for name in self.hosts
                if name.identity not in linked and name.identity != ctx.node_name.identity
            ]
            if missing:
                await ctx.connect(missing)
            await asyncio.sleep(backoff.next())

    def __repr__(self) -> str:
        return f"Epmd(hosts={[str(h) for h in self.hosts]!r}, retry_interval={self.retry_interval})"
