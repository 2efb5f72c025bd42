"""Several hosts on one machine: Linux network namespaces joined by a bridge.

:class:`Lab` creates namespaces for one test (or one benchmark run): a namespace
``skyc-br-<tag>`` holding a bridge ``br0`` (multicast flooded, no IGMP snooping), and one
namespace ``skyc-h<i>-<tag>`` per host (:meth:`Lab.add_hosts`), joined to the bridge by a
veth pair (``eth0`` in the host, ``v<i>`` on the bridge), addressed ``10.213.X.<i>/24``
(X random per lab), with a route for multicast (224.0.0.0/4) on ``eth0``. An *isolated*
host (:meth:`Lab.isolated_host`, ``skyc-solo<i>-<tag>``) has only ``lo``, multicast routed
to it: one machine alone, without a real interface. ``lo`` is up everywhere. Nothing is
created in, or changed about, the root namespace: no test packet can leave the machine.

A host (:class:`NsHost`) runs commands, can be cut off the bridge and brought back
(:meth:`NsHost.link_down`, :meth:`NsHost.link_up`) and can drop a share of the packets it
receives (:meth:`NsHost.set_loss`: ``tc netem``, else an nftables rule that counts).

:meth:`Lab.close` (also on a failed setup, and from the :func:`lab` fixture's
finalizer) kills every process started in the lab's namespaces and deletes the
namespaces, which removes the bridge, the veths, qdiscs and nftables tables with them.

:func:`lab` is a pytest fixture: import it into a test module (``from netns import
lab``) to use it. It skips the test, with the reason, where namespaces cannot be made
(not root, no ``ip``, ``ip netns add`` refused).

:class:`NsProcess` is a program started in a host (:meth:`Lab.spawn`, :meth:`Lab.start`
for ``skycluster agent --json``): the integration tests' :class:`agents.Process` (threads
read its JSON events and log lines, so that tests wait with a deadline instead of
sleeping), run through ``ip netns exec``.
"""

from __future__ import annotations

import contextlib
import functools
import os
import random
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

# The process wrapper and the environment of the integration tests (tests/integration).
_INTEGRATION = str(Path(__file__).resolve().parent.parent / "integration")
if _INTEGRATION not in sys.path:
    sys.path.insert(0, _INTEGRATION)

import agents  # noqa: E402
from agents import Process, skycluster_command  # noqa: E402

PREFIX = "skyc"
NETWORK = "10.213"  # hosts are NETWORK.X.<index>, X random per lab
WITHIN = 15.0  # liveness bound for what should happen (not a timing claim)
LOSS_TABLE = "skyg_loss"  # the nftables table of NsHost.set_loss


@functools.cache
def unavailable() -> str | None:
    """Why network namespaces cannot be used here, or None when they can."""
    if not sys.platform.startswith("linux"):
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "creating network namespaces needs root (run the netns tests as root)"
    if shutil.which("ip") is None:
        return "the 'ip' command (iproute2) is missing: run scripts/install-system-deps"
    probe = f"{PREFIX}-probe-{os.getpid()}-{random.randrange(1 << 24):x}"
    added = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if added.returncode != 0:
        return f"`ip netns add` failed: {added.stderr.strip() or added.returncode}"
    subprocess.run(["ip", "netns", "delete", probe], capture_output=True, check=False)
    return None


