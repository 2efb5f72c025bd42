"""When the loop that reads the links polls instead of sleeping (pure: no I/O, no clock).

Polling pays only when the next frame comes soon and the process has a core to
itself while it polls. :class:`BusyPolicy` learns the first from the traffic
and watches the second, in the manner of Linux's haltpoll governor:

- **How long.** After each read and each write on a link it polls for the
  window of that kind of event (one window after a read, one after a write: a
  caller's write is followed by a reply within a round trip, a callee's by the
  next request, whenever that comes). When the next event comes after the loop
  went to sleep, the gap says whether polling would have caught it: a gap up to
  ``limit`` grows the window to cover it, a longer one halves the window (below
  ``MIN_WINDOW`` it is 0). An idle node, or one call every millisecond to a
  callee, thus polls not at all after the frames that are followed by silence.
- **Whether at all.** Polling on a busy machine makes things worse: a process
  that polls is runnable, so when its frame arrives the kernel does not wake it
  ahead of others (as it does a sleeper), it waits for its turn. So every
  ``CHECK_EVERY`` of polling the thread's CPU time is compared with the time
  that passed: when the thread was preempted (an involuntary context switch)
  and off the CPU for more than ``STOLEN_SHARE`` of it, another process wants
  that core and polling stops for a back-off (``FIRST_BACKOFF``, doubled on
  each repeat up to ``MAX_BACKOFF``, halved by each clean check). The back-off
  is short: under lasting contention polling resumes for one check now and
  then, which costs little, and on a machine that quietened down it pays again
  soon.
  Waiting for the GIL is not preemption (the process's own node thread has it;
  polling does not delay that), nor is a short preemption (a heartbeat handled
  by another process). The back-off is a time compared at the next event: it
  costs no timer and no wake-up.

All times are seconds on one monotonic clock (the caller's); ``cpu`` is the
polling thread's CPU time, ``preempted`` its count of involuntary context
switches.
"""

from __future__ import annotations

import math

AFTER_READ = 0  # a frame was read
AFTER_WRITE = 1  # a frame was written

MIN_WINDOW = 10e-6  # a window shrunk below this is 0: poll not at all
GROW_START = 20e-6  # the least a window grows to
MARGIN = 1.5  # a grown window covers the gap it missed with this margin
CHECK_EVERY = 1e-3  # of polling, between two looks at the thread's CPU time
STOLEN_SHARE = 0.25  # preempted, and off the CPU more than this share of a check: contended
FIRST_BACKOFF = 0.05
MAX_BACKOFF = 1.0


class BusyPolicy:
    """Decides how long to poll after each read and write (see the module)."""

    __slots__ = (
        "_backoff",
        "_last",
        "_last_kind",
        "_mark_cpu",
        "_mark_preempted",
        "_mark_wall",
        "_quiet_until",
        "_undo",
        "backoffs",
        "limit",
        "until",
        "windows",
    )

    def __init__(self, limit: float) -> None:
        self.limit = limit  # the longest window (busy_wait); 0: never poll
        self.windows = [0.0, 0.0]  # how long to poll after a read, after a write
        self.until = -math.inf  # poll until then
        self.backoffs = 0  # times polling stopped because the core was contended
        self._last = -math.inf  # the last event
        self._last_kind = AFTER_READ
        self._quiet_until = -math.inf  # contended: no polling before then
        self._backoff = FIRST_BACKOFF
        self._mark_wall = 0.0  # the start of the current check period
        self._mark_cpu = 0.0
        self._mark_preempted = 0
        self._undo: tuple[float, int, float, float] | None = None  # see forget()

    def traffic(self, now: float, kind: int) -> bool:
        """A frame was read (AFTER_READ) or written (AFTER_WRITE) at ``now``: learn from the gap
        since the last one; whether to poll now (until :attr:`until`)."""
        if self.limit <= 0:
            return False
        last_kind = self._last_kind
        window = self.windows[last_kind]
        self._undo = (self._last, last_kind, window, self.until)
        gap = now - self._last
        if gap > window:  # not caught while polling: the loop slept, or did not poll
            if gap <= self.limit:
                window = min(self.limit, max(window * 2, gap * MARGIN, GROW_START))
            elif window:
                window = window / 2 if window / 2 >= MIN_WINDOW else 0.0
            self.windows[last_kind] = window
        self._last = now
        self._last_kind = kind
        if now < self._quiet_until:
            return False
        self.until = now + self.windows[kind]
        return self.until > now

    def forget(self) -> None:
        """Undo the last :meth:`traffic`: that frame says nothing about the next one
        (a heartbeat: an idle node's peers tick at the same moments)."""
        if self._undo is None:
            return
        self._last, self._last_kind, window, self.until = self._undo
        self.windows[self._last_kind] = window
        self._undo = None

    def polling(self, now: float) -> bool:
        """Whether to poll on at ``now`` (asked before each poll)."""
        return now < self.until

    def started(self, now: float, cpu: float, preempted: int) -> None:
        """Polling starts (it had stopped): the first check period starts too."""
        self._mark_wall = now
        self._mark_cpu = cpu
        self._mark_preempted = preempted

    def check_due(self, now: float) -> bool:
        """Whether :meth:`check` wants the thread's CPU time now."""
        return now - self._mark_wall >= CHECK_EVERY

    def check(self, now: float, cpu: float, preempted: int) -> bool:
        """Whether the thread kept its core since the last check (polling goes on);
        False: it was preempted for too long, polling stops for a back-off."""
        wall = now - self._mark_wall
        stolen = wall - (cpu - self._mark_cpu)
        was_preempted = preempted > self._mark_preempted
        self._mark_wall = now
        self._mark_cpu = cpu
        self._mark_preempted = preempted
        if not was_preempted or stolen <= wall * STOLEN_SHARE:
            self._backoff = max(FIRST_BACKOFF, self._backoff / 2)
            return True
        self.backoffs += 1
        self._quiet_until = now + self._backoff
        self._backoff = min(self._backoff * 2, MAX_BACKOFF)
        self.until = now
        return False
