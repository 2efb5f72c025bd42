"""The Kubernetes strategy in process, against the fake API server
(``k8s_api_server.py``: real API objects over HTTPS, list and watch, a
rotating token, a test CA). Links are recorded by the topology's
connect/disconnect hooks, so that any name (dns, hostname modes) can be
checked; ``test_kubernetes_agents.py`` links real agent processes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from certs import TestCA
from cluster_helpers import async_test
from k8s_api_server import NAMESPACE, FakeKubernetes, Pod, Raw, serialise
from kubernetes import client as k8s

from skycluster import Cluster, Topology
from skycluster.names import NodeName
from skycluster.strategy.kubernetes import Kubernetes

WITHIN = 10.0
DOMAIN = "cluster.local"


class FakeLinks:
    """The topology hooks: which nodes the strategy linked and unlinked."""

    def __init__(self) -> None:
        self.linked: set[str] = set()
        self.connects: list[str] = []
        self.disconnects: list[str] = []
        self.changed = threading.Condition()

    async def connect(self, name: NodeName) -> bool:
        with self.changed:
            self.connects.append(str(name))
            self.linked.add(name.identity)
            self.changed.notify_all()
        return True

    async def disconnect(self, identity: str) -> bool:
        with self.changed:
            self.disconnects.append(identity)
            found = identity in self.linked
            self.linked.discard(identity)
            self.changed.notify_all()
        return found

    def nodes(self) -> list[str]:
        with self.changed:
            return sorted(self.linked)

    async def until(self, predicate: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + WITHIN
        while True:
            with self.changed:
                if predicate():
                    return
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"never: {what}; linked {self.linked}, disconnects {self.disconnects}"
                )
            await asyncio.to_thread(self._wait)

    def _wait(self) -> None:
        with self.changed:
            self.changed.wait(0.05)


async def until(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WITHIN
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"never: {what}")
        await asyncio.sleep(0.02)


def strategy(api: FakeKubernetes, **options: Any) -> Kubernetes:
    values: dict[str, Any] = {
        "selector": "app=demo",
        "node_basename": "app",
        "master": api.url,
        "service_account_path": str(api.account),
        "polling_interval": 0.3,
        "max_backoff": 0.5,
        "request_timeout": 3.0,
        "environ": {},
    }
    values.update(options)
    return Kubernetes(**values)


@contextlib.asynccontextmanager
async def observing(k: Kubernetes) -> AsyncIterator[FakeLinks]:
    links = FakeLinks()
    cluster = Cluster(
        "obs@127.0.0.1",
        cookie="k8s-test",
        port_mapper=False,
        topologies={
            "kubernetes": Topology(
                k, connect=links.connect, disconnect=links.disconnect, list_nodes=links.nodes
            )
        },
        strategy_restart_backoff=(0.05, 0.2),
        environ={},
    )
    await cluster.start()
    try:
        yield links
    finally:
        await cluster.stop()


PODS = (
    Pod("app-0", "127.0.0.2", hostname="app-0"),
    Pod("app-1", "127.0.0.3", hostname="app-1"),
    Pod("app-2", "127.0.0.4", hostname="app-2", ready=False),
    Pod("app-3", "127.0.0.5", hostname="app-3", terminating=True),
)


def expected(mode: str, ips_hosts: list[tuple[str, str]]) -> set[str]:
    if mode == "ip":
        return {str(NodeName("app", ip)) for ip, _ in ips_hosts}
    if mode == "dns":
        return {
            f"app@{ip.replace('.', '-').replace(':', '-')}.{NAMESPACE}.pod.{DOMAIN}"
            for ip, _ in ips_hosts
        }
    return {f"app@{host}.app.{NAMESPACE}.svc.{DOMAIN}" for _, host in ips_hosts}


# --- modes and lookups ------------------------------------------------------------------------


@pytest.mark.parametrize("lookup", ["endpointslices", "endpoints", "pods"])
@pytest.mark.parametrize("mode", ["ip", "dns", "hostname"])
@async_test
async def test_ready_addresses_become_nodes_in_every_mode_and_lookup(
    api: FakeKubernetes, lookup: str, mode: str
) -> None:
    # a ready pod of another service (not matched by the selector) is never linked
    api.set_pods(*PODS, other=(Pod("other-0", "127.0.0.9", hostname="other-0"),))
    k = strategy(api, lookup=lookup, mode=mode)
    async with observing(k) as links:
        want = expected(mode, [("127.0.0.2", "app-0"), ("127.0.0.3", "app-1")])
        await links.until(lambda: set(links.connects) == want, f"links to {want}")
        # the not-ready pod turns ready: linked; the first one terminates: unlinked
        api.update("app-2", ready=True)
        api.update("app-0", terminating=True)
        third = expected(mode, [("127.0.0.4", "app-2")])
        first = {NodeName.parse(n).identity for n in expected(mode, [("127.0.0.2", "app-0")])}
        await links.until(lambda: third <= set(links.connects), "link to the third pod")
        await links.until(lambda: first <= set(links.disconnects), "first pod unlinked")
        assert not first & links.linked
        assert k.errors == {}, k.errors
        # changes arrived on the watch: one list, no polling
        assert api.count("list") == 1
        assert k.watching


@async_test
async def test_terminating_endpoints_are_dropped_even_when_published_as_ready(
    api: FakeKubernetes,
) -> None:
    api.publish_not_ready = True  # the service publishes not-ready addresses: ready=true
    api.set_pods(Pod("app-0", "127.0.0.2"), Pod("app-1", "127.0.0.3", terminating=True))
    async with observing(strategy(api)) as links:
        await links.until(lambda: links.linked == {"app@127.0.0.2"}, "the live pod linked")
        api.update("app-0", terminating=True)
        await links.until(lambda: links.linked == set(), "terminating pod unlinked")
        assert "app@127.0.0.3" not in links.connects


@async_test
async def test_ipv6_pod_ips(api: FakeKubernetes) -> None:
    api.set_pods(Pod("app-0", "fd00::a", hostname="app-0"), Pod("app-1", "::1"))
    k = strategy(api, dist_port=4370)
    async with observing(k) as links:
        await links.until(
            lambda: set(links.connects) == {"app@[fd00::a]:4370", "app@[::1]:4370"},
            "IPv6 nodes with the dist port",
        )
    k = strategy(api, mode="dns")
    async with observing(k) as links:
        await links.until(
            lambda: f"app@fd00--a.{NAMESPACE}.pod.{DOMAIN}" in links.connects, "dns label"
        )


@async_test
async def test_hostname_mode_without_hostnames_names_nobody_and_says_why(
    api: FakeKubernetes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "skycluster")
    api.set_pods(Pod("app-0", "127.0.0.2"), Pod("app-1", "127.0.0.3", hostname="app-1"))
    k = strategy(api, mode="hostname", service_name="app")
    async with observing(k) as links:
        await links.until(lambda: bool(links.connects), "the pod with a hostname linked")
        await until(lambda: k.errors["unnamed"] > 0, "the unnamed pod counted")
        assert links.connects == [f"app@app-1.app.{NAMESPACE}.svc.{DOMAIN}"]
    assert "no hostname" in caplog.text


# --- watch, relist, fallbacks ---------------------------------------------------------------


@async_test
async def test_410_gone_and_dropped_streams_list_again_and_keep_nodes(api: FakeKubernetes) -> None:
    api.set_pods(Pod("app-0", "127.0.0.2"))
    k = strategy(api)
    async with observing(k) as links:
        await links.until(lambda: links.linked == {"app@127.0.0.2"}, "linked")
        await until(lambda: api.watching == 1, "watching")
        # the stream ends cleanly (its timeoutSeconds): watched again, not listed
        api.end_watches()
        await until(lambda: api.count("watch") == 2 and api.watching == 1, "a second watch")
        assert api.count("list") == 1
        # history compacted and the stream ends: the re-watch gets 410, then a new list
        api.compact()
        api.end_watches()
        await until(lambda: api.gone_sent == 1 and api.count("list") == 2, "410, then a list")
        api.set_pods(Pod("app-0", "127.0.0.2"), Pod("app-1", "127.0.0.3"))
        await links.until(lambda: "app@127.0.0.3" in links.linked, "a change after the relist")
        # a stream cut mid-object: counted, listed again
        api.cut_watches()
        await until(lambda: api.count("list") == 3, "a list after the cut")
        await until(lambda: k.errors["stream_cut"] == 1, "the cut counted")
        api.remove("app-1")
        await links.until(lambda: links.linked == {"app@127.0.0.2"}, "a change after the cut")
        assert links.disconnects == ["app@127.0.0.3"]


@async_test
async def test_refused_watch_falls_back_to_polling(
    api: FakeKubernetes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "skycluster")
    api.forbidden.add(("endpointslices", "watch"))
    api.set_pods(Pod("app-0", "127.0.0.2"))
    k = strategy(api, polling_interval=0.2)
    async with observing(k) as links:
        await links.until(lambda: links.linked == {"app@127.0.0.2"}, "linked")
        api.set_pods(Pod("app-0", "127.0.0.2"), Pod("app-1", "127.0.0.3"))
        await links.until(lambda: "app@127.0.0.3" in links.linked, "a change seen by polling")
        await until(lambda: api.count("list") >= 3, "polling")
        assert api.count("watch") == 1  # asked once, then never again
    assert caplog.text.count("refused to watch") == 1


@async_test
async def test_outage_keeps_every_node_and_recovers(
    api: FakeKubernetes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "skycluster")
    api.set_pods(Pod("app-0", "127.0.0.2"), Pod("app-1", "127.0.0.3"))
    k = strategy(api)
    async with observing(k) as links:
        await links.until(lambda: len(links.linked) == 2, "linked")
        await until(lambda: api.watching == 1, "watching")
        api.outage = True
        api.cut_watches()
        await until(lambda: api.count("list", 503) >= 3, "several failed lists")
        assert links.disconnects == []
        assert links.linked == {"app@127.0.0.2", "app@127.0.0.3"}
        api.outage = False
        api.remove("app-1")
        await links.until(lambda: links.linked == {"app@127.0.0.2"}, "recovered")
        assert k.errors["http_5xx"] >= 3
    # logged once for all the failed requests, and once when it answered again
    assert caplog.text.count("503") == 1, caplog.text
    assert "answers again" in caplog.text


@async_test
async def test_403_keeps_nodes_and_names_the_rbac_rule(
    api: FakeKubernetes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "skycluster")
    api.set_pods(Pod("app-0", "127.0.0.2"))
    k = strategy(api)
    async with observing(k) as links:
        await links.until(lambda: links.linked == {"app@127.0.0.2"}, "linked")
        await until(lambda: api.watching == 1, "watching")
        api.forbidden.add(("endpointslices", "list"))
        api.cut_watches()
        await until(lambda: api.count("list", 403) >= 3, "several refused lists")
        assert links.disconnects == []
        api.forbidden.clear()
        await until(lambda: api.count("list", 200) >= 2, "allowed again")
    lines = [r.getMessage() for r in caplog.records if "403" in r.getMessage()]
    assert len(lines) == 1, lines
    assert "resources: [endpointslices], verbs: [list, watch]" in lines[0]
    assert "discovery.k8s.io" in lines[0]


@async_test
async def test_rotated_token_is_read_again(api: FakeKubernetes) -> None:
    api.set_pods(Pod("app-0", "127.0.0.2"))
    k = strategy(api)
    async with observing(k) as links:
        await links.until(lambda: links.linked == {"app@127.0.0.2"}, "linked")
        await until(lambda: api.watching == 1, "watching")
        new = api.rotate_token()
        api.cut_watches()  # the next requests must carry the new token
        await until(lambda: api.count("list", 200, token=new) == 1, "a list with the new token")
        await until(lambda: api.count("watch", 200, token=new) == 1, "a watch with it")
        assert api.count("list", 401) == 0
        assert links.disconnects == []


@async_test
async def test_tls_is_verified_against_the_service_account_ca(
    api: FakeKubernetes, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "skycluster")
    api.set_pods(Pod("app-0", "127.0.0.2"))
    # a service account whose CA did not sign the server's certificate
    wrong = tmp_path / "wrong-account"
    wrong.mkdir()
    (wrong / "ca.crt").write_bytes(TestCA.create("another CA").pem())
    (wrong / "token").write_text(api.token)
    k = strategy(api, service_account_path=str(wrong), namespace=NAMESPACE)
    async with observing(k) as links:
        await until(lambda: k.errors["unreachable"] >= 2, "refused TLS")
        assert links.connects == []
        assert api.count("list") == 0  # no request was sent to the impostor
    assert "TLS verification of" in caplog.text
    # the right CA but a name the certificate does not carry (it is for 127.0.0.1)
    k = strategy(api, master=f"https://localhost:{api.port}")
    async with observing(k) as links:
        await until(lambda: k.errors["unreachable"] >= 1, "name mismatch refused")
        assert links.connects == []
    # only an explicit option turns verification off, with a loud warning
    caplog.clear()
    k = strategy(
        api, service_account_path=str(wrong), namespace=NAMESPACE, insecure_skip_tls_verify=True
    )
    async with observing(k) as links:
        await links.until(lambda: links.linked == {"app@127.0.0.2"}, "linked without checks")
    assert "TLS VERIFICATION OF THE KUBERNETES API IS OFF" in caplog.text


# --- bad answers ------------------------------------------------------------------------------


def _slice_without_target_ref() -> bytes:
    endpoint = k8s.V1Endpoint(addresses=["127.0.0.7"], conditions=k8s.V1EndpointConditions())
    item = serialise(
        k8s.V1EndpointSlice(
            address_type="IPv4",
            endpoints=[endpoint],
            metadata=k8s.V1ObjectMeta(name="ext", namespace=NAMESPACE, labels={"app": "demo"}),
        )
    )
    return json.dumps(
        {"kind": "EndpointSliceList", "metadata": {"resourceVersion": "5"}, "items": [item]}
    ).encode()


def _enormous() -> Iterator[bytes]:
    yield b'{"kind": "EndpointSliceList", "items": ['
    block = b" " * (1024 * 1024)
    for _ in range(34):
        yield block


BAD_LISTS: dict[str, tuple[Raw, str]] = {
    "malformed JSON": (Raw(body=b'{"items": [{"metadata": '), "bad_json"),
    "not an object": (Raw(body=b"[1, 2, 3]"), "bad_object"),
    "wrong content type": (
        Raw(content_type="text/html", body=b"<html>login</html>"),
        "content_type",
    ),
    "objects missing fields": (
        Raw(
            body=b'{"metadata": {"resourceVersion": "9"}, "items": [{}, {"metadata": '
            b'{"name": "x"}, "endpoints": [{"addresses": ["not-an-ip"]}, 7, {}]}, 3]}'
        ),
        "bad_object",
    ),
    "cut mid-body": (Raw(body=b'{"items": [', cut=True), "stream_cut"),
    "enormous": (Raw(body=_enormous), "too_large"),
    "500 with HTML": (Raw(status=500, content_type="text/html", body=b"<h1>oops"), "http_5xx"),
}


@pytest.mark.parametrize("case", list(BAD_LISTS))
@async_test
async def test_bad_list_answers_are_counted_and_keep_the_nodes(
    api: FakeKubernetes, case: str
) -> None:
    raw, kind = BAD_LISTS[case]
    api.set_pods(Pod("app-0", "127.0.0.2"))
    k = strategy(api)
    async with observing(k) as links:
        await links.until(lambda: links.linked == {"app@127.0.0.2"}, "linked")
        await until(lambda: api.watching == 1, "watching")
        api.raw["list"].append(raw)
        api.cut_watches()
        await until(lambda: k.errors[kind] >= 1, f"{kind} counted")
        # the strategy goes on: a later good list and watch follow changes
        api.set_pods(Pod("app-0", "127.0.0.2"), Pod("app-1", "127.0.0.3"))
        await links.until(lambda: "app@127.0.0.3" in links.linked, "a change after the bad list")
        if kind != "bad_object":
            assert links.disconnects == []


BAD_WATCHES: dict[str, tuple[Raw, str]] = {
    "garbage line": (Raw(body=lambda: iter([b"this is not json\n"])), "bad_json"),
    "cut mid-object": (
        Raw(body=lambda: iter([b'{"type": "ADDED", "object": {"metadata": {"na']), cut=True),
        "stream_cut",
    ),
    "unknown event type": (
        Raw(body=lambda: iter([b'{"type": "EXPLODED", "object": {}}\n', b"[]\n"])),
        "bad_object",
    ),
    "error status": (
        Raw(body=lambda: iter([b'{"type": "ERROR", "object": {"code": 500}}\n'])),
        "watch_error",
    ),
    "endless line": (Raw(body=lambda: iter([b"x" * (1024 * 1024)] * 9)), "too_large"),
}


@pytest.mark.parametrize("case", list(BAD_WATCHES))
@async_test
async def test_bad_watch_streams_are_counted_and_keep_the_nodes(
    api: FakeKubernetes, case: str
) -> None:
    raw, kind = BAD_WATCHES[case]
    api.set_pods(Pod("app-0", "127.0.0.2"))
    api.raw["watch"].append(raw)
    k = strategy(api)
    async with observing(k) as links:
        await links.until(lambda: links.linked == {"app@127.0.0.2"}, "linked")
        await until(lambda: k.errors[kind] >= 1, f"{kind} counted")
        api.set_pods(Pod("app-0", "127.0.0.2"), Pod("app-1", "127.0.0.3"))
        await links.until(lambda: "app@127.0.0.3" in links.linked, "a change afterwards")
        assert links.disconnects == []


@async_test
async def test_endpoint_without_target_ref_is_a_node(api: FakeKubernetes) -> None:
    api.raw["list"].append(Raw(body=_slice_without_target_ref()))
    api.forbidden.add(("endpointslices", "watch"))  # polling: the next lists are the model's
    k = strategy(api)
    async with observing(k) as links:
        await links.until(lambda: "app@127.0.0.7" in links.connects, "the address linked")
        assert k.errors == {}