def run(
    argv: Sequence[str],
    *,
    check: bool = True,
    input: str | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 30.0,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` to completion (stdin: ``input``, else nothing); raise with its stderr
    when it fails and ``check`` is set."""
    result = subprocess.run(
        list(argv),
        input=input,
        stdin=subprocess.DEVNULL if input is None else None,
        env=None if env is None else dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {result.stderr.strip()}")
    return result


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``ip ARGS``; raise with its stderr when it fails and ``check`` is set."""
    return run(["ip", *args], check=check)


def clean_environ(home: Path, extra: Mapping[str, str | None] | None = None) -> dict[str, str]:
    """:func:`agents.clean_environ` with ``home`` created and the test session's port
    mapper port (``SKYCLUSTER_EPMD_PORT``, where set) kept: a free port of the root
    namespace means nothing in a host. ``extra`` sets (or, with None, removes) variables."""
    home.mkdir(parents=True, exist_ok=True)
    session = {"SKYCLUSTER_EPMD_PORT": os.environ.get("SKYCLUSTER_EPMD_PORT")}
    return agents.clean_environ(home, {**session, **(extra or {})})


class LossUnsupported(RuntimeError):
    """Neither tc netem nor nftables can drop packets here."""


class NsProcess(Process):
    """A program in a lab host (its argv starts with ``ip netns exec NS``)."""

    within = WITHIN

    @property
    def name(self) -> str:
        """The node name from the ``started`` event (waits for it)."""
        started = self.wait_for(lambda e: e["event"] == "started", what="started event")
        return str(started["node"])


@dataclass(eq=False)
class NsHost:
    """One host of a lab: a namespace, its address and its interface (``eth0`` on the
    bridge; ``lo`` and 127.0.0.1 for an isolated host)."""

    lab: Lab = field(repr=False)
    index: int
    netns: str
    address: str
    interface: str = "eth0"
    address6: str | None = None  # on the bridge: fd13:0:0:X::i, no duplicate detection
    loss_method: str | None = None  # "netem" or "nftables" while set_loss is in force

    def command(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside this host's namespace."""
        return ["ip", "netns", "exec", self.netns, *argv]

    def run(
        self, argv: Sequence[str], *, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` in this host; raises RuntimeError when it fails."""
        return run(self.command(argv), input=input)

    def ip(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``ip ARGS`` in this host."""
        return ip("-n", self.netns, *args)

    def link_down(self) -> None:
        """Cut this host off (its veth end on the bridge goes down)."""
        ip("-n", self.lab.bridge_ns, "link", "set", f"v{self.index}", "down")

    def link_up(self) -> None:
        ip("-n", self.lab.bridge_ns, "link", "set", f"v{self.index}", "up")

    def set_loss(self, percent: int) -> str:
        """Drop ``percent`` % of the packets this host receives: ``tc netem`` where the
        kernel has it, else an nftables rule in the netdev ingress hook. Returns the
        method used ("netem" or "nftables")."""
        tc = ["tc", "qdisc", "add", "dev", self.interface, "root", "netem", "loss", f"{percent}%"]
        netem = run(self.command(tc), check=False)
        if netem.returncode == 0:
            self.loss_method = "netem"
            return "netem"
        if shutil.which("nft") is None:
            raise LossUnsupported(
                f"no way to drop packets: tc netem failed ({netem.stderr.strip()}) and nft "
                "(Debian's nftables) is missing: run scripts/install-system-deps"
            )
        rules = (
            f"table netdev {LOSS_TABLE} {{\n"
            "  chain ingress {\n"
            f"    type filter hook ingress device {self.interface} priority 0; policy accept;\n"
            f"    numgen random mod 100 < {percent} counter drop\n"
            "  }\n"
            "}\n"
        )
        self.run(["nft", "-f", "-"], input=rules)
        self.loss_method = "nftables"
        return "nftables"

    def dropped_packets(self) -> int:
        """Packets dropped by the nftables loss rule so far (0 with netem or no rule)."""
        if self.loss_method != "nftables":
            return 0
        out = self.run(["nft", "list", "table", "netdev", LOSS_TABLE]).stdout
        match = re.search(r"counter packets (\d+)", out)
        return int(match.group(1)) if match else 0

    def clear_loss(self) -> None:
        if self.loss_method == "netem":
            run(self.command(["tc", "qdisc", "del", "dev", self.interface, "root"]), check=False)
        elif self.loss_method == "nftables":
            run(self.command(["nft", "delete", "table", "netdev", LOSS_TABLE]), check=False)
        self.loss_method = None


class Lab:
    """Hosts (namespaces) on one bridge, in 10.213.X.0/24. A context manager;
    ``Lab(n)`` creates ``n`` hosts on entry, :meth:`add_hosts` more at any time."""

    def __init__(self, hosts: int = 0, *, tag: str | None = None) -> None:
        self.tag = tag or f"{os.getpid() % 100000}-{random.randrange(1 << 16):04x}"
        self.subnet = random.randrange(1, 255)
        self.initial = hosts
        self.hosts: list[NsHost] = []
        self.namespaces: list[str] = []
        self.bridge_ns = ""  # created with the first host on the bridge
        self.processes: list[NsProcess] = []

    def address(self, index: int) -> str:
        """The address of host ``index`` (1-based); also usable for absent hosts."""
        return f"{NETWORK}.{self.subnet}.{index}"

    def address6(self, index: int) -> str:
        """The IPv6 address of host ``index``, in the lab's private fd13:0:0:X::/64."""
        return f"fd13:0:0:{self.subnet:x}::{index:x}"

    @property
    def broadcast(self) -> str:
        return self.address(255)

    # -- lifecycle ---------------------------------------------------------------------

    def __enter__(self) -> Lab:
        try:
            self.add_hosts(self.initial)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _add_netns(self, name: str) -> str:
        netns = f"{PREFIX}-{name}-{self.tag}"
        ip("netns", "add", netns)
        self.namespaces.append(netns)
        ip("-n", netns, "link", "set", "lo", "up")
        return netns

    def add_hosts(self, count: int) -> list[NsHost]:
        """``count`` more hosts on the bridge (which the first one creates)."""
        if count and not self.bridge_ns:
            self.bridge_ns = self._add_netns("br")
            ip("-n", self.bridge_ns, "link", "add", "br0", "type", "bridge")
            # Multicast flooding without IGMP snooping state, so that joins need no querier.
            ip("-n", self.bridge_ns, "link", "set", "br0", "type", "bridge", "mcast_snooping", "0")
            ip("-n", self.bridge_ns, "link", "set", "br0", "up")
        added = []
        for _ in range(count):
            index = len(self.hosts) + 1
            if index > 250:
                raise ValueError("a lab has at most 250 hosts")
            netns = self._add_netns(f"h{index}")
            # Both ends are created inside namespaces: the root namespace never sees them.
            ip(
                "-n", netns, "link", "add", "eth0", "type", "veth",
                "peer", "name", f"v{index}", "netns", self.bridge_ns,
            )  # fmt: skip
            ip("-n", self.bridge_ns, "link", "set", f"v{index}", "master", "br0", "up")
            ip("-n", netns, "addr", "add", f"{self.address(index)}/24", "dev", "eth0")
            ip("-n", netns, "addr", "add", f"{self.address6(index)}/64", "dev", "eth0", "nodad")
            ip("-n", netns, "link", "set", "eth0", "up")
            ip("-n", netns, "route", "add", "224.0.0.0/4", "dev", "eth0")
            host = NsHost(self, index, netns, self.address(index), address6=self.address6(index))
            self.hosts.append(host)
            added.append(host)
        return added

    def isolated_host(self) -> NsHost:
        """A namespace with only ``lo``, multicast routed to it: one machine alone."""
        index = len(self.hosts) + 1
        netns = self._add_netns(f"solo{index}")
        ip("-n", netns, "route", "add", "224.0.0.0/4", "dev", "lo", "src", "127.0.0.1")
        host = NsHost(self, index, netns, "127.0.0.1", "lo")
        self.hosts.append(host)
        return host

    def close(self) -> None:
        """Kill what runs in the lab and delete its namespaces (and with them everything
        made in them: veths, bridge, qdiscs, nftables tables). Idempotent."""
        for process in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.kill()
        for netns in self.namespaces:
            # Anything else still running in the namespace (children of our processes).
            for pid in ip("netns", "pids", netns, check=False).stdout.split():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
        for netns in reversed(self.namespaces):
            ip("netns", "delete", netns, check=False)
        self.namespaces.clear()
        self.hosts.clear()
        self.processes.clear()
        self.bridge_ns = ""

    # -- running things in hosts -------------------------------------------------------

    def _command(self, host: NsHost | str, argv: Sequence[str]) -> list[str]:
        if isinstance(host, NsHost):
            return host.command(argv)
        if host not in self.namespaces:
            raise ValueError(f"{host!r} is not a namespace of this lab: {self.namespaces}")
        return ["ip", "netns", "exec", host, *argv]

    def run_in(
        self,
        host: NsHost | str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        timeout: float = WITHIN,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` to completion in ``host`` (an :class:`NsHost` or the name of one
        of this lab's namespaces, the bridge's included); the caller checks the result."""
        return run(self._command(host, argv), check=False, env=env, timeout=timeout)

    def spawn(
        self, host: NsHost | str, label: str, argv: Sequence[str], *, env: Mapping[str, str]
    ) -> NsProcess:
        """Start ``argv`` in ``host`` (as for :meth:`run_in`); :meth:`close` kills it."""
        process = NsProcess(label, self._command(host, argv), env)
        self.processes.append(process)
        return process

    def start(
        self,
        host: NsHost,
        name: str,
        args: Sequence[str] = (),
        *,
        env: Mapping[str, str | None] | None = None,
        home: Path,
    ) -> NsProcess:
        """``skycluster agent --json ARGS`` in ``host``, named ``name@<host address>``
        (``name`` itself when it contains '@'; no --name flag when it is empty). Nothing
        is configured but ``env``: no port mapper port either (the default, 4369, is the
        host's own)."""
        argv = [*skycluster_command(), "agent", "--json"]
        if name:
            argv += ["--name", name if "@" in name else f"{name}@{host.address}"]
        argv += list(args)
        environ = clean_environ(home, {"SKYCLUSTER_EPMD_PORT": None, **(env or {})})
        return self.spawn(host, name or "agent", argv, env=environ)


@pytest.fixture
def lab() -> Iterator[Lab]:
    """An empty lab (:meth:`Lab.add_hosts`, :meth:`Lab.isolated_host`), removed at the
    end of the test, which checks that no namespace of it is left; the test is skipped
    where namespaces cannot be created."""
    reason = unavailable()
    if reason is not None:
        pytest.skip(f"needs Linux network namespaces: {reason}")
    with Lab() as created:
        yield created
    left = ip("netns", "list", check=False).stdout
    assert created.tag not in left, f"namespaces left behind:\n{left}"
