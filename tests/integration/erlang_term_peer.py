"""A real ``erl`` that answers term requests over a pair of pipes (a port with
``{packet, 4}`` on two extra file descriptors, so that anything erl prints on
stdout cannot mix with the answers).

Each request is one op byte and a payload; each answer is ``0`` and the result,
or ``1`` and the error erl raised, as text.
"""

from __future__ import annotations

import os
import struct
import subprocess
from pathlib import Path

# Ops: 1 echo (binary_to_term, then term_to_binary with {minor_version, 2}: the
# encoding skycluster writes); 2 evaluate an Erlang expression and encode its value;
# 3 the same, compressed; 4 whether two encoded terms are exactly equal (=:=).
_LOOP = """
Port = open_port({fd, %(in)d, %(out)d}, [binary, {packet, 4}, eof]),
Enc = fun(T) -> term_to_binary(T, [{minor_version, 2}]) end,
Eval = fun(Text) ->
    {ok, Tokens, _} = erl_scan:string(unicode:characters_to_list(Text)),
    {ok, Exprs} = erl_parse:parse_exprs(Tokens),
    {value, Value, _} = erl_eval:exprs(Exprs, []),
    Value
end,
Handle = fun
    (1, B) -> Enc(binary_to_term(B));
    (2, B) -> Enc(Eval(B));
    (3, B) -> term_to_binary(Eval(B), [compressed, {minor_version, 2}]);
    (4, <<N:32, A:N/binary, C/binary>>) -> atom_to_binary(binary_to_term(A) =:= binary_to_term(C))
end,
Loop = fun Loop() ->
    receive
        {Port, {data, <<Op, B/binary>>}} ->
            Reply = try <<0, (Handle(Op, B))/binary>>
                    catch Class:Reason ->
                        <<1, (iolist_to_binary(io_lib:format("~p:~p", [Class, Reason])))/binary>>
                    end,
            port_command(Port, Reply),
            Loop();
        {Port, eof} -> halt(0)
    end
end,
Loop().
"""


class ErlangError(Exception):
    """erl raised while answering (the text is erl's own error)."""


class ErlTermPeer:
    """One ``erl -noshell`` process; :meth:`close` ends it (it also ends when our
    end of its input pipe closes)."""

    def __init__(self, tmp_path: Path) -> None:
        to_erl_r, self._to_erl = os.pipe()
        self._from_erl, from_erl_w = os.pipe()
        try:
            self.process = subprocess.Popen(
                [
                    "erl",
                    "-noshell",
                    "-noinput",
                    "-eval",
                    _LOOP % {"in": to_erl_r, "out": from_erl_w},
                ],
                cwd=tmp_path,
                env=dict(os.environ, HOME=str(tmp_path), ERL_CRASH_DUMP_SECONDS="0"),
                pass_fds=(to_erl_r, from_erl_w),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
        finally:
            os.close(to_erl_r)
            os.close(from_erl_w)
        self._reader = os.fdopen(self._from_erl, "rb")
        self._writer = os.fdopen(self._to_erl, "wb")

    def request(self, op: int, payload: bytes) -> bytes:
        self._writer.write(struct.pack(">IB", len(payload) + 1, op) + payload)
        self._writer.flush()
        header = self._reader.read(4)
        if len(header) < 4:
            out = self.process.stdout.read() if self.process.stdout else b""
            raise ErlangError(f"erl ended: {out.decode(errors='replace')[-2000:]}")
        (size,) = struct.unpack(">I", header)
        reply = self._reader.read(size)
        if reply[:1] != b"\x00":
            raise ErlangError(reply[1:].decode(errors="replace"))
        return reply[1:]

    def echo(self, raw: bytes) -> bytes:
        """erl's own encoding of the term it decoded from ``raw``."""
        return self.request(1, raw)

    def evaluate(self, expression: str, *, compressed: bool = False) -> bytes:
        return self.request(3 if compressed else 2, expression.encode())

    def exactly_equal(self, a: bytes, b: bytes) -> bool:
        return self.request(4, struct.pack(">I", len(a)) + a + b) == b"true"

    def close(self) -> None:
        self._writer.close()  # erl sees eof and halts
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        self._reader.close()
        if self.process.stdout:
            self.process.stdout.close()
