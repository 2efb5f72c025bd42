"""Kubernetes DNS SRV strategy (the seed's ``Cluster.Strategy.Kubernetes.DNSSRV``):
the SRV records of ``<service>.<namespace>.svc.<cluster domain>`` name each pod
of a headless service (a StatefulSet's ``pod-0.service.ns.svc.cluster.local``);
link to ``<application_name>@<target>`` for each."""

from __future__ import annotations

from skycluster.names import NodeName
from skycluster.strategy.base import StrategyContext
from skycluster.strategy.kubernetes_dns import KubernetesDns


class KubernetesDnsSrv(KubernetesDns):
    kind = "kubernetes-dnssrv"

    async def discover(self, ctx: StrategyContext, basename: str) -> list[NodeName]:
        answer = await self.resolver.srv(self.query)
        found = [
            self.node(ctx, basename, record.target)
            for record in answer.records
            if record.target  # "." means: no such service
        ]
        return [n for n in found if n is not None]
