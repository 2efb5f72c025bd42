#!/usr/bin/env python3
"""Scale benchmark: large clusters of skycluster agents beside Erlang distribution.

    python benchmarks/scale.py [--sizes 32,64,100,150] [--idle 30] [--json out.json]

For each implementation and cluster size N, on 127.0.0.1 only, with the same
nodes as benchmarks/membership.py (skycluster: ``agent --strategy epmd
--no-port-mapper``; Erlang: ``erl`` with ``net_ticktime`` 4 running
``erlang/skybench.erl``), each told about node 1 only:

* mesh: N nodes launched back to back; time from the first launch until every
  node has a nodeup for all N-1 others;
* idle: CPU of all nodes together over ``--idle`` seconds (default 30), RSS per
  node, and the nodedowns seen meanwhile (measured even when no mesh formed);
* ``--idle-downs SECONDS`` at N = ``--idle-downs-at`` (100): nodedowns over a
  long idle window (the issue's figure is 300 s);
* restart storm at N = ``--storm-at`` (100): a third of the nodes (never node
  1) are killed with SIGKILL and started again at once with the same names and
  ports; time until the full mesh is back (every survivor saw each restarted
  node come up again), and nodedowns the survivors saw for other nodes;
* overload at N = ``--overload-at`` (64): ``--hogs`` (4) busy-loop processes
  for ``--overload`` seconds (30); nodedowns seen, and the time from the end of
  the load until the mesh is full again.

Progress goes to stderr, the table to stdout at the end. Every process started
is ended on exit, Ctrl-C and errors included.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from benchnodes import (
    Cluster,
    Erlang,
    Impl,
    Node,
    Result,
    Skycluster,
    add_common_options,
    compare,
    new_result,
    progress,
    run_sizes,
    spawn,
    stop_processes,
)

POLL = 0.25  # seconds between checks of the nodes' views (cheap for the benchmark itself)
PROGRESS = 10.0  # seconds between progress lines while waiting


def poll_until(cluster: Cluster, pred: Callable[[], bool], timeout: float, label: str) -> bool:
    """Check `pred` (under the cluster's lock) every POLL s until true or `timeout`."""
    start = time.monotonic()
    next_note = start + PROGRESS
    while True:
        with cluster.cond:
            if pred():
                return True
            now = time.monotonic()
            if now - start >= timeout:
                return False
            if now >= next_note:
                next_note = now + PROGRESS
                full = sum(
                    1 for n in cluster.live if n.started and len(n.up) >= len(cluster.live) - 1
                )
                progress(
                    f"  {label}: {now - start:.0f} s, "
                    f"{full}/{len(cluster.live)} nodes see all peers"
                )
        time.sleep(POLL)


def downs(
    nodes: Sequence[Node], since: float, *, excluding: set[str] | frozenset[str] = frozenset()
) -> Counter[str]:
    """Nodedowns the nodes received after `since` for peers not in `excluding`, by reason."""
    reasons: Counter[str] = Counter()
    for node in nodes:
        for ev in reversed(node.events):
            if ev.received < since:
                break
            if ev.kind == "nodedown" and ev.peer not in excluding:
                reasons[ev.reason] += 1
    return reasons


def up_again_since(node: Node, since: float) -> set[str]:
    """Peers `node` printed a nodeup for after `since` and still has up."""
    seen = set()
    for ev in reversed(node.events):
        if ev.received < since:
            break
        if ev.kind == "nodeup":
            seen.add(ev.peer)
    return seen & node.up


def view_complete_at(cluster: Cluster) -> float | None:
    """When the last node's view became complete (node-printed time), if all are."""
    want = cluster.expected()
    times = [n.full_since(want) for n in cluster.live]
    if any(t is None for t in times):
        return None
    return max(t for t in times if t is not None)


# --------------------------------------------------------------------------- one size


def measure(
    impl: Impl,
    n: int,
    args: argparse.Namespace,
    logdir: Path,
    used_ports: set[int],
    deadline: float,
) -> Result:
    res = new_result(impl, n)
    m: dict[str, Any] = res["metrics"]
    s: dict[str, Any] = res["samples"]
    errors: list[str] = res["errors"]
    cluster_logs = logdir / f"{impl.name}-N{n}"
    cluster_logs.mkdir(parents=True, exist_ok=True)
    cluster = Cluster(impl, args, cluster_logs, used_ports)
    mesh_timeout = args.mesh_timeout or max(60.0, 2.0 * n)
    label = f"{impl.name} N={n}"
    try:
        progress(f"{label}: launching")
        t0 = time.time()
        cluster.launch_many(n)
        m["launch_s"] = time.time() - t0
        meshed = (
            poll_until(
                cluster,
                lambda: cluster.meshed() or cluster.dead_early() is not None,
                mesh_timeout,
                label,
            )
            and cluster.meshed()
        )
        if meshed:
            with cluster.cond:
                m["mesh_s"] = cluster.mesh_time(t0)
            progress(f"{label}: full mesh after {m['mesh_s']:.1f} s")
        else:
            dead = cluster.dead_early()
            with cluster.cond:
                views = cluster.views_summary()
            errors.append(
                f"mesh not formed within {mesh_timeout:g} s"
                + (f"; {dead.name} exited with {dead.proc.poll()}" if dead else "")
                + f": {views}"
            )
            progress(f"{label}: no full mesh within {mesh_timeout:g} s; measuring idle anyway")

        time.sleep(args.settle)
        progress(f"{label}: idle CPU over {args.idle:g} s")
        t_idle = time.time()
        usage = cluster.idle_usage(args.idle)
        m["cpu_total_pct"] = usage["cpu_pct_per_node"] * len(cluster.live)
        m["cpu_node_pct"] = usage["cpu_pct_per_node"]
        m["rss_mib"] = statistics.mean(usage["rss_mib"])
        m["rss_max_mib"] = max(usage["rss_mib"])
        m.update(impl.aux_memory())
        with cluster.cond:
            idle_reasons = downs(cluster.live, t_idle)
        m["idle_window_downs"] = sum(idle_reasons.values())
        s["idle_window_down_reasons"] = dict(idle_reasons)
        s["rss_mib"] = [round(x, 2) for x in usage["rss_mib"]]
        progress(
            f"{label}: idle CPU {m['cpu_total_pct']:.1f} % of a core (all nodes), "
            f"RSS {m['rss_mib']:.1f} MiB per node, {m['idle_window_downs']} nodedowns"
        )
        if not meshed:
            return res

        if args.idle_downs > 0 and n == args.idle_downs_at:
            if time.monotonic() + args.idle_downs > deadline:
                errors.append("idle nodedowns: skipped, --max-seconds budget")
            else:
                idle_downs(cluster, args.idle_downs, label, m, s)

        if n == args.storm_at:
            if time.monotonic() > deadline:
                errors.append("restart storm: skipped, --max-seconds budget")
            elif not restart_storm(cluster, mesh_timeout, args, label, m, s, errors):
                return res

        if n == args.overload_at:
            if time.monotonic() > deadline:
                errors.append("overload: skipped, --max-seconds budget")
            else:
                overload(cluster, mesh_timeout, args, label, m, s, errors)
    finally:
        progress(f"{label}: stopping {len(cluster.everyone)} processes")
        cluster.close()
    return res


def idle_downs(
    cluster: Cluster, seconds: float, label: str, m: dict[str, Any], s: dict[str, Any]
) -> None:
    progress(f"{label}: counting nodedowns over {seconds:g} s of idle")
    t0 = time.time()
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        time.sleep(min(left, 30.0))
        with cluster.cond:
            so_far = sum(downs(cluster.live, t0).values())
        progress(f"  {label}: {seconds - max(0.0, left - 30.0):.0f} s, {so_far} nodedowns")
    with cluster.cond:
        reasons = downs(cluster.live, t0)
    m["idle_downs"] = sum(reasons.values())
    m["idle_downs_window_s"] = seconds
    s["idle_down_reasons"] = dict(reasons)


def restart_storm(
    cluster: Cluster,
    mesh_timeout: float,
    args: argparse.Namespace,
    label: str,
    m: dict[str, Any],
    s: dict[str, Any],
    errors: list[str],
) -> bool:
    """Kill a third of the nodes (never node 1) and start them again at once."""
    victims = cluster.live[1::3][: max(1, len(cluster.live) // 3)]
    killed = frozenset(v.node for v in victims)
    survivors = [x for x in cluster.live if x not in victims]
    progress(f"{label}: restart storm, SIGKILL and restart {len(victims)} nodes")
    t0 = time.time()
    for v in victims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(v.proc.pid, signal.SIGKILL)
    for v in victims:
        with contextlib.suppress(subprocess.TimeoutExpired):
            v.proc.wait(timeout=10)
    fresh = [cluster.restart(v) for v in victims]
    restarts: Counter[str] = Counter()

    def back() -> bool:
        # A restart can lose a race for its name (Erlang's epmd may not have seen
        # the old process go yet): start that one again, a few times at most.
        for node in list(fresh):
            if node.exited and node.started is None and restarts[node.name] < 3:
                restarts[node.name] += 1
                fresh.remove(node)
                fresh.append(cluster.restart(node))
        if not cluster.meshed():
            return False
        return all(killed <= up_again_since(x, t0) for x in survivors)

    if not poll_until(cluster, back, mesh_timeout, f"{label} storm"):
        with cluster.cond:
            errors.append(
                f"restart storm: mesh not back within {mesh_timeout:g} s: "
                + cluster.views_summary()
            )
        return False
    with cluster.cond:
        done = view_complete_at(cluster)
    m["storm_killed"] = len(victims)
    m["storm_mesh_s"] = None if done is None else done - t0
    time.sleep(args.settle)
    with cluster.cond:
        spurious = downs(survivors, t0, excluding=killed)
        of_killed = sum(downs(survivors, t0).values()) - sum(spurious.values())
    m["storm_spurious_downs"] = sum(spurious.values())
    m["storm_downs_of_killed"] = of_killed
    s["storm_spurious_reasons"] = dict(spurious)
    if restarts:
        s["storm_restarted_again"] = dict(restarts)
    progress(
        f"{label}: mesh back after {m['storm_mesh_s']:.1f} s, "
        f"{m['storm_spurious_downs']} spurious nodedowns"
    )
    return True


def overload(
    cluster: Cluster,
    mesh_timeout: float,
    args: argparse.Namespace,
    label: str,
    m: dict[str, Any],
    s: dict[str, Any],
    errors: list[str],
) -> None:
    progress(f"{label}: overload, {args.hogs} busy loops for {args.overload:g} s")
    t0 = time.time()
    hogs = [
        spawn(
            [sys.executable, "-c", "while 1: pass"],
            env=dict(os.environ),
            stdout=subprocess.DEVNULL,
            stderr=sys.stderr,
        )
        for _ in range(args.hogs)
    ]
    try:
        time.sleep(args.overload)
    finally:
        stop_processes(hogs, grace=1.0)
    t1 = time.time()
    with cluster.cond:
        during = sum(downs(cluster.live, t0).values())
    progress(f"{label}: load ended, {during} nodedowns during it")
    if not poll_until(cluster, cluster.meshed, mesh_timeout, f"{label} after overload"):
        with cluster.cond:
            errors.append(
                f"overload: mesh not back within {mesh_timeout:g} s: " + cluster.views_summary()
            )
    else:
        with cluster.cond:
            done = view_complete_at(cluster)
        m["overload_mesh_after_s"] = None if done is None else max(0.0, done - t1)
    time.sleep(args.settle)
    with cluster.cond:
        reasons = downs(cluster.live, t0)
    m["overload_downs"] = sum(reasons.values())
    s["overload_down_reasons"] = dict(reasons)


# --------------------------------------------------------------------------- report


ROWS: list[tuple[str, str, str]] = [
    # key, label, format
    ("mesh_s", "launch -> full mesh (s)", "{:.1f}"),
    ("cpu_total_pct", "idle CPU, all nodes (% of one core)", "{:.1f}"),
    ("cpu_node_pct", "idle CPU per node (% of one core)", "{:.2f}"),
    ("idle_window_downs", "nodedowns during the idle CPU window", "{:d}"),
    ("rss_mib", "RSS per node, mean (MiB)", "{:.1f}"),
    ("rss_max_mib", "RSS per node, max (MiB)", "{:.1f}"),
    ("epmd_rss_mib", "epmd RSS, one per host (MiB)", "{:.1f}"),
    ("idle_downs", "nodedowns during the long idle window", "{:d}"),
    ("storm_killed", "restart storm: nodes killed and restarted", "{:d}"),
    ("storm_mesh_s", "restart storm: full mesh back (s)", "{:.1f}"),
    ("storm_spurious_downs", "restart storm: nodedowns of others", "{:d}"),
    ("storm_downs_of_killed", "restart storm: nodedowns of killed", "{:d}"),
    ("overload_downs", "overload: nodedowns", "{:d}"),
    ("overload_mesh_after_s", "overload: full mesh after the load (s)", "{:.1f}"),
]


def report(results: Sequence[Result], sizes: Sequence[int], out: TextIO) -> None:
    by = {(r["impl"], r["n"]): r for r in results}
    for n in sizes:
        ra, rb = by.get(("skycluster", n)), by.get(("erlang", n))
        if ra is None and rb is None:
            continue
        window = (ra or rb or {}).get("metrics", {}).get("idle_downs_window_s")

        def label_of(key: str, label: str, window: float | None = window) -> str:
            if key == "idle_downs" and window:
                return f"nodedowns during {window:g} s of idle"
            return label

        compare(n, ra, rb, ROWS, out, width=42, label_of=label_of)
        for r in (ra, rb):
            if r:
                print(f"  {r['impl']}: load average after it {r.get('loadavg_after')}", file=out)
                for e in r["errors"]:
                    print(f"  ! {r['impl']}: {e}", file=out)
                for key in (
                    "idle_window_down_reasons",
                    "idle_down_reasons",
                    "storm_spurious_reasons",
                    "overload_down_reasons",
                ):
                    reasons = r["samples"].get(key)
                    if reasons:
                        txt = ", ".join(f"{k} x{v}" for k, v in sorted(reasons.items()))
                        print(f"  {r['impl']} {key.replace('_', ' ')}: {txt}", file=out)


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--sizes", default="32,64,100,150", help="cluster sizes (default 32,64,100,150)")
    p.add_argument("--idle", type=float, default=30.0, help="idle CPU window, s (default 30)")
    p.add_argument(
        "--idle-downs",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="count nodedowns over this long an idle window at --idle-downs-at (0: skip; "
        "the issue's figure is 300)",
    )
    p.add_argument("--idle-downs-at", type=int, default=100, metavar="N")
    p.add_argument("--storm-at", type=int, default=100, metavar="N", help="0: no restart storm")
    p.add_argument("--overload-at", type=int, default=64, metavar="N", help="0: no overload")
    p.add_argument("--overload", type=float, default=30.0, help="overload duration, s")
    p.add_argument("--hogs", type=int, default=4, help="busy-loop processes during overload")
    add_common_options(p, settle=3.0, max_seconds=3600.0)
    args = p.parse_args(argv)
    args.seeds = "first"  # every node is told about node 1 only (benchnodes.Cluster)
    args.size_list = [int(x) for x in args.sizes.split(",") if x.strip()]
    if any(x < 3 for x in args.size_list):
        p.error("sizes must be >= 3")
    if args.idle <= 0 or args.overload <= 0 or args.hogs < 0:
        p.error("--idle and --overload must be > 0, --hogs >= 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    return run_sizes(
        args,
        {
            "skycluster": Skycluster(args, extra=["--no-port-mapper"]),
            "erlang": Erlang(args),
        },
        lambda impl, n, logdir, ports, deadline: measure(impl, n, args, logdir, ports, deadline),
        lambda results, impls: report(results, args.size_list, sys.stdout),
        prefix="skycluster-scale-",
        plan=(
            f"seeds: node 1 only; idle window {args.idle:g} s; storm at N={args.storm_at}, "
            f"overload at N={args.overload_at} ({args.hogs} busy loops, {args.overload:g} s)"
        ),
    )


if __name__ == "__main__":
    sys.exit(main())
