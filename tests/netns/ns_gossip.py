"""Hosts made of Linux network namespaces, for the gossip tests and benchmark.

:class:`Lab` creates a *bridge* namespace holding a bridge ``br0`` and one
namespace per host, each joined to the bridge by a veth pair (``eth0`` in the
host, ``vN`` on the bridge), addressed in a private /24 (``10.231.X.0/24``, X
random) with a route for multicast (224.0.0.0/4) on ``eth0``. Nothing is
created in the root namespace, so no test packet can leave the machine.
``Lab.close()`` kills every process started in it and deletes every namespace.

A host can also be *isolated*: only ``lo``, with multicast routed to it (what a
developer's single machine looks like to gossip, without a real interface).

:class:`Agent` is one ``skycluster agent --json`` process in a host; threads
read its JSON lines and log lines so that tests wait for events with a
deadline instead of sleeping.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

WITHIN = 15.0  # liveness bound for things that should happen (not a timing claim)
NS_PREFIX = "skyg"

Event = dict[str, Any]


def unavailable() -> str | None:
    """Why namespaces cannot be used here, or None when they can."""
    if not sys.platform.startswith("linux"):
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "creating network namespaces needs root"
    if shutil.which("ip") is None:
        return "the 'ip' command (iproute2) is missing: run scripts/install-system-deps"
    probe = f"{NS_PREFIX}-probe-{os.getpid()}-{random.randrange(1 << 30):x}"
    result = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if result.returncode != 0:
        return f"cannot create a network namespace: {result.stderr.strip()}"
    subprocess.run(["ip", "netns", "delete", probe], capture_output=True)
    return None


def _run(
    *argv: str, check: bool = True, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(argv), capture_output=True, text=True, input=stdin)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {result.stderr.strip()}")
    return result


class LossUnsupported(RuntimeError):
    """Neither tc netem nor nftables can drop packets here."""


@dataclass
class Host:
    lab: Lab
    index: int
    netns: str
    address: str  # this host's IPv4 address ("127.0.0.1" for an isolated host)
    interface: str  # "eth0", or "lo" for an isolated host
    loss_method: str | None = None

    def command(self, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.netns, *argv]

    def run(
        self, argv: Sequence[str], stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run a command in this host; raises RuntimeError when it fails."""
        return _run(*self.command(argv), stdin=stdin)

    def ip(self, *args: str) -> subprocess.CompletedProcess[str]:
        return _run("ip", "-n", self.netns, *args)

    def link_down(self) -> None:
        """Cut this host off (its veth end on the bridge goes down)."""
        _run("ip", "-n", self.lab.bridge_ns, "link", "set", f"v{self.index}", "down")

    def link_up(self) -> None:
        _run("ip", "-n", self.lab.bridge_ns, "link", "set", f"v{self.index}", "up")

    def set_loss(self, percent: int) -> str:
        """Drop ``percent`` % of the packets this host receives: ``tc netem`` where the
        kernel has it, else an nftables rule in the netdev ingress hook. Returns the
        method used ("netem" or "nftables")."""
        netem = _run(
            *self.command(
                [
                    "tc",
                    "qdisc",
                    "add",
                    "dev",
                    self.interface,
                    "root",
                    "netem",
                    "loss",
                    f"{percent}%",
                ]
            ),
            check=False,
        )
        if netem.returncode == 0:
            self.loss_method = "netem"
            return "netem"
        if shutil.which("nft") is None:
            raise LossUnsupported(
                f"no way to drop packets: tc netem failed ({netem.stderr.strip()}) and nft "
                "(Debian's nftables) is missing: run scripts/install-system-deps"
            )
        rules = (
            "table netdev skyg_loss {\n"
            "  chain ingress {\n"
            f"    type filter hook ingress device {self.interface} priority 0; policy accept;\n"
            f"    numgen random mod 100 < {percent} counter drop\n"
            "  }\n"
            "}\n"
        )
        _run(*self.command(["nft", "-f", "-"]), stdin=rules)
        self.loss_method = "nftables"
        return "nftables"

    def dropped_packets(self) -> int:
        """Packets dropped by the nftables loss rule so far (0 with netem or no rule)."""
        if self.loss_method != "nftables":
            return 0
        out = _run(*self.command(["nft", "list", "table", "netdev", "skyg_loss"])).stdout
        match = re.search(r"counter packets (\d+)", out)
        return int(match.group(1)) if match else 0

    def clear_loss(self) -> None:
        if self.loss_method == "netem":
            _run(*self.command(["tc", "qdisc", "del", "dev", self.interface, "root"]), check=False)
        elif self.loss_method == "nftables":
            _run(*self.command(["nft", "delete", "table", "netdev", "skyg_loss"]), check=False)
        self.loss_method = None


