#!/usr/bin/env python3
"""The membership simulator, at sizes and fault patterns no machine here can run.

    python benchmarks/simulate.py seeds [--seeds 1000] [--nodes 6]   # random faults
    python benchmarks/simulate.py seeds --seed 1234                   # replay one seed
    python benchmarks/simulate.py runs [--nodes 1000]                 # the reported runs

``seeds`` runs the random-fault scenario (skycluster.membership.simulator.chaos)
once per seed, with a progress bar on stderr and a summary table at the end; a
failing seed prints itself and its faults, and ``--seed`` replays it exactly.

``runs`` drives N cores in virtual time (docs/membership.md has the figures):
formation from one seed node then idle; the same with 5 % loss; a partition into
two halves for 60 s then heal; 10 % of the nodes restarting at once.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

from skycluster.membership.simulator import (
    NetworkModel,
    Simulation,
    Violation,
    chaos,
    time_to_mesh,
)


def progress(done: int, total: int, note: str) -> None:
    if done != total and done % max(1, total // 100):
        return  # one line update per percent
    width = 30
    filled = width * done // max(1, total)
    bar = "#" * filled + "." * (width - filled)
    print(f"\r[{bar}] {done}/{total} {note}   ", end="", file=sys.stderr, flush=True)
    if done == total:
        print(file=sys.stderr)


def run_seeds(args: argparse.Namespace) -> int:
    if args.seed is not None:
        seeds = [args.seed]
    else:
        seeds = list(range(args.first, args.first + args.seeds))
    failures: list[str] = []
    downs: list[int] = []
    events = 0
    began = time.monotonic()
    for done, seed in enumerate(seeds, 1):
        try:
            result = chaos(seed, args.nodes, duration=args.duration, faults=args.faults)
        except Violation as exc:
            failures.append(str(exc))
            print(
                f"\nFAILED: {exc}\n  replay: python benchmarks/simulate.py seeds --seed {seed} "
                f"--nodes {args.nodes} --duration {args.duration} --faults {args.faults}",
                file=sys.stderr,
            )
        else:
            downs.append(result.node_downs)
            events += result.events
            if args.seed is not None:
                print("faults:", "; ".join(result.faults))
        progress(done, len(seeds), f"seeds, {len(failures)} failed")
    took = time.monotonic() - began
    rows = [
        ("seeds", str(len(seeds))),
        ("nodes per run", str(args.nodes)),
        ("faults per run", str(args.faults)),
        ("failed", str(len(failures))),
        ("NodeDowns per run (median)", f"{statistics.median(downs):.0f}" if downs else "-"),
        ("events simulated", str(events)),
        ("wall time", f"{took:.1f} s ({took / len(seeds) * 1000:.0f} ms per seed)"),
    ]
    table(rows)
    return 1 if failures else 0


def table(rows: list[tuple[str, str]]) -> None:
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")


def formation(n: int, loss: float, seed: int, say: Callable[[str], None]) -> Simulation:
    net = NetworkModel(loss=loss)
    sim = Simulation(seed, n, strategy="seed", network=net, poll_interval=5.0)
    say(f"{n} nodes forming from one seed node (loss {loss:.0%})")
    took = time_to_mesh(sim, 300.0, step=0.5)
    sim.report["time to full mesh"] = "never (300 s)" if took is None else f"{took:.1f} s"
    c = sim.counters
    sim.report["peer-list bytes during formation"] = (
        f"{c.peer_list_bytes / 1e6:.1f} MB ({c.peer_list_bytes / n / 1e3:.0f} kB per node), "
        f"{c.peer_list_frames} frames"
    )
    sim.report["dials during formation"] = f"{c.dials} ({c.dials / n:.1f} per node)"
    sim.report["NodeDowns during formation"] = str(c.node_downs)
    return sim


def idle(sim: Simulation, seconds: float) -> None:
    sim.run_until(sim.now + 2.0)  # let the last peer-list changes go out
    per_node = sim.idle_frames(seconds)
    sim.report["frames per node per second at idle"] = (
        f"{per_node:.0f} sent (ticks: one per idle link per interval)"
    )


class Reports:
    """Each run's table, printed as soon as the run ends."""

    def append(self, item: tuple[str, dict[str, str]]) -> None:
        title, report = item
        print(f"\n## {title}", flush=True)
        table(list(report.items()))
        sys.stdout.flush()


def run_reports(args: argparse.Namespace) -> int:
    n = args.nodes
    began = time.monotonic()

    def say(what: str) -> None:
        print(f"[{time.monotonic() - began:6.1f} s] {what}", file=sys.stderr, flush=True)

    reports = Reports()

    sim = formation(n, 0.0, args.first, say)
    idle(sim, args.idle)
    reports.append((f"{n} nodes, formation then idle", sim.report))

    say("partition into halves for 60 s, then heal")
    half = {ident: (0 if i < n // 2 else 1) for i, ident in enumerate(sim.idents)}
    downs_before = sim.counters.node_downs
    sim.partition(half)
    sim.run_until(sim.now + 60.0)
    downs = sim.counters.node_downs - downs_before
    sim.heal()
    took = time_to_mesh(sim, 300.0, step=0.5)
    part = {
        "NodeDowns during the partition": f"{downs} (each node loses the other half)",
        "time to full mesh after heal": "never (300 s)" if took is None else f"{took:.1f} s",
    }
    reports.append((f"{n} nodes, halves cut for 60 s", part))

    say("10 % of the nodes restart at once")
    sim.run_until(sim.now + 5.0)
    before = sim.counters.node_downs
    restarted = sim.idents[1::10][: n // 10]
    for ident in restarted:
        sim.restart(ident, "seed")
    took = time_to_mesh(sim, 300.0, step=0.5)
    spurious = sum(1 for proc in sim.live() for ident, up in proc.reported.items() if not up)
    reports.append(
        (
            f"{n} nodes, {len(restarted)} restart at once",
            {
                "time to full mesh": "never (300 s)" if took is None else f"{took:.1f} s",
                "NodeDowns seen": str(sim.counters.node_downs - before),
                "of which for nodes that stayed up": str(spurious),
            },
        )
    )

    say(f"{n} nodes with 5 % loss")
    lossy = formation(n, 0.05, args.first + 1, say)
    idle(lossy, args.idle)
    reports.append((f"{n} nodes, 5 % loss", lossy.report))

    say("done")
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("seeds", help="random faults, one run per seed")
    s.add_argument("--seeds", type=int, default=1000)
    s.add_argument("--first", type=int, default=0)
    s.add_argument("--seed", type=int, help="replay this seed only")
    s.add_argument("--nodes", type=int, default=6)
    s.add_argument("--duration", type=float, default=40.0)
    s.add_argument("--faults", type=int, default=8)
    r = sub.add_parser("runs", help="the reported runs (1,000 nodes)")
    r.add_argument("--nodes", type=int, default=1000)
    r.add_argument("--first", type=int, default=1)
    r.add_argument("--idle", type=float, default=5.0, help="virtual seconds of idle measured")
    args = p.parse_args()
    return run_seeds(args) if args.mode == "seeds" else run_reports(args)


if __name__ == "__main__":
    sys.exit(main())
