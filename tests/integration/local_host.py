"""Agents around one port mapper port on loopback, for the port-mapper integration tests.

:class:`Host` gives a test a port mapper port of its own (``SKYCLUSTER_EPMD_PORT``, in
20000-32000, outside the kernel's ephemeral range so that no agent's listener can take it),
so that ``skycluster names`` lists exactly the agents of the test. Its agents are started
with no port (``--name a@127.0.0.1``): they listen on a free port and are found through the
port mapper only. Agents are killed (and their output checked) by ``agent_factory``; other
programs started with :meth:`Host.helper` are killed by :meth:`Host.close`.
"""

from __future__ import annotations

import json
import random
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import psutil  # type: ignore[import-untyped]
from agents import (
    LOOPBACK,
    WITHIN,
    Agent,
    AgentFactory,
    Process,
    run_cli,
    skycluster_command,
)

POLL = "0.2"  # --polling-interval of the strategies under test, in seconds


def private_epmd_port() -> int:
    """A loopback port in 20000-32000 that is free now (nobody listens, nothing binds it)."""
    for _ in range(200):
        port = random.randint(20000, 32000)
        with socket.socket() as sock:
            try:
                sock.bind((LOOPBACK, port))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port in 20000-32000")


def listener_pid(port: int) -> int | None:
    """The process listening on the loopback TCP ``port``, if any."""
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
            return None if conn.pid is None else int(conn.pid)
    return None


class Host:
    """Agents of one test around one port mapper port."""

    def __init__(self, factory: AgentFactory, tmp_path: Path) -> None:
        self.factory = factory
        self.tmp_path = tmp_path
        self.epmd_port = private_epmd_port()
        self.helpers: list[Process] = []  # non-agent programs (their stdout is not JSON)

    def env(self, **extra: str | None) -> dict[str, str]:
        return self.factory.environ({"SKYCLUSTER_EPMD_PORT": str(self.epmd_port), **extra})

    def agent(
        self,
        name: str,
        *args: str,
        strategy: Sequence[str] = ("--strategy", "local"),
        port: int | None = None,
        wait: bool = True,
        env: Mapping[str, str | None] | None = None,
    ) -> Agent:
        """``skycluster agent --name NAME@127.0.0.1`` (no port unless given) with ``strategy``."""
        identity = f"{name}@{LOOPBACK}"
        spec = identity if port is None else f"{identity}:{port}"
        argv = [*skycluster_command(), "agent", "--name", spec, "--json", *strategy]
        if strategy:
            argv += ["--polling-interval", POLL]
        argv += list(args)
        agent = Agent(identity, port or 0, argv, self.env(**(env or {})))
        self.factory.processes.append(agent)  # killed and checked by the factory
        if wait and port is None:
            started = agent.wait_started()
            agent.port = int(str(started["address"]).rsplit(":", 1)[1])
        elif wait:
            agent.wait_started()
        return agent

    def helper(self, label: str, argv: Sequence[str], **env: str | None) -> Process:
        process = Process(label, argv, self.env(**env))
        self.helpers.append(process)
        return process

    def names(self, *args: str, **env: str | None) -> subprocess.CompletedProcess[str]:
        return run_cli(["names", *args], self.env(**env))

    def listed(self) -> dict[str, int] | None:
        """What ``skycluster names --json`` lists; None when no port mapper answers."""
        result = self.names("--json")
        if result.returncode != 0:
            return None
        return {entry["name"]: entry["port"] for entry in json.loads(result.stdout)}

    def wait_listed(self, expected: dict[str, int]) -> None:
        """Poll ``names`` until it lists exactly ``expected``: other processes change
        the port mapper's state and nothing reports it, so polling is the only way."""
        deadline = time.monotonic() + WITHIN
        last = self.listed()
        while last != expected:
            assert time.monotonic() < deadline, f"names lists {last}, expected {expected}"
            time.sleep(0.1)
            last = self.listed()

    def close(self) -> None:
        for process in self.helpers:
            process.kill()


def wait_mesh(agents: Sequence[Agent]) -> None:
    for agent in agents:
        for other in agents:
            if other is not agent:
                agent.wait_nodeup(other.identity)


def short(agent: Agent) -> str:
    return agent.identity.split("@", 1)[0]
