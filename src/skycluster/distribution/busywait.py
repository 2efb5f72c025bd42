"""Busy waiting: the loop that reads the links polls a while before it sleeps.

A loop that sleeps in the kernel as soon as it runs out of work pays for the
wake-up when the next frame arrives: a context switch, and caches that the
other processes have cooled (in a virtual machine, an idle virtual CPU's exit
to the host as well). On a request and its reply that is most of the round trip
on loopback. Erlang's schedulers busy wait before sleeping for the same reason
(``+sbwt``, on by default). After each read or write on a link, that loop keeps
polling (the kernel is asked for ready sockets without sleeping) for as long as
:class:`~skycluster.distribution.busypolicy.BusyPolicy` says: up to
``busy_wait`` seconds when the traffic shows the next frame comes that soon, not
at all when it does not or when the core is wanted by others. That loop is the
application's: the node's loop with ``node_loop="shared"``, else the loop that
reads the links for the node's thread (``Node.data_loop``). A node's own thread
never polls: it would take the GIL from the application's thread.

The price is CPU time, spent on the application's loop, whose other callbacks
still run meanwhile: the polls that found nothing before the frame came.
"""

from __future__ import annotations

import asyncio
import resource
import time
from typing import TYPE_CHECKING

from skycluster.distribution.busypolicy import BusyPolicy

if TYPE_CHECKING:
    from skycluster._counters import Counters


class BusyWait:
    """Keeps ``loop`` polling after traffic as its :class:`BusyPolicy` says (its thread only)."""

    __slots__ = ("_closed", "_counters", "_handle", "loop", "policy")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        seconds: float,
        counters: Counters | None = None,
        policy: BusyPolicy | None = None,
    ) -> None:
        self.loop = loop
        self.policy = BusyPolicy(seconds) if policy is None else policy
        self._counters = counters  # busy_wait_backoffs: polling stopped, the core contended
        self._handle: asyncio.Handle | None = None
        self._closed = False

    @property
    def seconds(self) -> float:
        return self.policy.limit

    def poke(self, kind: int) -> None:
        """A frame was read (AFTER_READ) or written (AFTER_WRITE): poll if the policy says so
        (cheap: called per read and write)."""
        now = time.monotonic()
        if self.policy.traffic(now, kind) and self._handle is None and not self._closed:
            self.policy.started(now, time.thread_time(), _preemptions())
            self._handle = self.loop.call_soon(self._spin)

    def forget_read(self) -> None:
        """The read just poked carried only the link's own frames (heartbeats): as if
        it never came. Peers' ticks arrive together; polling after them would cost
        an idle node CPU for nothing."""
        self.policy.forget()

    def _spin(self) -> None:
        # A callback that schedules itself keeps the loop's ready queue non-empty, so
        # that the loop polls with a zero timeout instead of sleeping.
        now = time.monotonic()
        policy = self.policy
        # A check first: a thread kept off its core past the window's end counts too.
        contended = policy.check_due(now) and not policy.check(
            now, time.thread_time(), _preemptions()
        )
        if not contended and policy.polling(now):
            self._handle = self.loop.call_soon(self._spin)
            return
        self._handle = None
        if contended and self._counters is not None:
            self._counters.add("busy_wait_backoffs")

    @property
    def spinning(self) -> bool:
        return self._handle is not None

    def close(self) -> None:
        """Stop polling for good (the node stops)."""
        self._closed = True
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


def _preemptions() -> int:
    """This thread's involuntary context switches so far."""
    return resource.getrusage(resource.RUSAGE_THREAD).ru_nivcsw
