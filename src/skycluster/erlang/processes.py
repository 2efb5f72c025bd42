"""The process-level protocol of one Python node towards Erlang nodes, without I/O:
each control message that arrives goes to the core it concerns (``monitors``,
``gencall``, ``erpc``, ``pg``), and what they answer comes back as effects for
the driver (``effects``).

Input: the decoded control messages of every Erlang link of the node, and the
local facts (a mailbox opened or closed, a link up or down, Python's own
requests). Output: control messages to send, messages and calls for mailboxes,
finished calls, exposed functions to run, and bad input dropped (one counter per
cause, one log line per cause from the driver).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from skycluster.erlang.atom import Atom
from skycluster.erlang.effects import BadControl, Deliver, Dropped, Outgoing
from skycluster.erlang.erpc import Erpc, Exposed, Job, python_error
from skycluster.erlang.gencall import (
    CallOutcome,
    Calls,
    IncomingCall,
    caller_monitor,
    parse_call,
    reply,
)
from skycluster.erlang.local import LocalProcesses
from skycluster.erlang.messages import Control, DistMessage
from skycluster.erlang.monitors import Monitors
from skycluster.erlang.netkernel import NET_KERNEL
from skycluster.erlang.pg import DEFAULT_SCOPE, PgScope
from skycluster.erlang.values import Pid, Reference

# Link signals: a Python mailbox cannot be linked to (it has no exit to propagate
# but its close, which monitors report); these are counted and dropped.
_UNSUPPORTED: Final = frozenset(
    {
        Control.LINK,
        Control.UNLINK,
        Control.EXIT,
        Control.EXIT_TT,
        Control.EXIT2,
        Control.EXIT2_TT,
        Control.PAYLOAD_EXIT,
        Control.PAYLOAD_EXIT_TT,
        Control.PAYLOAD_EXIT2,
        Control.PAYLOAD_EXIT2_TT,
        Control.GROUP_LEADER,
        Control.NODE_LINK,
        Control.ALIAS_SEND,  # ALIAS is never offered
        Control.ALIAS_SEND_TT,
        Control.SPAWN_REPLY,  # a Python node never spawns on Erlang
        Control.SPAWN_REPLY_TT,
        Control.UNLINK_ID_ACK,
    }
)
_SENDS: Final = frozenset(
    {Control.SEND, Control.SEND_TT, Control.SEND_SENDER, Control.SEND_SENDER_TT}
)


@dataclass(frozen=True, slots=True)
class CallFor:
    """A ``gen_server:call`` to the local mailbox ``name``: answer it with
    :meth:`Processes.reply`."""

    name: Atom
    call: IncomingCall


@dataclass(frozen=True, slots=True)
class CallDone:
    """A call Python made to an Erlang process ended."""

    outcome: CallOutcome


@dataclass(frozen=True, slots=True)
class Run:
    """Run an exposed function for Erlang; report with :meth:`Processes.finished`."""

    job: Job


Effect = Outgoing | Deliver | Dropped | CallFor | CallDone | Run


class Processes:
    """The Python node's processes as Erlang sees them, and their protocol."""

    def __init__(
        self, node: Atom, creation: int, *, exposed: Exposed | None = None, pg: bool = True
    ) -> None:
        self.local = LocalProcesses(node, creation)
        self.monitors = Monitors(self.local)
        self.calls = Calls(self.local)
        self.erpc = Erpc(self.local, self.monitors, exposed or Exposed())
        self.scopes: dict[Atom, PgScope] = {}
        self._scope_pids: dict[Pid, PgScope] = {}
        # net_adm:ping monitors net_kernel before calling it (the link answers the
        # call): a monitor answered noproc would make every ping fail.
        self.local.register(NET_KERNEL)
        if pg:
            self.scope(DEFAULT_SCOPE)

    def scope(self, name: Atom) -> PgScope:
        """The ``pg`` scope ``name``, started on first use."""
        found = self.scopes.get(name)
        if found is None:
            found = self.scopes[name] = PgScope(self.local, name)
            self._scope_pids[found.pid] = found
        return found

    # -- local facts ----------------------------------------------------------

    def mailbox_opened(self, name: Atom) -> Pid:
        """A mailbox registered as ``name``: its pid. ValueError when the name is held
        here already (``net_kernel``, a ``pg`` scope's name)."""
        return self.local.register(name)

    def mailbox_closed(self, name: Atom) -> list[Outgoing]:
        """The mailbox ``name`` closed: its monitors fire (``normal``), it leaves its
        ``pg`` groups."""
        if name in self.scopes or name == NET_KERNEL:
            return []  # never a mailbox's: its pid was refused (see mailbox_opened)
        pid = self.local.unregister(name)
        if pid is None:
            return []
        out = self.monitors.exited(pid)
        for scope in self.scopes.values():
            out += scope.exited(pid)
        return out

    def node_up(self, node: Atom) -> list[Outgoing]:
        out: list[Outgoing] = []
        for scope in self.scopes.values():
            out += scope.node_up(node)
        return out

    def node_down(self, node: Atom) -> list[Effect]:
        """The link to ``node`` went: its monitors and pg members go, calls to it fail."""
        self.monitors.node_down(node)
        for scope in self.scopes.values():
            scope.node_down(node)
        return [CallDone(outcome) for outcome in self.calls.node_down(node)]

    # -- Python's requests ----------------------------------------------------

    def call(
        self, node: Atom, target: Pid | Atom, request: Any
    ) -> tuple[Reference, list[Outgoing]]:
        """``gen_server:call`` from Python: the reference its :class:`CallDone` carries."""
        return self.calls.start(node, target, request)

    def reply(self, call: IncomingCall, value: Any) -> Outgoing:
        """The answer to a :class:`CallFor`."""
        return reply(call, value)

    def call_failed(self, call: IncomingCall, exc: BaseException) -> list[Outgoing]:
        """The Python code answering ``call`` raised: the caller's monitor fires with
        ``{python, ClassName, Text}``, so its ``gen_server:call`` exits at once, as on
        a server's crash (the mailbox lives on for everyone else). Nothing to do for a
        caller without that monitor: its call times out."""
        mref = caller_monitor(call)
        if mref is None:
            return []
        return self.monitors.fire(mref, call.caller, python_error(exc))

    def finished(
        self, job: Job, value: Any = None, exc: BaseException | None = None
    ) -> list[Outgoing]:
        """An exposed function returned ``value`` or raised ``exc``."""
        return self.erpc.finish(job, value) if exc is None else self.erpc.failed(job, exc)

    # -- what arrives -----------------------------------------------------------

    def receive(self, peer: Atom, message: DistMessage) -> list[Effect]:
        """One control message (and payload) from the link to ``peer``."""
        try:
            effects = self._receive(message)
        except (BadControl, ValueError, TypeError, IndexError) as exc:  # a term of the wrong shape
            return [Dropped("erlang_bad_control", f"from {peer}: {exc}")]
        return [
            Dropped(e.counter, f"from {peer}: {e.why}") if isinstance(e, Dropped) else e
            for e in effects
        ]

    def _receive(self, message: DistMessage) -> list[Effect]:
        control = message.control
        kind = message.kind
        if kind in _SENDS:
            if len(control) != 3 or not isinstance(control[2], Pid):
                raise BadControl(f"a send to {control[2:]!r}, not to a pid")
            return self._to_pid(control[2], message.payload)
        if kind in (Control.REG_SEND, Control.REG_SEND_TT):
            if len(control) < 4 or not isinstance(control[3], Atom):
                raise BadControl("a send to a registered name without the name")
            return self._to_name(control[3], message.payload)
        if kind is Control.MONITOR_P:
            return list(self.monitors.monitor(control))
        if kind is Control.DEMONITOR_P:
            self.monitors.demonitor(control)
            return []
        if kind is Control.MONITOR_P_EXIT:
            if len(control) != 5:
                raise BadControl(f"a monitor exit of {len(control)} elements, not 5")
            return self._monitor_exit(control[3], control[4])
        if kind is Control.PAYLOAD_MONITOR_P_EXIT:
            if len(control) != 4:
                raise BadControl(f"a monitor exit of {len(control)} elements, not 4")
            return self._monitor_exit(control[3], message.payload)
        if kind in (Control.SPAWN_REQUEST, Control.SPAWN_REQUEST_TT):
            out, job = self.erpc.spawn_request(control, message.payload)
            return [*out, Run(job)] if job is not None else list(out)
        if kind is Control.UNLINK_ID:
            return self._unlink_ack(control)
        if kind in _UNSUPPORTED:
            return [Dropped("erlang_unsupported_signals", f"{Control(kind).name} is not supported")]
        return [Dropped("erlang_unknown_control", f"an unknown control message {control[0]}")]

    def _to_pid(self, pid: Pid, payload: Any) -> list[Effect]:
        if pid == self.calls.caller:
            outcome, out = self.calls.received(payload)
            return [*out, CallDone(outcome)] if outcome is not None else []
        scope = self._scope_pids.get(pid)
        if scope is not None:
            return list(scope.received(payload))
        name = self.local.name_of(pid)
        if name is None:
            return [Dropped("erlang_messages_to_dead_pids", f"a message to {pid}, not alive")]
        return self._to_mailbox(name, payload)

    def _to_name(self, name: Atom, payload: Any) -> list[Effect]:
        scope = self.scopes.get(name)
        if scope is not None:
            return list(scope.received(payload))
        if name == NET_KERNEL or self.local.whereis(name) is None:
            return [Dropped("erlang_messages_to_unknown_names", f"a message to {name}")]
        return self._to_mailbox(name, payload)

    def _to_mailbox(self, name: Atom, payload: Any) -> list[Effect]:
        call = parse_call(payload)
        return [CallFor(name, call)] if call is not None else [Deliver(name, payload)]

    def _monitor_exit(self, ref: Any, reason: Any) -> list[Effect]:
        if not isinstance(ref, Reference):
            raise BadControl(f"a monitor exit with the reference {ref!r}")
        outcome = self.calls.monitor_exit(ref, reason)
        if outcome is not None:
            return [CallDone(outcome)]
        for scope in self.scopes.values():
            if scope.monitor_exit(ref):
                return []
        return []  # a monitor already given up (a call that timed out): nothing to do

    def _unlink_ack(self, control: tuple[Any, ...]) -> list[Effect]:
        if len(control) != 4 or not isinstance(control[2], Pid) or not isinstance(control[3], Pid):
            raise BadControl("an UNLINK_ID without its id and two pids")
        _, unlink_id, sender, target = control
        ack = DistMessage((int(Control.UNLINK_ID_ACK), unlink_id, target, sender))
        return [Outgoing(sender.node, ack)]
