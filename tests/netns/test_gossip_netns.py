"""Gossip across real hosts: Linux network namespaces joined by a bridge, one
``skycluster agent --strategy gossip`` per host, multicast for real.

Every namespace, veth, bridge and nftables rule is created by the test and
removed after it (see netns.py); nothing is sent from the root namespace.
Where namespaces cannot be created (not root, no iproute2), these tests skip
and say why.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from netns import WITHIN, Lab, LossUnsupported, NsHost, NsProcess, lab

__all__ = ["lab"]  # the fixture, imported so that pytest finds it here

pytestmark = pytest.mark.netns

COOKIE = "netns-gossip-cookie-5d1e"
SECRET = "netns-gossip-secret-0b7c9a"
FAST = ["--heartbeat-interval", "0.5", "--heartbeat-timeout", "2", "--gossip-interval", "0.5"]


def gossip_agent(lab: Lab, host: NsHost, name: str, home: Path, *args: str) -> NsProcess:
    return lab.start(
        host,
        name,
        ["--cookie", COOKIE, "--strategy", "gossip", *args],
        home=home,
    )


def full_mesh(agents: list[NsProcess], timeout: float = WITHIN) -> list[str]:
    names = [a.name for a in agents]
    for agent in agents:
        agent.wait_linked(set(names) - {agent.name}, timeout)
    return names


def nodeups(agent: NsProcess) -> set[str]:
    return {e["node"] for e in agent.events if e.get("event") == "nodeup"}


def nodedowns(agent: NsProcess, since: int = 0) -> list[dict[str, object]]:
    return [e for e in agent.events[since:] if e.get("event") == "nodedown"]


# -- one machine ------------------------------------------------------------------------


def test_on_one_machine_with_nothing_configured(lab: Lab, tmp_path: Path) -> None:
    """What a developer tries first: one machine with one network interface and a
    default route; three agents given nothing but the strategy share the gossip
    port and hear each other through multicast loopback."""
    (host,) = lab.add_hosts(1)
    host.ip("route", "del", "224.0.0.0/4", "dev", "eth0")
    host.ip("route", "add", "default", "dev", "eth0")
    agents = [
        lab.start(
            host,
            "",  # default name, node<pid>@127.0.0.1
            ["--strategy", "gossip"],
            home=tmp_path / "home",
            env={"SKYCLUSTER_COOKIE": COOKIE},
        )
        for _ in range(3)
    ]
    full_mesh(agents)
    for agent in agents:
        assert agent.logs(r"cannot open the gossip socket") == []


def test_on_loopback_alone(lab: Lab, tmp_path: Path) -> None:
    """A host whose only interface is loopback, multicast routed to it."""
    host = lab.isolated_host()
    agents = [
        gossip_agent(lab, host, f"n{i}@127.0.0.1", tmp_path / "home", "--secret", SECRET)
        for i in (1, 2)
    ]
    full_mesh(agents)


# -- several hosts -------------------------------------------------------------------------


def test_three_hosts_form_a_full_mesh_and_outsiders_are_left_out(lab: Lab, tmp_path: Path) -> None:
    h1, h2, h3, h4, h5 = lab.add_hosts(5)
    home = tmp_path / "home"
    secret_file = tmp_path / "gossip-secret"  # n3 reads it from a file, behind a comment
    secret_file.write_text(f"# gossip secret\n{SECRET}\n")
    secret_file.chmod(0o600)
    members = [
        gossip_agent(lab, h1, "n1", home, "--secret", SECRET, "--multicast-if", "eth0"),
        gossip_agent(lab, h2, "n2", home, "--secret", SECRET, "--multicast-if", h2.address),
        # interface chosen by routing
        gossip_agent(lab, h3, "n3", home, "--secret-file", str(secret_file)),
    ]
    wrong_secret = gossip_agent(lab, h4, "wrong-secret", home, "--secret", "another-secret")
    wrong_cookie = lab.start(
        h4,
        "wrong-cookie",
        ["--cookie", "another-cookie", "--strategy", "gossip", "--secret", SECRET],
        home=home,
    )
    no_secret = gossip_agent(lab, h5, "no-secret", home, "--log-level", "info")
    names = full_mesh(members)

    # The outsiders heard the cluster (so the network works) and were not let in.
    wrong_secret.wait_for_log(r"dropped a gossip packet from 10\.213\.\d+\.\d+:\d+: unknown_key")
    no_secret.wait_for_log(r"dropped a gossip packet from .*: sealed")
    for member in members:
        member.wait_for_log(r"dropped a gossip packet from .*: (unknown_key|unsealed)")
    # Heartbeats reach the wrong-cookie node and lead to link attempts, which fail
    # the cookie handshake: gossip never lets it in.
    wrong_cookie.wait_for_log(r"handshake with .* failed|cannot link to n\d@")
    time.sleep(2.0)  # observation window: four more heartbeats, nobody new may come up
    for member in members:
        assert nodeups(member) == set(names) - {member.name}, member.describe()
        assert nodedowns(member) == [], member.describe()
    for outsider in (wrong_secret, wrong_cookie, no_secret):
        assert nodeups(outsider) == set(), outsider.describe()
        assert outsider.running


def test_three_hosts_over_ipv6_multicast(lab: Lab, tmp_path: Path) -> None:
    """An IPv6 group on the link (ff02::), nodes named and linked by IPv6 address;
    an agent of another label on the same group is not let in."""
    h1, h2, h3, h4 = lab.add_hosts(4)
    home = tmp_path / "home"
    group = ["--multicast-addr", "ff02::4b59", "--secret", SECRET]

    def agent(host: NsHost, name: str, *args: str) -> NsProcess:
        assert host.address6 is not None
        return gossip_agent(lab, host, f"{name}@[{host.address6}]", home, *group, *args)

    members = [
        agent(h1, "n1", "--multicast-if", "eth0"),
        agent(h2, "n2", "--multicast-if", "eth0", "--if-addr", "::"),
        agent(h3, "n3", "--multicast-if", "eth0"),
    ]
    other = agent(
        h4, "other", "--multicast-if", "eth0", "--gossip-label", "other", "--log-level", "info"
    )
    names = full_mesh(members)
    assert all(name.endswith("]") for name in names)
    # from the senders' link-local addresses, which the kernel picks for ff02::
    other.wait_for_log(r"dropped a gossip packet from \[fe80:[0-9a-f:]+\]:45892: other_cluster")
    for member in members:
        assert nodeups(member) == set(names) - {member.name}, member.describe()
    assert nodeups(other) == set(), other.describe()


def test_a_partition_is_seen_on_both_sides_and_heals_by_itself(lab: Lab, tmp_path: Path) -> None:
    hosts = lab.add_hosts(3)
    home = tmp_path / "home"
    agents = [gossip_agent(lab, h, f"n{h.index}", home, "--secret", SECRET, *FAST) for h in hosts]
    n1, n2, n3 = full_mesh(agents)
    a1, a2, a3 = agents
    marks = [a.mark() for a in agents]

    hosts[2].link_down()
    timeout = 2.0 + 0.5 + 3.0  # heartbeat timeout, one check, generous slack
    a3.wait_linked(set(), timeout)
    a1.wait_linked({n2}, timeout)
    a2.wait_linked({n1}, timeout)
    for agent, mark in zip(agents, marks, strict=True):
        for event in nodedowns(agent, mark):
            assert event["reason"] == "heartbeat_timeout", agent.describe()
    assert {e["node"] for e in nodedowns(a3, marks[2])} == {n1, n2}
    assert [e["node"] for e in nodedowns(a1, marks[0])] == [n3]

    marks = [a.mark() for a in agents]
    hosts[2].link_up()  # no operator action beyond the network coming back
    full_mesh(agents)
    assert {e["node"] for e in a3.events[marks[2] :] if e.get("event") == "nodeup"} == {n1, n2}
    assert [e["node"] for e in a1.events[marks[0] :] if e.get("event") == "nodeup"] == [n3]


def test_ten_percent_packet_loss_still_forms_and_keeps_the_cluster(
    lab: Lab, tmp_path: Path
) -> None:
    hosts = lab.add_hosts(3)
    try:
        methods = {host.set_loss(10) for host in hosts}
    except LossUnsupported as exc:
        pytest.skip(str(exc))
    home = tmp_path / "home"
    # Links are TCP: a segment lost twice early in a connection (initial RTO 1 s, then
    # 2 s) means 3 s of silence, so at 10 % loss the default 3 s heartbeat timeout
    # occasionally drops a link (gossip relinks it within a second). A lossy network
    # wants a longer timeout; with 5 s no link may drop at all.
    timeout = ["--heartbeat-timeout", "5"]
    agents = [
        gossip_agent(lab, h, f"n{h.index}", home, "--secret", SECRET, *timeout) for h in hosts
    ]
    full_mesh(agents)
    marks = [a.mark() for a in agents]
    time.sleep(5.0)  # observation window: five heartbeats and gossip rounds under loss
    for agent, mark in zip(agents, marks, strict=True):
        assert nodedowns(agent, mark) == [], agent.describe()
    if methods == {"nftables"}:
        # The rule really dropped packets (so the cluster formed despite loss).
        assert sum(h.dropped_packets() for h in hosts) > 0


def test_broadcast_only(lab: Lab, tmp_path: Path) -> None:
    hosts = lab.add_hosts(3)
    home = tmp_path / "home"
    agents = [
        gossip_agent(
            lab,
            h,
            f"n{h.index}",
            home,
            "--broadcast-only",
            "--multicast-addr",
            lab.broadcast,
            "--secret",
            SECRET,
        )
        for h in hosts
    ]
    full_mesh(agents)


LIBRARY = textwrap.dedent(
    """
    import asyncio, json, os
    import skycluster
    from skycluster.strategy import Gossip

    def udp_sockets():
        with open("/proc/net/udp") as f:
            return [line.split()[1] for line in f.readlines()[1:]]

    async def main():
        # counted after a first node has come and gone: the node thread's event loop
        # (uvloop) may keep one process-wide pipe
        async with skycluster.Cluster("warm@127.0.0.1", cookie="c", port_mapper=False):
            pass
        fds = len(os.listdir("/proc/self/fd"))
        gossip = Gossip(secret=["rotated-in", "SECRET"], interval=0.2)  # shared by both
        one = skycluster.Cluster("one@127.0.0.1", cookie="c", topologies={"g": gossip},
                                 port_mapper=False)
        two = skycluster.Cluster("two@127.0.0.1", cookie="c", topologies={"g": gossip},
                                 port_mapper=False)
        async with one, two:
            await one.wait_for_nodes(1, timeout=10)
            await two.wait_for_nodes(1, timeout=10)
            await asyncio.sleep(1)  # a few more rounds, all of them ignored
            stats = one.stats()
            nodes = [one.nodes(), two.nodes()]
            gossiping = [s for s in udp_sockets() if s.endswith(":B344")]  # port 45892
        print(json.dumps({"nodes": nodes, "stats": stats,
                          "gossiping": len(gossiping),
                          "after": [s for s in udp_sockets() if s.endswith(":B344")],
                          "fds": [fds, len(os.listdir("/proc/self/fd"))]}))

    asyncio.run(main())
    """
).replace("SECRET", SECRET)


def test_library_use_counts_and_cleans_up(lab: Lab) -> None:
    """Two Clusters in one process share one Gossip object: each run keeps its own
    state, counters reach Cluster.stats(), and stopping closes every socket."""
    host = lab.isolated_host()
    result = subprocess.run(
        host.command([sys.executable, "-c", LIBRARY]), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["nodes"] == [["two@127.0.0.1"], ["one@127.0.0.1"]]
    stats = report["stats"]
    assert stats["gossip_sent"] >= 2 and stats["gossip_bytes_sent"] > 0
    assert stats["gossip_received"] >= 2  # the other node's heartbeats, linked or not
    assert stats["gossip_own"] >= 1  # its own, looped back and ignored
    assert not any(key.startswith("gossip_dropped") for key in stats), stats
    assert report["gossiping"] == 2
    assert report["after"] == []
    before, after = report["fds"]
    assert after <= before, report["fds"]


# -- bad input on the group -------------------------------------------------------------------

INJECTOR = textwrap.dedent(
    """
    import os, socket, struct, sys, time
    GROUP, PORT = "230.1.1.251", 45892
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    rx.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                  struct.pack("4s4s", socket.inet_aton(GROUP), bytes(4)))
    rx.bind(("0.0.0.0", PORT))
    rx.settimeout(10)
    while True:
        real, _ = rx.recvfrom(4096)
        if real.startswith(b"SKYG"):
            break
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
    def send(packet):
        tx.sendto(packet, (GROUP, PORT))
    for _ in range(50):
        send(real)                                      # replayed
        tampered = bytearray(real); tampered[-5] ^= 0x40
        send(bytes(tampered))                           # tampered
        send(real[:9])                                  # truncated
        send(real + bytes(2000))                        # oversized
        send(os.urandom(80))                            # random
        send(b"NOTIFY * HTTP/1.1\\r\\nHOST: 239.255.255.250:1900\\r\\n\\r\\n")  # another program
    for _ in range(5000):
        send(os.urandom(60))                            # a flood
    print("sent", flush=True)
    """
)

REASONS = ("replay", "authentication", "truncated", "oversized", "foreign")


def test_bad_packets_and_floods_are_dropped_counted_and_logged_once(
    lab: Lab, tmp_path: Path
) -> None:
    host = lab.isolated_host()
    home = tmp_path / "home"
    agents = [
        gossip_agent(lab, host, f"n{i}@127.0.0.1", home, "--secret", SECRET, "--log-level", "info")
        for i in (1, 2)
    ]
    full_mesh(agents)
    marks = [a.mark() for a in agents]
    began = time.monotonic()
    injector = subprocess.run(
        host.command([sys.executable, "-c", INJECTOR]), capture_output=True, text=True, timeout=30
    )
    assert injector.returncode == 0 and "sent" in injector.stdout, injector.stderr
    for reason in REASONS:
        line = rf"dropped a gossip packet from [\d.]+:\d+: {reason} "
        deadline = time.monotonic() + WITHIN
        while not any(a.logs(line) for a in agents):
            assert time.monotonic() < deadline, f"no agent logged a {reason} drop"
            time.sleep(0.05)
    time.sleep(1.5)  # a few more heartbeats: the cluster survived the flood
    elapsed = time.monotonic() - began
    for agent, mark in zip(agents, marks, strict=True):
        assert agent.running
        assert nodedowns(agent, mark) == [], agent.describe()
        # 50 to 5000 bad packets per reason, at most one line per reason per 10 s.
        for reason in (*REASONS, "flood"):
            lines = agent.logs(rf"dropped a gossip packet from .*: {reason} ")
            assert len(lines) <= 1 + int(elapsed // 10), (reason, lines)
