"""A partial partition between real hosts: three network namespaces on a bridge, one
agent each; host a drops every packet it sends to host b, so a and b cannot talk
while both still reach c. docs/membership.md ("Partial connectivity") says what each
node then does and sees; this test holds the agents to it.

Every namespace and nftables table is created by the test and removed after it (see
netns.py); nothing is sent from the root namespace. Where namespaces cannot be created
(not root, no iproute2) or nftables is missing, the test skips and says why.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from netns import WITHIN, Lab, NsHost, NsProcess, lab

__all__ = ["lab"]  # the fixture, imported so that pytest finds it here

pytestmark = pytest.mark.netns

COOKIE = "netns-partition-cookie-7a31"
PORT = 4370  # every host has its own port space
HTTP = "127.0.0.1:8086"  # each host's own loopback
CUT_TABLE = "skyc_cut"
FAST = [
    "--heartbeat-interval", "0.5", "--heartbeat-timeout", "2",
    "--connect-timeout", "2",
]  # fmt: skip
# The mesh backs off to one dial every 30 s (retry_max) while a pair cannot link:
# after the cut heals, the next dial may be that far away.
RELINK_WITHIN = 30.0 + 2 * WITHIN


def agent(lab: Lab, host: NsHost, name: str, seeds: list[str], home: Path) -> NsProcess:
    args = [
        "--name", f"{name}@{host.address}:{PORT}", "--cookie", COOKIE, "--no-port-mapper",
        "--http", HTTP, *FAST,
    ]  # fmt: skip
    if seeds:
        args += ["--strategy", "epmd", "--hosts", ",".join(seeds), "--retry-interval", "0.3"]
    return lab.start(host, f"{name}@{host.address}", args, home=home)


def status(lab: Lab, host: NsHost) -> dict[str, Any]:
    """The agent's /status, fetched inside its host."""
    fetch = (
        "import sys, urllib.request\n"
        f"sys.stdout.write(urllib.request.urlopen('http://{HTTP}/status', timeout=5).read()"
        ".decode())\n"
    )
    result = lab.run_in(host, [sys.executable, "-c", fetch])
    assert result.returncode == 0, result.stderr
    view: dict[str, Any] = json.loads(result.stdout)
    return view


def eventually(check: Callable[[], bool], what: str, within: float = WITHIN) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within} s: {what}")
        time.sleep(0.2)


def downs(process: NsProcess, since: int) -> list[tuple[str, str]]:
    return [
        (e["node"], e.get("reason", ""))
        for e in process.events_since(since)
        if e["event"] == "nodedown"
    ]


def test_a_one_way_cut_between_two_hosts_unlinks_that_pair_only(lab: Lab, tmp_path: Path) -> None:
    if shutil.which("nft") is None:
        pytest.skip("nft (Debian's nftables) is missing: run scripts/install-system-deps")
    ha, hb, hc = lab.add_hosts(3)
    home = tmp_path / "home"
    c_seed = f"c@{hc.address}:{PORT}"
    c = agent(lab, hc, "c", [], home)
    a = agent(lab, ha, "a", [c_seed], home)
    b = agent(lab, hb, "b", [c_seed], home)
    names = {p: p.name for p in (a, b, c)}
    # a and b are told about c only: the mesh links them to each other.
    for p in (a, b, c):
        p.wait_linked({n for q, n in names.items() if q is not p})
    eventually(lambda: status(lab, hc)["unlinked_pairs"] == 0, "c counts no unlinked pair")
    marks = {p: p.mark() for p in (a, b, c)}

    # a drops what it sends to b: b's segments still reach a, but nothing is acknowledged
    # and nothing a sends arrives, so both links' heartbeats go silent, and no new
    # connection between them completes either way.
    rules = (
        f"table inet {CUT_TABLE} {{\n"
        "  chain out {\n"
        "    type filter hook output priority 0; policy accept;\n"
        f"    ip daddr {hb.address} counter drop\n"
        "  }\n"
        "}\n"
    )
    ha.run(["nft", "-f", "-"], input=rules)

    # a and b each report the other down (silence), and keep c.
    a.wait_for(lambda e: e["event"] == "nodedown" and e["node"] == names[b], since=marks[a])
    b.wait_for(lambda e: e["event"] == "nodedown" and e["node"] == names[a], since=marks[b])
    # Every node counts the one pair that should be linked and is not, from the lists.
    for host in (ha, hb, hc):
        eventually(
            lambda host=host: status(lab, host)["unlinked_pairs"] == 1,
            f"{host.address} counts the unlinked pair",
        )
    view = status(lab, hc)
    links = {peer["node"]: set(peer["links"]) for peer in view["peers"]}
    assert links == {names[a]: {names[c]}, names[b]: {names[c]}}, view
    # The mesh keeps trying and failing; nothing flaps and the third sees nobody die.
    c.expect_none(lambda e: e["event"] == "nodedown", 4.0, since=marks[c], what="nodedown")
    assert downs(a, marks[a]) == [(names[b], "heartbeat_timeout")]
    assert downs(b, marks[b]) == [(names[a], "heartbeat_timeout")]
    assert names[c] in a.linked() and names[c] in b.linked()
    assert names[b] not in a.linked() and names[a] not in b.linked()

    # Healed: the pair links again, and the count goes back to none.
    ha.run(["nft", "delete", "table", "inet", CUT_TABLE])
    a.wait_linked({names[b], names[c]}, RELINK_WITHIN)
    b.wait_linked({names[a], names[c]}, RELINK_WITHIN)
    for host in (ha, hb, hc):
        eventually(
            lambda host=host: status(lab, host)["unlinked_pairs"] == 0,
            f"{host.address} counts no unlinked pair after the heal",
        )
    assert downs(c, marks[c]) == []
    assert [n for n, _ in downs(a, marks[a])] == [names[b]]
    assert [n for n, _ in downs(b, marks[b])] == [names[a]]
