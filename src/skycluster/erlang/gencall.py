"""``gen_server:call`` across the boundary, both ways, without I/O.

From Erlang: ``gen_server:call({Name, PyNode}, Request)`` monitors ``{Name,
PyNode}`` (see ``monitors``), then sends ``{'$gen_call', {From, Tag}, Request}``
to the name. ``Tag`` is ``[alias | Ref]`` on OTP 24 and later, an improper list;
the answer is ``From ! {Tag, Reply}`` (the caller's receive matches the tag,
whether the reply came to its pid or to its alias). :func:`parse_call` and
:func:`reply` are that half.

From Python: :class:`Calls` sends the same request from a pid of this node that
stands for every waiting call (the tag tells the calls apart), monitors the
callee first so that a missing name fails at once (``noproc``) rather than at the
timeout, and turns what comes back (the reply, the monitor's exit, the link
going) into one :class:`CallOutcome` per call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from skycluster.erlang.atom import Atom
from skycluster.erlang.effects import BadControl, Outgoing
from skycluster.erlang.local import LocalProcesses
from skycluster.erlang.messages import reg_send, send
from skycluster.erlang.monitors import demonitor_request, monitor_request
from skycluster.erlang.values import ImproperList, Pid, Reference

GEN_CALL: Final = Atom("$gen_call")
ALIAS: Final = Atom("alias")
NOCONNECTION: Final = Atom("noconnection")


@dataclass(frozen=True, slots=True)
class IncomingCall:
    """A ``gen_server:call`` from Erlang: answer it with :func:`reply`."""

    caller: Pid
    tag: Any
    request: Any


def parse_call(message: Any) -> IncomingCall | None:
    """The call ``message`` carries, or None when it is not ``{'$gen_call', ...}``
    (a plain message). A ``$gen_call`` of the wrong shape raises BadControl."""
    if not (isinstance(message, tuple) and message and message[0] == GEN_CALL):
        return None
    if len(message) != 3:
        raise BadControl(f"a $gen_call of {len(message)} elements, not 3")
    origin = message[1]
    if not (isinstance(origin, tuple) and len(origin) == 2 and isinstance(origin[0], Pid)):
        raise BadControl(f"a $gen_call from {origin!r}, not {{Pid, Tag}}")
    return IncomingCall(origin[0], origin[1], message[2])


def caller_monitor(call: IncomingCall) -> Reference | None:
    """The monitor the caller holds on the callee during the call: OTP 24 and later
    tag a call ``[alias | Mref]``, ``Mref`` being that monitor."""
    tag = call.tag
    if isinstance(tag, ImproperList) and tag.items == (ALIAS,) and isinstance(tag.tail, Reference):
        return tag.tail
    return None


def reply(call: IncomingCall, value: Any) -> Outgoing:
    """``From ! {Tag, Reply}``: what ``gen_server:reply`` sends."""
    return Outgoing(call.caller.node, send(call.caller, (call.tag, value)))


@dataclass(frozen=True, slots=True)
class CallOutcome:
    """How one call from Python ended: ``reason`` None with ``value`` the reply; else
    the callee's exit reason (``noproc``: no such name; ``noconnection``: the link
    went)."""

    ref: Reference
    value: Any = None
    reason: Any = None

    @property
    def ok(self) -> bool:
        return self.reason is None


@dataclass(frozen=True, slots=True)
class _Pending:
    node: Atom
    target: Pid | Atom


class Calls:
    """The calls Python makes to Erlang processes that await their reply."""

    def __init__(self, local: LocalProcesses) -> None:
        self._local = local
        self.caller = local.spawn()  # the pid every reply comes to
        self._pending: dict[Reference, _Pending] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def start(
        self, node: Atom, target: Pid | Atom, request: Any
    ) -> tuple[Reference, list[Outgoing]]:
        """Call ``target`` (a registered name on ``node``, or a pid) with ``request``:
        the reference the outcome will carry and the messages to send, in order."""
        if isinstance(target, Pid):
            node = target.node
        ref = self._local.make_ref()
        caller = self.caller
        request_message = (GEN_CALL, (caller, ref), request)
        sent = (
            send(target, request_message)
            if isinstance(target, Pid)
            else reg_send(caller, target, request_message)
        )
        self._pending[ref] = _Pending(node, target)
        return ref, [
            Outgoing(node, monitor_request(caller, target, ref)),
            Outgoing(node, sent),
        ]

    def received(self, message: Any) -> tuple[CallOutcome | None, list[Outgoing]]:
        """A message to :attr:`caller`: a reply ``{Ref, Reply}`` ends its call (and
        the monitor, on the callee's node); anything else, or a late reply, is None."""
        if not (isinstance(message, tuple) and len(message) == 2):
            return None, []
        ref = message[0]
        pending = self._pending.pop(ref, None) if isinstance(ref, Reference) else None
        if pending is None:
            return None, []
        undo = demonitor_request(self.caller, pending.target, ref)
        return CallOutcome(ref, value=message[1]), [Outgoing(pending.node, undo)]

    def monitor_exit(self, ref: Reference, reason: Any) -> CallOutcome | None:
        """The callee's monitor fired (``noproc``, or it exited): its call fails."""
        if self._pending.pop(ref, None) is None:
            return None
        return CallOutcome(ref, reason=reason)

    def cancel(self, ref: Reference) -> list[Outgoing]:
        """The caller gave up (its timeout): forget the call and end the monitor."""
        pending = self._pending.pop(ref, None)
        if pending is None:
            return []
        return [Outgoing(pending.node, demonitor_request(self.caller, pending.target, ref))]

    def node_down(self, node: Atom) -> list[CallOutcome]:
        """The link to ``node`` went: its calls fail with ``noconnection``."""
        gone = [ref for ref, pending in self._pending.items() if pending.node == node]
        for ref in gone:
            del self._pending[ref]
        return [CallOutcome(ref, reason=NOCONNECTION) for ref in gone]
