"""What a Python node answers in place of Erlang's ``net_kernel``, and the registered
names of Erlang's own services that it drops quietly. Pure functions on messages.

``net_adm:ping(Node)`` is ``gen_server:call({net_kernel, Node}, {is_auth, Self},
infinity)``: a node that does not answer ``yes`` makes a ping hang forever.
Without the ``DIST_MONITOR`` capability the call arrives as a plain ``REG_SEND`` of
``{'$gen_call', {Pid, Tag}, Request}``, and the reply is ``Pid ! {Tag, Reply}``
(``Tag`` is ``[alias | Ref]`` on OTP 24 and later: a message to the pid reaches
the caller as well as one to the alias).
"""

from __future__ import annotations

from typing import Final

from skycluster.erlang.atom import Atom
from skycluster.erlang.messages import Control, DistMessage, send
from skycluster.erlang.values import Pid

NET_KERNEL: Final = Atom("net_kernel")
GEN_CALL: Final = Atom("$gen_call")
IS_AUTH: Final = Atom("is_auth")
YES: Final = Atom("yes")
# Erlang's own services that every erl contacts right after connecting (rex's
# features_request, global's init_connect): nothing in Python serves them, and
# their senders live without an answer.
ERLANG_SERVICES: Final = frozenset(
    Atom(name) for name in ("rex", "global_name_server", "global_group", "erl_prim_loader")
)


def registered_name(message: DistMessage) -> Atom | None:
    """The name a ``REG_SEND`` is addressed to, else None."""
    if message.kind in (Control.REG_SEND, Control.REG_SEND_TT) and len(message.control) >= 4:
        name = message.control[3]
        return name if isinstance(name, Atom) else None
    return None


def answer(message: DistMessage) -> DistMessage | None:
    """The reply to a call to ``net_kernel`` that a Python node answers (``is_auth``:
    ``yes``, which makes ``net_adm:ping`` return ``pong``), else None."""
    if registered_name(message) != NET_KERNEL:
        return None
    call = message.payload
    if not (isinstance(call, tuple) and len(call) == 3 and call[0] == GEN_CALL):
        return None
    origin, request = call[1], call[2]
    if not (isinstance(origin, tuple) and len(origin) == 2 and isinstance(origin[0], Pid)):
        return None
    if isinstance(request, tuple) and len(request) == 2 and request[0] == IS_AUTH:
        return send(origin[0], (origin[1], YES))
    return None
