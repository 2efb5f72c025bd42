"""An HTTPS server that plays the part of the Kubernetes API for the tests.

It keeps a small model of a namespace (pods of one service, each with an IP,
ready or not, terminating or not) and serves it as the real API objects of
three lookups, built with the official schema (the models of the
``kubernetes`` Python client, serialised by its ``ApiClient``):

* ``/apis/discovery.k8s.io/v1/namespaces/NS/endpointslices`` (V1EndpointSlice),
* ``/api/v1/namespaces/NS/endpoints`` (V1Endpoints),
* ``/api/v1/namespaces/NS/pods`` (V1Pod),

each with list (``resourceVersion`` in the list metadata, equality label
selectors) and watch (``?watch=1&resourceVersion=N``: chunked JSON lines of
V1WatchEvent from that version on; a version older than the compaction point
gets the ``ERROR`` event with a 410 Status, as the API server sends it).

It checks the bearer token against the current one (``rotate_token`` writes a
new one to the service-account directory and refuses the old one), is signed
by a test CA, and lets a test inject faults: an outage (503), 403 for a verb,
one-shot raw responses, and cutting the open watch streams mid-object.
"""

from __future__ import annotations

import datetime
import json
import os
import socket
import ssl
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from certs import TestCA
from kubernetes import client as k8s

NAMESPACE = "testns"
SERVICE = "app"
LABELS = {"app": "demo"}
OTHER_LABELS = {"app": "other"}

_serializer = k8s.ApiClient()


def serialise(model: Any) -> Any:
    return _serializer.sanitize_for_serialization(model)  # type: ignore[no-untyped-call]


# -- the namespace model -------------------------------------------------------


@dataclass(frozen=True)
class Pod:
    name: str
    ip: str
    ready: bool = True
    terminating: bool = False
    hostname: str | None = None  # spec.hostname (StatefulSet pods)
    labels: dict[str, str] = field(default_factory=lambda: dict(LABELS))


@dataclass
class Raw:
    """A one-shot response: status, content type and body (bytes, or an iterator of
    chunks sent with chunked encoding); ``cut`` closes the connection after the body
    without the end of a chunked body."""

    status: int = 200
    content_type: str = "application/json"
    body: bytes | Callable[[], Iterator[bytes]] = b""
    cut: bool = False


