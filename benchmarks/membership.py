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
import os
import platform
import random
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

try:
    import psutil  # type: ignore[import-untyped, unused-ignore]
except ImportError:  # pragma: no cover - depends on the environment
    sys.exit("psutil is needed: pip install psutil (or the project's [test] extra)")

HOST = "127.0.0.1"
HERE = Path(__file__).resolve().parent
ERLANG_SRC = HERE / "erlang" / "skybench.erl"
PORT_RANGE = (20000, 32000)  # below Linux's ephemeral range: no clash with client sockets
MIB = 1024 * 1024

_children: list[subprocess.Popen[Any]] = []
_children_lock = threading.Lock()


# --------------------------------------------------------------------------- processes


def spawn(
    argv: Sequence[str], *, env: dict[str, str], stdout: int | TextIO, stderr: TextIO
) -> subprocess.Popen[str]:
    """Start a child in its own session (Ctrl-C goes to us, we end it) and track it."""
    proc = subprocess.Popen(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=stderr,
        env=env,
        text=True,
        bufsize=1,
        start_new_session=True,
    )
    with _children_lock:
        _children.append(proc)
    return proc


def _descendants(pid: int) -> list[Any]:
    try:
        return list(psutil.Process(pid).children(recursive=True))
    except psutil.Error:
        return []


def stop_processes(procs: Sequence[subprocess.Popen[Any]], grace: float = 5.0) -> None:
    """SIGTERM (and SIGCONT, for frozen ones), wait up to `grace`, then SIGKILL.

    Processes are addressed by their own pids only, descendants included.
    """
    live = [p for p in procs if p.poll() is None]
    extra: list[Any] = []  # psutil.Process: is_running() also checks the pid was not reused
    for p in live:
        extra.extend(_descendants(p.pid))
        for sig in (signal.SIGTERM, signal.SIGCONT):
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, sig)
    deadline = time.monotonic() + grace
    for p in live:
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
    for p in live:
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=2.0)
    for child in extra:
        with contextlib.suppress(psutil.Error):
            if child.is_running() and child.status() != psutil.STATUS_ZOMBIE:
                child.kill()


def stop_all_children() -> None:
    with _children_lock:
        procs = list(_children)
    stop_processes(procs, grace=3.0)


def free_port(used: set[int]) -> int:
    """A port free on 127.0.0.1 right now, outside the ephemeral range, not in `used`."""
    for _ in range(1000):
        port = random.randrange(*PORT_RANGE)
        if port in used:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((HOST, port))
            except OSError:
                continue
        used.add(port)
        return port
    raise RuntimeError("no free port found")


