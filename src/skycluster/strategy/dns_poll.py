"""DNS poll strategy (the seed's ``Cluster.Strategy.DNSPoll``): every polling
interval, ask for the A and AAAA records of a name and link to
``<node_basename>@<ip>`` for each address (the Fly.io style:
``myapp.internal`` names every instance)."""

from __future__ import annotations

from typing import ClassVar

from skycluster.config import Option, parse_text
from skycluster.errors import ConfigError
from skycluster.names import NodeName
from skycluster.strategy._dns_base import DNS_SERVER, NODE_BASENAME, POLLING_INTERVAL, DnsPolling
from skycluster.strategy.base import StrategyContext


class DnsPoll(DnsPolling):
    options: ClassVar[tuple[Option, ...]] = (
        Option(
            "dns_query",
            parse_text,
            "name whose A/AAAA records are the peers, e.g. myapp.internal",
            ("LIBCLUSTER_DNS_QUERY",),
            metavar="NAME",
        ),
        NODE_BASENAME,
        DNS_SERVER,
        POLLING_INTERVAL,
    )

    def __init__(
        self,
        dns_query: str | None = None,
        node_basename: str | None = None,
        *,
        dns_server: str | None = None,
        polling_interval: float = 5.0,
        dns_timeout: float = 2.0,
    ) -> None:
        if not dns_query or not dns_query.strip():
            raise ConfigError(
                "the dns strategy needs a name to ask for: --dns-query myapp.internal "
                "or SKYCLUSTER_DNS_QUERY"
            )
        super().__init__(
            node_basename,
            dns_server=dns_server,
            polling_interval=polling_interval,
            dns_timeout=dns_timeout,
        )
        self.query = dns_query.strip()

    async def discover(self, ctx: StrategyContext, basename: str) -> list[NodeName]:
        found = [self.node(ctx, basename, ip) for ip in await self.resolver.addresses(self.query)]
        return [n for n in found if n is not None]

    def __repr__(self) -> str:
        return f"DnsPoll(query={self.query!r}, server={str(self.resolver)!r})"
