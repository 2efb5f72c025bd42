"""The Kubernetes strategy in real agent processes: peers are agents on loopback
addresses of their own (the "pod IPs" in the objects the fake API serves);
the observer runs ``skycluster agent --strategy kubernetes`` configured by
flags or by the environment (the seed's LIBCLUSTER_* names, the in-cluster
KUBERNETES_SERVICE_HOST/PORT)."""

from __future__ import annotations

import time

from agents import Agent, AgentFactory
from k8s_api_server import FakeKubernetes, Pod
from loopback_agents import loopback_agent, shared_port


def observer(
    factory: AgentFactory,
    api: FakeKubernetes,
    port: int,
    *args: str,
    env: dict[str, str] | None = None,
) -> Agent:
    return loopback_agent(factory, "obs", "127.0.0.1", port, [*strategy_flags(api), *args], env)


def strategy_flags(api: FakeKubernetes) -> list[str]:
    """The Kubernetes strategy against the fake API server, pods labelled app=demo."""
    return [
        "--strategy",
        "kubernetes",
        "--kubernetes-master",
        api.url,
        "--kubernetes-service-account-path",
        str(api.account),
        "--kubernetes-selector",
        "app=demo",
        "--kubernetes-node-basename",
        "app",
        "--polling-interval",
        "0.3",
    ]


def test_scale_up_and_down(agent_factory: AgentFactory, api: FakeKubernetes) -> None:
    port = shared_port(agent_factory)
    b = loopback_agent(agent_factory, "app", "127.0.0.2", port)
    c = loopback_agent(agent_factory, "app", "127.0.0.3", port)
    d = loopback_agent(agent_factory, "app", "127.0.0.4", port)
    api.set_pods(Pod("app-0", "127.0.0.2"), Pod("app-1", "127.0.0.3", ready=False))
    obs = observer(agent_factory, api, port)
    obs.wait_nodeup(b.identity)
    # scale up: a new pod; the not-ready one turns ready
    mark = obs.mark()
    api.set_pods(
        Pod("app-0", "127.0.0.2"), Pod("app-1", "127.0.0.3", ready=False), Pod("app-2", "127.0.0.4")
    )
    obs.wait_nodeup(d.identity, since=mark)
    api.update("app-1", ready=True)
    obs.wait_nodeup(c.identity, since=mark)
    # scale down: a pod terminates (its process still runs): unlinked, not linked again
    mark = obs.mark()
    api.update("app-2", terminating=True)
    assert obs.wait_nodedown(d.identity, since=mark)["reason"] == "disconnect"
    # a pod dies and leaves the endpoints
    b.kill()
    api.remove("app-0")
    obs.wait_nodedown(b.identity, since=mark)
    obs.expect_none(lambda e: e["event"] == "nodeup", 1.0, since=mark, what="a relink")
    assert obs.linked() == {c.identity}
    assert api.count("list") == 1  # it all came on one watch


def test_api_outage_disconnects_nobody(agent_factory: AgentFactory, api: FakeKubernetes) -> None:
    port = shared_port(agent_factory)
    b = loopback_agent(agent_factory, "app", "127.0.0.2", port)
    c = loopback_agent(agent_factory, "app", "127.0.0.3", port)
    api.set_pods(Pod("app-0", "127.0.0.2"), Pod("app-1", "127.0.0.3"))
    obs = observer(agent_factory, api, port)
    obs.wait_nodeup(b.identity)
    obs.wait_nodeup(c.identity)
    api.wait_for(lambda: api.watching == 1)
    mark = obs.mark()
    api.outage = True
    api.cut_watches()
    api.wait_for(lambda: api.count("list", 503) >= 2)
    obs.expect_none(lambda e: e["event"] == "nodedown", 1.0, since=mark, what="nodedown")
    api.outage = False
    api.remove("app-1")
    assert obs.wait_nodedown(c.identity, since=mark)["reason"] == "disconnect"
    assert obs.linked() == {b.identity}


