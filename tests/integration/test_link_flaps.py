"""A peer whose link keeps dropping soon after it comes up: every flap is counted
(stats, metrics, /status), and one log line says what to look at."""

from __future__ import annotations

import logging

import pytest
from cluster_helpers import (
    LOOPBACK,
    async_test,
    dial_name,
    eventually,
    make,
    node_of,
    on_node,
    running,
)

A = f"a@{LOOPBACK}"
B = f"b@{LOOPBACK}"


@async_test
async def test_a_flapping_link_is_counted_every_time_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="skycluster.membership")
    b = make("b")
    async with running(b):
        a = make("a", peers=[dial_name(b)])
        async with running(a):
            for flaps in (1, 2, 3):
                await eventually(lambda: B in a.nodes() and A in b.nodes(), "a and b linked")
                node = node_of(b)
                # b's end of the link drops without a goodbye: a sees the
                # connection closed, and its strategy links b again.
                await on_node(b, lambda node=node: node.links[A].abort())
                await eventually(
                    lambda flaps=flaps: a.stats().get("link_flaps", 0) >= flaps,
                    f"flap {flaps} counted",
                )
            await eventually(lambda: B in a.nodes(), "linked again after the flaps")
            assert a.stats()["link_flaps"] == 3
            snapshot = a.metrics_snapshot()
            assert snapshot is not None and snapshot.link_flaps == 3
            assert (await a.status())["flapping"] == {B: 3}
    lines = [
        r
        for r in caplog.records
        if r.levelno >= logging.WARNING and "flaps" in r.getMessage() and B in r.getMessage()
    ]
    assert len(lines) == 1, [r.getMessage() for r in lines]
    message = lines[0].getMessage()
    assert "connection_closed" in message and "Look at" in message
