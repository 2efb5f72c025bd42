"""Several hosts on one machine: Linux network namespaces joined by a bridge.

:class:`Lab` creates, for one test, a namespace ``skyc-br-<tag>`` holding a bridge
``br0``, and one namespace ``skyc-h<i>-<tag>`` per host, joined to the bridge by a veth
pair (``eth0`` in the host, ``v<i>`` on the bridge) and addressed ``10.213.X.<i>/24``
(X random per lab). ``lo`` is up everywhere. Nothing is created in, or changed about,
the root namespace: no test packet can leave the machine.

:meth:`Lab.close` (also on a failed setup, and from the :func:`lab` fixture's
finalizer) kills every process started in the lab's namespaces and deletes the
namespaces, which removes the bridge and the veths with them.

:func:`lab` is a pytest fixture: import it into a test module (``from netns import
lab``) to use it. It skips the test, with the reason, where namespaces cannot be made
(not root, no ``ip``, ``ip netns add`` refused).

:class:`NsProcess` is a program started in a host (:meth:`Lab.spawn`): threads read its
stdout (JSON lines become :attr:`NsProcess.events`) and stderr, so that tests wait for
events with a deadline instead of sleeping.
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
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

PREFIX = "skyc"
WITHIN = 15.0  # liveness bound for what should happen (not a timing claim)

Event = dict[str, Any]


def unavailable() -> str | None:
    """Why network namespaces cannot be used here, or None when they can."""
    if not sys.platform.startswith("linux"):
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "creating network namespaces needs root (run the netns tests as root)"
    if shutil.which("ip") is None:
        return "the 'ip' command (iproute2) is missing: run scripts/install-system-deps"
    probe = f"{PREFIX}-probe-{os.getpid()}-{random.randrange(1 << 24):x}"
    added = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if added.returncode != 0:
        return f"`ip netns add` failed: {added.stderr.strip() or added.returncode}"
    subprocess.run(["ip", "netns", "delete", probe], capture_output=True, check=False)
    return None


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``ip ARGS``; raise with its stderr when it fails and ``check`` is set."""
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {result.stderr.strip()}")
    return result


