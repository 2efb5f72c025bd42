"""Strategies discover nodes; one file per strategy. Use them by class, or by
name in config, the environment and the CLI (``epmd``, ``local``, ...), or by
import path (``mypkg.discovery:Ec2Strategy``)."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from skycluster import config
from skycluster.errors import ConfigError
from skycluster.strategy.base import Strategy, StrategyContext, Topology
from skycluster.strategy.epmd import Epmd

if TYPE_CHECKING:
    from skycluster.strategy.dns_poll import DnsPoll
    from skycluster.strategy.gossip import Gossip
    from skycluster.strategy.hosts_file import HostsFile
    from skycluster.strategy.kubernetes import Kubernetes
    from skycluster.strategy.kubernetes_dns import KubernetesDns
    from skycluster.strategy.kubernetes_dnssrv import KubernetesDnsSrv
    from skycluster.strategy.local_epmd import LocalEpmd

__all__ = [
    "DnsPoll",
    "Epmd",
    "Gossip",
    "HostsFile",
    "Kubernetes",
    "KubernetesDns",
    "KubernetesDnsSrv",
    "LocalEpmd",
    "Strategy",
    "StrategyContext",
    "Topology",
    "check_topologies",
    "strategy_class",
    "topologies_from",
    "topology_name",
]

# name -> "module:Class"; imported only when used.
BUILTIN: dict[str, str] = {
    "epmd": "skycluster.strategy.epmd:Epmd",
    "local": "skycluster.strategy.local_epmd:LocalEpmd",
    "hosts": "skycluster.strategy.hosts_file:HostsFile",
    "gossip": "skycluster.strategy.gossip:Gossip",
    # Kubernetes API and DNS strategies
    "kubernetes": "skycluster.strategy.kubernetes:Kubernetes",
    "kubernetes-dns": "skycluster.strategy.kubernetes_dns:KubernetesDns",
    "kubernetes-dnssrv": "skycluster.strategy.kubernetes_dnssrv:KubernetesDnsSrv",
    "dns": "skycluster.strategy.dns_poll:DnsPoll",
}

# The seed project's LIBCLUSTER_STRATEGY values are Elixir module names.
SEED_NAMES: dict[str, str] = {
    "Cluster.Strategy.Epmd": "epmd",
    "Cluster.Strategy.LocalEpmd": "local",
    "Cluster.Strategy.ErlangHosts": "hosts",
    "Cluster.Strategy.Gossip": "gossip",
    "Cluster.Strategy.Kubernetes": "kubernetes",
    "Cluster.Strategy.Kubernetes.DNS": "kubernetes-dns",
    "Cluster.Strategy.Kubernetes.DNSSRV": "kubernetes-dnssrv",
    "Cluster.Strategy.DNSPoll": "dns",
}


def accepted() -> str:
    return ", ".join(BUILTIN) + ", a seed name such as Cluster.Strategy.Epmd, or module:Class"


def __getattr__(name: str) -> Any:
    """Strategy classes load when first named: a node pays only for what it runs."""
    for target in BUILTIN.values():
        module_name, _, class_name = target.partition(":")
        if class_name == name:
            return getattr(importlib.import_module(module_name), class_name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def topology_name(spec: str, cls: type[Strategy]) -> str:
    """A readable topology name for a strategy named in config: its short name
    (``epmd`` for ``Cluster.Strategy.Epmd`` too), else its class name."""
    target = f"{cls.__module__}:{cls.__name__}"
    for name, builtin in BUILTIN.items():
        if builtin == target:
            return name
    return cls.__name__.lower() or spec.strip()


def strategy_class(spec: str) -> type[Strategy]:
    """The strategy class for a name, a seed module name or an import path."""
    spec = spec.strip()
    key = SEED_NAMES.get(spec.removeprefix("Elixir.").removeprefix(":"), spec)
    target = BUILTIN.get(key.lower())
    if target is None:
        if ":" not in spec:
            raise ConfigError(f"unknown strategy {spec!r}; accepted: {accepted()}")
        target = spec
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
        cls = getattr(module, class_name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(f"cannot load strategy {spec!r}: {exc}; accepted: {accepted()}") from None
    if not (isinstance(cls, type) and issubclass(cls, Strategy)):
        raise ConfigError(
            f"strategy {spec!r} is not a skycluster.strategy.Strategy subclass; "
            f"accepted: {accepted()}"
        )
    if inspect.isabstract(cls):
        missing = ", ".join(sorted(cls.__abstractmethods__))
        raise ConfigError(f"strategy {spec!r} is abstract: it does not implement {missing}")
    return cls


STRATEGY = config.Option(
    "strategy",
    config.parse_text,
    "strategies to run: " + ", ".join(BUILTIN) + " or module:Class",
    ("LIBCLUSTER_STRATEGY",),
    metavar="NAME[,NAME]",
)


def topologies_from(
    environ: Mapping[str, str], flags: Mapping[str, Any] | None = None
) -> dict[str, Strategy | Topology]:
    """Strategies named by ``--strategy`` / ``SKYCLUSTER_STRATEGY`` /
    ``LIBCLUSTER_STRATEGY`` (comma separated), each configured from its own options."""
    flags = flags or {}
    spec = flags.get("strategy")
    source = STRATEGY.flag
    if not spec:
        found = config.env_value(environ, STRATEGY.env)
        if found is None:
            return {}
        source, spec = f"environment variable {found[0]}", found[1]
    topologies: dict[str, Strategy | Topology] = {}
    for part in str(spec).split(","):
        if not part.strip():
            continue
        try:
            cls = strategy_class(part)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None
        values = config.resolve(cls.options, environ, flags)
        try:
            strategy = cls.from_options(values)
        except TypeError as exc:
            missing = ", ".join(o.flag for o in cls.options)
            raise ConfigError(
                f"strategy {part.strip()!r} is missing options ({exc}); its options: {missing}"
            ) from None
        topologies[topology_name(part, cls)] = strategy
    return topologies


def check_topologies(given: Mapping[str, Strategy | Topology] | None) -> dict[str, Topology]:
    """Cluster's ``topologies``: each a Strategy, or a Topology around one."""
    topologies = {
        key: value if isinstance(value, Topology) else Topology(value)
        for key, value in (given or {}).items()
    }
    for key, topology in topologies.items():
        if not isinstance(topology.strategy, Strategy):
            raise ConfigError(f"topology {key!r}: {topology.strategy!r} is not a Strategy")
    return topologies
