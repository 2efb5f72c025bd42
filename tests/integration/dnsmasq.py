"""A real DNS server for the tests: Debian's ``dnsmasq``, on 127.0.0.1 and a free
port, answering only from the files a test writes (no upstream, no system
hosts). A and AAAA records come from a hosts file (re-read on SIGHUP, so a
test changes them in place); SRV records are command-line options, so changing
them restarts the server on the same port."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path

from skycluster.dns import codec

LOOPBACK = "127.0.0.1"
LOCAL_DOMAINS = ("test", "cluster.local")


def dnsmasq_binary() -> str | None:
    return shutil.which("dnsmasq") or (
        "/usr/sbin/dnsmasq" if os.access("/usr/sbin/dnsmasq", os.X_OK) else None
    )


def free_udp_tcp_port() -> int:
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((LOOPBACK, 0))
            port = int(udp.getsockname()[1])
            with socket.socket() as tcp:
                try:
                    tcp.bind((LOOPBACK, port))
                except OSError:
                    continue
                return port


class Dnsmasq:
    def __init__(self, directory: Path) -> None:
        binary = dnsmasq_binary()
        assert binary is not None
        self.binary = binary
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.hosts_file = directory / "hosts"
        self.hosts_file.write_text("")
        self.port = free_udp_tcp_port()
        self.srv: list[tuple[str, str, int]] = []  # (name, target, port)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def server(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def argv(self) -> list[str]:
        argv = [
            self.binary,
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            f"--listen-address={LOOPBACK}",
            f"--port={self.port}",
            f"--addn-hosts={self.hosts_file}",
            "--pid-file=",
            "--log-facility=-",
            "--cache-size=0",
            *(f"--local=/{domain}/" for domain in LOCAL_DOMAINS),
            *(f"--srv-host={name},{target},{port}" for name, target, port in self.srv),
        ]
        if os.getuid() == 0:
            argv.append("--user=root")  # read the test's private directory
        return argv

    def start(self) -> None:
        assert self.proc is None
        self.proc = subprocess.Popen(
            self.argv(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.wait_answering()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
            self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def set_hosts(self, entries: Iterable[tuple[str, str]]) -> None:
        """(address, name) pairs; dnsmasq re-reads the file on SIGHUP."""
        scratch = self.directory / "hosts.new"
        scratch.write_text("".join(f"{address} {name}\n" for address, name in entries))
        os.replace(scratch, self.hosts_file)
        if self.proc is not None:
            self.proc.send_signal(signal.SIGHUP)

    def set_srv(self, records: Iterable[tuple[str, str, int]]) -> None:
        self.srv = list(records)
        if self.proc is not None:
            self.restart()

    def ask(self, name: str, qtype: int, timeout: float = 0.5) -> codec.Message | None:
        """One query over UDP (blocking), for readiness checks."""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(timeout)
            sock.sendto(codec.build_query(7, name, qtype), (LOOPBACK, self.port))
            try:
                return codec.parse_message(sock.recvfrom(65535)[0])
            except (TimeoutError, ConnectionRefusedError):
                return None

    def wait_answering(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while self.ask("probe.test", codec.A) is None:
            assert self.proc is not None and self.proc.poll() is None, "dnsmasq exited"
            if time.monotonic() > deadline:
                raise AssertionError(f"dnsmasq does not answer on {self.server}")

    def resolves(self, name: str, qtype: int, predicate: object) -> None:
        """Wait until dnsmasq's answer for ``name`` satisfies ``predicate`` (after a
        SIGHUP, dnsmasq re-reads the file asynchronously)."""
        deadline = time.monotonic() + 10.0
        while True:
            answer = self.ask(name, qtype)
            values = sorted(str(r.value) for r in answer.answers) if answer else None
            if callable(predicate) and values is not None and predicate(values):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"dnsmasq answers {values} for {name}")
            time.sleep(0.02)
