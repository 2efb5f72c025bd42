"""Real ``skycluster agent`` processes on loopback, for the integration tests.

:class:`AgentFactory` (the ``agent_factory`` fixture in ``conftest.py``) starts
agents and helper programs; a background thread per stream reads their JSON
lines (stdout) and log lines (stderr), so that tests wait for events with a
deadline instead of sleeping. Closing the factory kills every process it
started and checks every agent's output: for each peer, nodeup and nodedown
strictly alternate, starting with nodeup.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

LOOPBACK = "127.0.0.1"
COOKIE = "integration-cookie-7f3a9c21e4"
# How long a test waits for something that should happen (a liveness bound, not a timing claim).
WITHIN = 30.0

Event = dict[str, Any]
Predicate = Callable[[Event], bool]
T = TypeVar("T")


def skycluster_command() -> list[str]:
    """The CLI, run by the interpreter that runs the tests (the project's venv)."""
    return [sys.executable, "-m", "skycluster.cli"]


def free_port(taken: set[int] | None = None) -> int:
    """A loopback port that is free now (bound to port 0, then released)."""
    while True:
        with socket.socket() as sock:
            sock.bind((LOOPBACK, 0))
            port = int(sock.getsockname()[1])
        if taken is None or port not in taken:
            if taken is not None:
                taken.add(port)
            return port


def clean_environ(home: Path, extra: Mapping[str, str | None] | None = None) -> dict[str, str]:
    """The test runner's environment without skycluster/libcluster/epmd settings, with
    HOME in a temporary directory and a port mapper port of its own (never the
    machine's 4369); ``extra`` sets (or, with None, removes) variables."""
    environ = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("SKYCLUSTER_", "LIBCLUSTER_", "ERL_EPMD_"))
    }
    environ["HOME"] = str(home)
    environ["SKYCLUSTER_EPMD_PORT"] = str(free_port())
    environ["PYTHONUNBUFFERED"] = "1"
    for key, value in (extra or {}).items():
        if value is None:
            environ.pop(key, None)
        else:
            environ[key] = value
    return environ


