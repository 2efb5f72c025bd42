"""Hosts-file strategy (libcluster's ``Cluster.Strategy.ErlangHosts``): read hosts
from a file, ask each host's port mapper which nodes it knows, link to them,
and repeat. The file is Erlang's ``.hosts.erlang`` (``'host1'.`` per line) or
plain text (one host per line, ``#`` comments)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable
from pathlib import Path
from typing import ClassVar

from skycluster.config import Option, parse_seconds, parse_text
from skycluster.distribution import portmapper
from skycluster.errors import ConfigError
from skycluster.names import NodeName, valid_name
from skycluster.strategy.base import Strategy, StrategyContext

_ERLANG_TERM = re.compile(r"""^\s*'([^']*)'\s*\.\s*(%.*)?$""")
MAX_FILE = 1024 * 1024


class HostsFileError(ValueError):
    pass


def parse_hosts(text: str, source: str) -> tuple[list[str], list[str]]:
    """Hosts in ``text`` and one warning per malformed line (naming file and line)."""
    hosts: list[str] = []
    warnings: list[str] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", "%")):
            continue
        match = _ERLANG_TERM.match(line)
        candidate = match.group(1) if match else line.split("#", 1)[0].strip()
        try:
            parsed = NodeName.parse(f"probe@{candidate}")
        except ConfigError:
            parsed = None
        # A port is not part of a host (the port mapper's port is SKYCLUSTER_EPMD_PORT);
        # "[::1]" is the host "::1" (the port mapper is asked at the bare address).
        if parsed is None or parsed.port is not None:
            warnings.append(
                f"{source}:{number}: {raw.strip()[:80]!r} is not a host; write one host per "
                "line, plain (host1) or as in .hosts.erlang ('host1'.), with no port"
            )
            continue
        host = parsed.host
        if host not in hosts:
            hosts.append(host)
    return hosts, warnings


class HostsFile(Strategy):
    options: ClassVar[tuple[Option, ...]] = (
        Option("hosts_file", parse_text, "file listing hosts [.hosts.erlang]", metavar="PATH"),
        Option(
            "polling_interval", parse_seconds, "seconds between polls [5; local: 1]", metavar="S"
        ),
    )

    def __init__(self, hosts_file: str = ".hosts.erlang", polling_interval: float = 5.0) -> None:
        if not polling_interval > 0:
            raise ConfigError(
                f"polling_interval must be a positive number of seconds, got {polling_interval!r}"
            )
        self.path = Path(hosts_file).expanduser()
        self.polling_interval = polling_interval
        self._last_problem: str | None = None

    def read_hosts(self, ctx: StrategyContext) -> list[str]:
        """The hosts in the file; a missing or malformed file is warned about once."""
        problems: list[str] = []
        try:
            if self.path.stat().st_size > MAX_FILE:
                raise OSError(f"larger than {MAX_FILE} bytes")
            text = self.path.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            why = exc.strerror or str(exc)
            problems.append(f"cannot read hosts file {self.path}: {why}; the node keeps running")
            hosts: list[str] = []
        else:
            hosts, problems = parse_hosts(text, str(self.path))
        summary = "\n".join(problems)
        if summary and summary != self._last_problem:
            for problem in problems:
                ctx.log.warning("%s", problem)
        self._last_problem = summary or None
        return hosts

    async def run(self, ctx: StrategyContext) -> None:
        if ctx.port_mapper is None:
            raise ConfigError("the hosts strategy needs the port mapper (port_mapper=True)")
        while True:
            hosts = self.read_hosts(ctx)
            # Each host's nodes are linked as soon as it answers: a dead host delays nobody.
            await asyncio.gather(*(self._link_host(ctx, h) for h in hosts))
            await asyncio.sleep(self.polling_interval)

    async def _link_host(self, ctx: StrategyContext, host: str) -> None:
        found = await self._names(ctx, host)
        linked = set(ctx.nodes())
        await ctx.connect(n for n in found if n.identity not in linked)

    async def _names(self, ctx: StrategyContext, host: str) -> Iterable[NodeName]:
        settings = ctx.port_mapper
        assert settings is not None
        try:
            found = await portmapper.names(host, epmd_port=settings.port, timeout=settings.timeout)
        except portmapper.PortMapperError as exc:
            ctx.log.debug("cannot list the nodes of %s: %s", host, exc)
            ctx.poll_failed(f"{host}: {exc}")
            return []
        return [NodeName(name, host.strip("[]"), port) for name, port in found if valid_name(name)]

    def __repr__(self) -> str:
        return f"HostsFile(hosts_file={str(self.path)!r}, polling_interval={self.polling_interval})"