def test_environment_configuration_and_ipv6(
    agent_factory: AgentFactory, api: FakeKubernetes
) -> None:
    port = shared_port(agent_factory)
    v6 = loopback_agent(agent_factory, "app", "::1", port)
    v4 = loopback_agent(agent_factory, "app", "127.0.0.2", port)
    api.set_pods(Pod("app-0", "::1"), Pod("app-1", "127.0.0.2"))
    env = {
        "LIBCLUSTER_STRATEGY": "Cluster.Strategy.Kubernetes",
        "LIBCLUSTER_KUBERNETES_SELECTOR": "app=demo",
        "LIBCLUSTER_KUBERNETES_NODE_BASENAME": "app",
        "SKYCLUSTER_KUBERNETES_LOOKUP": "pods",
        "SKYCLUSTER_KUBERNETES_SERVICE_ACCOUNT_PATH": str(api.account),
        "KUBERNETES_SERVICE_HOST": "127.0.0.1",
        "KUBERNETES_SERVICE_PORT": str(api.port),
        "SKYCLUSTER_POLLING_INTERVAL": "0.3",
    }
    obs = loopback_agent(agent_factory, "obs", "127.0.0.1", port, [], env)
    obs.wait_nodeup(v6.identity)
    obs.wait_nodeup(v4.identity)
    assert api.count("list") >= 1
    assert {lookup for verb, lookup, _, _ in api.requests} == {"pods"}


def test_bad_options_exit_2_with_one_line(agent_factory: AgentFactory, api: FakeKubernetes) -> None:
    from agents import run_cli

    env = agent_factory.environ({"KUBERNETES_SERVICE_HOST": None})
    base = ["agent", "--name", "obs@127.0.0.1:1", "--strategy", "kubernetes"]
    cases = {
        "needs a label selector": [],
        "expected one of ip, dns, hostname": [
            "--kubernetes-selector",
            "a=b",
            "--kubernetes-mode",
            "x",
        ],
        "no Kubernetes API server": ["--kubernetes-selector", "a=b"],
        "expected https://HOST": [
            "--kubernetes-selector",
            "a=b",
            "--kubernetes-master",
            "ftp://x/y",
        ],
    }
    for needle, args in cases.items():
        done = run_cli([*base, *args], env)
        assert done.returncode == 2, done
        assert needle in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_a_terminating_pod_stays_unlinked_even_when_it_comes_back(
    agent_factory: AgentFactory, api: FakeKubernetes
) -> None:
    """A strategy's view wins (docs/membership.md): three members in a full mesh, a
    fourth pod turns terminating and every member disconnects it. Its process goes on
    running its strategy (which still lists the members), then restarts at the same
    address right away with a strategy that discovers nobody; members whose peers'
    lists still name it must not link it again, by a mesh dial, a retry or its own."""
    port = shared_port(agent_factory)
    ips = ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"]
    api.set_pods(*(Pod(f"app-{i}", ip) for i, ip in enumerate(ips)))
    flags = [*strategy_flags(api), "--full-mesh"]
    *members, x = (loopback_agent(agent_factory, "app", ip, port, flags) for ip in ips)
    for member in members:
        member.wait_linked({m.identity for m in [*members, x] if m is not member})
    marks = [member.mark() for member in members]
    api.update("app-3", terminating=True)
    for member, mark in zip(members, marks, strict=True):
        assert member.wait_nodedown(x.identity, since=mark)["reason"] == "disconnect"
    # its grace period: the process runs on, its strategy still lists the members
    time.sleep(2.0)
    x.kill()  # then restarted at once, at the same address, discovering nobody
    x = loopback_agent(agent_factory, "app", ips[3], port, ["--full-mesh"])
    for member, mark in zip(members, marks, strict=True):
        relinked = lambda e: e["event"] == "nodeup" and e["node"] == x.identity  # noqa: E731
        member.expect_none(relinked, 4.0, since=mark, what=f"a link to {x.identity}")
        assert member.linked() == {m.identity for m in members if m is not member}
