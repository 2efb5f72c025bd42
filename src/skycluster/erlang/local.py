"""The processes a Python node shows to Erlang: a pid for each mailbox, the names
they are registered under, and fresh pids and references. No I/O.

A Python mailbox is not a process, but Erlang can only address, monitor and reply
to processes: each registered mailbox gets a :class:`Pid` of this node, and some
pids stand for no mailbox (the pid a call waits on, the one an ``erpc`` call is
answered from, the ``pg`` scope). Every pid and reference carries the node's
creation, the one its handshakes announce: Erlang drops a message to a pid of
another creation (it belongs to an earlier life of the node).
"""

from __future__ import annotations

from itertools import count
from typing import Final

from skycluster.erlang.atom import Atom
from skycluster.erlang.values import Pid, Reference

_WORD: Final = 0xFFFFFFFF


class LocalProcesses:
    """Pids, registered names and references of one node (``node``, ``creation``)."""

    def __init__(self, node: Atom, creation: int) -> None:
        if not 0 <= creation <= _WORD:
            raise ValueError(f"a creation is a 32-bit number, not {creation}")
        self.node = node
        self.creation = creation
        self._ids = count(1)
        self._refs = count(1)
        self._by_name: dict[Atom, Pid] = {}
        self._names: dict[Pid, Atom] = {}
        self._alive: set[Pid] = set()

    # -- pids and references ------------------------------------------------------

    def spawn(self) -> Pid:
        """A new live pid of this node (never one seen before)."""
        n = next(self._ids)
        pid = Pid(self.node, n & _WORD, (n >> 32) & _WORD, self.creation)
        self._alive.add(pid)
        return pid

    def exit(self, pid: Pid) -> Atom | None:
        """``pid`` is gone (its name, if it had one, is free again); returns that name."""
        self._alive.discard(pid)
        name = self._names.pop(pid, None)
        if name is not None:
            del self._by_name[name]
        return name

    def make_ref(self) -> Reference:
        """A new reference of this node (three words, as ``make_ref()``)."""
        n = next(self._refs)
        return Reference(self.node, self.creation, (n & 0x3FFFF, (n >> 18) & _WORD, n >> 50))

    def is_local(self, pid: Pid) -> bool:
        return pid.node == self.node and pid.creation == self.creation

    def is_alive(self, pid: Pid) -> bool:
        return pid in self._alive

    # -- registered names -------------------------------------------------------

    def register(self, name: Atom) -> Pid:
        """A new pid registered as ``name`` (a mailbox's); ValueError if taken."""
        if name in self._by_name:
            raise ValueError(f"{name} is registered already")
        pid = self.spawn()
        self._by_name[name] = pid
        self._names[pid] = name
        return pid

    def unregister(self, name: Atom) -> Pid | None:
        """The mailbox ``name`` closed: its pid exits; returns it (None if unknown)."""
        pid = self._by_name.get(name)
        if pid is not None:
            self.exit(pid)
        return pid

    def whereis(self, name: Atom) -> Pid | None:
        return self._by_name.get(name)

    def name_of(self, pid: Pid) -> Atom | None:
        return self._names.get(pid)

    def resolve(self, target: object) -> Pid | None:
        """The live local pid ``target`` (a pid or a registered name) stands for."""
        if isinstance(target, Pid):
            return target if target in self._alive else None
        if isinstance(target, Atom):
            return self._by_name.get(target)
        return None
