"""Agents on loopback addresses of their own (127.0.0.2, 127.0.0.3, ... and ::1,
all on ``lo`` on Linux), sharing one port, as pods do: what tells them apart is
their IP, which is what the Kubernetes and DNS strategies discover."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from agents import Agent, AgentFactory, skycluster_command

# Fast failure detection, names without port hints resolved with --dist-port, and
# no transitive links: a node links only to what its own strategy names.
COMMON = (
    "--no-port-mapper",
    "--no-full-mesh",
    "--heartbeat-interval",
    "0.2",
    "--heartbeat-timeout",
    "1.5",
)


def host_part(ip: str) -> str:
    return f"[{ip}]" if ":" in ip else ip


def loopback_agent(
    factory: AgentFactory,
    name: str,
    ip: str,
    port: int,
    args: Sequence[str] = (),
    env: Mapping[str, str | None] | None = None,
) -> Agent:
    """``skycluster agent --json`` as ``name@ip``, listening on ``ip:port``."""
    identity = f"{name}@{host_part(ip)}"
    argv = [
        *skycluster_command(),
        "agent",
        "--name",
        f"{identity}:{port}",
        "--dist-port",
        str(port),
        "--json",
        *COMMON,
        *args,
    ]
    agent = Agent(identity, port, argv, factory.environ(env))
    factory.processes.append(agent)
    agent.wait_started()
    return agent


def shared_port(factory: AgentFactory) -> int:
    """A port free on 127.0.0.1 (the others are almost surely free as well: the
    tests' agents are the only listeners on 127.0.0.2-9 and ::1)."""
    return factory.port()