@dataclass(frozen=True)
class NsHost:
    """One host of a lab: a namespace and its address on the bridge."""

    index: int
    netns: str
    address: str

    def command(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside this host's namespace."""
        return ["ip", "netns", "exec", self.netns, *argv]


class Lab:
    """Hosts (namespaces) on one bridge, in 10.213.X.0/24. A context manager."""

    def __init__(self, hosts: int = 2, *, tag: str | None = None) -> None:
        if not 1 <= hosts <= 250:
            raise ValueError(f"hosts={hosts}: a lab has 1 to 250 hosts")
        self.tag = tag or f"{os.getpid() % 100000}-{random.randrange(1 << 16):04x}"
        self.subnet = random.randrange(1, 255)
        self.count = hosts
        self.hosts: list[NsHost] = []
        self.namespaces: list[str] = []
        self.bridge_ns = f"{PREFIX}-br-{self.tag}"
        self.processes: list[NsProcess] = []

    def address(self, index: int) -> str:
        """The address of host ``index`` (1-based); also usable for absent hosts."""
        return f"10.213.{self.subnet}.{index}"

    # -- lifecycle ---------------------------------------------------------------------

    def __enter__(self) -> Lab:
        try:
            self._create()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _add_netns(self, name: str) -> None:
        ip("netns", "add", name)
        self.namespaces.append(name)
        ip("-n", name, "link", "set", "lo", "up")

    def _create(self) -> None:
        self._add_netns(self.bridge_ns)
        ip("-n", self.bridge_ns, "link", "add", "br0", "type", "bridge")
        ip("-n", self.bridge_ns, "link", "set", "br0", "up")
        for index in range(1, self.count + 1):
            netns = f"{PREFIX}-h{index}-{self.tag}"
            self._add_netns(netns)
            # Both ends are created inside namespaces: the root namespace never sees them.
            ip(
                "-n", netns, "link", "add", "eth0", "type", "veth",
                "peer", "name", f"v{index}", "netns", self.bridge_ns,
            )  # fmt: skip
            ip("-n", self.bridge_ns, "link", "set", f"v{index}", "master", "br0", "up")
            ip("-n", netns, "addr", "add", f"{self.address(index)}/24", "dev", "eth0")
            ip("-n", netns, "link", "set", "eth0", "up")
            self.hosts.append(NsHost(index, netns, self.address(index)))

    def close(self) -> None:
        """Kill what runs in the lab and delete its namespaces. Idempotent."""
        for process in self.processes:
            process.kill()
        for netns in self.namespaces:
            # Anything else still running in the namespace (children of our processes).
            pids = ip("netns", "pids", netns, check=False).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
        for netns in reversed(self.namespaces):
            ip("netns", "delete", netns, check=False)
        self.namespaces.clear()
        self.hosts.clear()
        self.processes.clear()

    # -- running things in hosts -------------------------------------------------------

    def _command(self, host: NsHost | str, argv: Sequence[str]) -> list[str]:
        if isinstance(host, NsHost):
            return host.command(argv)
        if host not in self.namespaces:
            raise ValueError(f"{host!r} is not a namespace of this lab: {self.namespaces}")
        return ["ip", "netns", "exec", host, *argv]

    def run_in(
        self,
        host: NsHost | str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        timeout: float = WITHIN,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` to completion in ``host`` (an :class:`NsHost` or the name of one
        of this lab's namespaces, the bridge's included)."""
        return subprocess.run(
            self._command(host, argv),
            env=None if env is None else dict(env),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def spawn(
        self, host: NsHost | str, label: str, argv: Sequence[str], *, env: Mapping[str, str]
    ) -> NsProcess:
        """Start ``argv`` in ``host`` (as for :meth:`run_in`); :meth:`close` kills it."""
        process = NsProcess(label, self._command(host, argv), env)
        self.processes.append(process)
        return process


@pytest.fixture
def lab() -> Iterator[Lab]:
    """A two-host lab, removed at the end of the test (the test is skipped where
    namespaces cannot be created)."""
    reason = unavailable()
    if reason is not None:
        pytest.skip(reason)
    with Lab(2) as created:
        yield created


def clean_environ(home: Path, extra: Mapping[str, str | None] | None = None) -> dict[str, str]:
    """The test runner's environment (so the session's SKYCLUSTER_EPMD_PORT is kept)
    without the other skycluster/libcluster settings, HOME in ``home``; ``extra`` sets
    (or, with None, removes) variables."""
    environ = {
        key: value
        for key, value in os.environ.items()
        if key == "SKYCLUSTER_EPMD_PORT" or not key.startswith(("SKYCLUSTER_", "LIBCLUSTER_"))
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


class NsProcess:
    """A program whose stdout lines are read as JSON events and stderr lines as logs."""

    def __init__(self, label: str, argv: Sequence[str], env: Mapping[str, str]) -> None:
        self.label = label
        self.events: list[Event] = []
        self.stdout_lines: list[str] = []
        self.stderr_lines: list[str] = []
        self._changed = threading.Condition()
        self._eof = False
        self.proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(env),
            text=True,
            bufsize=1,
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
                    self.stdout_lines.append(line)
                    with contextlib.suppress(ValueError):
                        record = json.loads(line)
                        if isinstance(record, dict) and "event" in record:
                            self.events.append(record)
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
        """The first event from ``since`` on that satisfies ``predicate``; fails the
        test when none comes within ``timeout`` seconds."""
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

    def events_since(self, since: int = 0) -> list[Event]:
        with self._changed:
            return list(self.events[since:])

    def logs(self, pattern: str) -> list[str]:
        regex = re.compile(pattern)
        with self._changed:
            return [line for line in self.stderr_lines if regex.search(line)]

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """kill -9, then collect the process and the rest of its output. Idempotent."""
        if self.proc.poll() is None:
            self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(WITHIN)
        for thread in self._threads:
            thread.join(WITHIN)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()

    def describe(self) -> str:
        with self._changed:
            out = "\n".join(f"    {line}" for line in self.stdout_lines[-30:])
            err = "\n".join(f"    {line}" for line in self.stderr_lines[-30:])
        return f"  {self.label} stdout:\n{out}\n  {self.label} stderr:\n{err}"
