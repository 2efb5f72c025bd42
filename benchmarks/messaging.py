#!/usr/bin/env python3
"""Messaging benchmark: skycluster side by side with Erlang distribution.

    python benchmarks/messaging.py [--small 1000000] [--large 100000] [--rtt 20000]
                                   [--broadcasts 1000] [--impls skycluster,erlang]
                                   [--node-loop auto|asyncio|uvloop|shared]
                                   [--app-loop asyncio|uvloop] [--busy-wait S]
                                   [--erlang-busy-wait default|none]

The same work on both sides, each node its own OS process, all on 127.0.0.1:

* small: a one-way stream of N messages [seq, 100 bytes] to a named mailbox
  (Erlang: a registered process) on another node; timed from the first send
  until the receiver has counted all N and said so. Memory (RSS) of sender and
  receiver is sampled during this run: start, peak and end.
* 10k: the same with 10 KiB payloads.
* rtt: ping-pong round trips (skycluster ``call``; Erlang send + receive),
  median and p99; skycluster's ``call`` to a ``serve()`` handler too, and
  Erlang's ``gen_server:call`` (which, like ``call``, monitors the callee and
  has a timeout).
* pubsub: B broadcasts to 1,000 subscribers, 250 on each of 4 nodes; timed
  until every subscriber has all B.

The Erlang side is ``erlang/msgbench.erl`` on its own epmd (a free port, never
4369). Every process started is stopped at the end, Ctrl-C included.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, cast

HOST = "127.0.0.1"
HERE = Path(__file__).resolve().parent
COOKIE = "msgbench-cookie"
SUBS_PER_NODE = 250
ERL_NO_BUSY_WAIT = ["+sbwt", "none", "+sbwtdcpu", "none", "+sbwtdio", "none"]
MIB = 1024 * 1024

# -- the skycluster nodes (run as: messaging.py worker|driver ...) --------------


async def worker(name: str) -> None:
    import skycluster

    # node_loop and busy_wait come from SKYCLUSTER_NODE_LOOP / SKYCLUSTER_BUSY_WAIT
    async with skycluster.Cluster.from_env(name=name, cookie=COOKIE, port_mapper=False) as cluster:
        state: dict[str, Any] = {"expect": None, "count": 0}
        sink = cluster.register("sink")
        echo = cluster.register("echo")
        ctl = cluster.register("ctl")
        cluster.serve("echo_fast", lambda request: request)

        async def count_sink() -> None:
            while True:
                batch = await sink.get_many(10_000)
                state["count"] += len(batch)
                if state["expect"] is not None and state["count"] >= state["expect"][0]:
                    await cluster.send(state["expect"][1], "done", state["count"])
                    state["expect"] = None
                    state["count"] = 0

        async def serve_echo() -> None:
            async for request in echo:
                request.reply(request.message)

        async def subscriber(sub: Any, count: int, done: list[int], driver: str) -> None:
            got = 0
            while got < count:
                got += len(await sub.get_many(10_000))
            sub.close()
            done[0] -= 1
            if done[0] == 0:
                await cluster.send(driver, "done", "pubsub")

        async def serve_ctl() -> None:
            async for request in ctl:
                op = request.message
                if op["op"] == "expect":
                    state["expect"] = (op["n"], op["driver"])
                elif op["op"] == "pubsub":
                    done = [op["k"]]
                    for _ in range(op["k"]):
                        sub = cluster.pubsub.subscribe("bench")
                        tasks.append(
                            asyncio.create_task(subscriber(sub, op["b"], done, op["driver"]))
                        )
                request.reply("ok")

        tasks = [
            asyncio.create_task(count_sink()),
            asyncio.create_task(serve_echo()),
            asyncio.create_task(serve_ctl()),
        ]
        print(json.dumps({"event": "ready"}), flush=True)
        await asyncio.Event().wait()


async def driver(name: str, workers: list[str], n: int, n10: int, m: int, b: int) -> None:
    import skycluster

    # node_loop and busy_wait come from SKYCLUSTER_NODE_LOOP / SKYCLUSTER_BUSY_WAIT
    async with skycluster.Cluster.from_env(name=name, cookie=COOKIE, port_mapper=False) as cluster:
        done = cluster.register("done")
        w1 = workers[0]
        for w in workers:
            await cluster.call(w, "ctl", {"op": "ping"})

        async def stream(count: int, payload: bytes, label: str) -> None:
            await cluster.call(w1, "ctl", {"op": "expect", "n": count, "driver": cluster.name})
            print(json.dumps({"phase": label}), flush=True)
            began = time.perf_counter()
            send = cluster.send
            for seq in range(count):
                await send(w1, "sink", [seq, payload])
            await done.get()
            seconds = time.perf_counter() - began
            print(json.dumps({"result": label, "count": count, "seconds": seconds}), flush=True)

        async def round_trips(label: str, mailbox: str) -> None:
            print(json.dumps({"phase": label}), flush=True)
            times = []
            for i in range(m):
                began = time.perf_counter_ns()
                await cluster.call(w1, mailbox, i)
                times.append((time.perf_counter_ns() - began) / 1000)
            times.sort()
            median, p99 = times[m // 2], times[min(m - 1, m * 99 // 100)]
            result = {"result": label, "count": m, "median_us": median, "p99_us": p99}
            print(json.dumps(result), flush=True)

        await stream(n, b"x" * 100, "small")
        await stream(n10, b"x" * 10240, "10k")

        await round_trips("rtt", "echo")
        await round_trips("rtt_served", "echo_fast")

        local_done = [SUBS_PER_NODE]
        local_tasks = []

        async def local_sub(sub: Any) -> None:
            got = 0
            while got < b:
                got += len(await sub.get_many(10_000))
            local_done[0] -= 1
            if local_done[0] == 0:
                await cluster.send(cluster.name, "done", "pubsub")

        for _ in range(SUBS_PER_NODE):
            local_tasks.append(asyncio.create_task(local_sub(cluster.pubsub.subscribe("bench"))))
        for w in workers:
            await cluster.call(
                w, "ctl", {"op": "pubsub", "k": SUBS_PER_NODE, "b": b, "driver": cluster.name}
            )
        print(json.dumps({"phase": "pubsub"}), flush=True)
        began = time.perf_counter()
        for i in range(b):
            await cluster.pubsub.broadcast("bench", ["pub", i])
        for _ in range(len(workers) + 1):
            await done.get()
        seconds = time.perf_counter() - began
        print(
            json.dumps(
                {
                    "result": "pubsub",
                    "count": b,
                    "subscribers": SUBS_PER_NODE * (len(workers) + 1),
                    "seconds": seconds,
                }
            ),
            flush=True,
        )


# -- reference: bare asyncio sockets, one write per frame -----------------------


class _RawSink(asyncio.Protocol):
    """Counts 4-byte-length frames; b"D" back when told how many to expect;
    in echo mode sends every frame back."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # cast, not isinstance: uvloop's transports do not subclass asyncio.Transport
        self.transport = cast(asyncio.Transport, transport)
        self.buffer = bytearray()
        self.mode = b""
        self.expect = 0
        self.count = 0

    def data_received(self, data: bytes) -> None:
        buf = self.buffer
        buf += data
        if not self.mode:
            if len(buf) < 5:
                return
            self.mode = bytes(buf[:1])
            self.expect = int.from_bytes(buf[1:5], "big")
            del buf[:5]
        start = 0
        while len(buf) - start >= 4:
            size = int.from_bytes(buf[start : start + 4], "big")
            if len(buf) - start - 4 < size:
                break
            if self.mode == b"P":
                self.transport.write(bytes(buf[start : start + 4 + size]))
            start += 4 + size
            self.count += 1
        del buf[:start]
        if self.mode == b"S" and self.count >= self.expect:
            self.transport.write(b"D")


