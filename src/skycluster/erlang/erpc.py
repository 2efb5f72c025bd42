"""``rpc:call`` and ``erpc`` from Erlang, answered by the Python functions the
application exposes, and nothing else. No I/O.

On OTP 23 and later ``rpc:call(Node, M, F, A)`` is ``erpc:call``: a
``SPAWN_REQUEST`` ``{29, ReqId, From, GroupLeader, {erpc, execute_call, 4},
Opts}`` with the arguments ``[Ref, M, F, A]`` and ``monitor`` among ``Opts``.
The node answers ``SPAWN_REPLY`` ``{31, ReqId, From, Flags, Pid}`` (Flags 2: the
monitor is set up) and, when the work is done, the new process's exit reaches the
caller through that monitor, ``MONITOR_P_EXIT`` with ``ReqId`` as reference: the
reason ``{Ref, return, Value}`` is the call's result; ``{Ref, throw, T}``,
``{Ref, exit, R}`` and ``{Ref, error, Reason, Stack}`` are its exceptions.

A Python node runs no Erlang code. A spawn of anything but ``erpc:execute_call/4``
or ``erpc:execute_cast/3`` is refused (``notsup``: ``rpc:call`` returns
``{badrpc, notsup}``), and a call to a function the application did not expose
ends as Erlang's own call to a missing function does, with ``undef``:
``{badrpc, {'EXIT', {undef, [{M, F, A, []}]}}}``. Never ``os:cmd``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Final

from skycluster.erlang import terms
from skycluster.erlang.atom import Atom
from skycluster.erlang.effects import BadControl, Outgoing
from skycluster.erlang.local import LocalProcesses
from skycluster.erlang.messages import Control, DistMessage
from skycluster.erlang.monitors import Monitors, Watch
from skycluster.erlang.values import Pid, Reference

ERPC: Final = Atom("erpc")
EXECUTE_CALL: Final = Atom("execute_call")
EXECUTE_CAST: Final = Atom("execute_cast")
MONITOR: Final = Atom("monitor")
LINK: Final = Atom("link")
RETURN: Final = Atom("return")
ERROR: Final = Atom("error")
UNDEF: Final = Atom("undef")
NOTSUP: Final = Atom("notsup")
BADOPT: Final = Atom("badopt")
PYTHON: Final = Atom("python")
MONITOR_SET_UP: Final = 2  # SPAWN_REPLY's flags: 1 a link, 2 a monitor

ExposedFunction = Callable[..., Any]


class Exposed:
    """The Python functions Erlang may call, by ``(module, function)``."""

    def __init__(self) -> None:
        self._functions: dict[tuple[Atom, Atom], ExposedFunction] = {}

    def expose(self, module: str, function: str, fn: ExposedFunction) -> None:
        """Let ``rpc:call(PyNode, module, function, Args)`` run ``fn(*Args)``."""
        if not callable(fn):
            raise TypeError(f"{module}:{function} must be exposed as a callable, not {fn!r}")
        self._functions[(Atom(module), Atom(function))] = fn

    def withdraw(self, module: str, function: str) -> None:
        self._functions.pop((Atom(module), Atom(function)), None)

    def get(self, module: Atom, function: Atom) -> ExposedFunction | None:
        return self._functions.get((module, function))

    def __iter__(self) -> Iterator[tuple[Atom, Atom]]:
        return iter(list(self._functions))


@dataclass(frozen=True, slots=True)
class Job:
    """An exposed function to run for Erlang; :meth:`Erpc.finish` reports how it went.
    ``reply`` False for a cast (nobody waits for the result)."""

    pid: Pid
    caller: Pid
    ref: Any  # erpc's result reference, echoed in the exit reason
    module: Atom
    function: Atom
    args: list[Any]
    fn: ExposedFunction
    reply: bool


def _spawn_reply(req_id: Reference, caller: Pid, flags: int, result: Pid | Atom) -> DistMessage:
    return DistMessage((int(Control.SPAWN_REPLY), req_id, caller, flags, result))


def python_error(exc: BaseException) -> tuple[Atom, bytes, bytes]:
    """A Python exception as an Erlang reason: ``{python, <<"ClassName">>, <<"text">>}``."""
    return (PYTHON, type(exc).__name__.encode(), str(exc).encode())


def _frame(module: Atom, function: Atom, args: list[Any]) -> tuple[Any, ...]:
    return (module, function, args, [])


def _options(opts: Any) -> tuple[bool, bool]:
    """(monitor, link) asked for in a spawn request's options."""
    if not isinstance(opts, list):
        raise BadControl(f"spawn options {opts!r}, not a list")
    monitor = link = False
    for opt in opts:
        if opt == MONITOR or (isinstance(opt, tuple) and len(opt) == 2 and opt[0] == MONITOR):
            monitor = True
        elif opt == LINK:
            link = True
    return monitor, link


