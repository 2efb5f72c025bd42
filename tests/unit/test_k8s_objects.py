"""Reading API objects into peers: readiness, termination, missing fields and
garbage (objects from the network never raise), and the three naming modes."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from skycluster.k8s import objects
from skycluster.k8s.http import Server
from skycluster.k8s.objects import Peer


def slice_of(*endpoints: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "s", "labels": {"kubernetes.io/service-name": "svc"}},
        "endpoints": list(endpoints),
    }


def test_endpoint_slice_readiness_and_termination() -> None:
    got = objects.extract(
        "endpointslices",
        slice_of(
            {"addresses": ["10.0.0.1"], "conditions": {"ready": True}},
            {"addresses": ["10.0.0.2"], "conditions": {}},  # unknown: ready
            {"addresses": ["10.0.0.3"], "conditions": {"ready": False}},
            {"addresses": ["10.0.0.4"], "conditions": {"ready": True, "terminating": True}},
            {"addresses": ["fd00::0005"], "hostname": "h5"},
        ),
    )
    assert got.problems == []
    assert [p.ip for p in got.peers] == ["10.0.0.1", "10.0.0.2", "fd00::5"]
    assert got.peers[0] == Peer("10.0.0.1", None, "svc", None)  # no targetRef: no crash
    assert got.peers[2].hostname == "h5"


def test_garbage_is_reported_not_raised() -> None:
    got = objects.extract(
        "endpointslices",
        slice_of({"addresses": ["not-an-ip"]}, 7, {"addresses": []}, {"addresses": None}),
    )
    assert got.peers == [] and len(got.problems) == 4
    assert objects.extract("endpoints", {"subsets": "x"}).problems
    assert objects.extract("pods", []).problems
    assert objects.extract("endpointslices", {"endpoints": None}).peers == []


def test_endpoints_use_ready_addresses_only() -> None:
    got = objects.extract(
        "endpoints",
        {
            "metadata": {"name": "svc"},
            "subsets": [
                {
                    "addresses": [{"ip": "10.0.0.1", "hostname": "a"}, {"ip": "10.0.0.2"}],
                    "notReadyAddresses": [{"ip": "10.0.0.3"}],
                }
            ],
        },
    )
    assert [(p.ip, p.hostname, p.service) for p in got.peers] == [
        ("10.0.0.1", "a", "svc"),
        ("10.0.0.2", None, "svc"),
    ]


def test_pods_ready_not_terminating() -> None:
    def pod(name: str, ready: str, deleting: bool = False) -> dict[str, Any]:
        meta: dict[str, Any] = {"name": name}
        if deleting:
            meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
        return {
            "metadata": meta,
            "spec": {"hostname": name, "subdomain": "svc"},
            "status": {"podIP": "10.0.0.9", "conditions": [{"type": "Ready", "status": ready}]},
        }

    assert objects.extract("pods", pod("a", "True")).peers == [Peer("10.0.0.9", "a", "svc", "a")]
    assert objects.extract("pods", pod("b", "False")).peers == []
    assert objects.extract("pods", pod("c", "True", deleting=True)).peers == []


def test_naming_modes() -> None:
    peer = Peer("10.1.2.3", "app-0", "svc", "app-0")
    kw: dict[str, Any] = {"namespace": "ns", "cluster_domain": "example.org", "service_name": None}
    assert objects.node_host(peer, "ip", **kw) == "10.1.2.3"
    assert objects.node_host(peer, "dns", **kw) == "10-1-2-3.ns.pod.example.org"
    assert objects.node_host(peer, "hostname", **kw) == "app-0.svc.ns.svc.example.org"
    assert objects.node_host(Peer("fd00::1"), "dns", **kw) == "fd00--1.ns.pod.example.org"
    assert objects.node_host(Peer("10.0.0.1"), "hostname", **kw) is None


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("https://10.96.0.1:443", "https://10.96.0.1:443"),
        ("kubernetes.default.svc", "https://kubernetes.default.svc:443"),
        ("http://127.0.0.1:8001", "http://127.0.0.1:8001"),
        ("https://[fd00::1]:6443", "https://[fd00::1]:6443"),
    ],
)
def test_master_urls(text: str, parsed: str) -> None:
    assert str(Server.parse(text)) == parsed


@pytest.mark.parametrize("text", ["ftp://x", "https://x/api", "https://x:99999", "https://"])
def test_bad_master_urls(text: str) -> None:
    with pytest.raises(ValueError, match="expected"):
        Server.parse(text)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
keys = st.sampled_from(
    ["metadata", "endpoints", "addresses", "conditions", "ready", "subsets", "status", "ip"]
)
shaped = st.recursive(
    st.none() | st.booleans() | st.text(max_size=8) | st.just("10.0.0.1"),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=25,
)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(objects.LOOKUPS), json_values | shaped)
def test_any_json_is_read_without_raising(lookup: str, value: Any) -> None:
    got = objects.extract(lookup, value)
    assert all(isinstance(p, Peer) for p in got.peers)
    objects.object_key(value)
    objects.resource_version(value)