@dataclass
class Lab:
    """Namespaces joined by a bridge. Use as a context manager or call close()."""

    tag: str = field(
        default_factory=lambda: f"{os.getpid() % 100000}-{random.randrange(1 << 16):x}"
    )
    subnet: int = field(default_factory=lambda: random.randrange(1, 255))  # X in 10.231.X.0/24
    hosts: list[Host] = field(default_factory=list)
    processes: list[Agent] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)
    bridge_ns: str = ""

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def broadcast(self) -> str:
        return f"10.231.{self.subnet}.255"

    def _netns(self, name: str) -> str:
        netns = f"{NS_PREFIX}-{self.tag}-{name}"
        _run("ip", "netns", "add", netns)
        self.namespaces.append(netns)
        _run("ip", "-n", netns, "link", "set", "lo", "up")
        return netns

    def add_hosts(self, count: int) -> list[Host]:
        """``count`` hosts on the bridge (created on first use)."""
        if not self.bridge_ns:
            self.bridge_ns = self._netns("br")
            _run("ip", "-n", self.bridge_ns, "link", "add", "br0", "type", "bridge")
            # Multicast flooding without IGMP snooping state, so that joins need no querier.
            _run(
                "ip", "-n", self.bridge_ns, "link", "set", "br0", "type", "bridge",
                "mcast_snooping", "0",
            )  # fmt: skip
            _run("ip", "-n", self.bridge_ns, "link", "set", "br0", "up")
        added = []
        for _ in range(count):
            index = len(self.hosts) + 1
            if index > 250:
                raise ValueError("a lab has at most 250 hosts")
            netns = self._netns(f"h{index}")
            address = f"10.231.{self.subnet}.{index}"
            _run(
                "ip", "-n", netns, "link", "add", "eth0", "type", "veth",
                "peer", "name", f"v{index}", "netns", self.bridge_ns,
            )  # fmt: skip
            _run("ip", "-n", self.bridge_ns, "link", "set", f"v{index}", "master", "br0")
            _run("ip", "-n", self.bridge_ns, "link", "set", f"v{index}", "up")
            _run("ip", "-n", netns, "addr", "add", f"{address}/24", "dev", "eth0")
            _run("ip", "-n", netns, "link", "set", "eth0", "up")
            _run("ip", "-n", netns, "route", "add", "224.0.0.0/4", "dev", "eth0")
            host = Host(self, index, netns, address, "eth0")
            self.hosts.append(host)
            added.append(host)
        return added

    def isolated_host(self) -> Host:
        """A namespace with only ``lo``, multicast routed to it: one machine alone."""
        index = len(self.hosts) + 1
        netns = self._netns(f"solo{index}")
        _run("ip", "-n", netns, "route", "add", "224.0.0.0/4", "dev", "lo", "src", "127.0.0.1")
        host = Host(self, index, netns, "127.0.0.1", "lo")
        self.hosts.append(host)
        return host

    def start(
        self,
        host: Host,
        name: str,
        args: Sequence[str] = (),
        *,
        env: Mapping[str, str | None] | None = None,
        home: Path,
    ) -> Agent:
        """``skycluster agent --json`` in ``host``, named ``name@<host address>``
        (``name`` alone when it contains '@' or is empty: no --name flag)."""
        argv = [sys.executable, "-m", "skycluster.cli", "agent", "--json"]
        if name:
            argv += ["--name", name if "@" in name else f"{name}@{host.address}"]
        argv += list(args)
        agent = Agent(name or "agent", host.command(argv), agent_environ(home, env))
        self.processes.append(agent)
        return agent

    def close(self) -> None:
        for process in self.processes:
            process.kill()
        for host in self.hosts:
            with contextlib.suppress(Exception):
                host.clear_loss()
        for netns in reversed(self.namespaces):
            _run("ip", "netns", "delete", netns, check=False)
        self.namespaces.clear()
        self.hosts.clear()
        self.processes.clear()