async def raw_server() -> None:
    server = await asyncio.get_running_loop().create_server(_RawSink, HOST, 0)
    print(json.dumps({"event": "ready", "port": server.sockets[0].getsockname()[1]}), flush=True)
    await asyncio.Event().wait()


async def raw_client(port: int, n: int, m: int) -> None:
    reader, writer = await asyncio.open_connection(HOST, port)
    writer.write(b"S" + n.to_bytes(4, "big"))
    payload = b"x" * 100
    print(json.dumps({"phase": "small"}), flush=True)
    began = time.perf_counter()
    for seq in range(n):
        body = seq.to_bytes(4, "big") + payload
        writer.write(len(body).to_bytes(4, "big") + body)
        if seq % 1000 == 0:
            await writer.drain()
    await reader.readexactly(1)
    seconds = time.perf_counter() - began
    print(json.dumps({"result": "small", "count": n, "seconds": seconds}), flush=True)
    writer.close()
    reader, writer = await asyncio.open_connection(HOST, port)
    writer.write(b"P" + m.to_bytes(4, "big"))
    print(json.dumps({"phase": "rtt"}), flush=True)
    times = []
    for seq in range(m):
        body = seq.to_bytes(4, "big")
        began_ns = time.perf_counter_ns()
        writer.write(len(body).to_bytes(4, "big") + body)
        await reader.readexactly(8)
        times.append((time.perf_counter_ns() - began_ns) / 1000)
    times.sort()
    print(
        json.dumps(
            {
                "result": "rtt",
                "count": m,
                "median_us": times[m // 2],
                "p99_us": times[min(m - 1, m * 99 // 100)],
            }
        ),
        flush=True,
    )
    writer.close()


# -- the controller --------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex((HOST, port)) == 0:
                return True
        time.sleep(0.05)
    return False


class Proc:
    def __init__(self, label: str, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.label = label
        self.lines: list[dict[str, Any]] = []
        self.cond = threading.Condition()
        self.log = log.open("w")
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self.log,
            env=env,
            text=True,
            start_new_session=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                obj = json.loads(line)
            except ValueError:
                self.log.write(line)
                continue
            obj["_t"] = time.monotonic()
            with self.cond:
                self.lines.append(obj)
                self.cond.notify_all()
        with self.cond:
            self.cond.notify_all()

    def wait(self, key: str, value: str | None, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for obj in self.lines:
                    if key in obj and (value is None or obj[key] == value):
                        return obj
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self.proc.poll() is not None and not self._pending()):
                    raise RuntimeError(
                        f"{self.label}: no {key}={value} within {timeout} s (see {self.log.name})"
                    )
                self.cond.wait(min(remaining, 0.5))

    def _pending(self) -> bool:
        return False

    def rss(self) -> float:
        try:
            import psutil  # type: ignore[import-untyped, unused-ignore]

            proc = psutil.Process(self.proc.pid)
            total = proc.memory_info().rss
            for child in proc.children(recursive=True):
                total += child.memory_info().rss
            return float(total) / MIB
        except Exception:
            return float("nan")

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(5)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.log.close()


class Sampler:
    """RSS of the driver (sender) and the first worker (receiver), every 0.1 s."""

    def __init__(self, sender: Proc, receiver: Proc) -> None:
        self.samples: list[tuple[float, float, float]] = []
        self._stop = threading.Event()
        self._procs = (sender, receiver)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            self.samples.append((time.monotonic(), self._procs[0].rss(), self._procs[1].rss()))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def window(self, start: float, end: float) -> dict[str, float]:
        inside = [s for s in self.samples if start <= s[0] <= end]
        if not inside:
            return {}
        return {
            "sender_start": inside[0][1],
            "sender_peak": max(s[1] for s in inside),
            "sender_end": inside[-1][1],
            "receiver_start": inside[0][2],
            "receiver_peak": max(s[2] for s in inside),
            "receiver_end": inside[-1][2],
        }


def run_side(impl: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    procs: list[Proc] = []
    env = dict(os.environ)
    env["MSGBENCH_APP_LOOP"] = args.app_loop
    try:
        if impl == "asyncio":
            server = Proc(
                "rawserver",
                [sys.executable, __file__, "rawserver"],
                env,
                workdir / "raw-server.log",
            )
            procs.append(server)
            port = server.wait("event", "ready", 30)["port"]
            client = Proc(
                "rawclient",
                [sys.executable, __file__, "rawclient", str(port), str(args.small), str(args.rtt)],
                env,
                workdir / "raw-client.log",
            )
            procs.append(client)
            return {
                label: client.wait("result", label, args.max_seconds) for label in ("small", "rtt")
            }
        if impl == "erlang":
            erl, erlc, epmd = shutil.which("erl"), shutil.which("erlc"), shutil.which("epmd")
            if not (erl and erlc and epmd):
                return {"skipped": "erl, erlc or epmd missing (apt-get install erlang-base)"}
            ebin = workdir / "ebin"
            ebin.mkdir(exist_ok=True)
            subprocess.run(
                [erlc, "-o", str(ebin), str(HERE / "erlang" / "msgbench.erl")], check=True
            )
            epmd_port = free_port()
            procs.append(
                Proc(
                    "epmd",
                    [epmd, "-port", str(epmd_port), "-address", HOST],
                    env,
                    workdir / "epmd.log",
                )
            )
            if not wait_port(epmd_port, 10):
                raise RuntimeError("epmd did not start")
            env["ERL_EPMD_PORT"] = str(epmd_port)
            env["ERL_EPMD_ADDRESS"] = HOST
            # Erlang's schedulers busy wait before sleeping unless told not to
            busy_wait = [] if args.erlang_busy_wait == "default" else ERL_NO_BUSY_WAIT

            def node_argv(name: str, *run: str) -> list[str]:
                return [
                    erl,
                    *busy_wait,
                    "-name",
                    name,
                    "-setcookie",
                    COOKIE,
                    "-noshell",
                    "-start_epmd",
                    "false",
                    "-kernel",
                    "inet_dist_use_interface",
                    "{127,0,0,1}",
                    "-pa",
                    str(ebin),
                    "-run",
                    "msgbench",
                    *run,
                ]

            workers = [f"w{i}@{HOST}" for i in (1, 2, 3)]
            for w in workers:
                procs.append(Proc(w, node_argv(w, "serve"), env, workdir / f"erl-{w}.log"))
            for p in procs[1:]:
                p.wait("event", "ready", 30)
            driver_argv = node_argv(
                f"d@{HOST}",
                "drive",
                *workers,
                str(args.small),
                str(args.large),
                str(args.rtt),
                str(args.broadcasts),
            )
        else:
            env["SKYCLUSTER_NODE_LOOP"] = args.node_loop
            if args.busy_wait is not None:
                env["SKYCLUSTER_BUSY_WAIT"] = str(args.busy_wait)
            workers = [f"w{i}@{HOST}:{free_port()}" for i in (1, 2, 3)]
            for w in workers:
                procs.append(
                    Proc(
                        w,
                        [sys.executable, __file__, "worker", w],
                        env,
                        workdir / f"py-{w.split('@')[0]}.log",
                    )
                )
            for p in procs:
                p.wait("event", "ready", 30)
            driver_argv = [
                sys.executable,
                __file__,
                "driver",
                f"d@{HOST}:{free_port()}",
                ",".join(workers),
                str(args.small),
                str(args.large),
                str(args.rtt),
                str(args.broadcasts),
            ]
        receiver = procs[-3]
        drv = Proc("driver", driver_argv, env, workdir / f"{impl}-driver.log")
        procs.append(drv)
        sampler = Sampler(drv, receiver)
        results: dict[str, Any] = {}
        try:
            labels = ["small", "10k", "rtt", "pubsub"]
            if impl == "skycluster":
                labels.insert(3, "rtt_served")
            if impl == "erlang":
                labels.insert(3, "rtt_call")
            for label in labels:
                phase = drv.wait("phase", label, args.max_seconds)
                result = drv.wait("result", label, args.max_seconds)
                results[label] = result
                if label == "small":
                    results["memory"] = sampler.window(phase["_t"], result["_t"])
        finally:
            sampler.stop()
        return results
    finally:
        for p in reversed(procs):
            p.stop()


Runs = list[dict[str, Any]]


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def table(results: dict[str, Runs]) -> str:
    """Each figure is the median over the runs of that side."""
    sky, erl = results.get("skycluster", []), results.get("erlang", [])
    raw = results.get("asyncio", [])

    def rate(runs: Runs, key: str) -> float | None:
        return _median([r[key]["count"] / r[key]["seconds"] for r in runs if key in r])

    def field(runs: Runs, key: str, name: str) -> float | None:
        return _median([float(r[key][name]) for r in runs if key in r])

    def deliveries(runs: Runs) -> float | None:
        return _median(
            [
                r["pubsub"]["count"] * r["pubsub"]["subscribers"] / r["pubsub"]["seconds"]
                for r in runs
                if "pubsub" in r
            ]
        )

    def memory(runs: Runs, name: str) -> float | None:
        return _median([r["memory"][name] for r in runs if name in r.get("memory", {})])

    rows = [
        ("small messages one-way (msg/s)", rate(sky, "small"), rate(erl, "small"), "{:,.0f}"),
        ("10 KiB messages one-way (msg/s)", rate(sky, "10k"), rate(erl, "10k"), "{:,.0f}"),
        (
            "broadcasts to 1,000 subscribers on 4 nodes (/s)",
            rate(sky, "pubsub"),
            rate(erl, "pubsub"),
            "{:,.0f}",
        ),
        ("  deliveries (msg/s)", deliveries(sky), deliveries(erl), "{:,.0f}"),
    ]
    round_trips = [  # label, skycluster's figure, Erlang's
        ("round trip", "rtt", "rtt"),
        ("round trip to a serve() handler", "rtt_served", "rtt"),
        ("call to a serve() handler vs gen_server:call", "rtt_served", "rtt_call"),
    ]
    at = 2
    for label, mine, theirs in round_trips:
        for stat in ("median", "p99"):
            key = f"{stat}_us"
            row = (
                f"{label}, {stat} (µs)",
                field(sky, mine, key),
                field(erl, theirs, key),
                "{:,.0f}",
            )
            rows.insert(at, row)
            at += 1
    for who in ("sender", "receiver"):
        for what in ("start", "peak", "end"):
            rows.append(
                (
                    f"RSS {who} during the small run, {what} (MiB)",
                    memory(sky, f"{who}_{what}"),
                    memory(erl, f"{who}_{what}"),
                    "{:,.1f}",
                )
            )
    reference = {
        rows[0][0]: rate(raw, "small"),
        rows[2][0]: field(raw, "rtt", "median_us"),
        rows[3][0]: field(raw, "rtt", "p99_us"),
    }
    out = [
        "| figure | skycluster | Erlang | ratio | bare Python socket |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for label, a, b, fmt in rows:
        ratio = f"{a / b:.2f}" if a is not None and b else "-"
        ref = reference.get(label)
        out.append(
            f"| {label} | {fmt.format(a) if a is not None else '-'} | "
            f"{fmt.format(b) if b is not None else '-'} | {ratio} | "
            f"{fmt.format(ref) if ref is not None else ''} |"
        )
    return "\n".join(out)


def run_app(main: Coroutine[Any, Any, None]) -> None:
    """The application's event loop of a benchmark process (MSGBENCH_APP_LOOP)."""
    if os.environ.get("MSGBENCH_APP_LOOP") == "uvloop":
        import uvloop

        uvloop.run(main)
    else:
        asyncio.run(main)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        run_app(worker(sys.argv[2]))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "rawserver":
        run_app(raw_server())
        return
    if len(sys.argv) > 1 and sys.argv[1] == "rawclient":
        run_app(raw_client(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "driver":
        name, workers, n, n10, m, b = sys.argv[2:8]
        run_app(driver(name, workers.split(","), int(n), int(n10), int(m), int(b)))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", type=int, default=1_000_000, help="small messages")
    parser.add_argument("--large", type=int, default=100_000, help="10 KiB messages")
    parser.add_argument("--rtt", type=int, default=20_000, help="round trips")
    parser.add_argument("--broadcasts", type=int, default=1000)
    parser.add_argument("--impls", default="skycluster,erlang,asyncio")
    parser.add_argument("--runs", type=int, default=3, help="runs per side; the median is shown")
    parser.add_argument("--max-seconds", type=float, default=600)
    parser.add_argument("--json", type=Path, help="write every figure here")
    parser.add_argument(
        "--node-loop",
        choices=("auto", "asyncio", "uvloop", "shared"),
        default="auto",
        help="event loop of each skycluster node's thread, or shared: the application's loop",
    )
    parser.add_argument(
        "--app-loop",
        choices=("asyncio", "uvloop"),
        default="asyncio",
        help="the application's event loop in each Python process (and the bare socket's)",
    )
    parser.add_argument(
        "--busy-wait",
        type=float,
        default=None,
        help="busy_wait of each skycluster node: the longest its loop polls after traffic "
        "[skycluster's default; 0: off]",
    )
    parser.add_argument(
        "--erlang-busy-wait",
        choices=("default", "none"),
        default="default",
        help="Erlang's scheduler busy waiting: its default, or none (+sbwt none ...)",
    )
    args = parser.parse_args()
    load = os.getloadavg()
    print(
        f"load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, {os.cpu_count()} CPUs",
        flush=True,
    )
    results: dict[str, Runs] = {}
    with tempfile.TemporaryDirectory(prefix="msgbench-") as tmp:
        for run in range(1, args.runs + 1):  # sides take turns: load changes hit all of them
            for impl in args.impls.split(","):
                print(f"run {run}/{args.runs}: {impl} ...", flush=True)
                try:
                    result = run_side(impl, args, Path(tmp))
                except KeyboardInterrupt:
                    raise
                except Exception as exc:
                    print(f"{impl} failed: {exc}", flush=True)
                    for log in Path(tmp).glob("*.log"):
                        text = log.read_text()[-2000:]
                        if text.strip():
                            print(f"--- {log.name}\n{text}")
                    result = {}
                results.setdefault(impl, []).append(result)
    print()
    print(table(results))
    load = os.getloadavg()
    print(f"\nload average at end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(
        f"median of {args.runs} run(s) per side, sides taking turns; skycluster consumers "
        "take messages with mailbox.get_many(), senders use await send."
    )
    from skycluster.config import DEFAULT_BUSY_WAIT

    uvloop = importlib.util.find_spec("uvloop") is not None
    node_loop = {"auto": "uvloop" if uvloop else "asyncio"}.get(args.node_loop, args.node_loop)
    where = (
        "skycluster nodes on the application's loop (node_loop=shared)"
        if node_loop == "shared"
        else f"skycluster node threads on {node_loop}"
    )
    print(f"{where}; application loops (and the bare socket's) on {args.app_loop}.")
    erlang = "default" if args.erlang_busy_wait == "default" else " ".join(ERL_NO_BUSY_WAIT)
    busy_wait = f"{DEFAULT_BUSY_WAIT} (default)" if args.busy_wait is None else args.busy_wait
    print(f"skycluster busy_wait={busy_wait}; Erlang scheduler busy wait: {erlang}.")
    if args.json:
        args.json.write_text(json.dumps({"results": results, "load": load}, indent=2))


if __name__ == "__main__":
    main()
