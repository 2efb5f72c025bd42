"""What the DNS strategies share: one poll chain (ask, link, sleep, again;
libcluster's DNS strategies poll twice as often as configured), the resolver,
and the rule that a failed answer (NXDOMAIN, timeout, garbage) keeps the last
known nodes and is logged once until it changes."""

from __future__ import annotations

import abc
import asyncio
from collections import Counter
from typing import ClassVar

from skycluster.config import Option, parse_seconds, parse_text
from skycluster.dns.resolver import DnsError, Resolver, parse_server
from skycluster.errors import ConfigError
from skycluster.names import NodeName, valid_name
from skycluster.strategy.base import Strategy, StrategyContext


def check_server(text: str) -> str:
    parse_server(text)
    return text.strip()


DNS_SERVER = Option(
    "dns_server",
    check_server,
    "DNS server to ask, HOST[:PORT] [the first nameserver of /etc/resolv.conf]",
    metavar="HOST[:PORT]",
)
NODE_BASENAME = Option(
    "node_basename",
    parse_text,
    "name part of the peers' node names (application_name) [this node's]",
    ("LIBCLUSTER_NODE_BASENAME", "LIBCLUSTER_APPLICATION_NAME"),
    metavar="NAME",
)
POLLING_INTERVAL = Option(
    "polling_interval", parse_seconds, "seconds between polls [5; local: 1]", metavar="S"
)


class DnsPolling(Strategy):
    options: ClassVar[tuple[Option, ...]] = ()

    def __init__(
        self,
        node_basename: str | None = None,
        *,
        dns_server: str | None = None,
        polling_interval: float = 5.0,
        dns_timeout: float = 2.0,
    ) -> None:
        if not polling_interval > 0:
            raise ConfigError(
                f"polling_interval must be a positive number of seconds, got {polling_interval!r}"
            )
        if node_basename is not None and not valid_name(node_basename):
            raise ConfigError(
                f"invalid node basename {node_basename!r}: letters, digits, '_', '-', '.'"
            )
        try:
            self.resolver = Resolver(dns_server, timeout=dns_timeout)
        except ConfigError as exc:
            raise ConfigError(f"invalid --dns-server {dns_server!r}: {exc}") from None
        self.node_basename = node_basename
        self.polling_interval = polling_interval
        self.desired: dict[str, NodeName] | None = None
        self.errors: Counter[str] = Counter()
        self.polls = 0
        self._problem: str | None = None
        self._bad_targets: list[str] = []
        self._bad_reported: list[str] = []

    @abc.abstractmethod
    async def discover(self, ctx: StrategyContext, basename: str) -> list[NodeName]:
        """The nodes the DNS names now; DnsError keeps the last known set."""

    async def run(self, ctx: StrategyContext) -> None:
        basename = self.node_basename or ctx.node_name.name
        wanted: set[str] = set()
        while True:
            self.polls += 1
            self._bad_targets = []
            try:
                found = await self.discover(ctx, basename)
            except DnsError as exc:
                self.errors[exc.kind] += 1
                self._report(ctx, f"{exc}; keeping the {len(wanted)} known nodes")
            else:
                if self._problem is not None:
                    ctx.log.warning("DNS answers again (%s)", self.resolver)
                    self._problem = None
                desired = {n.identity: n for n in found if n.identity != ctx.node_name.identity}
                if desired.keys() != (self.desired or {}).keys():
                    ctx.log.info("DNS names %d nodes: %s", len(desired), ", ".join(desired))
                self.desired = desired
                if self._bad_targets and self._bad_targets != self._bad_reported:
                    ctx.log.warning(
                        "DNS named hosts that cannot be nodes, skipped: %s",
                        ", ".join(self._bad_targets[:5]),
                    )
                self._bad_reported = self._bad_targets
                linked = set(ctx.nodes())
                # Removed even when not linked right now: the mesh must not link
                # them again from a peer's older list (docs/membership.md).
                gone = sorted(wanted - desired.keys())
                if gone:
                    ctx.log.info("removing nodes DNS no longer names: %s", ", ".join(gone))
                    await ctx.disconnect(gone)
                wanted = set(desired)
                missing = [n for i, n in desired.items() if i not in linked]
                if missing:
                    await ctx.connect(missing)
            await asyncio.sleep(self.polling_interval)

    def _report(self, ctx: StrategyContext, message: str) -> None:
        if message != self._problem:
            ctx.log.warning("%s", message)
        self._problem = message

    def node(self, ctx: StrategyContext, basename: str, host: str) -> NodeName | None:
        """``basename@host``, or None (counted, logged once) for a host that cannot
        be a node's host (garbage in a DNS answer)."""
        try:
            return NodeName.parse(f"{basename}@[{host}]" if ":" in host else f"{basename}@{host}")
        except ConfigError:
            self.errors["bad_target"] += 1
            self._bad_targets.append(repr(host[:80]))
            return None
