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
