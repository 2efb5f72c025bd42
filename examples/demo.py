"""A cluster on this machine with no ports and no configuration.

Starts three `skycluster agent --strategy local` processes. Each picks a free
port and registers its name with the host's port mapper (the first one serves
it); the local strategy links every node registered there. Then one node is
stopped and started again, and the others see it leave and come back.

    python examples/demo.py        (or: make demo)
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

NODES = ["alpha", "beta", "gamma"]
COLOURS = {"alpha": "\033[36m", "beta": "\033[35m", "gamma": "\033[33m"}
RESET = "\033[0m" if sys.stdout.isatty() else ""
events: queue.Queue[tuple[str, dict[str, object]]] = queue.Queue()


def skycluster() -> list[str]:
    script = Path(sys.executable).with_name("skycluster")
    return [str(script)] if script.exists() else [sys.executable, "-m", "skycluster.cli"]


def start(name: str) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [*skycluster(), "agent", "--name", f"{name}@127.0.0.1", "--strategy", "local", "--json"],
        stdout=subprocess.PIPE,
        text=True,
    )
    threading.Thread(target=read, args=(name, process), daemon=True).start()
    return process


def read(name: str, process: subprocess.Popen[str]) -> None:
    assert process.stdout is not None
    for line in process.stdout:
        with contextlib.suppress(ValueError):  # not an event line
            events.put((name, json.loads(line)))


def show(name: str, event: dict[str, object]) -> None:
    colour = COLOURS[name] if RESET else ""
    kind = event["event"]
    detail = {
        "started": f"started, listening on {event.get('address')}",
        "nodeup": f"sees {event.get('node')} join",
        "nodedown": f"sees {event.get('node')} leave ({event.get('reason')})",
        "stopped": "stopped",
    }.get(str(kind), str(event))
    print(f"{time.strftime('%H:%M:%S')}  {colour}{name:>5}{RESET}  {detail}", flush=True)


def pump_until(done: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            name, event = events.get(timeout=0.1)
        except queue.Empty:
            continue
        show(name, event)
        seen.append((name, event))
        if done():
            return
    raise SystemExit("the demo did not reach the expected state in time")


seen: list[tuple[str, dict[str, object]]] = []


def count(kind: str, node: str | None = None) -> int:
    return sum(1 for _, e in seen if e["event"] == kind and (node is None or e.get("node") == node))


def said(name: str, kind: str) -> bool:
    """``name``'s own agent printed an event of ``kind`` (e.g. its "stopped" line)."""
    return any(who == name and e["event"] == kind for who, e in seen)


def main() -> None:
    print("Starting three nodes with no ports and no config (strategy: local port mapper)...")
    procs = {name: start(name) for name in NODES}
    try:
        pump_until(lambda: count("nodeup") >= 6, 20)
        time.sleep(1)
        print("\nFull mesh formed. Stopping gamma gracefully...")
        procs["gamma"].send_signal(signal.SIGTERM)
        # Both peers saw it leave and gamma's own "stopped" line is out, so that
        # it is printed before the restart below.
        gone = "gamma@127.0.0.1"
        pump_until(lambda: count("nodedown", gone) >= 2 and said("gamma", "stopped"), 10)
        procs["gamma"].wait(5)
        time.sleep(1)
        print("\nStarting gamma again...")
        procs["gamma"] = start("gamma")
        pump_until(lambda: count("nodeup") >= 10, 20)
        print("\ngamma is back. Stopping everyone.")
    finally:
        for process in procs.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in procs.values():
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
        while not events.empty():
            show(*events.get())


if __name__ == "__main__":
    os.environ.setdefault("SKYCLUSTER_LOG_LEVEL", "warning")
    main()
