"""Ticks go out at whole intervals of the wall clock, whenever the link came up."""

from __future__ import annotations

import asyncio
import time

from cluster_helpers import async_test, dial_name, eventually, make, node_of, running

INTERVAL = 1.0


@async_test
async def test_an_idle_link_carries_frames_only_just_after_whole_seconds() -> None:
    timing = {"heartbeat_interval": INTERVAL, "heartbeat_timeout": 3.0}
    a, b = make("a", **timing), make("b", **timing)
    async with running(a, b):
        # Link up half way between two whole seconds: ticks kept to the link's own
        # rhythm would arrive half way between them too.
        await asyncio.sleep((1.5 - time.time() % 1.0) % 1.0)
        assert await a.connect(dial_name(b))
        await eventually(lambda: b.nodes() == [a.name], "b sees a")
        link = node_of(b).links[a.name]
        await asyncio.sleep(1.2)  # the link's first frames (peer lists) went out at once
        arrivals: list[float] = []
        last = link.last_received
        end = time.monotonic() + 3.1
        while time.monotonic() < end:
            await asyncio.sleep(0.005)
            if link.last_received != last:
                last = link.last_received
                arrivals.append(time.time() - (time.monotonic() - last))  # wall clock
        # after the whole second (negative: a timer that fired a hair early)
        phases = sorted(round((t + 0.05) % INTERVAL - 0.05, 3) for t in arrivals)
        assert len(phases) >= 2, phases  # a tick (or a round-trip sample) every second
        # generous: a loaded machine reads them late, but never half an interval late
        assert all(phase < 0.35 for phase in phases), phases
