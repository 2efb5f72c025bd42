"""The DNS strategies (dns, kubernetes-dns, kubernetes-dnssrv) against a real DNS
server (dnsmasq on 127.0.0.1 and a free port), linking real agent processes
on loopback addresses of their own. The records change; the cluster follows."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from agents import Agent, AgentFactory
from dnsmasq import Dnsmasq, dnsmasq_binary
from loopback_agents import loopback_agent, shared_port

from skycluster.dns import codec
from skycluster.dns.resolver import BadAnswer, DnsError, DnsTimeout, NameNotFound, Resolver

pytestmark = pytest.mark.skipif(
    dnsmasq_binary() is None,
    reason="needs Debian's dnsmasq (scripts/install-system-deps installs dnsmasq-base)",
)

SERVICE = "app.testns.svc.cluster.local"
POLL = "0.2"


@pytest.fixture
def dns(tmp_path: Path) -> Iterator[Dnsmasq]:
    server = Dnsmasq(tmp_path / "dnsmasq")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def observer(factory: AgentFactory, port: int, strategy: str, dns: Dnsmasq, *args: str) -> Agent:
    return loopback_agent(
        factory,
        "obs",
        "127.0.0.1",
        port,
        ["--strategy", strategy, "--dns-server", dns.server, "--polling-interval", POLL, *args],
    )


def up(agent: Agent, node: str, since: int = 0) -> None:
    agent.wait_nodeup(node, since=since)


def test_dns_poll_follows_a_and_aaaa_records(agent_factory: AgentFactory, dns: Dnsmasq) -> None:
    port = shared_port(agent_factory)
    b = loopback_agent(agent_factory, "app", "127.0.0.2", port)
    c = loopback_agent(agent_factory, "app", "127.0.0.3", port)
    v6 = loopback_agent(agent_factory, "app", "::1", port)
    dns.set_hosts([("127.0.0.2", "peers.test"), ("::1", "peers.test")])
    obs = observer(
        agent_factory, port, "dns", dns, "--dns-query", "peers.test", "--node-basename", "app"
    )
    up(obs, b.identity)
    up(obs, v6.identity)
    # a record appears: linked; a record goes: unlinked (and not linked again)
    mark = obs.mark()
    dns.set_hosts([("127.0.0.2", "peers.test"), ("127.0.0.3", "peers.test")])
    up(obs, c.identity, since=mark)
    down = obs.wait_nodedown(v6.identity, since=mark)
    assert down["reason"] == "disconnect"
    assert obs.linked() == {b.identity, c.identity}
    # the name vanishes (NXDOMAIN), then the server dies (timeouts): nobody unlinked
    mark = obs.mark()
    dns.set_hosts([])
    dns.resolves("peers.test", codec.A, lambda values: values == [])
    obs.wait_for_log("does not exist|NXDOMAIN")
    dns.stop()
    obs.wait_for_log("cannot reach|no answer from")
    obs.expect_none(lambda e: e["event"] == "nodedown", 1.0, since=mark, what="nodedown")
    # logged once per cause, not once per poll
    assert len([line for line in obs.stderr_lines if "NXDOMAIN" in line]) == 1
    dns.set_hosts([("127.0.0.3", "peers.test")])
    dns.start()
    obs.wait_nodedown(b.identity, since=mark)
    assert obs.linked() == {c.identity}


def test_kubernetes_dns_names_pods_by_ip(agent_factory: AgentFactory, dns: Dnsmasq) -> None:
    port = shared_port(agent_factory)
    b = loopback_agent(agent_factory, "app", "127.0.0.2", port)
    c = loopback_agent(agent_factory, "app", "127.0.0.3", port)
    dns.set_hosts([("127.0.0.2", SERVICE)])
    obs = observer(
        agent_factory,
        port,
        "kubernetes-dns",
        dns,
        "--dns-service",
        "app",
        "--dns-namespace",
        "testns",
        "--node-basename",
        "app",
    )
    up(obs, b.identity)
    mark = obs.mark()
    dns.set_hosts([("127.0.0.2", SERVICE), ("127.0.0.3", SERVICE)])
    up(obs, c.identity, since=mark)
    dns.set_hosts([("127.0.0.3", SERVICE)])
    assert obs.wait_nodedown(b.identity, since=mark)["reason"] == "disconnect"


def test_kubernetes_dnssrv_follows_srv_records_and_skips_garbage(
    agent_factory: AgentFactory, dns: Dnsmasq
) -> None:
    port = shared_port(agent_factory)
    b = loopback_agent(agent_factory, "app", "127.0.0.2", port)
    c = loopback_agent(agent_factory, "app", "127.0.0.3", port)
    # targets are names the agents' system resolver understands (an IP is one);
    # 127.0.0.9 runs nothing (unreachable)
    dns.set_srv([(SERVICE, "127.0.0.2", port), (SERVICE, "127.0.0.9", port)])
    obs = observer(
        agent_factory,
        port,
        "kubernetes-dnssrv",
        dns,
        "--dns-service",
        "app",
        "--dns-namespace",
        "testns",
        "--node-basename",
        "app",
        "--log-level",
        "info",
    )
    up(obs, b.identity)
    mark = obs.mark()
    # the server restarts with new records (dnsmasq reads SRV options at start)
    dns.set_srv([(SERVICE, "127.0.0.3", port), (SERVICE, "bad_target!", port)])
    up(obs, c.identity, since=mark)
    obs.wait_nodedown(b.identity, since=mark)
    obs.wait_for_log("cannot be nodes, skipped: 'bad_target!'")
    assert obs.running
    assert obs.linked() == {c.identity}


def test_resolver_falls_back_to_tcp_for_truncated_answers(dns: Dnsmasq) -> None:
    many = [(f"127.0.1.{i}", "many.test") for i in range(1, 61)]  # 60 A records: > 512 bytes
    dns.set_hosts(many)
    dns.resolves("many.test", codec.A, lambda values: values is not None)

    async def ask() -> list[str]:
        return await Resolver(dns.server).addresses("many.test")

    udp = dns.ask("many.test", codec.A)
    assert udp is not None and udp.truncated
    assert sorted(asyncio.run(ask())) == sorted(ip for ip, _ in many)


def test_resolver_errors(dns: Dnsmasq) -> None:
    async def ask(server: str, name: str) -> list[str]:
        return await Resolver(server, timeout=0.3, attempts=1).addresses(name)

    with pytest.raises(NameNotFound):
        asyncio.run(ask(dns.server, "nothing.test"))
    # a server that never answers
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        with pytest.raises(DnsTimeout):
            asyncio.run(ask(f"127.0.0.1:{silent.getsockname()[1]}", "nothing.test"))
    # a server that is gone (ICMP port unreachable)
    dns.stop()
    with pytest.raises(DnsError, match="cannot reach"):
        asyncio.run(ask(dns.server, "nothing.test"))


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        (lambda query: query[:2] + b"\x81\x80garbage", BadAnswer),  # our id, then garbage
        (lambda query: b"\x00\x00" + query[2:], DnsTimeout),  # someone else's id: ignored
        (lambda query: query[:2] + b"\x81\x83" + query[4:], NameNotFound),  # NXDOMAIN
    ],
)
def test_resolver_survives_garbage_servers(
    reply: Callable[[bytes], bytes], error: type[Exception]
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
        server.bind(("127.0.0.1", 0))
        server.settimeout(5)

        def answer() -> None:
            with contextlib.suppress(OSError):
                while True:
                    query, peer = server.recvfrom(512)
                    server.sendto(reply(query), peer)

        thread = threading.Thread(target=answer, daemon=True)
        thread.start()
        resolver = Resolver(f"127.0.0.1:{server.getsockname()[1]}", timeout=0.3, attempts=1)
        with pytest.raises(error):
            asyncio.run(resolver.query("x.test", codec.A))
