#!/usr/bin/env python3
"""Membership benchmark: skycluster agents side by side with Erlang distribution.

    python benchmarks/membership.py [--sizes 2,8,16,32] [--json out.json]

For each implementation and cluster size N, on 127.0.0.1 only:

* boot / mesh: N processes are launched back to back, each told about node 1
  only (``--seeds first``, the default) or about every node (``--seeds all``);
  the figures are the wall time from the first launch until every node printed
  ``started``, and until every node has printed a nodeup for all N-1 others.
* kill -9: the newest non-seed node is SIGKILLed; the time until the survivors
  print its nodedown (first survivor, and the median over all survivors).  A
  replacement node is then started and the time until it is in everyone's view
  is the "rejoin" figure.  Repeated ``--runs`` times.
* SIGSTOP: the same with a frozen node, found only by heartbeats / ticks.
* idle: RSS and USS per node (process plus its children: for Erlang that is
  beam.smp plus erl_child_setup; the shared epmd is reported on its own line)
  and CPU use, after the mesh has settled.

Both sides print the same JSON lines (skycluster's ``agent --json``;
``benchmarks/erlang/skybench.erl`` for Erlang), read here from their stdout.
Every process started is ended on exit, Ctrl-C included.
"""

from __future__ import annotations

import argparse
import signal
import statistics
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from benchnodes import (
    Cluster,
    Erlang,
    Impl,
    Result,
    Skycluster,
    add_common_options,
    compare,
    median,
    new_result,
    run_sizes,
)

# --------------------------------------------------------------------------- one measurement


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
    mesh_timeout = args.mesh_timeout or max(30.0, 2.0 * n)
    detect_timeout = args.detect_timeout
    try:
        t0 = time.time()
        cluster.launch_many(n)
        m["launch_s"] = time.time() - t0
        if not cluster.wait_mesh(mesh_timeout):
            dead = cluster.dead_early()
            errors.append(
                f"mesh not formed within {mesh_timeout:g} s"
                + (f"; {dead.name} exited with {dead.proc.poll()}" if dead else "")
            )
            with cluster.cond:
                errors.append(cluster.views_summary())
            return res
        with cluster.cond:
            started = [x.started for x in cluster.live if x.started is not None]
            m["boot_s"] = max(started) - t0
            m["mesh_s"] = cluster.mesh_time(t0)

        time.sleep(args.settle)
        usage = cluster.idle_usage(args.cpu_window)
        m["rss_mib"] = statistics.mean(usage["rss_mib"])
        m["uss_mib"] = statistics.mean(usage["uss_mib"])
        m["cpu_pct"] = usage["cpu_pct_per_node"]
        m.update(impl.aux_memory())
        s["rss_mib"] = [round(x, 2) for x in usage["rss_mib"]]
        s["process_names"] = usage["process_names"]

        for label, sig in (("kill", signal.SIGKILL), ("stop", signal.SIGSTOP)):
            firsts: list[float] = []
            everyone: list[float] = []
            rejoins: list[float] = []
            reasons: Counter[str] = Counter()
            for run in range(args.runs):
                if time.monotonic() > deadline:
                    errors.append(f"{label}: time budget exhausted after {run} runs")
                    break
                victim = cluster.live[-1]
                lat, why, missing = cluster.fail(victim, sig, detect_timeout)
                reasons.update(why)
                if lat:
                    firsts.append(min(lat))
                    everyone.extend(lat)
                if missing:
                    errors.append(
                        f"{label} run {run}: {missing} survivors saw no nodedown "
                        f"within {detect_timeout:g} s"
                    )
                t1 = time.time()
                cluster.launch()
                if not cluster.wait_mesh(mesh_timeout):
                    with cluster.cond:
                        views = cluster.views_summary()
                    errors.append(f"{label} run {run}: replacement did not join: {views}")
                    return res
                with cluster.cond:
                    rejoin = cluster.mesh_time(t1)
                if rejoin is not None:
                    rejoins.append(rejoin)
                time.sleep(args.between)
            m[f"{label}_first_s"] = median(firsts)
            m[f"{label}_median_s"] = median(everyone)
            m[f"{label}_max_s"] = max(everyone) if everyone else None
            s[f"{label}_first_s"] = [round(x, 4) for x in firsts]
            s[f"{label}_all_s"] = [round(x, 4) for x in everyone]
            s[f"{label}_reasons"] = dict(reasons)
            s.setdefault("rejoin_s", []).extend(round(x, 4) for x in rejoins)
        m["rejoin_s"] = median(s.get("rejoin_s", []))
    finally:
        cluster.close()
    return res


