"""An application that links to an agent, then blocks its own asyncio event loop.

    python blocking_app.py MODE NAME SEED [SECONDS]

MODE is ``sleep`` (``time.sleep`` inside the loop) or ``cpu`` (pure-Python
arithmetic inside the loop, holding the GIL between switches). NAME is this
node's ``name@127.0.0.1:port``, SEED the agent's. The cookie comes from
``SKYCLUSTER_COOKIE``. Prints JSON lines: ``linked`` once the agent is linked,
``done`` after the blocking section with the nodes linked then and every
membership event the application saw meanwhile.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from skycluster import Cluster, NodeDown, NodeUp
from skycluster.strategy import Epmd


def say(**record: Any) -> None:
    print(json.dumps(record), flush=True)


def block(mode: str, seconds: float) -> int:
    """Keep this thread busy for ``seconds`` without yielding to the event loop."""
    if mode == "sleep":
        time.sleep(seconds)
        return 0
    rounds = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        total = 0
        for i in range(10_000):
            total += i * i % 7
        rounds += 1
    return rounds


async def main(mode: str, name: str, seed: str, seconds: float) -> None:
    async with Cluster(name, topologies={"seed": Epmd(hosts=[seed], retry_interval=0.2)}) as c:
        linked = await c.wait_for_nodes(1, timeout=20)
        events = c.subscribe_blocking()  # what happens from now on
        say(event="linked", nodes=linked)
        began = time.monotonic()
        rounds = block(mode, seconds)  # the application's own loop is stuck here
        blocked = time.monotonic() - began
        seen = []
        while True:
            try:
                event = events.get(timeout=0)
            except TimeoutError:
                break
            if isinstance(event, NodeUp | NodeDown):
                seen.append({"event": type(event).__name__, "node": event.node})
        say(event="done", nodes=c.nodes(), seen=seen, blocked=blocked, rounds=rounds)


if __name__ == "__main__":
    if len(sys.argv) not in (4, 5) or sys.argv[1] not in ("sleep", "cpu"):
        sys.exit(f"usage: {sys.argv[0]} sleep|cpu NAME SEED [SECONDS]")
    seconds = float(sys.argv[4]) if len(sys.argv) == 5 else 10.0
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], seconds))
