"""Blocking forms (``*_blocking``, ``receive(timeout)``) wait for the node's loop.
With ``node_loop="shared"`` that loop is the application's own: a blocking call
from its thread would wait for work that thread can no longer do, and would
stop the node's heartbeats meanwhile. Such calls fail at once instead."""

from __future__ import annotations

import threading
from collections import Counter

# Threads whose event loop hosts a node (node_loop="shared"), with how many nodes.
_hosts: Counter[int] = Counter()
_lock = threading.Lock()


def hosting(thread: int, delta: int) -> None:
    """A node on ``thread``'s loop started (+1) or stopped (-1)."""
    with _lock:
        _hosts[thread] += delta
        if _hosts[thread] <= 0:
            del _hosts[thread]


def refuse_on_node_loop(what: str) -> None:
    """Raise RuntimeError when the calling thread's loop hosts a node."""
    if _hosts and threading.get_ident() in _hosts:
        raise RuntimeError(
            f"{what} would block this thread, whose event loop runs a node "
            "(node_loop='shared'): await the async form here, or call it from another thread"
        )
