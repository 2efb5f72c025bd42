"""Blocking forms (``*_blocking``, ``receive(timeout)``) wait for the node's loop.
With ``node_loop="shared"`` that loop is the application's own: a blocking call
from its thread would wait for work that thread can no longer do, and would
stop the node's heartbeats meanwhile. Such calls fail at once instead.

With a node on its own thread, the application's loop reads the node's links
(``Node.data_loop``): a blocking wait for a reply or a message on that loop's
thread lends the reading to the node's thread while it waits
(:func:`waiting_for_data`), so the reply still comes."""

from __future__ import annotations

import contextlib
import threading
from collections import Counter
from collections.abc import Callable, Iterator

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


# Threads whose loop reads links for nodes on other threads: per node, what lends
# the reading to the node's thread and what takes it back.
_Lender = tuple[Callable[[], None], Callable[[], None]]
_readers: dict[int, list[_Lender]] = {}


def reading(thread: int, lender: _Lender, *, add: bool) -> None:
    """``thread``'s loop reads the links of a node (add), or no longer (not add)."""
    with _lock:
        lenders = _readers.setdefault(thread, [])
        if add:
            lenders.append(lender)
        elif lender in lenders:
            lenders.remove(lender)
        if not lenders:
            del _readers[thread]


@contextlib.contextmanager
def waiting_for_data() -> Iterator[None]:
    """Around a blocking wait for something a link brings (a reply, a message)."""
    lenders = _readers.get(threading.get_ident()) if _readers else None
    if not lenders:
        yield
        return
    lenders = list(lenders)
    for lend, _ in lenders:
        lend()
    try:
        yield
    finally:
        for _, take_back in lenders:
            take_back()
