#!/usr/bin/env python3
"""Erlang interop benchmark: a Python node (``erlang=True``) and BEAM nodes, in one run.

    python benchmarks/erlang_interop.py [--messages 100000] [--round-trips 5000]
                                        [--runs 3] [--node-loop auto|asyncio|uvloop]
                                        [--json out.json]

All on 127.0.0.1, on a private epmd (a free port, never 4369):

* Python -> Erlang one-way: ``await cluster.send("e1@...", "sink", (Seq, 100 bytes))``
  N times to a registered Erlang process that counts them and answers ``{done, N}``
  to a Python mailbox; timed from the first send until that answer arrives.
* Erlang -> Python one-way: ``{sink, 'py@...'} ! {Seq, <<100 bytes>>}`` N times from
  an Erlang process; timed in Python from the request until the mailbox has all N.
* Erlang -> Erlang one-way: the same stream between two ``erl`` nodes.
* round trips: Python -> Erlang (``cluster.send`` to an Erlang echo process, the pong
  read from a mailbox), Erlang -> Python (an Erlang process pings a Python
  ``serve()`` handler that answers with ``send_nowait``; timed in Erlang), and
  Erlang -> Erlang; median and p99.

The Erlang side is ``erlang/interop.erl``. Every process started is stopped at the
end, Ctrl-C included. Run it under the benchmark lock on a shared machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
HERE = Path(__file__).resolve().parent
COOKIE = "interop-cookie"
PY = f"py@{HOST}"
E1 = f"e1@{HOST}"
E2 = f"e2@{HOST}"
PAYLOAD = b"x" * 100


def progress(what: str) -> None:
    print(f"  {what} ...", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


class ErlangSide:
    """A private epmd and the worker node e1 running interop:serve()."""

    def __init__(self, workdir: Path) -> None:
        self.epmd_port = free_port()
        self.env = dict(os.environ, ERL_EPMD_PORT=str(self.epmd_port), HOME=str(workdir))
        self.env.pop("SKYCLUSTER_EPMD_PORT", None)
        self.ebin = workdir
        subprocess.run(
            ["erlc", "-o", str(workdir), str(HERE / "erlang" / "interop.erl")], check=True
        )
        self.processes: list[subprocess.Popen[str]] = []
        epmd = ["epmd", "-port", str(self.epmd_port), "-address", HOST]
        self.processes.append(subprocess.Popen(epmd, env=self.env, text=True))
        deadline = time.monotonic() + 10
        while True:
            with socket.socket() as sock:
                if sock.connect_ex((HOST, self.epmd_port)) == 0:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("epmd did not start")
            time.sleep(0.05)
        worker = self.erl(E1, "serve")
        assert worker.stdout is not None
        if "ready" not in worker.stdout.readline():
            raise RuntimeError("e1 did not start")

    def erl(self, name: str, *run: str) -> subprocess.Popen[str]:
        argv = ["erl", "-name", name, "-setcookie", COOKIE, "-noshell", "-start_epmd", "false"]
        argv += ["-pa", str(self.ebin), "-run", "interop", *run]
        process = subprocess.Popen(argv, env=self.env, text=True, stdout=subprocess.PIPE)
        self.processes.append(process)
        return process

    def erlang_to_erlang(self, messages: int, round_trips: int) -> dict[str, float]:
        driver = self.erl(E2, "drive", E1, str(messages), str(round_trips))
        out, _ = driver.communicate(timeout=600)
        result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
        return result

    def close(self) -> None:
        for process in reversed(self.processes):
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            process.wait()


async def python_side(
    epmd_port: int, messages: int, round_trips: int, node_loop: str
) -> dict[str, float]:
    from skycluster import Cluster
    from skycluster.erlang import Atom

    cluster = Cluster(
        PY,
        cookie=COOKIE,
        erlang=True,
        epmd_port=epmd_port,
        node_loop=node_loop,
        environ={"HOME": tempfile.gettempdir()},
    )
    async with cluster:
        if not await cluster.connect(E1):
            raise RuntimeError(f"cannot link {E1}")
        sink, ctl, pongs = (cluster.register(n) for n in ("sink", "ctl", "pong_box"))
        me = (Atom("ctl"), Atom(PY))

        def echo(message: Any) -> None:  # {ping, {Name, Node}, X}: on the node's loop
            _, (name, node), x = message
            cluster.send_nowait(node.name, name.name, (Atom("pong"), x))

        cluster.serve("echo", echo)
        figures: dict[str, float] = {}

        # Python -> Erlang one-way
        await cluster.send(E1, "sink", (Atom("expect"), messages, me))
        began = time.perf_counter()
        for seq in range(messages):
            await cluster.send(E1, "sink", (seq, PAYLOAD))
        done = await asyncio.wait_for(ctl.get(), 600)
        assert done == (Atom("done"), messages), done
        figures["py_to_erl_per_s"] = messages / (time.perf_counter() - began)

        # Erlang -> Python one-way
        progress('Erlang -> Python one-way')
        began = time.perf_counter()
        await cluster.send(E1, "blaster", (Atom("blast"), (Atom("sink"), Atom(PY)), messages, 100))
        count = 0
        while count < messages:
            count += len(await asyncio.wait_for(sink.get_many(10_000), 600))
        figures["erl_to_py_per_s"] = messages / (time.perf_counter() - began)

        # Python -> Erlang -> Python round trips
        progress('Python -> Erlang -> Python round trips')
        reply_to = (Atom("pong_box"), Atom(PY))
        times = []
        for i in range(round_trips):
            began = time.perf_counter()
            await cluster.send(E1, "echo", (Atom("ping"), reply_to, i))
            pong = await asyncio.wait_for(pongs.get(), 60)
            times.append(time.perf_counter() - began)
            assert pong == (Atom("pong"), i), pong
        times.sort()
        figures["py_rtt_median_us"] = statistics.median(times) * 1e6
        figures["py_rtt_p99_us"] = times[len(times) * 99 // 100 - 1] * 1e6

        # Erlang -> Python -> Erlang round trips, timed in Erlang
        progress('Erlang -> Python -> Erlang round trips, timed in Erlang')
        target = (Atom("echo"), Atom(PY))
        await cluster.send(E1, "pinger", (Atom("rtt"), target, round_trips, me))
        _, median, p99 = await asyncio.wait_for(ctl.get(), 600)
        figures["erl_rtt_median_us"] = float(median)
        figures["erl_rtt_p99_us"] = float(p99)
        return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--round-trips", type=int, default=5_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--node-loop", default="auto", choices=["auto", "asyncio", "uvloop"])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    for tool in ("erl", "erlc", "epmd"):
        if shutil.which(tool) is None:
            print(f"needs {tool} (Debian's erlang-base)", file=sys.stderr)
            return 2
    load_before = os.getloadavg()
    runs: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        erlang = ErlangSide(Path(tmp))
        try:
            for run in range(args.runs):
                figures = asyncio.run(
                    python_side(erlang.epmd_port, args.messages, args.round_trips, args.node_loop)
                )
                ee = erlang.erlang_to_erlang(args.messages, args.round_trips)
                figures["erl_to_erl_per_s"] = ee["one_way_per_s"]
                figures["ee_rtt_median_us"] = ee["rtt_median_us"]
                figures["ee_rtt_p99_us"] = ee["rtt_p99_us"]
                runs.append(figures)
                print(f"run {run + 1}: " + json.dumps({k: round(v) for k, v in figures.items()}))
        finally:
            erlang.close()
    load_after = os.getloadavg()
    median = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
    print_table(median, args, load_before, load_after)
    if args.json:
        args.json.write_text(json.dumps({"runs": runs, "median": median}, indent=2))
    return 0


def print_table(
    m: dict[str, float],
    args: argparse.Namespace,
    before: tuple[float, float, float],
    after: tuple[float, float, float],
) -> None:
    ee_rate, ee_rtt = m["erl_to_erl_per_s"], m["ee_rtt_median_us"]
    print(
        f"\n{args.messages} messages of 100 bytes one way, {args.round_trips} round trips, "
        f"median of {args.runs} runs; node loop {args.node_loop}; "
        f"load average {before[0]:.2f} before, {after[0]:.2f} after"
    )
    print(f"{'':34} {'messages/s':>12} {'vs Erlang':>10}")
    for label, key in (
        ("Erlang -> Erlang", "erl_to_erl_per_s"),
        ("Erlang -> Python", "erl_to_py_per_s"),
        ("Python -> Erlang", "py_to_erl_per_s"),
    ):
        print(f"{label:34} {m[key]:12,.0f} {m[key] / ee_rate:10.2f}")
    print(f"{'':34} {'median µs':>12} {'p99 µs':>10} {'vs Erlang':>10}")
    for label, med, p99 in (
        ("round trip Erlang <-> Erlang", "ee_rtt_median_us", "ee_rtt_p99_us"),
        ("round trip Erlang -> Python", "erl_rtt_median_us", "erl_rtt_p99_us"),
        ("round trip Python -> Erlang", "py_rtt_median_us", "py_rtt_p99_us"),
    ):
        print(f"{label:34} {m[med]:12,.0f} {m[p99]:10,.0f} {m[med] / ee_rtt:10.2f}")


if __name__ == "__main__":
    sys.exit(main())
