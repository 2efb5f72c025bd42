"""Clusters of skycluster agents and of Erlang nodes as OS processes, for the benchmarks.

Starts `skycluster agent --json` processes or `erl` nodes running
``erlang/skybench.erl`` (both print the same JSON lines: started, nodeup,
nodedown), reads their events from stdout, and ends every process it started
(``stop_all_children``), descendants included. Loopback (127.0.0.1) only.
Used by membership.py and scale.py, which share the driver at the end: the
options both take, the loop over sizes and sides within a time budget, the
machine header and the side-by-side table.
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
# Many Erlang nodes share this host's cores: one scheduler each, and none busy
# waiting (by default each VM runs a scheduler per core that spins after work,
# and a hundred of them starve each other into tick timeouts).
ERL_SHARED_HOST_FLAGS = ("+S", "1", "+sbwt", "none", "+sbwtdcpu", "none", "+sbwtdio", "none")
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

    def __init__(self, args: argparse.Namespace, extra: Sequence[str] = ()) -> None:
        self.exe = args.skycluster or self._find()
        self.extra = list(extra)  # more `skycluster agent` flags
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

    def setup(self, workdir: Path, used_ports: set[int]) -> None:
        """Byte-compile the package the agents import, as ``pip install`` does: without
        it (an editable install under PYTHONDONTWRITEBYTECODE) every agent compiles
        its modules from source at start, about 70 ms of CPU each, which an Erlang
        node (loading compiled .beam files) never pays."""
        assert self.exe is not None
        compile_package = (
            "import compileall, os, skycluster; "
            "compileall.compile_dir(os.path.dirname(skycluster.__file__), quiet=1)"
        )
        subprocess.run(
            [self._interpreter(), "-c", compile_package],
            check=False,
            timeout=120,
            stdin=subprocess.DEVNULL,
        )

    def _interpreter(self) -> str:
        """The Python that runs ``self.exe`` (its ``#!`` line), else this one."""
        assert self.exe is not None
        with contextlib.suppress(OSError, UnicodeDecodeError):
            with open(self.exe, encoding="utf-8") as script:
                first = script.readline().strip()
            if first.startswith("#!") and os.path.exists(first[2:].split()[0]):
                return first[2:].split()[0]
        return sys.executable

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
            *self.extra,
        ]

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def describe(self) -> str:
        return (
            f"skycluster agent --strategy epmd --heartbeat-interval {self.interval:g} "
            f"--heartbeat-timeout {self.timeout:g} --retry-interval {self.retry:g}"
            + "".join(f" {flag}" for flag in self.extra)
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
        vm = [] if args.erl_vm_defaults else list(ERL_SHARED_HOST_FLAGS)
        self.extra: list[str] = vm + (args.erl_flag or [])
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
            + (f"; erl {' '.join(self.extra)}" if self.extra else "")
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
        return self._start(name, port)

    def restart(self, old: Node) -> Node:
        """A new process with the name and port of `old`, which must have exited."""
        if old in self.live:
            self.live.remove(old)
        generation = sum(1 for n in self.everyone if n.name == old.name)
        return self._start(old.name, old.port, f".{generation}")

    def _start(self, name: str, port: int, log_suffix: str = "") -> Node:
        err = (self.logdir / f"{name}{log_suffix}.err").open("w")
        proc = spawn(
            self.impl.argv(name, port, list(self.seeds)),
            env=self.impl.env(),
            stdout=subprocess.PIPE,
            stderr=err,
        )
        err.close()
        node = Node(name, port, proc, self.cond, self.logdir / f"{name}{log_suffix}.out")
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
                self._start(name, port)
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


def median(xs: Sequence[float]) -> float | None:
    return statistics.median(xs) if xs else None


def fmt(v: Any, f: str) -> str:
    return "-" if not isinstance(v, int | float) else f.format(v)


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


# --------------------------------------------------------------------------- the driver

Result = dict[str, Any]  # {"impl", "n", "metrics", "samples", "errors"} (+ "wall_s")
Row = tuple[str, str, str]  # metric key, label, format


def progress(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def new_result(impl: Impl, n: int, *errors: str) -> Result:
    return {"impl": impl.name, "n": n, "metrics": {}, "samples": {}, "errors": list(errors)}


def add_common_options(p: argparse.ArgumentParser, *, settle: float, max_seconds: float) -> None:
    """The options both benchmarks take: sides, timing of both, Erlang's flags, budget."""
    p.add_argument("--impls", default="skycluster,erlang", help="which sides to run")
    p.add_argument("--json", type=Path, help="also write all figures and samples here")
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
        help="extra erl flag, repeatable (e.g. --erl-flag=+A --erl-flag=4)",
    )
    p.add_argument(
        "--erl-vm-defaults",
        action="store_true",
        help="run each erl with the VM's own scheduler defaults (a busy-waiting scheduler "
        "per core) instead of " + " ".join(ERL_SHARED_HOST_FLAGS),
    )
    p.add_argument("--skycluster", help="path of the skycluster executable")
    p.add_argument("--settle", type=float, default=settle, help="wait after a mesh formed, s")
    p.add_argument(
        "--mesh-timeout",
        type=float,
        default=0.0,
        help="give up on a mesh after this long (default: grows with N)",
    )
    p.add_argument(
        "--max-seconds",
        type=float,
        default=max_seconds,
        help="overall time budget; remaining sizes are skipped past it",
    )
    p.add_argument("--keep-logs", action="store_true", help="keep the nodes' stdout/stderr logs")


def compare(
    n: int,
    ra: Result | None,
    rb: Result | None,
    rows: Sequence[Row],
    out: TextIO,
    *,
    width: int,
    label_of: Callable[[str, str], str] | None = None,
) -> None:
    """One size's table: each row's figure on both sides and their ratio."""
    a, b = "skycluster", "erlang"
    print(f"\nN = {n}", file=out)
    print(f"  {'figure':{width}} {a:>11} {b:>11} {'sky/erl':>8}", file=out)
    for key, label, f in rows:
        va = ra["metrics"].get(key) if ra else None
        vb = rb["metrics"].get(key) if rb else None
        if va is None and vb is None:
            continue
        if label_of is not None:
            label = label_of(key, label)
        ratio = (
            f"{va / vb:.2f}"
            if isinstance(va, int | float) and isinstance(vb, int | float) and vb > 0
            else "-"
        )
        print(f"  {label:{width}} {fmt(va, f):>11} {fmt(vb, f):>11} {ratio:>8}", file=out)


def run_sizes(
    args: argparse.Namespace,
    available: dict[str, Impl],
    measure: Callable[[Impl, int, Path, set[int], float], Result],
    report: Callable[[list[Result], list[Impl]], None],
    *,
    prefix: str,
    plan: str,
) -> int:
    """Run ``measure`` for each size in ``args.size_list`` and each side in
    ``args.impls`` (sides one after the other, never at once), within
    ``args.max_seconds``; print the machine, then ``report`` the results, and
    write them to ``args.json``. Every process started is ended, Ctrl-C included."""
    impls: list[Impl] = []
    skipped: dict[str, str] = {}
    for name in (x.strip() for x in args.impls.split(",") if x.strip()):
        if name not in available:
            sys.exit(f"unknown implementation {name!r}")
        why = available[name].unavailable()
        if why:
            skipped[name] = why
            print(f"skipping {name}: {why}", file=sys.stderr)
        else:
            impls.append(available[name])
    if not impls:
        print("nothing to run", file=sys.stderr)
        return 1

    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    logdir = workdir / "logs"
    logdir.mkdir()
    used_ports: set[int] = set()
    results: list[Result] = []
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
    print(f"{plan}; loopback {HOST} only")
    try:
        with signals_raise():
            for impl in impls:
                impl.setup(workdir, used_ports)
            for n in args.size_list:
                for impl in impls:
                    if time.monotonic() > deadline:
                        results.append(
                            new_result(impl, n, "skipped: --max-seconds budget exhausted")
                        )
                        continue
                    progress(f"{impl.name} N={n}: load average {_loadavg()}")
                    t = time.monotonic()
                    r = measure(impl, n, logdir, used_ports, deadline)
                    r["wall_s"] = round(time.monotonic() - t, 1)
                    r["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
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

    report(results, impls)
    print(f"\nload average at the end: {_loadavg()}")
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


def _loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())
