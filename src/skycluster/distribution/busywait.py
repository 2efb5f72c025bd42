"""Busy waiting: the loop that reads the links polls a while longer before it sleeps.

A loop that sleeps in the kernel as soon as it runs out of work pays for the
wake-up when the next frame arrives: a context switch, and caches that the
other processes have cooled. On a request and its reply that is most of the
round trip on loopback. Erlang's schedulers busy wait before sleeping for the
same reason (``+sbwt``, on by default). With ``busy_wait`` set, each read or
write on a link keeps that loop polling (the kernel is asked for ready sockets
without sleeping) until that many seconds pass without another one. That loop is
the application's: the node's loop with ``node_loop="shared"``, else the loop
that reads the links for the node's thread (``Node.data_loop``). A node's own
thread never polls: it would take the GIL from the application's thread.

The price is CPU time: up to ``busy_wait`` of one core after every burst of
traffic, spent on the application's loop, whose other callbacks still run
meanwhile.
"""

from __future__ import annotations

import asyncio
import time


class BusyWait:
    """Keeps ``loop`` polling for ``seconds`` after the last :meth:`poke` (its thread only)."""

    __slots__ = ("_closed", "_handle", "_until", "active", "loop", "seconds")

    def __init__(self, loop: asyncio.AbstractEventLoop, seconds: float) -> None:
        self.loop = loop
        self.seconds = seconds
        self.active = False  # traffic since the last turn of the loop
        self._until = 0.0
        self._handle: asyncio.Handle | None = None
        self._closed = False

    def poke(self) -> None:
        """A frame was read or written: go on polling (cheap: called per read and write)."""
        self.active = True
        if self._handle is None and not self._closed:
            self._handle = self.loop.call_soon(self._spin)

    def _spin(self) -> None:
        # A callback that schedules itself keeps the loop's ready queue non-empty, so
        # that the loop polls with a zero timeout instead of sleeping.
        now = time.monotonic()
        if self.active:
            self.active = False
            self._until = now + self.seconds
        if now < self._until:
            self._handle = self.loop.call_soon(self._spin)
        else:
            self._handle = None

    @property
    def spinning(self) -> bool:
        return self._handle is not None

    def close(self) -> None:
        """Stop polling for good (the node stops)."""
        self._closed = True
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self.active = False