class Erpc:
    """Spawn requests from Erlang: only ``erpc``'s, only for exposed functions."""

    def __init__(self, local: LocalProcesses, monitors: Monitors, exposed: Exposed) -> None:
        self._local = local
        self._monitors = monitors
        self.exposed = exposed

    def spawn_request(
        self, control: tuple[Any, ...], args: Any
    ) -> tuple[list[Outgoing], Job | None]:
        """A ``SPAWN_REQUEST`` (or ``_TT``) and its argument list: the messages to
        send now and the job to run (None when refused or finished at once)."""
        if len(control) not in (6, 7):
            raise BadControl(f"a spawn request of {len(control)} elements, not 6")
        _, req_id, caller, _group_leader, mfa, opts = control[:6]
        if not isinstance(req_id, Reference) or not isinstance(caller, Pid):
            raise BadControl("a spawn request without a reference and a caller pid")
        if not (isinstance(mfa, tuple) and len(mfa) == 3 and isinstance(args, list)):
            raise BadControl(f"a spawn request for {mfa!r}, not {{M, F, Arity}} with a list")
        monitor, link = _options(opts)
        node = caller.node
        call = mfa == (ERPC, EXECUTE_CALL, 4)
        if not (call or mfa == (ERPC, EXECUTE_CAST, 3)):
            return [Outgoing(node, _spawn_reply(req_id, caller, 0, NOTSUP))], None
        if link:  # a Python job cannot hold a link; erpc never asks for one
            return [Outgoing(node, _spawn_reply(req_id, caller, 0, BADOPT))], None
        if len(args) != (4 if call else 3):
            raise BadControl(f"erpc's {mfa[1]} with {len(args)} arguments")
        ref, (module, function, fargs) = (args[0], args[1:]) if call else (None, args)
        if not (isinstance(module, Atom) and isinstance(function, Atom)):
            raise BadControl(f"an erpc call of {module!r}:{function!r}")
        if not isinstance(fargs, list):
            raise BadControl(f"an erpc call of {module}:{function} with arguments {fargs!r}")
        pid = self._local.spawn()
        out = [Outgoing(node, _spawn_reply(req_id, caller, MONITOR_SET_UP if monitor else 0, pid))]
        if monitor:
            self._monitors.add(Watch(caller, pid, req_id))
        fn = self.exposed.get(module, function)
        job = Job(pid, caller, ref, module, function, fargs, fn or _undefined, call)
        if fn is None:
            out += self.finish(job, error=(UNDEF, [_frame(module, function, fargs)]))
            return out, None
        return out, job

    def finish(self, job: Job, value: Any = None, *, error: Any = None) -> list[Outgoing]:
        """``job`` returned ``value`` (or failed: ``error`` is ``(Reason, Stack)``);
        its process exits and a monitor, if any, reports the result."""
        self._local.exit(job.pid)
        if not job.reply:
            reason: Any = Atom("normal")
        elif error is not None:
            reason = (job.ref, ERROR, error[0], error[1])
        else:
            reason = (job.ref, RETURN, value)
            try:
                terms.encode(reason)
            except terms.UnencodableTerm as exc:
                why = (PYTHON, b"UnencodableTerm", str(exc).encode())
                stack = [_frame(job.module, job.function, job.args)]
                reason = (job.ref, ERROR, why, stack)
        return self._monitors.exited(job.pid, reason)

    def failed(self, job: Job, exc: BaseException) -> list[Outgoing]:
        """``job``'s function raised ``exc``: Erlang sees ``error`` with the reason
        ``{python, ClassName, Text}`` (binaries) and the called function as stack."""
        stack = [_frame(job.module, job.function, job.args)]
        return self.finish(job, error=(python_error(exc), stack))


def _undefined(*_args: Any) -> Any:
    raise AssertionError("never run: an undefined function is answered undef at once")
