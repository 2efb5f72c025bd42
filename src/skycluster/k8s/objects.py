"""Pure functions from Kubernetes API objects (decoded JSON) to peer addresses.

Three lookups give the same thing, a list of :class:`Peer` per object:

* ``endpointslices`` (discovery.k8s.io/v1 EndpointSlice): an endpoint is a peer
  when ``conditions.ready`` is not false and ``conditions.terminating`` is not
  true (a pod shutting down is never linked again, even with
  ``publishNotReadyAddresses``);
* ``endpoints`` (v1 Endpoints): the ``addresses`` of each subset (the
  ``notReadyAddresses`` are not peers);
* ``pods`` (v1 Pod): a pod with an IP, the condition ``Ready`` true and no
  ``deletionTimestamp``.

Objects come from the network: anything missing or of the wrong type is
skipped and reported in :attr:`Extracted.problems`, never raised.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

LOOKUPS = ("endpointslices", "endpoints", "pods")
MODES = ("ip", "dns", "hostname")


@dataclass(frozen=True, slots=True)
class Peer:
    ip: str  # normalised (IPv6 compressed, no brackets)
    hostname: str | None = None  # the endpoint's hostname (StatefulSet pods)
    service: str | None = None  # the service the object belongs to, when known
    pod: str | None = None  # the pod's name, when known (targetRef, metadata)


@dataclass(slots=True)
class Extracted:
    peers: list[Peer] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def object_key(obj: Any) -> str | None:
    """A stable key of an object within a watch (namespace/name), or None."""
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    if not isinstance(meta, dict) or not isinstance(meta.get("name"), str):
        return None
    namespace = meta.get("namespace")
    return f"{namespace if isinstance(namespace, str) else ''}/{meta['name']}"


def resource_version(obj: Any) -> str | None:
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    version = meta.get("resourceVersion") if isinstance(meta, dict) else None
    return version if isinstance(version, str) and version else None


def extract(lookup: str, obj: Any) -> Extracted:
    """The peers one object of ``lookup`` describes."""
    out = Extracted()
    if not isinstance(obj, dict):
        out.problems.append(f"a {lookup} item is not an object")
        return out
    if lookup == "endpointslices":
        _endpoint_slice(obj, out)
    elif lookup == "endpoints":
        _endpoints(obj, out)
    elif lookup == "pods":
        _pod(obj, out)
    else:  # pragma: no cover - checked at configuration
        raise ValueError(lookup)
    return out


def _ip(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    try:
        return str(ipaddress.ip_address(value.strip().strip("[]")))
    except ValueError:
        return None


def _name(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata")
    name = meta.get("name") if isinstance(meta, dict) else None
    return name if isinstance(name, str) else "(unnamed)"


def _target_pod(item: dict[str, Any]) -> str | None:
    ref = item.get("targetRef")  # absent for endpoints that are not pods (libcluster #216)
    if isinstance(ref, dict) and ref.get("kind", "Pod") == "Pod":
        name = ref.get("name")
        return name if isinstance(name, str) else None
    return None


def _hostname(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _endpoint_slice(obj: dict[str, Any], out: Extracted) -> None:
    meta = obj.get("metadata")
    labels = meta.get("labels") if isinstance(meta, dict) else None
    service = labels.get("kubernetes.io/service-name") if isinstance(labels, dict) else None
    service = service if isinstance(service, str) else None
    endpoints = obj.get("endpoints")
    if endpoints is None:
        return  # a slice with no endpoints (every pod gone) is valid
    if not isinstance(endpoints, list):
        out.problems.append(f"EndpointSlice {_name(obj)}: endpoints is not a list")
        return
    for index, endpoint in enumerate(endpoints):
        if not isinstance(endpoint, dict):
            out.problems.append(f"EndpointSlice {_name(obj)}: endpoint {index} is not an object")
            continue
        conditions = endpoint.get("conditions")
        conditions = conditions if isinstance(conditions, dict) else {}
        # ready unset means unknown, which the API says to read as ready
        if conditions.get("ready") is False or conditions.get("terminating") is True:
            continue
        addresses = endpoint.get("addresses")
        if not isinstance(addresses, list) or not addresses:
            out.problems.append(f"EndpointSlice {_name(obj)}: endpoint {index} has no addresses")
            continue
        ip = _ip(addresses[0])  # the API: consumers use the first address
        if ip is None:
            out.problems.append(
                f"EndpointSlice {_name(obj)}: endpoint {index} address "
                f"{str(addresses[0])[:60]!r} is not an IP"
            )
            continue
        out.peers.append(
            Peer(ip, _hostname(endpoint.get("hostname")), service, _target_pod(endpoint))
        )


def _endpoints(obj: dict[str, Any], out: Extracted) -> None:
    subsets = obj.get("subsets")
    if subsets is None:
        return
    if not isinstance(subsets, list):
        out.problems.append(f"Endpoints {_name(obj)}: subsets is not a list")
        return
    for subset in subsets:
        addresses = subset.get("addresses") if isinstance(subset, dict) else None
        if addresses is None:
            continue
        if not isinstance(addresses, list):
            out.problems.append(f"Endpoints {_name(obj)}: addresses is not a list")
            continue
        for address in addresses:
            if not isinstance(address, dict):
                out.problems.append(f"Endpoints {_name(obj)}: an address is not an object")
                continue
            ip = _ip(address.get("ip"))
            if ip is None:
                out.problems.append(
                    f"Endpoints {_name(obj)}: address {str(address.get('ip'))[:60]!r} is not an IP"
                )
                continue
            out.peers.append(
                Peer(ip, _hostname(address.get("hostname")), _name(obj), _target_pod(address))
            )


def _pod(obj: dict[str, Any], out: Extracted) -> None:
    meta = obj.get("metadata")
    meta = meta if isinstance(meta, dict) else {}
    if meta.get("deletionTimestamp"):
        return  # terminating
    status = obj.get("status")
    if not isinstance(status, dict):
        return  # not scheduled yet
    conditions = status.get("conditions")
    ready = isinstance(conditions, list) and any(
        isinstance(c, dict) and c.get("type") == "Ready" and c.get("status") == "True"
        for c in conditions
    )
    if not ready:
        return
    ip = _ip(status.get("podIP"))
    if ip is None:
        out.problems.append(f"Pod {_name(obj)}: ready but podIP is missing or not an IP")
        return
    spec = obj.get("spec")
    spec = spec if isinstance(spec, dict) else {}
    hostname = _hostname(spec.get("hostname"))
    subdomain = spec.get("subdomain")
    name = meta.get("name") if isinstance(meta.get("name"), str) else None
    out.peers.append(
        Peer(ip, hostname or name, subdomain if isinstance(subdomain, str) else None, name)
    )


def dns_label(ip: str) -> str:
    """The pod DNS label of an IP: ``10.0.0.1`` -> ``10-0-0-1``, ``fd00::1`` -> ``fd00--1``."""
    return ip.replace(".", "-").replace(":", "-")


def node_host(
    peer: Peer,
    mode: str,
    *,
    namespace: str,
    cluster_domain: str,
    service_name: str | None,
) -> str | None:
    """The host part of the peer's node name in ``mode`` (None: this peer cannot be
    named so, e.g. hostname mode without a hostname)."""
    if mode == "ip":
        return peer.ip
    if mode == "dns":
        return f"{dns_label(peer.ip)}.{namespace}.pod.{cluster_domain}"
    service = service_name or peer.service
    if peer.hostname is None or service is None:
        return None
    return f"{peer.hostname}.{service}.{namespace}.svc.{cluster_domain}"
