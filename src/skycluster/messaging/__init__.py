"""Messaging across the cluster: named mailboxes, send, call and pub/sub.

See :mod:`skycluster.messaging.api` for the methods on ``Cluster`` and
``docs/messaging.md`` for semantics (ordering, delivery, backpressure, limits).
"""

from skycluster.messaging.codec import register_type
from skycluster.messaging.inbox import Inbox, Mailbox, Request, TopicSubscription

__all__ = ["Inbox", "Mailbox", "Request", "TopicSubscription", "register_type"]
