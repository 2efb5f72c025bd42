#!/usr/bin/env python3
"""Gossip benchmark: N agents, each in its own network namespace on a bridge.

    sudo .venv/bin/python benchmarks/gossip.py [--sizes 3,8,16] [--runs 3] [--window 10]

For each size N, ``--runs`` times: N hosts (namespaces joined by a bridge, as
in tests/netns/netns.py, nothing in the root namespace) each run one
``skycluster agent --strategy gossip --secret ...``, all launched back to back.

* boot: from the first launch until every agent printed ``started``;
* full mesh: from the first launch until every agent has a nodeup for all N-1
  others (each agent's ``time`` of the nodeup that completed its view);
* after last start: full mesh minus the moment the last agent printed
  ``started``, i.e. discovery and linking without the interpreters' start-up;
* heartbeat traffic: after the mesh, an nftables counter in every host counts
  the UDP datagrams to the gossip port it sends (output hook) and receives
  (input hook, minus its own looped-back heartbeats) over ``--window``
  seconds; bytes are IP packets (IP and UDP headers included, 28 bytes).

Needs root and iproute2, nftables (``scripts/install-system-deps``).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "netns"))

from netns import Lab, NsHost, NsProcess, unavailable  # noqa: E402

SECRET = "benchmark-gossip-secret-8d2f61"
COOKIE = "benchmark-gossip-cookie"
PORT = 45892
COUNTERS = f"""
table inet skyg_count {{
  chain out {{ type filter hook output priority 0; policy accept; udp dport {PORT} counter; }}
  chain in {{ type filter hook input priority 0; policy accept; udp dport {PORT} counter; }}
}}
"""


def counters(host: NsHost) -> tuple[int, int, int, int]:
    """(packets out, bytes out, packets in, bytes in) to the gossip port."""
    text = host.run(["nft", "list", "table", "inet", "skyg_count"]).stdout
    found = [(int(p), int(b)) for p, b in re.findall(r"counter packets (\d+) bytes (\d+)", text)]
    (po, bo), (pi, bi) = found
    return po, bo, pi, bi


def one_run(n: int, window: float, interval: float, home: Path) -> dict[str, Any]:
    with Lab() as lab:
        hosts = lab.add_hosts(n)
        for host in hosts:
            host.run(["nft", "-f", "-"], input=COUNTERS)
        launched = time.time()
        agents: list[NsProcess] = [
            lab.start(
                host,
                f"n{host.index}",
                [
                    "--cookie",
                    COOKIE,
                    "--strategy",
                    "gossip",
                    "--secret",
                    SECRET,
                    "--gossip-interval",
                    str(interval),
                ],
                home=home,
            )
            for host in hosts
        ]
        names = [a.name for a in agents]  # waits for every "started"
        started = max(a.arrivals[0] for a in agents)
        complete = []
        for agent in agents:
            agent.wait_linked(set(names) - {agent.name}, timeout=120)
            seen: set[str] = set()
            for event in agent.events:
                if event.get("event") == "nodeup":
                    seen.add(event["node"])
                    if len(seen) == n - 1:
                        complete.append(float(event["time"]))
                        break
        mesh = max(complete) if complete else launched
        before = [counters(h) for h in hosts]
        t0 = time.monotonic()
        time.sleep(window)
        after = [counters(h) for h in hosts]
        elapsed = time.monotonic() - t0
        deltas = [
            [a - b for a, b in zip(x, y, strict=True)] for x, y in zip(after, before, strict=True)
        ]
        for agent in agents:
            if any(e.get("event") == "nodedown" for e in agent.events):
                raise RuntimeError(f"unexpected nodedown:\n{agent.describe()}")
        return {
            "n": n,
            "boot": started - launched,
            "mesh": mesh - launched,
            "after_last_start": max(0.0, mesh - started),
            "out_bytes_per_s": statistics.mean(d[1] for d in deltas) / elapsed,
            "out_packets_per_s": statistics.mean(d[0] for d in deltas) / elapsed,
            # the input hook also sees the host's own heartbeats (multicast loopback)
            "in_bytes_per_s": statistics.mean(d[3] - d[1] for d in deltas) / elapsed,
            "packet_bytes": sum(d[1] for d in deltas) / max(1, sum(d[0] for d in deltas)),
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="3,8,16", help="cluster sizes [3,8,16]")
    parser.add_argument("--runs", type=int, default=3, help="runs per size [3]")
    parser.add_argument("--window", type=float, default=10.0, help="traffic window, s [10]")
    parser.add_argument("--interval", type=float, default=1.0, help="gossip interval, s [1]")
    parser.add_argument("--json", type=Path, help="also write every sample here")
    args = parser.parse_args()
    reason = unavailable()
    if reason is not None:
        print(f"gossip benchmark skipped: {reason}", file=sys.stderr)
        return 1
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    samples: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="skyg-bench-") as home:
        for n in sizes:
            for run in range(args.runs):
                sample = one_run(n, args.window, args.interval, Path(home))
                samples.append(sample)
                print(
                    f"  N={n} run {run + 1}: mesh {sample['mesh']:.2f} s "
                    f"(after last start {sample['after_last_start'] * 1000:.0f} ms)",
                    file=sys.stderr,
                    flush=True,
                )
    print(
        f"\ngossip, one agent per network namespace, sealed heartbeats, interval "
        f"{args.interval:g} s, median of {args.runs} runs\n"
    )
    print(
        "| N | boot (all started) | full mesh | mesh after last start "
        "| heartbeat bytes/s sent per node | received from others per node | packet (IP) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for n in sizes:
        rows = [s for s in samples if s["n"] == n]

        def med(key: str, rows: list[dict[str, Any]] = rows) -> float:
            return float(statistics.median(r[key] for r in rows))

        print(
            f"| {n} | {med('boot'):.2f} s | {med('mesh'):.2f} s "
            f"| {med('after_last_start') * 1000:.0f} ms "
            f"| {med('out_bytes_per_s'):.0f} B/s ({med('out_packets_per_s'):.2f} pkt/s) "
            f"| {med('in_bytes_per_s'):.0f} B/s | {med('packet_bytes'):.0f} B |"
        )
    if args.json:
        args.json.write_text(json.dumps({"samples": samples}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
