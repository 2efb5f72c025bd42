"""Helpers of the tests against real ``erl`` nodes over Erlang distribution: a private
epmd and an ``erl`` that reports on stderr, and the handshake driven by the link's own
driver (``skycluster.erlang.link.handshake``)."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from agents import LOOPBACK, WITHIN, Process
from local_host import private_epmd_port

from skycluster import Cluster
from skycluster.erlang.handshake import ErlangHandshake, Established, Refused
from skycluster.erlang.link import handshake

ERL = f"erl@{LOOPBACK}"

# The marks of a test module that runs a real epmd and erl.
NEEDS_ERL = [
    pytest.mark.erlang,
    pytest.mark.skipif(
        shutil.which("epmd") is None or shutil.which("erl") is None,
        reason="needs Debian's erlang-base for the real epmd and erl: apt-get install erlang-base",
    ),
]


def wait_listening(epmd: Process, port: int) -> None:
    deadline = time.monotonic() + WITHIN
    while True:
        assert epmd.running, epmd.describe()
        with socket.socket() as sock:
            if sock.connect_ex((LOOPBACK, port)) == 0:
                return
        assert time.monotonic() < deadline, "epmd not listening"
        time.sleep(0.05)


def wait_stdout(process: Process, text: str) -> str:
    deadline = time.monotonic() + WITHIN
    while True:
        found = [line for line in list(process.stdout_lines) if text in line]
        if found:
            return found[0]
        assert time.monotonic() < deadline, f"erl never printed {text!r}\n{process.describe()}"
        time.sleep(0.05)


async def drive(
    core: ErlangHandshake, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> Established | Refused:
    """Move bytes between the socket and the core until the handshake ends (the
    link's own driver, accepting every name)."""
    return await handshake(core, reader, writer)


def python_node(epmd_port: int, name: str, cookie: str, **options: Any) -> Cluster:
    """A Python node that speaks Erlang distribution (``erlang=True`` unless told
    otherwise), registered with the private epmd; HOME points nowhere, so the
    cookie given is the only one (no ~/.erlang.cookie is read)."""
    settings: dict[str, Any] = {"erlang": True, **options}
    return Cluster(
        name, cookie=cookie, epmd_port=epmd_port, environ={"HOME": "/nonexistent"}, **settings
    )


class ErlNode:
    """One private epmd and one ``erl -name erl@127.0.0.1`` running ``code`` (which
    prints ``ready`` on stderr when it is); :meth:`close` kills both. Another loopback
    host in ``name`` (``app@127.0.0.2``): epmd answers there too (and on 127.0.0.1,
    where erl registers) and erl listens only there."""

    def __init__(
        self,
        tmp_path: Path,
        code: str,
        cookie: str,
        extra: Sequence[str] = (),
        *,
        name: str = ERL,
    ) -> None:
        self.epmd_port = private_epmd_port()
        env = dict(os.environ, HOME=str(tmp_path), ERL_EPMD_PORT=str(self.epmd_port))
        env.pop("SKYCLUSTER_EPMD_PORT", None)
        env["ERL_CRASH_DUMP_SECONDS"] = "0"
        self.processes: list[Process] = []
        host = name.partition("@")[2]
        addresses = LOOPBACK if host == LOOPBACK else f"{LOOPBACK},{host}"
        epmd = ["epmd", "-port", str(self.epmd_port), "-address", addresses]
        self.processes.append(Process("epmd", epmd, env))
        wait_listening(self.processes[0], self.epmd_port)
        argv = ["erl", "-name", name, "-noshell", "-start_epmd", "false"]
        if host != LOOPBACK:
            interface = "{" + host.replace(".", ",") + "}"
            argv += ["-kernel", "inet_dist_use_interface", interface]
        if cookie is not None:
            argv += ["-setcookie", cookie]
        self.erl = Process("erl", [*argv, *extra, "-eval", code], env)
        self.processes.append(self.erl)
        self.erl.wait_for_log("^ready$")

    def close(self) -> None:
        for process in self.processes:
            process.kill()