class FakeKubernetes:
    def __init__(self, directory: Path, *, host: str = "127.0.0.1") -> None:
        self.directory = directory
        self.ca = TestCA.create()
        self.account = directory / "serviceaccount"
        self.account.mkdir(parents=True, exist_ok=True)
        (self.account / "ca.crt").write_bytes(self.ca.pem())
        (self.account / "namespace").write_text(NAMESPACE + "\n")
        self._token_serial = 0
        self.token = ""
        self.rotate_token()
        self.host = host
        self.publish_not_ready = False  # the service's publishNotReadyAddresses
        self.lock = threading.Condition()
        self.version = 100
        self.compacted = 0  # watches from before this version get 410
        self.pods: dict[str, Pod] = {}
        self.other_pods: dict[str, Pod] = {}  # of a service the selector does not match
        self.events: list[tuple[int, str, str, dict[str, Any]]] = []  # version, lookup, type, obj
        self.outage = False
        self.forbidden: set[tuple[str, str]] = set()  # (lookup, verb)
        self.raw: dict[str, list[Raw]] = {"list": [], "watch": []}
        self.requests: list[tuple[str, str, str, int]] = []  # verb, lookup, token, status
        self._cuts = 0
        self._ends = 0
        self.gone_sent = 0  # watches answered with the 410 ERROR event
        self._closing = False
        self.watching = 0
        tls = self.ca.issue(directory / "tls", "kube-apiserver", [host])
        self.httpd = _Server((host, 0), _Handler)
        self.httpd.api = self
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(tls.cert, tls.key)
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"https://{host}:{self.port}"

    def close(self) -> None:
        with self.lock:
            self._closing = True
            self.lock.notify_all()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)

    # -- what tests change ---------------------------------------------------

    def rotate_token(self) -> str:
        """Write a new token (as the kubelet does: a new file swapped in); the
        old one is refused from now on."""
        self._token_serial += 1
        token = f"token-{self._token_serial}-{os.urandom(8).hex()}"
        scratch = self.account / f".token.{self._token_serial}"
        scratch.write_text(token)
        os.replace(scratch, self.account / "token")
        self.token = token
        return token

    def set_pods(self, *pods: Pod, other: tuple[Pod, ...] = ()) -> None:
        with self.lock:
            before = {n: self._snapshot(n) for n in self._names()}
            self.pods = {p.name: p for p in pods}
            self.other_pods = {p.name: replace(p, labels=dict(OTHER_LABELS)) for p in other}
            self._record(before)

    def update(self, name: str, **changes: Any) -> None:
        with self.lock:
            before = {n: self._snapshot(n) for n in self._names()}
            self.pods[name] = replace(self.pods[name], **changes)
            self._record(before)

    def remove(self, name: str) -> None:
        with self.lock:
            before = {n: self._snapshot(n) for n in self._names()}
            del self.pods[name]
            self._record(before)

    def compact(self) -> None:
        """Forget the event history: watches from before now get 410 Gone."""
        with self.lock:
            self.version += 1
            self.compacted = self.version
            self.events.clear()

    def end_watches(self) -> None:
        """Every open watch stream ends cleanly (as at its timeoutSeconds)."""
        with self.lock:
            self._ends += 1
            self.lock.notify_all()

    def cut_watches(self) -> None:
        """Every open watch stream sends half an event and the connection drops."""
        with self.lock:
            self._cuts += 1
            self.lock.notify_all()

    def count(self, verb: str, status: int | None = None, token: str | None = None) -> int:
        with self.lock:
            return sum(
                1
                for v, _, t, s in self.requests
                if v == verb and (status is None or s == status) and (token is None or t == token)
            )

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        with self.lock:
            while not predicate():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"the fake API never saw it; requests: {self.requests}")
                self.lock.wait(remaining)

    # -- the API objects -----------------------------------------------------

    def _names(self) -> list[str]:
        return ["endpointslices", "endpoints", "pods"]

    def _snapshot(self, lookup: str) -> dict[str, dict[str, Any]]:
        return {_key(obj): obj for obj in self.objects(lookup, stamp=False)}

    def _record(self, before: dict[str, dict[str, dict[str, Any]]]) -> None:
        self.version += 1
        for lookup in self._names():
            after = self._snapshot(lookup)
            for key, obj in after.items():
                if key not in before[lookup]:
                    self.events.append((self.version, lookup, "ADDED", obj))
                elif before[lookup][key] != obj:
                    self.events.append((self.version, lookup, "MODIFIED", obj))
            for key, obj in before[lookup].items():
                if key not in after:
                    self.events.append((self.version, lookup, "DELETED", obj))
        self.lock.notify_all()

    def objects(self, lookup: str, *, stamp: bool = True) -> list[dict[str, Any]]:
        """The serialised objects of ``lookup`` (every label; callers filter)."""
        built: list[Any]
        groups = [(SERVICE, LABELS, self.pods), ("other", OTHER_LABELS, self.other_pods)]
        if lookup == "endpointslices":
            built = [self._slice(s, labels, pods) for s, labels, pods in groups]
        elif lookup == "endpoints":
            built = [self._endpoints(s, labels, pods) for s, labels, pods in groups]
        else:
            built = [self._pod(p) for _, _, pods in groups for p in pods.values()]
        out = [serialise(obj) for obj in built]
        for obj in out:
            obj["metadata"]["resourceVersion"] = str(self.version) if stamp else "0"
        return out

    def _meta(self, name: str, labels: dict[str, str]) -> Any:
        return k8s.V1ObjectMeta(
            name=name, namespace=NAMESPACE, labels=dict(labels), uid=f"uid-{name}"
        )

    def _ref(self, pod: Pod) -> Any:
        return k8s.V1ObjectReference(kind="Pod", name=pod.name, namespace=NAMESPACE)

    def _slice(self, service: str, labels: dict[str, str], pods: dict[str, Pod]) -> Any:
        family = "IPv6" if any(":" in p.ip for p in pods.values()) else "IPv4"
        endpoints = [
            k8s.V1Endpoint(
                addresses=[p.ip],
                conditions=k8s.V1EndpointConditions(
                    ready=(p.ready and not p.terminating) or self.publish_not_ready,
                    serving=p.ready,
                    terminating=p.terminating,
                ),
                hostname=p.hostname,
                target_ref=self._ref(p),
            )
            for p in pods.values()
        ]
        return k8s.V1EndpointSlice(
            api_version="discovery.k8s.io/v1",
            kind="EndpointSlice",
            address_type=family,
            metadata=self._meta(
                f"{service}-x7k2p", {**labels, "kubernetes.io/service-name": service}
            ),
            endpoints=endpoints,
            ports=[k8s.DiscoveryV1EndpointPort(name="dist", port=4370, protocol="TCP")],
        )

    def _endpoints(self, service: str, labels: dict[str, str], pods: dict[str, Pod]) -> Any:
        def address(p: Pod) -> Any:
            return k8s.V1EndpointAddress(ip=p.ip, hostname=p.hostname, target_ref=self._ref(p))

        ready = [
            address(p)
            for p in pods.values()
            if self.publish_not_ready or (p.ready and not p.terminating)
        ]
        not_ready = [address(p) for p in pods.values() if address(p) not in ready]
        subsets = []
        if ready or not_ready:
            subsets.append(
                k8s.V1EndpointSubset(
                    addresses=ready or None,
                    not_ready_addresses=not_ready or None,
                    ports=[k8s.CoreV1EndpointPort(name="dist", port=4370, protocol="TCP")],
                )
            )
        return k8s.V1Endpoints(
            api_version="v1",
            kind="Endpoints",
            metadata=self._meta(service, labels),
            subsets=subsets or None,
        )

    def _pod(self, pod: Pod) -> Any:
        meta = self._meta(pod.name, pod.labels)
        if pod.terminating:
            meta.deletion_timestamp = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
        return k8s.V1Pod(
            api_version="v1",
            kind="Pod",
            metadata=meta,
            spec=k8s.V1PodSpec(
                containers=[k8s.V1Container(name="app", image="app:1")],
                hostname=pod.hostname,
                subdomain=SERVICE if pod.hostname else None,
            ),
            status=k8s.V1PodStatus(
                phase="Running",
                pod_ip=pod.ip,
                pod_ips=[k8s.V1PodIP(ip=pod.ip)],
                conditions=[
                    k8s.V1PodCondition(type="Ready", status="True" if pod.ready else "False")
                ],
            ),
        )

    def list_document(self, lookup: str, selector: dict[str, str]) -> dict[str, Any]:
        kinds = {
            "endpointslices": ("EndpointSliceList", "discovery.k8s.io/v1"),
            "endpoints": ("EndpointsList", "v1"),
            "pods": ("PodList", "v1"),
        }
        items = [o for o in self.objects(lookup) if _matches(o, selector)]
        kind, api_version = kinds[lookup]
        # The item objects are already serialised: build the list around them.
        meta = serialise(k8s.V1ListMeta(resource_version=str(self.version)))
        return {"apiVersion": api_version, "kind": kind, "metadata": meta, "items": items}


