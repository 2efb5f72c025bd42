"""Interop with Debian's real ``epmd`` and ``erl`` (package erlang-base), on loopback.

(a) the real epmd serves our client; (b) our server serves ``epmd -names`` and ``erl`` nodes.
Every process is started by a fixture that kills it in its finalizer.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from erl_dist import NEEDS_ERL

from skycluster.distribution.portmapper import (
    NameTaken,
    PortMapperServer,
    PortMapperSettings,
    lookup,
    lookup_node,
    names,
    register,
)

LOOPBACK = "127.0.0.1"
COOKIE = "skycluster-test"
T = TypeVar("T")

pytestmark = NEEDS_ERL


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def poll(check: Callable[[], T], *, within: float = 10.0, what: str = "condition") -> T:
    """Poll ``check`` until truthy: another process changes the state we look at."""
    deadline = time.monotonic() + within
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {within} s (last: {result!r})")
        time.sleep(0.02)


def our_names(port: int) -> list[tuple[str, int]]:
    return asyncio.run(names(LOOPBACK, epmd_port=port))


def erl_env(epmd_port: int, tmp_path: Path) -> dict[str, str]:
    return dict(
        os.environ,
        ERL_EPMD_PORT=str(epmd_port),
        HOME=str(tmp_path),  # erl may write a cookie file there
        ERL_CRASH_DUMP_SECONDS="0",  # a node that fails to start writes no erl_crash.dump
    )


Spawn = Callable[..., subprocess.Popen[str]]


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Spawn]:
    """Start a process in tmp_path; every one is killed and reaped in the finalizer."""
    started: list[subprocess.Popen[str]] = []

    def start(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            args,
            cwd=tmp_path,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)


@pytest.fixture
def real_epmd(spawn: Spawn) -> int:
    """A real epmd in the foreground on a free loopback port; returns the port."""
    port = free_port()
    proc = spawn("epmd", "-port", str(port), "-address", LOOPBACK)

    def listening() -> bool:
        assert proc.poll() is None, f"epmd exited: {proc.communicate()[0]}"
        with socket.socket() as sock:
            return sock.connect_ex((LOOPBACK, port)) == 0

    poll(listening, what=f"epmd listening on port {port}")
    return port


class ThreadedServer:
    """Our PortMapperServer in its own event loop thread, so that tests can block on processes."""

    def __init__(self) -> None:
        self.port = 0
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="portmapper-test", daemon=True)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:
            self._error = exc
        finally:
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with PortMapperServer(PortMapperSettings(bind=LOOPBACK, port=0)) as server:
            self.port = server.port
            self._ready.set()
            await self._stop.wait()

    def start(self) -> None:
        self._thread.start()
        assert self._ready.wait(10) and self._error is None, self._error

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
        assert not self._thread.is_alive(), "port mapper thread did not stop"
        assert self._error is None, self._error


@pytest.fixture
def our_server() -> Iterator[int]:
    """Our server on a free loopback port; returns the port."""
    server = ThreadedServer()
    server.start()
    yield server.port
    server.stop()


async def run(*args: str, env: dict[str, str] | None = None) -> str:
    proc = await asyncio.create_subprocess_exec(
        *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        async with asyncio.timeout(20):
            out, _ = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return out.decode()


def run_sync(*args: str, env: dict[str, str] | None = None) -> str:
    return subprocess.run(
        args, env=env, capture_output=True, text=True, timeout=20, check=False
    ).stdout


def start_erl_node(
    spawn: Spawn, name: str, epmd_port: int, tmp_path: Path
) -> subprocess.Popen[str]:
    return spawn(
        "erl",
        "-sname",
        name,
        "-noshell",
        "-start_epmd",
        "false",  # never let erl start an epmd daemon of its own
        "-setcookie",
        COOKIE,
        env=erl_env(epmd_port, tmp_path),
    )


def erl_eval(expr: str, epmd_port: int, tmp_path: Path) -> str:
    """Evaluate ``expr`` in a non-distributed erl that uses the port mapper at ``epmd_port``."""
    code = f'io:format("~p~n", [{expr}]), halt().'
    return run_sync(
        "erl", "-noshell", "-start_epmd", "false", "-eval", code, env=erl_env(epmd_port, tmp_path)
    ).strip()


# --- (a) the real epmd, our client ------------------------------------------------------------


def test_real_epmd_lists_our_registration(real_epmd: int) -> None:
    env_only = dict(os.environ, ERL_EPMD_PORT=str(real_epmd))

    async def scenario() -> None:
        async with await register("skypy", 5555, epmd_port=real_epmd) as reg:
            assert reg.creation >= 4  # ALIVE2_X_RESP with a 32-bit creation
            listing = await run("epmd", "-port", str(real_epmd), "-names")
            assert "name skypy at port 5555" in listing, listing
            assert "name skypy at port 5555" in await run("epmd", "-names", env=env_only)
            assert await lookup(LOOPBACK, "skypy", epmd_port=real_epmd) == 5555
            assert await lookup(LOOPBACK, "nobody", epmd_port=real_epmd) is None
            assert ("skypy", 5555) in await names(LOOPBACK, epmd_port=real_epmd)
            with pytest.raises(NameTaken):
                await register("skypy", 5556, epmd_port=real_epmd)
            async with await register("hid", 5557, epmd_port=real_epmd, hidden=True):
                node = await lookup_node(LOOPBACK, "hid", epmd_port=real_epmd)
                assert node is not None and node.hidden and node.port == 5557

    asyncio.run(scenario())
    poll(lambda: our_names(real_epmd) == [], what="epmd dropping closed registrations")


def test_real_epmd_with_a_real_erl_node(real_epmd: int, spawn: Spawn, tmp_path: Path) -> None:
    start_erl_node(spawn, "x", real_epmd, tmp_path)
    listing = poll(lambda: dict(our_names(real_epmd)), what="erl registering x")
    assert list(listing) == ["x"]
    node = asyncio.run(lookup_node(LOOPBACK, "x", epmd_port=real_epmd))
    assert node is not None and node.port == listing["x"] and node.highest_version >= 6


# --- (b) our server, Erlang's clients ---------------------------------------------------------


def test_epmd_names_lists_our_registrations(our_server: int) -> None:
    env = dict(os.environ, ERL_EPMD_PORT=str(our_server))

    async def scenario() -> None:
        async with (
            await register("alpha", 6001, epmd_port=our_server),
            await register("beta", 6002, epmd_port=our_server),
        ):
            listing = await run("epmd", "-names", env=env)
            assert f"up and running on port {our_server}" in listing, listing
            assert "name alpha at port 6001" in listing
            assert "name beta at port 6002" in listing
            assert "name alpha at port 6001" in await run(
                "epmd", "-port", str(our_server), "-names"
            )

    asyncio.run(scenario())


def test_erl_registers_with_our_server(our_server: int, spawn: Spawn, tmp_path: Path) -> None:
    node = start_erl_node(spawn, "x", our_server, tmp_path)
    listing = poll(lambda: dict(our_names(our_server)), what="erl registering x with our server")
    assert list(listing) == ["x"]
    info = asyncio.run(lookup_node(LOOPBACK, "x", epmd_port=our_server))
    assert info is not None and info.port == listing["x"] and not info.hidden

    # Erlang's own client reads our NAMES and PORT2_RESP replies.
    assert erl_eval("net_adm:names()", our_server, tmp_path) == f'{{ok,[{{"x",{listing["x"]}}}]}}'
    port_please = erl_eval('erl_epmd:port_please("x", {127,0,0,1})', our_server, tmp_path)
    assert port_please.startswith(f"{{port,{listing['x']},")
    assert erl_eval('erl_epmd:port_please("nobody", {127,0,0,1})', our_server, tmp_path) == "noport"

    # A second erl with the same name is refused by our ALIVE2 error reply and gives up.
    clash = start_erl_node(spawn, "x", our_server, tmp_path)
    output, _ = clash.communicate(timeout=20)
    assert clash.returncode != 0
    assert "in use" in output or "duplicate_name" in output, output

    # The registration ends with the node's connection.
    node.kill()
    node.wait(timeout=10)
    poll(lambda: our_names(our_server) == [], what="x unregistered after erl exited")