def wait_port(port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(0.5)
            if s.connect_ex((HOST, port)) == 0:
                return True
        time.sleep(0.05)
    return False


# --------------------------------------------------------------------------- nodes


@dataclass
class Event:
    kind: str
    peer: str
    reason: str
    time: float  # as printed by the node (unix seconds); receipt time if absent
    received: float


class Node:
    """One agent process and the events read from its stdout."""

    def __init__(
        self,
        name: str,
        port: int,
        proc: subprocess.Popen[str],
        cond: threading.Condition,
        out_log: Path,
    ) -> None:
        self.name = name
        self.node = f"{name}@{HOST}"
        self.port = port
        self.proc = proc
        self.cond = cond
        self.events: list[Event] = []
        self.up: set[str] = set()
        self.started: float | None = None
        self.exited = False
        self._out_log = out_log
        self._thread = threading.Thread(target=self._read, name=f"read-{name}", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        with self._out_log.open("w") as log:
            for line in self.proc.stdout:
                now = time.time()
                log.write(line)
                try:
                    obj = json.loads(line)
                except ValueError:
                    continue  # Erlang's logger reports and the like
                if isinstance(obj, dict):
                    self._handle(obj, now)
        with self.cond:
            self.exited = True
            self.cond.notify_all()

    def _handle(self, obj: dict[str, Any], now: float) -> None:
        kind = str(obj.get("event", ""))
        t = obj.get("time")
        ev = Event(
            kind,
            str(obj.get("node", "")),
            str(obj.get("reason", "")),
            float(t) if isinstance(t, int | float) else now,
            now,
        )
        with self.cond:
            self.events.append(ev)
            if kind == "started":
                self.started = now
            elif kind == "nodeup":
                self.up.add(ev.peer)
            elif kind == "nodedown":
                self.up.discard(ev.peer)
            self.cond.notify_all()

    def full_since(self, expected: set[str]) -> float | None:
        """When this node's view last became a superset of `expected` (if it is now)."""
        want = expected - {self.node}
        up: set[str] = set()
        at: float | None = None
        for ev in self.events:
            before = want <= up
            if ev.kind == "nodeup":
                up.add(ev.peer)
            elif ev.kind == "nodedown":
                up.discard(ev.peer)
            now_full = want <= up
            if now_full and not before:
                at = ev.time
        if not want:
            return self.started
        return at if want <= up else None

    def nodedown_of(self, peer: str, after: float) -> Event | None:
        for ev in self.events:
            if ev.kind == "nodedown" and ev.peer == peer and ev.received >= after:
                return ev
        return None


# --------------------------------------------------------------------------- implementations


class Impl:
    name = ""

    def unavailable(self) -> str | None:
        """Why this side cannot run here, or None."""
        raise NotImplementedError

    def version(self) -> str:
        raise NotImplementedError

    def setup(self, workdir: Path, used_ports: set[int]) -> None:
        """Start shared services (epmd), compile helpers."""

    def teardown(self) -> None:
        """Stop what setup() started."""

    def argv(self, name: str, port: int, seeds: Sequence[tuple[str, int]]) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        return dict(os.environ)

    def aux_memory(self) -> dict[str, float]:
        """RSS (MiB) of shared helper processes, reported apart from the nodes."""
        return {}

    def describe(self) -> str:
        raise NotImplementedError


def _hosts(seeds: Sequence[tuple[str, int]]) -> str:
    return ",".join(f"{n}@{HOST}:{p}" for n, p in seeds)


class Skycluster(Impl):
    name = "skycluster"

    def __init__(self, args: argparse.Namespace) -> None:
        self.exe = args.skycluster or self._find()
        self.cookie = secrets.token_hex(12)
        self.interval: float = args.heartbeat_interval
        self.timeout: float = args.heartbeat_timeout
        self.retry: float = args.retry_interval

    @staticmethod
    def _find() -> str | None:
        beside = Path(sys.executable).parent / "skycluster"
        if beside.exists():
            return str(beside)
        return shutil.which("skycluster")

    def unavailable(self) -> str | None:
        if not self.exe:
            return "skycluster executable not found (install the package in this venv)"
        try:
            r = subprocess.run(
                [self.exe, "agent", "--help"],
                capture_output=True,
                text=True,
                timeout=30,
                stdin=subprocess.DEVNULL,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"`skycluster agent --help` failed: {exc}"
        if r.returncode != 0:
            tail = (r.stderr or r.stdout).strip().splitlines()[-1:] or [""]
            return f"`skycluster agent --help` exited {r.returncode}: {tail[0]}"
        return None

    def version(self) -> str:
        assert self.exe is not None
        try:
            r = subprocess.run(
                [self.exe, "--version"],
                capture_output=True,
                text=True,
                timeout=30,
                stdin=subprocess.DEVNULL,
            )
        except (OSError, subprocess.TimeoutExpired):
            return "unknown"
        return r.stdout.strip().removeprefix("skycluster ") or "unknown"

    def argv(self, name: str, port: int, seeds: Sequence[tuple[str, int]]) -> list[str]:
        assert self.exe is not None
        return [
            self.exe,
            "agent",
            "--name",
            f"{name}@{HOST}:{port}",
            "--cookie",
            self.cookie,
            "--strategy",
            "epmd",
            "--hosts",
            _hosts(seeds),
            "--heartbeat-interval",
            f"{self.interval:g}",
            "--heartbeat-timeout",
            f"{self.timeout:g}",
            "--retry-interval",
            f"{self.retry:g}",
            "--json",
        ]

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def describe(self) -> str:
        return (
            f"skycluster agent --strategy epmd --heartbeat-interval {self.interval:g} "
            f"--heartbeat-timeout {self.timeout:g} --retry-interval {self.retry:g}"
        )


class Erlang(Impl):
    name = "erlang"

    def __init__(self, args: argparse.Namespace) -> None:
        self.erl = shutil.which("erl")
        self.erlc = shutil.which("erlc")
        self.epmd = shutil.which("epmd")
        self.cookie = secrets.token_hex(12)
        self.ticktime: int = args.erl_net_ticktime
        self.intensity: int = args.erl_net_tickintensity
        self.extra: list[str] = args.erl_flag or []
        self.retry: float = args.retry_interval
        self.ebin: Path | None = None
        self.epmd_port = 0
        self.epmd_proc: subprocess.Popen[str] | None = None

    def unavailable(self) -> str | None:
        missing = [
            n for n, p in (("erl", self.erl), ("erlc", self.erlc), ("epmd", self.epmd)) if not p
        ]
        if missing:
            return f"{', '.join(missing)} not found (apt-get install erlang-base)"
        return None

    def version(self) -> str:
        assert self.erl is not None
        expr = (
            "R = erlang:system_info(otp_release), "
            'F = filename:join([code:root_dir(), "releases", R, "OTP_VERSION"]), '
            "V = case file:read_file(F) of {ok, B} -> string:trim(B); _ -> R end, "
            'io:format("OTP ~s, erts ~s~n", [V, erlang:system_info(version)]), halt().'
        )
        try:
            r = subprocess.run(
                [self.erl, "-noshell", "-eval", expr],
                capture_output=True,
                text=True,
                timeout=30,
                stdin=subprocess.DEVNULL,
            )
            return r.stdout.strip() or "unknown"
        except (OSError, subprocess.TimeoutExpired):
            return "unknown"

    def setup(self, workdir: Path, used_ports: set[int]) -> None:
        assert self.erlc is not None and self.epmd is not None
        self.ebin = workdir / "ebin"
        self.ebin.mkdir(exist_ok=True)
        subprocess.run(
            [self.erlc, "-o", str(self.ebin), str(ERLANG_SRC)],
            check=True,
            stdin=subprocess.DEVNULL,
            timeout=120,
        )
        self.epmd_port = free_port(used_ports)
        with (workdir / "epmd.log").open("w") as log:
            self.epmd_proc = spawn(
                [self.epmd, "-port", str(self.epmd_port), "-address", HOST],
                env=self.env(),
                stdout=log,
                stderr=log,
            )
        if not wait_port(self.epmd_port, 10.0):
            raise RuntimeError(f"epmd did not come up on {HOST}:{self.epmd_port}")

    def teardown(self) -> None:
        if self.epmd_proc is not None:
            stop_processes([self.epmd_proc])
            self.epmd_proc = None

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["ERL_EPMD_PORT"] = str(self.epmd_port)
        env["ERL_EPMD_ADDRESS"] = HOST
        env["SKYBENCH_RETRY_MS"] = str(max(1, round(self.retry * 1000)))
        return env

    def argv(self, name: str, port: int, seeds: Sequence[tuple[str, int]]) -> list[str]:
        assert self.erl is not None and self.ebin is not None
        return [
            self.erl,
            "-name",
            f"{name}@{HOST}",
            "-setcookie",
            self.cookie,
            "-noshell",
            "-start_epmd",
            "false",
            "-pa",
            str(self.ebin),
            "-kernel",
            "inet_dist_listen_min",
            str(port),
            "-kernel",
            "inet_dist_listen_max",
            str(port),
            "-kernel",
            "inet_dist_use_interface",
            "{127,0,0,1}",
            "-kernel",
            "net_ticktime",
            str(self.ticktime),
            "-kernel",
            "net_tickintensity",
            str(self.intensity),
            *self.extra,
            "-run",
            "skybench",
            "main",
            *(f"{n}@{HOST}:{p}" for n, p in seeds),
        ]

    def aux_memory(self) -> dict[str, float]:
        if self.epmd_proc is None:
            return {}
        try:
            return {"epmd_rss_mib": psutil.Process(self.epmd_proc.pid).memory_info().rss / MIB}
        except psutil.Error:
            return {}

    def tick_note(self) -> str:
        tick = self.ticktime / self.intensity
        return (
            f"net_ticktime {self.ticktime} s, net_tickintensity {self.intensity}: a tick every "
            f"{tick:g} s on an idle link, a peer silent for {self.intensity} tick periods is "
            f"dropped: about {self.ticktime - tick:g}..{self.ticktime + tick:g} s after it froze"
        )

    def describe(self) -> str:
        return (
            f"erl + global (connect_all), seeds retried every {self.retry:g} s, {self.tick_note()}"
        )


# --------------------------------------------------------------------------- one cluster


class Cluster:
    """N live nodes of one implementation; launch, fail and replace members."""

    def __init__(
        self, impl: Impl, args: argparse.Namespace, logdir: Path, used_ports: set[int]
    ) -> None:
        self.impl = impl
        self.args = args
        self.logdir = logdir
        self.used_ports = used_ports
        self.cond = threading.Condition()
        self.live: list[Node] = []
        self.everyone: list[Node] = []
        self.seeds: list[tuple[str, int]] = []
        self._count = 0

    def launch(self) -> Node:
        self._count += 1
        name = f"n{self._count}"
        port = free_port(self.used_ports)
        if self.args.seeds == "all" or not self.seeds:
            self.seeds.append((name, port))
        err = (self.logdir / f"{name}.err").open("w")
        proc = spawn(
            self.impl.argv(name, port, list(self.seeds)),
            env=self.impl.env(),
            stdout=subprocess.PIPE,
            stderr=err,
        )
        err.close()
        node = Node(name, port, proc, self.cond, self.logdir / f"{name}.out")
        self.live.append(node)
        self.everyone.append(node)
        return node

    def launch_many(self, n: int) -> None:
        """Launch n nodes; with --seeds all each knows the ports of all n up front."""
        if self.args.seeds == "all":
            for k in range(n):
                self.seeds.append((f"n{self._count + k + 1}", free_port(self.used_ports)))
            for name, port in list(self.seeds):
                self._count += 1
                err = (self.logdir / f"{name}.err").open("w")
                proc = spawn(
                    self.impl.argv(name, port, list(self.seeds)),
                    env=self.impl.env(),
                    stdout=subprocess.PIPE,
                    stderr=err,
                )
                err.close()
                node = Node(name, port, proc, self.cond, self.logdir / f"{name}.out")
                self.live.append(node)
                self.everyone.append(node)
        else:
            for _ in range(n):
                self.launch()

    def wait(self, pred: Callable[[], bool], timeout: float) -> bool:
        with self.cond:
            return self.cond.wait_for(pred, timeout)

    def expected(self) -> set[str]:
        return {n.node for n in self.live}

    def meshed(self) -> bool:
        want = self.expected()
        return all(n.started is not None and want - {n.node} <= n.up for n in self.live)

    def views_summary(self) -> str:
        """Which nodes lack which peers (call with cond held)."""
        want = self.expected()
        started = sum(1 for x in self.live if x.started is not None)
        lacking = [(x.name, sorted(want - {x.node} - x.up)) for x in self.live]
        lacking = [(name, miss) for name, miss in lacking if miss]
        parts = [
            f"{name} lacks {len(miss)} ({', '.join(m.split('@')[0] for m in miss[:4])}"
            + (", ..." if len(miss) > 4 else "")
            + ")"
            for name, miss in lacking[:6]
        ]
        more = f"; and {len(lacking) - 6} more" if len(lacking) > 6 else ""
        return f"{started}/{len(self.live)} started; " + "; ".join(parts) + more

    def dead_early(self) -> Node | None:
        return next((n for n in self.live if n.exited), None)

    def wait_mesh(self, timeout: float) -> bool:
        return (
            self.wait(lambda: self.meshed() or self.dead_early() is not None, timeout)
            and self.meshed()
        )

    def mesh_time(self, since: float) -> float | None:
        want = self.expected()
        times = [n.full_since(want) for n in self.live]
        if any(t is None for t in times):
            return None
        return max(t for t in times if t is not None) - since

    def fail(
        self, victim: Node, how: signal.Signals, timeout: float
    ) -> tuple[list[float], Counter[str], int]:
        """Deliver `how` to victim; latencies of the survivors' nodedowns for it."""
        survivors = [n for n in self.live if n is not victim]
        t0 = time.time()
        os.kill(victim.proc.pid, how)

        def all_saw() -> bool:
            return all(n.nodedown_of(victim.node, t0) is not None or n.exited for n in survivors)

        self.wait(all_saw, timeout)
        lat: list[float] = []
        reasons: Counter[str] = Counter()
        with self.cond:
            for n in survivors:
                ev = n.nodedown_of(victim.node, t0)
                if ev is not None:
                    lat.append(ev.time - t0)
                    reasons[ev.reason] += 1
        missing = len(survivors) - len(lat)
        if how != signal.SIGKILL:
            with contextlib.suppress(ProcessLookupError):
                os.kill(victim.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            victim.proc.wait(timeout=10)
        self.live.remove(victim)
        return lat, reasons, missing

    def idle_usage(self, window: float) -> dict[str, Any]:
        procs: list[list[psutil.Process]] = []
        for n in self.live:
            try:
                p = psutil.Process(n.proc.pid)
                procs.append([p, *p.children(recursive=True)])
            except psutil.Error:
                procs.append([])

        def cpu() -> float:
            total = 0.0
            for group in procs:
                for p in group:
                    with contextlib.suppress(psutil.Error):
                        c = p.cpu_times()
                        total += c.user + c.system
            return total

        c0, t0 = cpu(), time.monotonic()
        time.sleep(window)
        c1, t1 = cpu(), time.monotonic()
        rss: list[float] = []
        uss: list[float] = []
        names: set[str] = set()
        for group in procs:
            r = u = 0
            for p in group:
                with contextlib.suppress(psutil.Error):
                    mi = p.memory_full_info()
                    r += mi.rss
                    u += mi.uss
                    names.add(p.name())
            rss.append(r / MIB)
            uss.append(u / MIB)
        count = max(1, len(procs))
        return {
            "rss_mib": rss,
            "uss_mib": uss,
            "cpu_pct_per_node": 100.0 * (c1 - c0) / (t1 - t0) / count,
            "process_names": sorted(names),
        }

    def close(self) -> None:
        stop_processes([n.proc for n in self.everyone])


# --------------------------------------------------------------------------- one measurement


def median(xs: Sequence[float]) -> float | None:
    return statistics.median(xs) if xs else None


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


def fmt(v: Any, f: str) -> str:
    return "-" if not isinstance(v, int | float) else f.format(v)


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


def machine_info(impls: Sequence[Impl]) -> dict[str, Any]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": model,
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "versions": {i.name: i.version() for i in impls},
    }


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


@contextlib.contextmanager
def signals_raise() -> Iterator[None]:
    """Turn SIGINT/SIGTERM/SIGHUP into KeyboardInterrupt so cleanup runs."""

    def handler(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


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