def agent_environ(home: Path, extra: Mapping[str, str | None] | None = None) -> dict[str, str]:
    """The test runner's environment without skycluster/libcluster settings."""
    environ = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("SKYCLUSTER_", "LIBCLUSTER_", "ERL_"))
    }
    home.mkdir(parents=True, exist_ok=True)
    environ["HOME"] = str(home)
    environ["PYTHONUNBUFFERED"] = "1"
    for key, value in (extra or {}).items():
        if value is None:
            environ.pop(key, None)
        else:
            environ[key] = value
    return environ


class Agent:
    """A child process whose stdout is JSON lines and stderr is log lines."""

    def __init__(self, label: str, argv: Sequence[str], env: Mapping[str, str]) -> None:
        self.label = label
        self.argv = list(argv)
        self.events: list[Event] = []
        self.arrivals: list[float] = []  # time.time() when each event was read
        self.stderr_lines: list[str] = []
        self._changed = threading.Condition()
        self._eof = False
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(env),
            text=True,
            bufsize=1,
            start_new_session=True,
        )
        self._threads = [
            threading.Thread(target=self._read, args=(self.proc.stdout, True), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stderr, False), daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _read(self, stream: Any, is_stdout: bool) -> None:
        for raw in stream:
            line = raw.rstrip("\n")
            with self._changed:
                if is_stdout:
                    with contextlib.suppress(ValueError):
                        record = json.loads(line)
                        if isinstance(record, dict):
                            self.events.append(record)
                            self.arrivals.append(time.time())
                else:
                    self.stderr_lines.append(line)
                self._changed.notify_all()
        if is_stdout:
            with self._changed:
                self._eof = True
                self._changed.notify_all()

    def mark(self) -> int:
        with self._changed:
            return len(self.events)

    def wait_for(
        self,
        predicate: Callable[[Event], bool],
        timeout: float = WITHIN,
        *,
        since: int = 0,
        what: str = "matching event",
    ) -> Event:
        deadline = time.monotonic() + timeout
        with self._changed:
            position = since
            while True:
                while position < len(self.events):
                    event = self.events[position]
                    position += 1
                    if predicate(event):
                        return event
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._eof:
                    ended = " (its output ended)" if self._eof else ""
                    raise AssertionError(
                        f"{self.label}: no {what} within {timeout} s{ended}\n{self.describe()}"
                    )
                self._changed.wait(remaining)

    def members(self) -> set[str]:
        """Peers up now, from the event history."""
        with self._changed:
            up: set[str] = set()
            for event in self.events:
                if event.get("event") == "nodeup":
                    up.add(event["node"])
                elif event.get("event") == "nodedown":
                    up.discard(event["node"])
            return up

    def wait_members(self, expected: Iterable[str], timeout: float = WITHIN) -> None:
        """Wait until exactly ``expected`` are up."""
        wanted = set(expected)
        deadline = time.monotonic() + timeout
        with self._changed:
            while self.members() != wanted:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._eof:
                    raise AssertionError(
                        f"{self.label}: members {sorted(self.members())}, expected "
                        f"{sorted(wanted)} within {timeout} s\n{self.describe()}"
                    )
                self._changed.wait(remaining)

    def started(self, timeout: float = WITHIN) -> Event:
        return self.wait_for(lambda e: e.get("event") == "started", timeout, what="start")

    @property
    def name(self) -> str:
        return str(self.started()["node"])

    def logs(self, pattern: str) -> list[str]:
        regex = re.compile(pattern)
        with self._changed:
            return [line for line in self.stderr_lines if regex.search(line)]

    def wait_for_log(self, pattern: str, timeout: float = WITHIN) -> str:
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self.stderr_lines:
                    if regex.search(line):
                        return line
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"{self.label}: no log line matching {pattern!r} within {timeout} s\n"
                        f"{self.describe()}"
                    )
                self._changed.wait(remaining)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = WITHIN) -> int:
        """SIGTERM, then wait for the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"{self.label} did not stop on SIGTERM within {timeout} s"
            ) from None

    def kill(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(5)
        for thread in self._threads:
            thread.join(2)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                with contextlib.suppress(Exception):
                    stream.close()

    def describe(self) -> str:
        with self._changed:
            events = "\n".join(f"  {e}" for e in self.events[-20:])
            logs = "\n".join(f"  {line}" for line in self.stderr_lines[-20:])
        return f"{self.label} {self.argv}\nevents:\n{events}\nstderr:\n{logs}"
