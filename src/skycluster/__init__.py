"""skycluster: copies of a Python service find each other, form a cluster and
tell the application when members join or leave."""

from skycluster._version import __version__
from skycluster.cluster import Cluster
from skycluster.errors import (
    AlreadyRegistered,
    BufferFull,
    CallFailed,
    CallTimeout,
    ConfigError,
    MessageTooLarge,
    MessagingError,
    NodeDisconnected,
    NodeUnreachable,
    NoSuchMailbox,
    SkyclusterError,
    StartError,
    UnencodableMessage,
)
from skycluster.events import (
    AsyncSubscription,
    DownReason,
    Event,
    NodeDown,
    NodeUp,
    SyncSubscription,
)
from skycluster.messaging import Mailbox, Request, TopicSubscription, register_type
from skycluster.names import InvalidNodeName, NodeName
from skycluster.strategy import Strategy, StrategyContext, Topology

__all__ = [
    "AlreadyRegistered",
    "AsyncSubscription",
    "BufferFull",
    "CallFailed",
    "CallTimeout",
    "Cluster",
    "ConfigError",
    "DownReason",
    "Event",
    "InvalidNodeName",
    "Mailbox",
    "MessageTooLarge",
    "MessagingError",
    "NoSuchMailbox",
    "NodeDisconnected",
    "NodeDown",
    "NodeName",
    "NodeUnreachable",
    "NodeUp",
    "Request",
    "SkyclusterError",
    "StartError",
    "Strategy",
    "StrategyContext",
    "SyncSubscription",
    "TopicSubscription",
    "Topology",
    "UnencodableMessage",
    "__version__",
    "register_type",
]
