"""LocalEpmd strategy (libcluster's ``Cluster.Strategy.LocalEpmd``): link to every
node registered with this host's port mapper. libcluster looks once at start;
this one keeps polling, so that nodes started later are linked too."""

from __future__ import annotations

import asyncio
from typing import ClassVar

from skycluster.config import Option, parse_seconds
from skycluster.distribution import portmapper
from skycluster.errors import ConfigError
from skycluster.names import NodeName, valid_name
from skycluster.strategy.base import Strategy, StrategyContext


class LocalEpmd(Strategy):
    options: ClassVar[tuple[Option, ...]] = (
        Option(
            "polling_interval", parse_seconds, "seconds between polls [5; local: 1]", metavar="S"
        ),
    )

    def __init__(self, polling_interval: float = 1.0) -> None:
        if not polling_interval > 0:
            raise ConfigError(
                f"polling_interval must be a positive number of seconds, got {polling_interval!r}"
            )
        self.polling_interval = polling_interval

    async def run(self, ctx: StrategyContext) -> None:
        if ctx.port_mapper is None:
            raise ConfigError("the local strategy needs the port mapper (port_mapper=True)")
        settings = ctx.port_mapper
        host = ctx.node_name.host
        failures = 0
        while True:
            try:
                found = await portmapper.names(
                    settings.client_host, epmd_port=settings.port, timeout=settings.timeout
                )
                failures = 0
            except portmapper.PortMapperError as exc:
                failures += 1
                if failures >= 2:  # one miss is a port mapper changing hands: no news
                    ctx.poll_failed(exc)
                if failures == 2:
                    ctx.log.warning("cannot list this host's nodes: %s", exc)
                found = []
            linked = set(ctx.nodes())
            targets = [NodeName(name, host, port) for name, port in found if valid_name(name)]
            await ctx.connect(t for t in targets if t.identity not in linked)
            await asyncio.sleep(self.polling_interval)

    def __repr__(self) -> str:
        return f"LocalEpmd(polling_interval={self.polling_interval})"
