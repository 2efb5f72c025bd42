"""Kubernetes DNS strategy (the seed's ``Cluster.Strategy.Kubernetes.DNS``): the
A and AAAA records of a headless service, ``<service>.<namespace>.svc.<cluster
domain>``, are the ready pods; link to ``<application_name>@<ip>`` for each.
Needs no API access (no service account, no RBAC)."""

from __future__ import annotations

from typing import ClassVar

from skycluster.config import Option, parse_text
from skycluster.errors import ConfigError
from skycluster.k8s.credentials import ServiceAccount
from skycluster.names import NodeName
from skycluster.strategy._dns_base import DNS_SERVER, NODE_BASENAME, POLLING_INTERVAL, DnsPolling
from skycluster.strategy.base import StrategyContext

DNS_SERVICE = Option(
    "dns_service",
    parse_text,
    "headless service whose records are the peers",
    ("LIBCLUSTER_KUBERNETES_SERVICE",),
    metavar="SERVICE",
)
DNS_NAMESPACE = Option(
    "dns_namespace",
    parse_text,
    "namespace of the service [the pod's own, else default]",
    ("LIBCLUSTER_KUBERNETES_NAMESPACE",),
    metavar="NS",
)
CLUSTER_DOMAIN = Option(
    "kubernetes_cluster_domain",
    parse_text,
    "cluster DNS domain [cluster.local]",
    ("LIBCLUSTER_KUBERNETES_CLUSTER_DOMAIN", "CLUSTER_DOMAIN"),
    metavar="DOMAIN",
)


class KubernetesDns(DnsPolling):
    options: ClassVar[tuple[Option, ...]] = (
        DNS_SERVICE,
        DNS_NAMESPACE,
        NODE_BASENAME,
        CLUSTER_DOMAIN,
        DNS_SERVER,
        POLLING_INTERVAL,
    )
    kind = "kubernetes-dns"

    def __init__(
        self,
        dns_service: str | None = None,
        node_basename: str | None = None,
        *,
        dns_namespace: str | None = None,
        kubernetes_cluster_domain: str | None = None,
        dns_server: str | None = None,
        polling_interval: float = 5.0,
        dns_timeout: float = 2.0,
        application_name: str | None = None,
        service_account_path: str | None = None,
    ) -> None:
        if not dns_service or not dns_service.strip():
            raise ConfigError(
                f"the {self.kind} strategy needs the headless service: --dns-service NAME "
                "or SKYCLUSTER_DNS_SERVICE"
            )
        super().__init__(
            node_basename or application_name,
            dns_server=dns_server,
            polling_interval=polling_interval,
            dns_timeout=dns_timeout,
        )
        account = ServiceAccount(service_account_path) if service_account_path else ServiceAccount()
        namespace = dns_namespace or account.namespace() or "default"
        domain = kubernetes_cluster_domain or "cluster.local"
        self.service = dns_service.strip()
        self.query = f"{self.service}.{namespace}.svc.{domain.strip('.')}"

    async def discover(self, ctx: StrategyContext, basename: str) -> list[NodeName]:
        found = [self.node(ctx, basename, ip) for ip in await self.resolver.addresses(self.query)]
        return [n for n in found if n is not None]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(query={self.query!r}, server={str(self.resolver)!r})"