# --------------------------------------------------------------------------- report


ROWS: list[tuple[str, str, str]] = [
    # key, label, format
    ("boot_s", "boot: all nodes printed started (s)", "{:.2f}"),
    ("mesh_s", "mesh: every node sees N-1 peers (s)", "{:.2f}"),
    ("rejoin_s", "rejoin: replacement node meshed (s, median)", "{:.2f}"),
    ("kill_first_s", "kill -9: first survivor nodedown (s)", "{:.3f}"),
    ("kill_median_s", "kill -9: nodedown, median survivor (s)", "{:.3f}"),
    ("stop_first_s", "SIGSTOP: first survivor nodedown (s)", "{:.2f}"),
    ("stop_median_s", "SIGSTOP: nodedown, median survivor (s)", "{:.2f}"),
    ("stop_max_s", "SIGSTOP: nodedown, last survivor (s)", "{:.2f}"),
    ("rss_mib", "idle RSS per node (MiB)", "{:.1f}"),
    ("uss_mib", "idle USS per node (MiB)", "{:.1f}"),
    ("cpu_pct", "idle CPU per node (% of a core)", "{:.2f}"),
    ("epmd_rss_mib", "epmd RSS, one per host (MiB)", "{:.1f}"),
]


def report(results: list[Result], impls: Sequence[Impl], sizes: Sequence[int], out: TextIO) -> None:
    by = {(r["impl"], r["n"]): r for r in results}
    for n in sizes:
        ra, rb = by.get(("skycluster", n)), by.get(("erlang", n))
        if ra is None and rb is None:
            continue
        compare(n, ra, rb, ROWS, out, width=46)
        for r in (ra, rb):
            if r:
                for e in r["errors"]:
                    print(f"  ! {r['impl']}: {e}", file=out)
                for label in ("kill", "stop"):
                    reasons = r["samples"].get(f"{label}_reasons")
                    if reasons:
                        txt = ", ".join(f"{k} x{v}" for k, v in sorted(reasons.items()))
                        print(f"  {r['impl']} {label} nodedown reasons: {txt}", file=out)
    for i in impls:
        if isinstance(i, Erlang):
            print(
                f"\nerlang ticks: {i.tick_note()}; kill -9 is seen through the closed TCP link "
                "on both sides.",
                file=out,
            )


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--sizes", default="2,8,16,32", help="cluster sizes (default 2,8,16,32)")
    p.add_argument("--runs", type=int, default=3, help="kill -9 and SIGSTOP runs per size")
    p.add_argument(
        "--seeds",
        choices=("first", "all"),
        default="first",
        help="tell each node about node 1 only (default) or about all nodes",
    )
    add_common_options(p, settle=2.0, max_seconds=1800.0)
    p.add_argument("--cpu-window", type=float, default=2.0, help="idle CPU sampling window, s")
    p.add_argument("--between", type=float, default=0.5, help="pause between runs, s")
    p.add_argument("--detect-timeout", type=float, default=20.0)
    args = p.parse_args(argv)
    args.size_list = [int(x) for x in args.sizes.split(",") if x.strip()]
    if any(x < 2 for x in args.size_list):
        p.error("sizes must be >= 2")
    if args.runs < 1:
        p.error("--runs must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    seeds = "node 1 only" if args.seeds == "first" else "all nodes"
    return run_sizes(
        args,
        {"skycluster": Skycluster(args), "erlang": Erlang(args)},
        lambda impl, n, logdir, ports, deadline: measure(impl, n, args, logdir, ports, deadline),
        lambda results, impls: report(results, impls, args.size_list, sys.stdout),
        prefix="skycluster-bench-",
        plan=f"seeds: {seeds}; {args.runs} kill -9 and {args.runs} SIGSTOP runs per size",
    )


if __name__ == "__main__":
    sys.exit(main())