class Process:
    """A child process whose stdout is JSON lines and stderr is log lines.

    ``argv`` is the whole command line: a prefix such as ``ip netns exec NS`` runs the
    program elsewhere. Waits without a ``timeout`` use :attr:`within`."""

    within = WITHIN  # default liveness bound of the waits; a subclass may change it

    def __init__(self, label: str, argv: Sequence[str], env: Mapping[str, str]) -> None:
        self.label = label
        self.argv = list(argv)
        self.events: list[Event] = []
        self.arrivals: list[float] = []  # time.time() when each event was read
        self.stdout_lines: list[str] = []
        self.stderr_lines: list[str] = []
        self.bad_lines: list[str] = []
        self._changed = threading.Condition()
        self._eof = {"stdout": False, "stderr": False}
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(env),
            text=True,
            bufsize=1,
        )
        self._readers = [
            threading.Thread(target=self._read_stdout, name=f"{label} stdout", daemon=True),
            threading.Thread(target=self._read_stderr, name=f"{label} stderr", daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    # -- the reader threads ---------------------------------------------------

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.rstrip("\n")
            with self._changed:
                self.stdout_lines.append(line)
                try:
                    record = json.loads(line)
                except ValueError:
                    record = None
                if isinstance(record, dict) and isinstance(record.get("event"), str):
                    self.events.append(record)
                    self.arrivals.append(time.time())
                else:
                    self.bad_lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self._eof["stdout"] = True
            self._changed.notify_all()

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            with self._changed:
                self.stderr_lines.append(raw.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._eof["stderr"] = True
            self._changed.notify_all()

    # -- waiting --------------------------------------------------------------

    def mark(self) -> int:
        """Position in the event history; pass as ``since`` to wait for later events."""
        with self._changed:
            return len(self.events)

    def _wait(
        self,
        find: Callable[[], T | None],
        timeout: float | None,
        stream: str,
        failure: Callable[[], str],
    ) -> T:
        """``find()`` (called with the lock held, again after every new line) until it
        returns something; fails the test, saying ``failure()``, after ``timeout`` seconds
        (:attr:`within` when None) or once ``stream`` ended without it."""
        timeout = self.within if timeout is None else timeout
        deadline = time.monotonic() + timeout
        with self._changed:
            while (found := find()) is None:
                remaining = deadline - time.monotonic()
                ended = self._eof[stream]
                if remaining <= 0 or ended:
                    raise AssertionError(
                        f"{self.label}: {failure()} within {timeout} s"
                        f"{' (its output ended)' if ended else ''}\n{self.describe()}"
                    )
                self._changed.wait(remaining)
            return found

    @staticmethod
    def _first(items: list[T], since: int, match: Callable[[T], bool]) -> Callable[[], T | None]:
        """A ``find`` for :meth:`_wait`: the first item of ``items`` (a list that grows)
        from position ``since`` on that matches; each item is looked at once."""
        position = since

        def find() -> T | None:
            nonlocal position
            while position < len(items):
                item = items[position]
                position += 1
                if match(item):
                    return item
            return None

        return find

    def wait_for(
        self,
        predicate: Predicate,
        timeout: float | None = None,
        *,
        since: int = 0,
        what: str = "",
    ) -> Event:
        """The first event from position ``since`` on that satisfies ``predicate``;
        fails the test when none arrives within ``timeout`` seconds."""
        find = self._first(self.events, since, predicate)
        return self._wait(find, timeout, "stdout", lambda: f"no {what or 'matching event'}")

    def expect_none(
        self, predicate: Predicate, duration: float, *, since: int = 0, what: str = ""
    ) -> None:
        """Watch for ``duration`` seconds (an observation window for something that
        must not happen); fails as soon as a matching event appears."""
        deadline = time.monotonic() + duration
        find = self._first(self.events, since, predicate)
        with self._changed:
            while (event := find()) is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                self._changed.wait(remaining)
        raise AssertionError(
            f"{self.label}: unexpected {what or 'event'}: {event}\n{self.describe()}"
        )

    def wait_for_log(self, pattern: str, timeout: float | None = None) -> str:
        """The first stderr line matching the regular expression ``pattern``."""
        regex = re.compile(pattern)
        find = self._first(self.stderr_lines, 0, lambda line: regex.search(line) is not None)
        return self._wait(find, timeout, "stderr", lambda: f"no log line matching {pattern!r}")

    def logs(self, pattern: str) -> list[str]:
        """The stderr lines so far that match the regular expression ``pattern``."""
        regex = re.compile(pattern)
        with self._changed:
            return [line for line in self.stderr_lines if regex.search(line)]

    def events_since(self, since: int = 0) -> list[Event]:
        with self._changed:
            return list(self.events[since:])

    def membership_events(self, since: int = 0) -> list[Event]:
        return [e for e in self.events_since(since) if e["event"] in ("nodeup", "nodedown")]

    def linked(self) -> set[str]:
        """Peers whose last event in this process's output is a nodeup."""
        state: dict[str, bool] = {}
        for event in self.membership_events():
            state[event["node"]] = event["event"] == "nodeup"
        return {node for node, up in state.items() if up}

    def wait_linked(self, expected: Iterable[str], timeout: float | None = None) -> None:
        """Wait until :meth:`linked` is exactly ``expected``."""
        wanted = set(expected)
        self._wait(
            lambda: True if self.linked() == wanted else None,
            timeout,
            "stdout",
            lambda: f"linked to {sorted(self.linked())}, expected {sorted(wanted)}",
        )

    def wait_exit(self, timeout: float | None = None) -> int:
        """The exit code, once the process ended and its output is read to the end."""
        timeout = self.within if timeout is None else timeout
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{self.label} still runs after {timeout} s\n{self.describe()}"
            ) from None
        for reader in self._readers:
            reader.join(timeout)
        return code

    # -- signals --------------------------------------------------------------

    def signal(self, signum: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signum)

    def kill(self) -> None:
        """kill -9, then collect the process and its remaining output."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGCONT)  # a stopped process dies just as well
            self.proc.kill()
        self.proc.wait(self.within)
        for reader in self._readers:
            reader.join(self.within)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def output(self) -> str:
        """Everything the process printed so far, stdout then stderr."""
        with self._changed:
            return "\n".join(self.stdout_lines + self.stderr_lines)

    def describe(self) -> str:
        with self._changed:
            out = "\n".join(f"    {line}" for line in self.stdout_lines[-40:])
            err = "\n".join(f"    {line}" for line in self.stderr_lines[-40:])
        return f"  {self.label} stdout:\n{out}\n  {self.label} stderr:\n{err}"


class Agent(Process):
    """A ``skycluster agent --json`` process."""

    def __init__(self, name: str, port: int, argv: Sequence[str], env: Mapping[str, str]) -> None:
        self.identity = name
        self.port = port
        super().__init__(name, argv, env)

    @property
    def spec(self) -> str:
        """``name@host:port``, as other agents' ``--hosts`` name it."""
        return f"{self.identity}:{self.port}"

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def wait_started(self, timeout: float = WITHIN) -> Event:
        return self.wait_for(lambda e: e["event"] == "started", timeout, what="started event")

    def wait_nodeup(self, node: str, timeout: float = WITHIN, *, since: int = 0) -> Event:
        return self.wait_for(
            lambda e: e["event"] == "nodeup" and e.get("node") == node,
            timeout,
            since=since,
            what=f"nodeup of {node}",
        )

    def wait_nodedown(self, node: str, timeout: float = WITHIN, *, since: int = 0) -> Event:
        return self.wait_for(
            lambda e: e["event"] == "nodedown" and e.get("node") == node,
            timeout,
            since=since,
            what=f"nodedown of {node}",
        )


def alternation_errors(process: Process) -> list[str]:
    """For each peer: nodeup, nodedown, nodeup, ... (never two of a kind in a row),
    never the agent itself; every stdout line is a JSON event."""
    errors = [
        f"{process.label}: stdout line is not a JSON event: {line!r}" for line in process.bad_lines
    ]
    last: dict[str, str] = {}
    own = getattr(process, "identity", None)
    for index, event in enumerate(process.events):
        kind = event["event"]
        if kind not in ("nodeup", "nodedown"):
            continue
        node = str(event.get("node"))
        if node == own:
            errors.append(f"{process.label}: event #{index} is about itself: {event}")
        previous = last.get(node, "nodedown")
        if previous == kind:
            errors.append(
                f"{process.label}: event #{index} is a second {kind} in a row for {node}: {event}"
            )
        last[node] = kind
    return errors


class AgentFactory:
    """Starts agents and helper programs; :meth:`close` kills them all and checks output."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.home.mkdir(parents=True, exist_ok=True)
        self.processes: list[Process] = []
        self.ports: set[int] = set()
        self.epmd_port = free_port(self.ports)

    def port(self) -> int:
        return free_port(self.ports)

    def environ(self, extra: Mapping[str, str | None] | None = None) -> dict[str, str]:
        """One test's agents share a port mapper port that no other test uses."""
        return clean_environ(
            self.home,
            {
                "SKYCLUSTER_COOKIE": COOKIE,
                "SKYCLUSTER_EPMD_PORT": str(self.epmd_port),
                **(extra or {}),
            },
        )

    def __call__(
        self,
        name: str,
        *,
        port: int | None = None,
        hosts: Iterable[Agent | str] = (),
        args: Sequence[str] = (),
        env: Mapping[str, str | None] | None = None,
        retry_interval: float | None = 0.2,
        wait: bool = True,
    ) -> Agent:
        """Start ``skycluster agent --json`` as ``name@127.0.0.1:port`` (a free port
        unless given) with the Epmd strategy over ``hosts``; wait for "started"."""
        port = self.port() if port is None else port
        self.ports.add(port)
        identity = f"{name}@{LOOPBACK}"
        argv = [*skycluster_command(), "agent", "--name", f"{identity}:{port}", "--json"]
        seeds = [h.spec if isinstance(h, Agent) else h for h in hosts]
        if seeds:
            argv += ["--strategy", "epmd", "--hosts", ",".join(seeds)]
            if retry_interval is not None:
                argv += ["--retry-interval", str(retry_interval)]
        argv += list(args)
        agent = Agent(identity, port, argv, self.environ(env))
        self.processes.append(agent)
        if wait:
            agent.wait_started()
        return agent

    def spawn(
        self, label: str, argv: Sequence[str], env: Mapping[str, str | None] | None = None
    ) -> Process:
        """Start any program whose stdout is JSON lines."""
        process = Process(label, argv, self.environ(env))
        self.processes.append(process)
        return process

    def close(self) -> None:
        for process in self.processes:
            process.kill()
        errors = [error for process in self.processes for error in alternation_errors(process)]
        if errors:
            outputs = "\n".join(p.describe() for p in self.processes)
            raise AssertionError("\n".join(errors) + "\n" + outputs)


def run_cli(
    args: Sequence[str], env: Mapping[str, str], timeout: float = WITHIN
) -> subprocess.CompletedProcess[str]:
    """Run ``skycluster ARGS`` to completion (for commands that exit by themselves)."""
    return subprocess.run(
        [*skycluster_command(), *args],
        env=dict(env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
