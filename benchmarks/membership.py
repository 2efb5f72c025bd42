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
import contextlib
import json
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from benchnodes import (
    HOST,
    Cluster,
    Erlang,
    Impl,
    Skycluster,
    fmt,
    machine_info,
    median,
    signals_raise,
    stop_all_children,
)

# --------------------------------------------------------------------------- one measurement


def measure(
    impl: Impl,
    n: int,
    args: argparse.Namespace,
    logdir: Path,
    used_ports: set[int],
    deadline: float,
) -> dict[str, Any]:
    res: dict[str, Any] = {"impl": impl.name, "n": n, "errors": [], "metrics": {}, "samples": {}}
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


def report(
    results: list[dict[str, Any]], impls: Sequence[Impl], sizes: Sequence[int], out: TextIO
) -> None:
    by = {(r["impl"], r["n"]): r for r in results}
    a, b = "skycluster", "erlang"
    for n in sizes:
        ra, rb = by.get((a, n)), by.get((b, n))
        if ra is None and rb is None:
            continue
        print(f"\nN = {n}", file=out)
        print(f"  {'figure':46} {a:>11} {b:>11} {'sky/erl':>8}", file=out)
        for key, label, f in ROWS:
            va = ra["metrics"].get(key) if ra else None
            vb = rb["metrics"].get(key) if rb else None
            if va is None and vb is None:
                continue
            ratio = (
                f"{va / vb:.2f}"
                if isinstance(va, int | float) and isinstance(vb, int | float) and vb > 0
                else "-"
            )
            print(f"  {label:46} {fmt(va, f):>11} {fmt(vb, f):>11} {ratio:>8}", file=out)
        for r in (ra, rb):
            if r:
                for e in r["errors"]:
                    print(f"  ! {r['impl']}: {e}", file=out)
                for label in ("kill", "stop"):
                    reasons = r["samples"].get(f"{label}_reasons")
                    if reasons:
                        txt = ", ".join(f"{k} x{v}" for k, v in sorted(reasons.items()))
                        print(f"  {r['impl']} {label} nodedown reasons: {txt}", file=out)


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--sizes", default="2,8,16,32", help="cluster sizes (default 2,8,16,32)")
    p.add_argument("--impls", default="skycluster,erlang", help="which sides to run")
    p.add_argument("--json", type=Path, help="also write all figures and samples here")
    p.add_argument("--runs", type=int, default=3, help="kill -9 and SIGSTOP runs per size")
    p.add_argument(
        "--seeds",
        choices=("first", "all"),
        default="first",
        help="tell each node about node 1 only (default) or about all nodes",
    )
    p.add_argument("--heartbeat-interval", type=float, default=1.0)
    p.add_argument("--heartbeat-timeout", type=float, default=3.0)
    p.add_argument(
        "--retry-interval",
        type=float,
        default=0.25,
        help="seconds between a node's attempts to reach its seeds, both sides (default 0.25)",
    )
    p.add_argument(
        "--erl-net-ticktime",
        type=int,
        default=4,
        help="Erlang net_ticktime, s (default 4: 1 s tick, peer dropped after 3..5 s)",
    )
    p.add_argument("--erl-net-tickintensity", type=int, default=4)
    p.add_argument(
        "--erl-flag",
        action="append",
        metavar="FLAG",
        help="extra erl flag, repeatable (e.g. --erl-flag=+sbwt --erl-flag=none)",
    )
    p.add_argument("--skycluster", help="path of the skycluster executable")
    p.add_argument("--settle", type=float, default=2.0, help="idle wait before measuring, s")
    p.add_argument("--cpu-window", type=float, default=2.0, help="idle CPU sampling window, s")
    p.add_argument("--between", type=float, default=0.5, help="pause between runs, s")
    p.add_argument(
        "--mesh-timeout",
        type=float,
        default=0.0,
        help="give up on a mesh after this long (default max(30, 2N) s)",
    )
    p.add_argument("--detect-timeout", type=float, default=20.0)
    p.add_argument(
        "--max-seconds",
        type=float,
        default=1800.0,
        help="overall time budget; remaining sizes are skipped past it",
    )
    p.add_argument("--keep-logs", action="store_true", help="keep the nodes' stdout/stderr logs")
    args = p.parse_args(argv)
    args.size_list = [int(x) for x in args.sizes.split(",") if x.strip()]
    if any(x < 2 for x in args.size_list):
        p.error("sizes must be >= 2")
    if args.runs < 1:
        p.error("--runs must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    wanted = [x.strip() for x in args.impls.split(",") if x.strip()]
    all_impls: dict[str, Impl] = {"skycluster": Skycluster(args), "erlang": Erlang(args)}
    impls: list[Impl] = []
    skipped: dict[str, str] = {}
    for name in wanted:
        if name not in all_impls:
            sys.exit(f"unknown implementation {name!r}")
        why = all_impls[name].unavailable()
        if why:
            skipped[name] = why
            print(f"skipping {name}: {why}", file=sys.stderr)
        else:
            impls.append(all_impls[name])
    if not impls:
        print("nothing to run", file=sys.stderr)
        return 1

    workdir = Path(tempfile.mkdtemp(prefix="skycluster-bench-"))
    logdir = workdir / "logs"
    logdir.mkdir()
    used_ports: set[int] = set()
    results: list[dict[str, Any]] = []
    info = machine_info(impls)
    deadline = time.monotonic() + args.max_seconds
    interrupted = False
    print(
        f"machine: {info['nproc']} CPUs ({info['cpu_model']}), {info['memory_gib']} GiB, "
        f"Linux {info['kernel']}, load {info['loadavg_at_start']}"
    )
    print(f"python {info['python']}; " + "; ".join(f"{k} {v}" for k, v in info["versions"].items()))
    for i in impls:
        print(f"{i.name}: {i.describe()}")
    print(
        f"seeds: {'node 1 only' if args.seeds == 'first' else 'all nodes'}; "
        f"{args.runs} kill -9 and {args.runs} SIGSTOP runs per size; loopback {HOST} only"
    )
    try:
        with signals_raise():
            for impl in impls:
                impl.setup(workdir, used_ports)
            for n in args.size_list:
                for impl in impls:
                    if time.monotonic() > deadline:
                        results.append(
                            {
                                "impl": impl.name,
                                "n": n,
                                "metrics": {},
                                "samples": {},
                                "errors": ["skipped: --max-seconds budget exhausted"],
                            }
                        )
                        continue
                    print(f"... {impl.name} N={n}", file=sys.stderr, flush=True)
                    t = time.monotonic()
                    r = measure(impl, n, args, logdir, used_ports, deadline)
                    r["wall_s"] = round(time.monotonic() - t, 1)
                    results.append(r)
    except KeyboardInterrupt:
        interrupted = True
        print("\ninterrupted; stopping everything", file=sys.stderr)
    finally:
        # Cleanup is bounded (a few seconds); a second Ctrl-C must not cut it short.
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(s, signal.SIG_IGN)
        for impl in impls:
            with contextlib.suppress(Exception):
                impl.teardown()
        stop_all_children()
        if args.keep_logs:
            print(f"logs kept in {logdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    report(results, impls, args.size_list, sys.stdout)
    for i in impls:
        if isinstance(i, Erlang):
            print(
                f"\nerlang ticks: {i.tick_note()}; kill -9 is seen through the closed TCP link "
                "on both sides."
            )
    for name, why in skipped.items():
        print(f"{name} not run: {why}")
    if args.json:
        payload = {
            "machine": info,
            "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "skipped": skipped,
            "interrupted": interrupted,
            "results": results,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    return 130 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
