"""What the process-level cores ask their driver to do: send a control message to
a node, hand something to a local mailbox, or note bad input. Plain data.

The cores (``monitors``, ``gencall``, ``erpc``, ``pg``) take decoded control
messages and local facts and return these; the driver carries them out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from skycluster.erlang.atom import Atom
from skycluster.erlang.messages import DistMessage


@dataclass(frozen=True, slots=True)
class Outgoing:
    """Send ``message`` on the link to ``node``."""

    node: Atom
    message: DistMessage


@dataclass(frozen=True, slots=True)
class Deliver:
    """Put ``message`` in the local mailbox ``name``."""

    name: Atom
    message: Any


@dataclass(frozen=True, slots=True)
class Dropped:
    """Input that no core can use: the driver logs ``why`` (rate-limited) and adds
    one to the counter ``counter``; nothing else happens."""

    counter: str
    why: str


class BadControl(ValueError):
    """A control message or payload of the wrong shape; its message says what."""
