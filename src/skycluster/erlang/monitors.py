"""Monitors that Erlang processes hold on Python mailboxes, without I/O.

``erlang:monitor(process, Pid)`` or ``erlang:monitor(process, {Name, Node})`` on a
Python pid or name arrives as ``MONITOR_P`` ``{19, FromPid, ToProc, Ref}``; the
watcher is told when the mailbox closes with ``MONITOR_P_EXIT`` ``{21, ToProc,
FromPid, Ref, Reason}`` (``ToProc`` as it was given, a pid or a name: Erlang's
``DOWN`` then names the process the way the watcher did). A monitor on a name
that nobody holds is answered ``noproc`` at once: that is how
``gen_server:call`` to a missing name fails fast instead of waiting out its
timeout. ``DEMONITOR_P`` removes one. When the link to the watcher's node goes,
its monitors go too (Erlang reports ``noconnection`` to the watcher itself).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from skycluster.erlang.atom import Atom
from skycluster.erlang.effects import BadControl, Outgoing
from skycluster.erlang.local import LocalProcesses
from skycluster.erlang.messages import Control, DistMessage
from skycluster.erlang.values import Pid, Reference

NOPROC: Final = Atom("noproc")
NORMAL: Final = Atom("normal")
DEFAULT_MAX_MONITORS: Final = 1_000_000


@dataclass(frozen=True, slots=True)
class Watch:
    """One monitor a remote process (``watcher``) holds on a local process."""

    watcher: Pid
    target: Pid | Atom  # as the watcher gave it
    ref: Reference


def monitor_exit(target: Pid | Atom, watcher: Pid, ref: Reference, reason: Any) -> DistMessage:
    """``MONITOR_P_EXIT``: ``target``, watched by ``watcher`` under ``ref``, is gone."""
    return DistMessage((int(Control.MONITOR_P_EXIT), target, watcher, ref, reason))


def monitor_request(watcher: Pid, target: Pid | Atom, ref: Reference) -> DistMessage:
    """``MONITOR_P``: ``watcher`` (local) monitors ``target`` on the peer."""
    return DistMessage((int(Control.MONITOR_P), watcher, target, ref))


def demonitor_request(watcher: Pid, target: Pid | Atom, ref: Reference) -> DistMessage:
    """``DEMONITOR_P``: the monitor ``ref`` of ``watcher`` on ``target`` ends."""
    return DistMessage((int(Control.DEMONITOR_P), watcher, target, ref))


def parse_monitor(control: tuple[Any, ...]) -> tuple[Pid, Pid | Atom, Reference]:
    """``(watcher, target, ref)`` of a ``MONITOR_P`` or ``DEMONITOR_P``."""
    if len(control) != 4:
        raise BadControl(f"a monitor message of {len(control)} elements, not 4")
    _, watcher, target, ref = control
    if not isinstance(watcher, Pid):
        raise BadControl(f"a monitor from {watcher!r}, not a pid")
    if not isinstance(target, Pid | Atom):
        raise BadControl(f"a monitor on {target!r}, neither a pid nor a name")
    if not isinstance(ref, Reference):
        raise BadControl(f"a monitor whose reference is {ref!r}")
    return watcher, target, ref


class Monitors:
    """The monitors remote processes hold on this node's processes."""

    def __init__(self, local: LocalProcesses, max_monitors: int = DEFAULT_MAX_MONITORS) -> None:
        self._local = local
        self._max = max_monitors
        self._by_target: dict[Pid, dict[Reference, Watch]] = {}
        self._target_of: dict[Reference, Pid] = {}

    def __len__(self) -> int:
        return len(self._target_of)

    def monitor(self, control: tuple[Any, ...]) -> list[Outgoing]:
        """A ``MONITOR_P`` arrived: record it, or answer ``noproc`` when its target
        is not a live local process (or the table is full: a peer may not grow it
        without bound)."""
        watcher, target, ref = parse_monitor(control)
        if ref in self._target_of:
            raise BadControl(f"a second monitor under the reference {ref}")
        pid = self._local.resolve(target)
        if pid is None or len(self._target_of) >= self._max:
            return [Outgoing(watcher.node, monitor_exit(target, watcher, ref, NOPROC))]
        self._record(pid, Watch(watcher, target, ref))
        return []

    def add(self, watch: Watch) -> None:
        """A monitor set up on this side (a spawn request's ``monitor`` option)."""
        assert isinstance(watch.target, Pid)
        self._record(watch.target, watch)

    def _record(self, pid: Pid, watch: Watch) -> None:
        self._by_target.setdefault(pid, {})[watch.ref] = watch
        self._target_of[watch.ref] = pid

    def demonitor(self, control: tuple[Any, ...]) -> None:
        """A ``DEMONITOR_P`` arrived: forget that monitor (unknown ones are ignored,
        as Erlang does: the target may have exited meanwhile)."""
        _, _, ref = parse_monitor(control)
        pid = self._target_of.pop(ref, None)
        if pid is not None:
            watches = self._by_target[pid]
            del watches[ref]
            if not watches:
                del self._by_target[pid]

    def exited(self, pid: Pid, reason: Any = NORMAL) -> list[Outgoing]:
        """The local process ``pid`` is gone: tell each watcher with ``reason``."""
        watches = self._by_target.pop(pid, {})
        out = []
        for watch in watches.values():
            del self._target_of[watch.ref]
            message = monitor_exit(watch.target, watch.watcher, watch.ref, reason)
            out.append(Outgoing(watch.watcher.node, message))
        return out

    def fire(self, ref: Reference, watcher: Pid, reason: Any) -> list[Outgoing]:
        """Tell only the monitor ``ref`` of ``watcher`` that its target is gone (with
        ``reason``); the target lives on for its other watchers."""
        pid = self._target_of.get(ref)
        if pid is None or self._by_target[pid][ref].watcher != watcher:
            return []
        watch = self._by_target[pid].pop(ref)
        del self._target_of[ref]
        if not self._by_target[pid]:
            del self._by_target[pid]
        message = monitor_exit(watch.target, watch.watcher, ref, reason)
        return [Outgoing(watcher.node, message)]

    def node_down(self, node: Atom) -> None:
        """The link to ``node`` went: its processes' monitors end with it."""
        for pid in list(self._by_target):
            watches = self._by_target[pid]
            for ref in [ref for ref, w in watches.items() if w.watcher.node == node]:
                del watches[ref]
                del self._target_of[ref]
            if not watches:
                del self._by_target[pid]

    def watchers(self, pid: Pid) -> list[Watch]:
        return list(self._by_target.get(pid, {}).values())
