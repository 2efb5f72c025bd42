"""A custom strategy loaded by import path in ``test_cluster_api.py``
(``tests.integration.cluster_strategy_module:ListStrategy``)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import ClassVar

from skycluster import Strategy, StrategyContext
from skycluster.config import Option, parse_names

# Every ListStrategy that ran, by its node's identity (read by the test).
RAN: dict[str, list[str]] = {}


class ListStrategy(Strategy):
    """Link to ``hosts`` once, then idle until cancelled."""

    options: ClassVar[tuple[Option, ...]] = (
        Option("hosts", parse_names, "nodes to link to", metavar="NAMES"),
    )

    def __init__(self, hosts: Sequence[str]) -> None:
        self.hosts = list(hosts)

    async def run(self, ctx: StrategyContext) -> None:
        RAN.setdefault(ctx.node_name.identity, []).extend(self.hosts)
        await ctx.connect(self.hosts)
        await asyncio.Event().wait()


NOT_A_STRATEGY = object()
