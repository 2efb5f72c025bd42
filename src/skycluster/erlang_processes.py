"""The Erlang process layer on a running node: the composition of the node's Erlang
links (``erlang.node``), its mailboxes (``messaging``) and the process-level cores
and driver (``erlang.processes``, ``erlang.driver``). Built by the runtime when the
node runs with ``erlang=True``; every decision stays in the cores.

What it wires: every control message of the Erlang links goes to the driver; the
messenger's mailboxes and ``serve()`` names get pids (and close them); a message
for a mailbox is delivered into it, a ``gen_server:call`` becomes a
:class:`~skycluster.messaging.inbox.Request` in the mailbox (or is answered by the
``serve()`` handler); Erlang links coming up and going down reach ``pg``, the
monitors and the waiting calls.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from skycluster.erlang.atom import Atom
from skycluster.erlang.driver import PROCESS_FLAGS, ProcessDriver
from skycluster.erlang.erpc import Exposed
from skycluster.erlang.gencall import IncomingCall
from skycluster.erlang.link import ErlangLink
from skycluster.erlang.messages import Control, DistMessage
from skycluster.erlang.netkernel import NET_KERNEL
from skycluster.erlang.node import ErlangNode
from skycluster.erlang.pg import PgScope
from skycluster.erlang.processes import Processes
from skycluster.erlang.terms import UnencodableTerm, encode
from skycluster.erlang.values import Pid
from skycluster.errors import NoSuchMailbox
from skycluster.events import DownReason
from skycluster.messaging.inbox import Request
from skycluster.messaging.messenger import Messenger

log = logging.getLogger("skycluster.erlang")


class ErlangProcesses:
    """The process layer of one running node (its loop; see the module's doc)."""

    def __init__(self, erlang: ErlangNode, messenger: Messenger, exposed: Exposed) -> None:
        self.erlang = erlang
        self.messenger = messenger
        self.counters = erlang.counters
        self.processes = Processes(erlang.atom, erlang.creation, exposed=exposed)
        self.driver = ProcessDriver(
            self.processes,
            send=lambda node, message: erlang.send_threadsafe(node.name, message),
            deliver=self._deliver,
            serve=self._serve,
            counters=erlang.counters,
        )
        self._loop_thread = threading.get_ident()
        erlang.flags |= PROCESS_FLAGS  # before any link: monitors and spawn are answered
        erlang.handle(tuple(Control), self._received)
        erlang.listen(self)
        for name in [*messenger.mailboxes, *messenger.handlers]:
            self.driver.mailbox_opened(name)
        messenger.name_listeners.append(self._named)

    async def aclose(self) -> None:
        if self._named in self.messenger.name_listeners:
            self.messenger.name_listeners.remove(self._named)
        await self.driver.aclose()

    # -- what the application asks (the node's loop) -------------------------------

    def pid(self, name: str) -> Pid:
        """The pid of the mailbox or ``serve()`` name ``name``."""
        pid = self.processes.local.whereis(Atom(name))
        if pid is None or self.processes.scopes.get(Atom(name)) is not None:
            raise NoSuchMailbox(f"no mailbox named {name!r} on {self.erlang.name}")
        return pid

    def scope(self, scope: str) -> PgScope:
        """The pg scope ``scope``; a new one asks every linked node to sync."""
        atom = Atom(scope)
        known = self.processes.scopes.get(atom)
        if known is not None:
            return known
        if self.processes.local.whereis(atom) is not None:
            raise ValueError(f"{scope!r} names a mailbox here: it cannot be a pg scope too")
        found = self.processes.scope(atom)
        for ident in self.erlang.links:
            self.driver.apply(list(found.node_up(Atom(ident))))
        return found

    def pg_join(self, scope: str, group: Any, name: str) -> None:
        encode(group)  # UnencodableTerm before anything changes
        pid = self.pid(name)
        self.driver.apply(list(self.scope(scope).join(group, [pid])))

    def pg_leave(self, scope: str, group: Any, name: str) -> None:
        pid = self.pid(name)
        self.driver.apply(list(self.scope(scope).leave(group, [pid])))

    def pg_members(self, scope: str, group: Any) -> list[Pid]:
        found = self.processes.scopes.get(Atom(scope))
        return [] if found is None else found.get_members(group)

    # -- the Erlang links -----------------------------------------------------------

    def _received(self, link: ErlangLink, message: DistMessage) -> None:
        self.driver.received(Atom(link.peer.name), message)

    def erlang_link_up(self, link: ErlangLink) -> None:
        self.driver.node_up(Atom(link.peer.name))

    def erlang_link_down(self, link: ErlangLink, reason: DownReason) -> None:
        self.driver.node_down(Atom(link.peer.name))

    # -- the mailboxes --------------------------------------------------------------

    def _named(self, name: str, present: bool) -> None:
        """A mailbox or handler took or gave up ``name`` (any thread)."""
        if threading.get_ident() != self._loop_thread:
            self.erlang.loop.call_soon_threadsafe(self._named, name, present)
            return
        if not present:
            self.driver.mailbox_closed(name)
            return
        atom = Atom(name)
        if atom in self.processes.scopes or atom == NET_KERNEL:
            self.counters.add("erlang_names_refused")
            log.warning("mailbox %r has no Erlang pid: Erlang's own %s holds the name", name, name)
        elif self.processes.local.whereis(atom) is None:
            self.driver.mailbox_opened(name)

    def _deliver(self, name: Atom, message: Any) -> None:
        if not self.messenger.deliver_value(name.name, message):
            self.counters.add("erlang_messages_to_unknown_names")

    def _serve(self, name: Atom, call: IncomingCall, answer: Any) -> None:
        """A ``gen_server:call`` for ``name``: its ``serve()`` handler answers at once,
        a mailbox gets a Request whose ``reply`` answers."""
        caller = call.caller.node.name
        handler = self.messenger.handlers.get(name.name)
        if handler is None:
            request = Request(call.request, caller, answer)
            if not self.messenger.deliver_value(name.name, request):
                self.counters.add("erlang_messages_to_unknown_names")
            return
        try:
            result = handler(call.request)
        except Exception as exc:  # the caller's call exits with the error, as on a crash
            self.counters.add("handler_errors")
            log.exception("the handler of %r raised on a call from %s", name.name, caller)
            self.driver.call_failed(call, exc)
            return
        try:
            answer(result)
        except UnencodableTerm as exc:
            self.counters.add("erlang_unencodable_replies")
            log.warning("the reply of %r to %s has no Erlang form: %s", name.name, caller, exc)
