"""The exceptions skycluster raises; every message says what to fix."""

from __future__ import annotations


class SkyclusterError(Exception):
    """Base of skycluster's own errors."""


class ConfigError(SkyclusterError, ValueError):
    """A bad option: the message names the option, the value and the accepted form."""


class StartError(SkyclusterError, RuntimeError):
    """The node could not start (port in use, unreadable cookie file, ...)."""


class NodeUnreachable(SkyclusterError, ConnectionError):
    """No link could be made to a node."""


# -- messaging (see skycluster.messaging) -------------------------------------


class MessagingError(SkyclusterError):
    """Base of the errors raised by send, call and broadcast."""


class MessageTooLarge(MessagingError, ValueError):
    """An encoded message is larger than ``max_message_size``."""


class UnencodableMessage(MessagingError, TypeError):
    """A message holds a value msgpack cannot encode and no registered type covers."""


class BufferFull(MessagingError):
    """``send_nowait``: the link's send buffer is full (``send_buffer_size``); await
    ``send`` instead to wait for room."""


class NoSuchMailbox(MessagingError, LookupError):
    """A call reached its node, but no mailbox is registered there under that name."""


class CallTimeout(MessagingError, TimeoutError):
    """No reply within the call's timeout (the peer is still linked)."""


class NodeDisconnected(MessagingError, ConnectionError):
    """The link to the node went down before the reply (or the send) got through."""


class CallFailed(MessagingError):
    """The handler that serves the called name (``cluster.serve``) raised."""


class AlreadyRegistered(MessagingError, ValueError):
    """A mailbox with that name is registered on this node already."""
