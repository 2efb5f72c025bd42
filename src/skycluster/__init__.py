"""skycluster: copies of a Python service find each other, form a cluster and
tell the application when members join or leave."""

from skycluster.cluster import Cluster
from skycluster.errors import ConfigError, NodeUnreachable, SkyclusterError, StartError
from skycluster.events import (
    AsyncSubscription,
    DownReason,
    Event,
    NodeDown,
    NodeUp,
    SyncSubscription,
)
from skycluster.names import InvalidNodeName, NodeName
from skycluster.strategy import Strategy, StrategyContext, Topology

__version__ = "0.1.0"

__all__ = [
    "AsyncSubscription",
    "Cluster",
    "ConfigError",
    "DownReason",
    "Event",
    "InvalidNodeName",
    "NodeDown",
    "NodeName",
    "NodeUnreachable",
    "NodeUp",
    "SkyclusterError",
    "StartError",
    "Strategy",
    "StrategyContext",
    "SyncSubscription",
    "Topology",
    "__version__",
]