def _key(obj: dict[str, Any]) -> str:
    return str(obj["metadata"]["name"])


def _matches(obj: dict[str, Any], selector: dict[str, str]) -> bool:
    labels = obj.get("metadata", {}).get("labels") or {}
    return all(labels.get(k) == v for k, v in selector.items())


def parse_selector(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in text.split(","):
        if part.strip():
            key, _, value = part.partition("=")
            out[key.strip()] = value.strip().lstrip("=")
    return out


PATHS = {
    f"/apis/discovery.k8s.io/v1/namespaces/{NAMESPACE}/endpointslices": "endpointslices",
    f"/api/v1/namespaces/{NAMESPACE}/endpoints": "endpoints",
    f"/api/v1/namespaces/{NAMESPACE}/pods": "pods",
}


def status_object(code: int, reason: str, message: str) -> Any:
    return serialise(
        k8s.V1Status(
            api_version="v1",
            kind="Status",
            status="Failure",
            code=code,
            reason=reason,
            message=message,
            metadata=k8s.V1ListMeta(),
        )
    )


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    api: FakeKubernetes

    def handle_error(self, request: Any, client_address: Any) -> None:
        # clients that go away (cut streams, refused TLS) are part of the tests
        if not isinstance(sys.exc_info()[1], OSError):
            traceback.print_exc()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        api = self.server.api
        parts = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        lookup = PATHS.get(parts.path)
        verb = "watch" if query.get("watch") in ("1", "true") else "list"
        auth = self.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else ""
        with api.lock:
            raw = api.raw[verb].pop(0) if api.raw[verb] and lookup else None
            status = 200
            if token != api.token:
                status = 401
            elif lookup is None:
                status = 404
            elif api.outage:
                status = 503
            elif (lookup, verb) in api.forbidden:
                status = 403
            elif raw is not None:
                status = raw.status
            api.requests.append((verb, lookup or parts.path, token, status))
            api.lock.notify_all()
        if status == 401:
            self._status(401, "Unauthorized", "Unauthorized")
        elif status == 404:
            self._status(404, "NotFound", f"the server could not find {parts.path}")
        elif status == 503 and raw is None:
            self._status(503, "ServiceUnavailable", "etcdserver: leader changed")
        elif status == 403:
            self._status(
                403,
                "Forbidden",
                f'{lookup} is forbidden: User "system:serviceaccount:{NAMESPACE}:app" '
                f'cannot {verb} resource "{lookup}" in the namespace "{NAMESPACE}"',
            )
        elif raw is not None:
            self._raw(raw)
        elif verb == "list":
            assert lookup is not None
            with api.lock:
                document = api.list_document(lookup, parse_selector(query.get("labelSelector", "")))
            self._json(200, document)
        else:
            assert lookup is not None
            self._watch(lookup, query)

    # -- responses -----------------------------------------------------------

    def _json(self, code: int, document: Any) -> None:
        body = json.dumps(document).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _status(self, code: int, reason: str, message: str) -> None:
        self._json(code, status_object(code, reason, message))

    def _raw(self, raw: Raw) -> None:
        self.send_response(raw.status)
        self.send_header("Content-Type", raw.content_type)
        if isinstance(raw.body, bytes):
            self.send_header("Content-Length", str(len(raw.body) + (10 if raw.cut else 0)))
            self.end_headers()
            self.wfile.write(raw.body)
        else:
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for chunk in raw.body():
                self._chunk(chunk)
            if not raw.cut:
                self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()
        self.close_connection = True

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _watch(self, lookup: str, query: dict[str, str]) -> None:
        api = self.server.api
        selector = parse_selector(query.get("labelSelector", ""))
        try:
            since = int(query.get("resourceVersion", "0"))
        except ValueError:
            since = 0
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.close_connection = True
        deadline = time.monotonic() + min(float(query.get("timeoutSeconds", "30")), 30.0)
        with api.lock:
            cuts = api._cuts
            ends = api._ends
            api.watching += 1
            api.lock.notify_all()
        try:
            if since < api.compacted:
                with api.lock:
                    api.gone_sent += 1
                    api.lock.notify_all()
                gone = status_object(410, "Expired", f"too old resource version: {since}")
                self._chunk(json.dumps({"type": "ERROR", "object": gone}).encode() + b"\n")
                self.wfile.write(b"0\r\n\r\n")
                return
            while True:
                with api.lock:
                    pending = [
                        (v, t, o)
                        for v, lk, t, o in api.events
                        if v > since and lk == lookup and _matches(o, selector)
                    ]
                    if not pending and (api._cuts, api._ends) == (cuts, ends) and not api._closing:
                        api.lock.wait(max(0.0, min(1.0, deadline - time.monotonic())))
                        pending = [
                            (v, t, o)
                            for v, lk, t, o in api.events
                            if v > since and lk == lookup and _matches(o, selector)
                        ]
                    cut = api._cuts != cuts
                    closing = api._closing or api._ends != ends
                    since = max(since, api.version)
                for version, kind, obj in pending:
                    stamped = json.loads(json.dumps(obj))
                    stamped["metadata"]["resourceVersion"] = str(version)
                    event = serialise(k8s.V1WatchEvent(type=kind, object=stamped))
                    self._chunk(json.dumps(event).encode() + b"\n")
                if cut:
                    half = json.dumps({"type": "MODIFIED", "object": {"metadata": {}}})
                    self._chunk(half[: len(half) // 2].encode())
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if closing or time.monotonic() >= deadline:
                    self.wfile.write(b"0\r\n\r\n")
                    return
        except OSError:
            return
        finally:
            with api.lock:
                api.watching -= 1
                api.lock.notify_all()
