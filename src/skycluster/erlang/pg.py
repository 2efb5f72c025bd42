"""One ``pg`` scope (Erlang's process groups, OTP 23 and later) on a Python node,
without I/O.

Erlang's ``pg`` keeps one registered process per scope on every node (the
default scope is ``pg``); the scope processes tell each other about their
nodes' members (``lib/kernel/src/pg.erl``):

- ``{discover, Peer}`` to ``{Scope, Node}`` when a node comes up; the answer is
  ``gen_server:cast(Peer, {sync, Self, [{Group, Pids}]})`` (the answerer's local
  members), and a ``discover`` back when the peer was not known yet; each side
  monitors the other's scope process;
- ``{join, Peer, Group, PidOrPids}`` and ``{leave, Peer, PidOrPids, Groups}`` to
  every known peer when local members join or leave (or exit);
- a peer whose scope process goes down (its node gone) takes its members with it.

:class:`PgScope` speaks this for the Python node: its members are mailboxes' pids
(joined from Python); it learns the members of Erlang nodes, so
``get_members`` lists both, as ``pg:get_members/2`` on every node does.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

from skycluster.erlang.atom import Atom
from skycluster.erlang.effects import BadControl, Outgoing
from skycluster.erlang.local import LocalProcesses
from skycluster.erlang.messages import reg_send, send
from skycluster.erlang.monitors import monitor_request
from skycluster.erlang.values import FrozenList, FrozenMap, Pid, Reference

DEFAULT_SCOPE: Final = Atom("pg")
DISCOVER: Final = Atom("discover")
SYNC: Final = Atom("sync")
JOIN: Final = Atom("join")
LEAVE: Final = Atom("leave")
GEN_CAST: Final = Atom("$gen_cast")


def group_key(group: Any) -> Any:
    """``group`` as a dict key: lists and maps (any term may name a group) frozen."""
    if isinstance(group, list):
        return FrozenList(group_key(item) for item in group)
    if isinstance(group, dict):
        return FrozenMap({group_key(k): group_key(v) for k, v in group.items()})
    if isinstance(group, tuple):
        return tuple(group_key(item) for item in group)
    try:
        hash(group)
    except TypeError:
        raise BadControl(f"a group named by an unhashable {type(group).__name__}") from None
    return group


def _pids(pid_or_pids: Any) -> list[Pid]:
    pids = pid_or_pids if isinstance(pid_or_pids, list) else [pid_or_pids]
    if not all(isinstance(pid, Pid) for pid in pids):
        raise BadControl(f"group members {pid_or_pids!r}: not pids")
    return pids


def _remove(members: list[Pid], pids: Iterable[Pid]) -> None:
    for pid in pids:
        if pid in members:
            members.remove(pid)


class PgScope:
    """The Python node's process for one ``pg`` scope, registered as the scope's name."""

    def __init__(self, local: LocalProcesses, scope: Atom = DEFAULT_SCOPE) -> None:
        self.scope = scope
        self.pid = local.register(scope)
        self._local = local
        self._mine: dict[Any, list[Pid]] = {}  # group -> local members (a pid once per join)
        self._peers: dict[Pid, dict[Any, list[Pid]]] = {}  # peer scope -> its groups
        self._watching: dict[Reference, Pid] = {}  # monitor of a peer scope -> that peer

    # -- what Python asks -----------------------------------------------------

    def join(self, group: Any, pids: list[Pid]) -> list[Outgoing]:
        """Local ``pids`` join ``group``; every known peer is told."""
        key = group_key(group)
        self._mine.setdefault(key, []).extend(pids)
        return self._to_peers((JOIN, self.pid, group, pids))

    def leave(self, group: Any, pids: list[Pid]) -> list[Outgoing]:
        """Local ``pids`` leave ``group`` (once per join); peers are told."""
        key = group_key(group)
        members = self._mine.get(key)
        if not members or not any(pid in members for pid in pids):
            return []
        _remove(members, pids)
        if not members:
            del self._mine[key]
        return self._to_peers((LEAVE, self.pid, pids, [group]))

    def exited(self, pid: Pid) -> list[Outgoing]:
        """The local process ``pid`` is gone: it leaves every group it was in."""
        groups = []
        for key, members in list(self._mine.items()):
            if pid in members:
                groups.append(key)
                self._mine[key] = [member for member in members if member != pid]
                if not self._mine[key]:
                    del self._mine[key]
        return self._to_peers((LEAVE, self.pid, pid, groups)) if groups else []

    def get_members(self, group: Any) -> list[Pid]:
        """Every member of ``group`` this node knows of, local ones first."""
        key = group_key(group)
        found = list(self._mine.get(key, ()))
        for groups in self._peers.values():
            found.extend(groups.get(key, ()))
        return found

    def get_local_members(self, group: Any) -> list[Pid]:
        return list(self._mine.get(group_key(group), ()))

    def which_groups(self) -> list[Any]:
        groups = set(self._mine)
        for remote in self._peers.values():
            groups.update(key for key, pids in remote.items() if pids)
        return list(groups)

    # -- what the network says ------------------------------------------------

    def node_up(self, node: Atom) -> list[Outgoing]:
        """A node linked: ask its scope process (if it runs one) to sync."""
        return [Outgoing(node, reg_send(self.pid, self.scope, (DISCOVER, self.pid)))]

    def node_down(self, node: Atom) -> None:
        """The link to ``node`` went: its scope's members are gone."""
        for peer in [peer for peer in self._peers if peer.node == node]:
            del self._peers[peer]
        for ref in [ref for ref, peer in self._watching.items() if peer.node == node]:
            del self._watching[ref]

    def monitor_exit(self, ref: Reference) -> bool:
        """A peer scope we monitor went down: forget it. False if ``ref`` is not ours."""
        peer = self._watching.pop(ref, None)
        if peer is None:
            return False
        self._peers.pop(peer, None)
        return True

    def received(self, message: Any) -> list[Outgoing]:
        """A message to this scope (by name or pid) from a peer scope."""
        if not isinstance(message, tuple) or not message:
            raise BadControl(f"a pg message {message!r}, not a tuple")
        kind = message[0]
        if kind == DISCOVER and len(message) in (2, 3) and isinstance(message[1], Pid):
            return self._discovered(message[1])
        if kind == GEN_CAST and len(message) == 2:
            return self._cast(message[1])
        if kind == JOIN and len(message) == 4 and isinstance(message[1], Pid):
            remote = self._peers.get(message[1])
            if remote is not None:  # pg drops a join from a scope outside its overlay
                remote.setdefault(group_key(message[2]), []).extend(_pids(message[3]))
            return []
        if kind == LEAVE and len(message) == 4 and isinstance(message[1], Pid):
            remote = self._peers.get(message[1])
            if remote is not None:
                pids = _pids(message[2])
                if not isinstance(message[3], list):
                    raise BadControl(f"a pg leave from groups {message[3]!r}, not a list")
                for group in message[3]:
                    key = group_key(group)
                    members = remote.get(key)
                    if members is not None:
                        _remove(members, pids)
                        if not members:
                            del remote[key]
            return []
        raise BadControl(f"a pg message pg does not send: {message!r}")

    def _discovered(self, peer: Pid) -> list[Outgoing]:
        mine = [(group, list(pids)) for group, pids in self._mine.items()]
        out = [Outgoing(peer.node, send(peer, (GEN_CAST, (SYNC, self.pid, mine))))]
        if peer not in self._peers:
            out += self._know(peer)
            out.append(Outgoing(peer.node, send(peer, (DISCOVER, self.pid))))
        return out

    def _cast(self, cast: Any) -> list[Outgoing]:
        if not (isinstance(cast, tuple) and len(cast) == 3 and cast[0] == SYNC):
            raise BadControl(f"a pg cast {cast!r}, not {{sync, Peer, Groups}}")
        _, peer, groups = cast
        if not isinstance(peer, Pid) or not isinstance(groups, list):
            raise BadControl("a pg sync without a peer pid and a list of groups")
        synced: dict[Any, list[Pid]] = {}
        for entry in groups:
            if not (isinstance(entry, tuple) and len(entry) == 2):
                raise BadControl(f"a pg sync entry {entry!r}, not {{Group, Pids}}")
            synced.setdefault(group_key(entry[0]), []).extend(_pids(entry[1]))
        out = self._know(peer) if peer not in self._peers else []
        self._peers[peer] = synced
        return out

    def _know(self, peer: Pid) -> list[Outgoing]:
        """Start tracking ``peer`` (and monitor it, as pg does)."""
        self._peers[peer] = {}
        ref = self._local.make_ref()
        self._watching[ref] = peer
        return [Outgoing(peer.node, monitor_request(self.pid, peer, ref))]

    def _to_peers(self, message: Any) -> list[Outgoing]:
        return [Outgoing(peer.node, send(peer, message)) for peer in self._peers]
