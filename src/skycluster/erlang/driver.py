"""The asyncio driver of :class:`~skycluster.erlang.processes.Processes`: it feeds
the core what the Erlang links receive and carries out the effects (sends,
mailbox deliveries, calls to serve, exposed functions to run, replies awaited).
Every decision is in the cores; this moves messages and time.

Runs on the loop of the Erlang links. The owner gives it three functions:
``send(node, message)`` (write on the link to that node; ConnectionError when
there is none), ``deliver(name, message)`` (into the mailbox) and
``serve(name, call, answer)`` (a ``gen_server:call`` for the mailbox:
``answer(value)`` replies).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable
from typing import Any, Final

from skycluster._counters import Counters
from skycluster._ratelimit import RateLimit
from skycluster._tasks import TaskSet
from skycluster.erlang.atom import Atom
from skycluster.erlang.effects import Deliver, Dropped, Outgoing
from skycluster.erlang.flags import Flag
from skycluster.erlang.gencall import NOCONNECTION, CallOutcome, IncomingCall
from skycluster.erlang.messages import DistMessage
from skycluster.erlang.monitors import NOPROC
from skycluster.erlang.processes import CallDone, CallFor, Effect, Processes, Run
from skycluster.erlang.values import Pid, Reference
from skycluster.errors import CallFailed, CallTimeout, NodeDisconnected, NoSuchMailbox

log = logging.getLogger("skycluster.erlang")

# What a link offers once this driver answers for it: monitors (by pid and by name)
# and spawn requests (erpc). Without them net_adm:ping works but gen_server:call
# to a missing name only times out and rpc:call returns {badrpc, notsup}.
PROCESS_FLAGS: Final = Flag.DIST_MONITOR | Flag.DIST_MONITOR_NAME | Flag.SPAWN

Send = Callable[[Atom, DistMessage], None]
DeliverTo = Callable[[Atom, Any], None]
Serve = Callable[[Atom, IncomingCall, Callable[[Any], None]], None]


class ErlangCallError(CallFailed):
    """An Erlang process exited before it replied; ``reason`` is its exit reason."""

    def __init__(self, message: str, reason: Any) -> None:
        super().__init__(message)
        self.reason = reason


class ProcessDriver:
    """Carries out what :class:`Processes` decides, for the links of one node."""

    def __init__(
        self,
        processes: Processes,
        *,
        send: Send,
        deliver: DeliverTo,
        serve: Serve,
        counters: Counters | None = None,
    ) -> None:
        self.processes = processes
        self.counters = counters if counters is not None else Counters()
        self._send = send
        self._deliver = deliver
        self._serve = serve
        self._waiting: dict[Reference, asyncio.Future[CallOutcome]] = {}
        self._jobs = TaskSet(log)
        self._logged = RateLimit(burst=3, window=60.0)

    # -- what arrives, what happens ---------------------------------------------

    def received(self, peer: Atom, message: DistMessage) -> None:
        """A control message from ``peer`` (an ``ErlangLink``'s ``on_message``)."""
        self.apply(self.processes.receive(peer, message))

    def node_up(self, node: Atom) -> None:
        self.apply(list(self.processes.node_up(node)))

    def node_down(self, node: Atom) -> None:
        self.apply(self.processes.node_down(node))

    def mailbox_opened(self, name: str) -> Pid:
        return self.processes.mailbox_opened(Atom(name))

    def mailbox_closed(self, name: str) -> None:
        self.apply(list(self.processes.mailbox_closed(Atom(name))))

    def apply(self, effects: list[Effect]) -> None:
        for effect in effects:
            if isinstance(effect, Outgoing):
                self._out(effect)
            elif isinstance(effect, Deliver):
                self._deliver(effect.name, effect.message)
            elif isinstance(effect, CallFor):
                self._serve(effect.name, effect.call, self._answerer(effect.call))
            elif isinstance(effect, CallDone):
                future = self._waiting.get(effect.outcome.ref)
                if future is not None and not future.done():
                    future.set_result(effect.outcome)
            elif isinstance(effect, Run):
                self._run(effect)
            else:
                self._dropped(effect)

    def _out(self, effect: Outgoing) -> None:
        try:
            self._send(effect.node, effect.message)
        except ConnectionError:
            self.counters.add("erlang_sends_to_unlinked_nodes")

    def _dropped(self, effect: Dropped) -> None:
        self.counters.add(effect.counter)
        self.counters.add("erlang_messages_dropped")  # all causes together
        self._logged.log(
            log, logging.WARNING, effect.counter, "dropping an Erlang message %s", effect.why
        )

    def call_failed(self, call: IncomingCall, exc: BaseException) -> None:
        """The Python code answering ``call`` raised ``exc`` (see
        :meth:`Processes.call_failed`)."""
        self.apply(list(self.processes.call_failed(call, exc)))

    def _answerer(self, call: IncomingCall) -> Callable[[Any], None]:
        def answer(value: Any) -> None:
            self._out(self.processes.reply(call, value))

        return answer

    # -- gen_server:call from Python ----------------------------------------------

    async def call(
        self, node: Atom, target: Pid | Atom, request: Any, *, timeout: float = 5.0
    ) -> Any:
        """``gen_server:call`` an Erlang process (a name on ``node``, or a pid): its
        reply. NoSuchMailbox when no such name, NodeDisconnected when the link goes
        first, CallTimeout after ``timeout`` s, ErlangCallError when it exits first."""
        future: asyncio.Future[CallOutcome] = asyncio.get_running_loop().create_future()
        ref, out = self.processes.call(node, target, request)
        self._waiting[ref] = future
        try:
            for effect in out:
                self._send(effect.node, effect.message)
            async with asyncio.timeout(timeout):
                outcome = await future
        except ConnectionError as exc:
            self.processes.calls.cancel(ref)
            raise NodeDisconnected(f"no Erlang link to {node}: {exc}") from None
        except TimeoutError:
            self.apply(list(self.processes.calls.cancel(ref)))
            raise CallTimeout(f"no reply from {target} on {node} within {timeout} s") from None
        finally:
            self._waiting.pop(ref, None)
        if outcome.ok:
            return outcome.value
        if outcome.reason == NOPROC:
            raise NoSuchMailbox(f"no process registered as {target} on {node}")
        if outcome.reason == NOCONNECTION:
            raise NodeDisconnected(f"the link to {node} went down before {target} replied")
        raise ErlangCallError(f"{target} on {node} exited: {outcome.reason!r}", outcome.reason)

    # -- exposed functions ----------------------------------------------------------

    def _run(self, run: Run) -> None:
        job = run.job
        self._jobs.spawn(self._execute(run), name=f"erpc {job.module}:{job.function}")

    async def _execute(self, run: Run) -> None:
        job = run.job
        try:
            if inspect.iscoroutinefunction(job.fn):
                value = await job.fn(*job.args)
            else:  # a plain function may block: not on the links' loop
                value = await asyncio.to_thread(job.fn, *job.args)
        except asyncio.CancelledError:
            self.apply(list(self.processes.finished(job, exc=RuntimeError("node stopping"))))
            raise
        except Exception as exc:
            self.counters.add("erlang_exposed_function_errors")
            log.info("exposed %s:%s raised %r", job.module, job.function, exc)
            self.apply(list(self.processes.finished(job, exc=exc)))
            return
        self.apply(list(self.processes.finished(job, value)))

    async def aclose(self) -> None:
        """Stop running exposed functions; waiting calls fail."""
        await self._jobs.aclose()
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(NodeDisconnected("the node stopped before the reply"))
