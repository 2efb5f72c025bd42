"""The hosts-file strategy across real hosts: two network namespaces on a bridge.

Each host runs its own agents, named after its address (``a@10.213.X.1``); the first
agent on a host serves that host's port mapper, bound to the host's address, and the
others register with it. Every agent reads the same hosts file, which lists both hosts
(and one address where nothing answers), asks each host's port mapper for its nodes and
links to them: one cluster across the namespaces.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from netns import Lab, NsHost, NsProcess, clean_environ, lab

__all__ = ["lab"]  # the fixture, imported so that pytest finds it here

pytestmark = pytest.mark.netns

COOKIE = "netns-hosts-cookie-5d1e"
SKYCLUSTER = [sys.executable, "-m", "skycluster.cli"]


class Hosts:
    """Agents of a lab, all running the hosts-file strategy over ``hosts_file``."""

    def __init__(self, lab: Lab, tmp_path: Path) -> None:
        self.lab = lab
        self.env = clean_environ(tmp_path / "home", {"SKYCLUSTER_COOKIE": COOKIE})
        self.hosts_file = tmp_path / "hosts"
        absent = lab.address(9)  # on the subnet, but no host: its port mapper never answers
        self.hosts_file.write_text(
            "".join(f"{h.address}\n" for h in lab.hosts) + f"# a host that is down\n{absent}\n"
        )

    def agent(self, host: NsHost, name: str) -> NsProcess:
        identity = f"{name}@{host.address}"
        argv = [
            *SKYCLUSTER, "agent", "--json", "--name", identity,
            "--strategy", "hosts", "--hosts-file", str(self.hosts_file),
            "--polling-interval", "0.3",
        ]  # fmt: skip
        agent = self.lab.spawn(host, identity, argv, env=self.env)
        started = agent.wait_for(lambda e: e["event"] == "started", what="started event")
        assert started["node"] == identity
        assert str(started["address"]).startswith(f"{host.address}:")
        return agent

    def names(self, where: NsHost, of: NsHost) -> dict[str, int]:
        """``skycluster names HOST --json`` run on ``where`` about host ``of``."""
        result = self.lab.run_in(where, [*SKYCLUSTER, "names", of.address, "--json"], env=self.env)
        assert result.returncode == 0, result.stderr
        return {entry["name"]: entry["port"] for entry in json.loads(result.stdout)}


def port_of(agent: NsProcess) -> int:
    return int(str(agent.events[0]["address"]).rsplit(":", 1)[1])


def nodeup_of(node: str) -> Callable[[dict[str, Any]], bool]:
    return lambda e: e["event"] == "nodeup" and e["node"] == node


def wait_mesh(agents: Sequence[NsProcess]) -> None:
    for agent in agents:
        for other in agents:
            if other is not agent:
                agent.wait_for(nodeup_of(other.label), what=f"nodeup of {other.label}")


def test_agents_on_two_hosts_form_one_cluster_through_the_hosts_file(
    lab: Lab, tmp_path: Path
) -> None:
    h1, h2 = lab.add_hosts(2)
    cluster = Hosts(lab, tmp_path)
    a, b = cluster.agent(h1, "a"), cluster.agent(h1, "b")
    c, d = cluster.agent(h2, "c"), cluster.agent(h2, "d")
    everyone = [a, b, c, d]
    wait_mesh(everyone)
    for agent in everyone:
        assert agent.linked() == {o.label for o in everyone if o is not agent}
        assert agent.running

    # Each host's port mapper knows its own agents only, and answers the other host.
    assert cluster.names(h2, of=h1) == {"a": port_of(a), "b": port_of(b)}
    assert cluster.names(h1, of=h2) == {"c": port_of(c), "d": port_of(d)}

    # Registrations are accepted from the port mapper's own host only (epmd's rule).
    probe = (
        "import asyncio, sys\n"
        "from skycluster.distribution import portmapper\n"
        "async def main():\n"
        "    try:\n"
        f"        await portmapper.register('z', 5000, host='{h1.address}',\n"
        "                                  epmd_port=portmapper.epmd_port_from_env(), timeout=5)\n"
        "    except portmapper.PortMapperError as exc:\n"
        "        print('refused:', exc)\n"
        "        return\n"
        "    print('registered'); sys.exit(1)\n"
        "asyncio.run(main())\n"
    )
    result = lab.run_in(h2, [sys.executable, "-c", probe], env=cluster.env)
    assert result.returncode == 0 and result.stdout.startswith("refused:"), result
    assert "z" not in cluster.names(h2, of=h1)


def test_a_host_keeps_its_port_mapper_when_the_agent_serving_it_dies(
    lab: Lab, tmp_path: Path
) -> None:
    h1, h2 = lab.add_hosts(2)
    cluster = Hosts(lab, tmp_path)
    a = cluster.agent(h1, "a")
    c, d = cluster.agent(h2, "c"), cluster.agent(h2, "d")  # c serves h2's port mapper
    wait_mesh([a, c, d])
    marks = {a: a.mark(), d: d.mark()}

    c.kill()
    a.wait_for(lambda e: e["event"] == "nodedown" and e["node"] == c.label, since=marks[a])
    # d registers again (serving h2's port mapper now), so a newcomer on either host
    # still finds it through the hosts file.
    e = cluster.agent(h1, "e")
    wait_mesh([a, d, e])
    assert cluster.names(h1, of=h2) == {"d": port_of(d)}
    # a and d stayed linked across the takeover: the only peer they lost is c.
    for agent in (a, d):
        downs = [ev for ev in agent.events_since(marks[agent]) if ev["event"] == "nodedown"]
        assert [ev["node"] for ev in downs] == [c.label], downs
    assert e.linked() == {a.label, d.label}


def test_an_embedded_port_mapper_bound_to_every_address(lab: Lab, tmp_path: Path) -> None:
    """``epmd_bind=""`` (every address, as PortMapperSettings documents): the node
    registers over loopback and the port mapper answers on the host's address too.
    In a namespace, so that nothing listens on the machine's real interfaces."""
    (h1,) = lab.add_hosts(1)
    script = (
        "import asyncio, json, skycluster\n"
        "from skycluster.distribution import portmapper\n"
        f"with skycluster.Cluster('z@{h1.address}', cookie='c', epmd_bind='') as c:\n"
        "    port = portmapper.epmd_port_from_env()\n"
        f"    for where in ('127.0.0.1', '{h1.address}'):\n"
        "        print(json.dumps(asyncio.run(portmapper.names(where, epmd_port=port))))\n"
    )
    env = clean_environ(tmp_path / "home")
    result = lab.run_in(h1, [sys.executable, "-c", script], env=env)
    assert result.returncode == 0, result.stderr
    listings = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(listings) == 2, result.stdout
    for listing in listings:
        assert [name for name, _ in listing] == ["z"], result.stdout


def test_one_port_mapper_per_host_whatever_address_the_nodes_use(lab: Lab, tmp_path: Path) -> None:
    (h1,) = lab.add_hosts(1)
    env = clean_environ(tmp_path / "home", {"SKYCLUSTER_COOKIE": COOKIE})
    started = []
    for identity in (f"a@{h1.address}", "b@127.0.0.1"):
        argv = [*SKYCLUSTER, "agent", "--json", "--name", identity]
        agent = lab.spawn(h1, identity, argv, env=env)
        agent.wait_for(lambda e: e["event"] == "started", what="started event")
        started.append(agent)
    for where in ("127.0.0.1", h1.address):
        result = lab.run_in(h1, [*SKYCLUSTER, "names", where, "--json"], env=env)
        assert result.returncode == 0, result.stderr
        assert sorted(e["name"] for e in json.loads(result.stdout)) == ["a", "b"], where
