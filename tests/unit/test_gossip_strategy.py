"""The gossip strategy without a network: its options (flags, environment, the
seed's LIBCLUSTER_* names), and its receive path driven directly (drops counted
per reason, logs rate-limited, own heartbeats ignored, one link attempt per new
node, backoff, the flood limit). Real sockets are tested in tests/netns."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, cast

import pytest

from skycluster import cli
from skycluster._counters import Counters
from skycluster.cluster import topologies_from
from skycluster.errors import ConfigError
from skycluster.names import NodeName
from skycluster.strategy import Gossip, strategy_class
from skycluster.strategy import gossip as gossip_module
from skycluster.strategy.base import StrategyContext
from skycluster.strategy.gossip import MAX_PACKETS_PER_SECOND, _Run
from skycluster.strategy.gossip_packet import GossipCodec, Heartbeat

ME = NodeName("me", "10.0.0.1", 4401)
PEER = NodeName("peer", "10.0.0.2", 4402)
ADDR = ("10.0.0.2", 45892)

# -- options ---------------------------------------------------------------------------


def test_defaults_are_the_seeds() -> None:
    strategy = Gossip()
    assert (strategy.port, strategy.if_addr, strategy.multicast_addr) == (
        45892,
        "0.0.0.0",
        "230.1.1.251",
    )
    assert strategy.multicast_ttl == 1
    assert strategy.multicast_if is None
    assert strategy.broadcast_only is False
    assert strategy.interval == 1.0
    assert strategy.secrets == []
    assert strategy.destination == ("230.1.1.251", 45892)


def test_by_name_and_seed_name() -> None:
    assert strategy_class("gossip") is Gossip
    assert strategy_class("Cluster.Strategy.Gossip") is Gossip
    assert strategy_class("Elixir.Cluster.Strategy.Gossip") is Gossip


def test_seed_environment_names() -> None:
    environ = {
        "LIBCLUSTER_STRATEGY": "Cluster.Strategy.Gossip",
        "LIBCLUSTER_MULTICAST_PORT": "45999",
        "LIBCLUSTER_MULTICAST_PORT_IF_ADDR": "{0,0,0,0}",  # the seed's tuple form
        "LIBCLUSTER_MULTICAST_ADDR": "230.1.1.252",
        "LIBCLUSTER_MULTICAST_TTL": "3",
    }
    (strategy,) = topologies_from(environ).values()
    assert isinstance(strategy, Gossip)
    assert (strategy.port, strategy.if_addr, strategy.multicast_addr) == (
        45999,
        "0.0.0.0",
        "230.1.1.252",
    )
    assert strategy.multicast_ttl == 3


def test_our_environment_names_win_over_the_seeds() -> None:
    environ = {
        "SKYCLUSTER_STRATEGY": "gossip",
        "SKYCLUSTER_MULTICAST_PORT": "46000",
        "LIBCLUSTER_MULTICAST_PORT": "45999",
        "SKYCLUSTER_MULTICAST_TTL": "2",
        "SKYCLUSTER_GOSSIP_INTERVAL": "0.25",
        "SKYCLUSTER_SECRET": "new-secret,old-secret",
        "SKYCLUSTER_GOSSIP_LABEL": "staging",
        "SKYCLUSTER_BROADCAST_ONLY": "true",
        "SKYCLUSTER_MULTICAST_ADDR": "10.9.8.255",
        "SKYCLUSTER_MULTICAST_IF": "10.9.8.1",
        "SKYCLUSTER_IF_ADDR": "0.0.0.0",
    }
    (strategy,) = topologies_from(environ).values()
    assert isinstance(strategy, Gossip)
    assert strategy.port == 46000
    assert strategy.multicast_ttl == 2
    assert strategy.interval == 0.25
    assert strategy.secrets == ["new-secret", "old-secret"]
    assert strategy.label == "staging"
    assert strategy.broadcast_only is True
    assert strategy.destination == ("10.9.8.255", 46000)
    assert strategy.multicast_if == "10.9.8.1"


def parse(argv: list[str]) -> Gossip:
    args = cli.build_parser().parse_args(["agent", "--strategy", "gossip", *argv])
    (strategy,) = topologies_from({}, vars(args)).values()
    assert isinstance(strategy, Gossip)
    return strategy


def test_cli_flags_and_repeatable_secret() -> None:
    strategy = parse(
        [
            "--multicast-addr=230.2.2.2",
            "--multicast-port=46001",
            "--multicast-ttl=0",
            "--multicast-if=lo",
            "--if-addr=0.0.0.0",
            "--gossip-interval=2",
            "--secret=first",
            "--secret=second",
        ]
    )
    assert strategy.destination == ("230.2.2.2", 46001)
    assert strategy.multicast_ttl == 0
    assert strategy.multicast_if == "lo"
    assert strategy.interval == 2.0
    assert strategy.secrets == ["first", "second"]  # the first one sends
    assert parse(["--broadcast-only"]).destination == ("255.255.255.255", 45892)
    assert parse([]).broadcast_only is False


def test_flags_beat_the_environment() -> None:
    args = cli.build_parser().parse_args(["agent", "--strategy", "gossip", "--secret", "flag"])
    (strategy,) = topologies_from({"SKYCLUSTER_SECRET": "env"}, vars(args)).values()
    assert isinstance(strategy, Gossip)
    assert strategy.secrets == ["flag"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--multicast-port", "0"], "--multicast-port: invalid value '0'"),
        (["--multicast-ttl", "256"], "--multicast-ttl: invalid value '256'"),
        (["--multicast-addr", "230.1.1"], "expected an IP address"),
        (["--multicast-addr", "ff02::1", "--broadcast-only"], "IPv6 has no broadcast"),
        (["--multicast-addr", "10.0.0.1"], "not a multicast group"),
        (["--multicast-if", "no-such-if0"], "no such network interface"),
        (["--gossip-interval", "0"], "--gossip-interval: invalid value '0'"),
        (["--secret", " "], "--secret: invalid value (hidden)"),
    ],
)
def test_bad_values_exit_2_naming_the_flag(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(["agent", "--name", "a@127.0.0.1", "--strategy", "gossip", *argv], environ={})
    assert code == 2
    err = capsys.readouterr().err
    assert message in err
    assert len(err.strip().splitlines()) == 1


def test_secret_value_is_never_echoed(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(
        ["agent", "--strategy", "gossip", "--secret", "hunter2", "--multicast-ttl", "x"],
        environ={},
    )
    assert code == 2
    assert "hunter2" not in capsys.readouterr().err


def test_help_lists_every_gossip_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["agent", "--help"], environ={})
    out = capsys.readouterr().out
    for flag in (
        "--multicast-addr",
        "--multicast-port",
        "--multicast-ttl",
        "--multicast-if",
        "--if-addr",
        "--broadcast-only",
        "--gossip-interval",
        "--secret",
        "LIBCLUSTER_MULTICAST_PORT_IF_ADDR",
    ):
        assert flag in out


def _beat(codec: GossipCodec) -> bytes:
    return codec.encode(Heartbeat("a@10.0.0.1:4401", 1, 1, int(time.time() * 1000)))


def test_secrets_from_a_file_seal_and_open_like_given_ones(tmp_path: Path) -> None:
    path = tmp_path / "gossip-secret"
    path.write_text("# rotated in on Monday\n\n  new-secret  \nold-secret\n")
    path.chmod(0o600)
    from_file = Gossip(secret_file=str(path))
    assert from_file.secrets == ["new-secret", "old-secret"]  # the first line sends
    mine = GossipCodec(from_file.secrets)
    assert isinstance(mine.decode(_beat(GossipCodec(["old-secret"])), time.time()), Heartbeat)
    assert isinstance(GossipCodec(["new-secret"]).decode(_beat(mine), time.time()), Heartbeat)
    assert not isinstance(GossipCodec(["other"]).decode(_beat(mine), time.time()), Heartbeat)
    # with `secret` too, that one sends and the file's are accepted
    assert Gossip(secret="flag", secret_file=str(path)).secrets == [
        "flag",
        "new-secret",
        "old-secret",
    ]
    # the flag and the environment variable
    assert parse([f"--secret-file={path}"]).secrets == ["new-secret", "old-secret"]
    args = cli.build_parser().parse_args(["agent", "--strategy", "gossip"])
    (strategy,) = topologies_from({"SKYCLUSTER_SECRET_FILE": str(path)}, vars(args)).values()
    assert isinstance(strategy, Gossip) and strategy.secrets == ["new-secret", "old-secret"]


def test_a_secret_file_others_can_read_is_used_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "secret"
    path.write_text("hunter2-gossip\n")
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="skycluster.strategy.gossip"):
        assert Gossip(secret_file=str(path)).secrets == ["hunter2-gossip"]
    assert "chmod 600" in caplog.text and "mode 644" in caplog.text
    assert "hunter2" not in caplog.text


def _swap(path: Path, text: str) -> None:
    """Replace the file at once, as a Kubernetes Secret volume does (a new inode)."""
    staged = path.with_suffix(".new")
    staged.write_text(text)
    staged.chmod(0o600)
    os.replace(staged, path)


def test_a_changed_secret_file_is_taken_without_a_restart(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "secret"
    _swap(path, "old-secret-1\n")

    async def main() -> None:
        ctx = FakeContext()
        run = run_with(ctx, Gossip(secret_file=str(path)))
        run.reload_secrets()  # unchanged since the strategy read it
        assert "gossip_secret_reloads" not in ctx.stats
        run.received(packet(GossipCodec(["new-secret-2"])), ADDR)
        assert ctx.stats["gossip_dropped_unknown_key"] == 1

        _swap(path, "# rotated\nnew-secret-2\nold-secret-1\n")
        run.reload_secrets()
        assert ctx.stats["gossip_secret_reloads"] == 1
        run.received(packet(GossipCodec(["new-secret-2"]), seq=1), ADDR)  # accepted now
        run.received(packet(GossipCodec(["old-secret-1"]), PEER, seq=2), ADDR)  # still
        assert ctx.stats["gossip_received"] == 2
        mine = _beat(run.codec)  # sealed with the file's first secret
        assert isinstance(GossipCodec(["new-secret-2"]).decode(mine, time.time()), Heartbeat)

        path.touch()  # touched, not changed: nothing to do
        run.reload_secrets()
        assert ctx.stats["gossip_secret_reloads"] == 1

        # a bad file, then none: the secrets read before stay, one report per change
        _swap(path, "# nothing here\n")
        run.reload_secrets()
        run.reload_secrets()
        path.unlink()
        run.reload_secrets()
        run.reload_secrets()
        assert ctx.stats["gossip_secret_reload_errors"] == 2
        run.received(packet(GossipCodec(["new-secret-2"]), seq=3), ADDR)
        assert ctx.stats["gossip_received"] == 3
        await run.tasks.aclose()

    with caplog.at_level(logging.INFO, logger=FakeContext().log.name):
        asyncio.run(main())
    assert "gossip secrets reloaded from" in caplog.text
    assert "holds no secret" in caplog.text and "keeping the secrets read before" in caplog.text
    assert "secret-1" not in caplog.text and "secret-2" not in caplog.text


@pytest.mark.parametrize(
    ("content", "mode", "why"),
    [
        (None, 0o600, "cannot read it (No such file or directory)"),
        (b"", 0o600, "holds no secret: write one per line"),
        (b"# only a comment\n\n   \n", 0o600, "holds no secret"),
        (b"hunter2" * 20000, 0o600, "larger than 64 KiB"),
        (b"hunter2\xff\xfe\n", 0o600, "is not UTF-8 text"),
        ("dir", 0o700, "cannot read it (Is a directory)"),
        ("fifo", 0o600, "is not a regular file"),
    ],
    ids=["missing", "empty", "comments", "huge", "binary", "directory", "fifo"],
)
def test_a_bad_secret_file_exits_2_naming_the_file_not_its_content(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    content: bytes | str | None,
    mode: int,
    why: str,
) -> None:
    path = tmp_path / "secret"
    if content == "dir":
        path.mkdir()
    elif content == "fifo":
        os.mkfifo(path)  # would block a reader that does not check: it must not
    elif isinstance(content, bytes):
        path.write_bytes(content)
    if path.exists():
        path.chmod(mode)
    argv = ["agent", "--name", "a@127.0.0.1", "--strategy", "gossip", "--secret-file", str(path)]
    assert cli.main(argv, environ={}) == 2
    err = capsys.readouterr().err
    assert f"secret_file '{path}'" in err and why in err
    assert len(err.strip().splitlines()) == 1
    assert "hunter2" not in err


def test_an_ipv6_group_binds_ipv6_and_refuses_what_ipv6_lacks() -> None:
    gossip = Gossip(multicast_addr="ff02::4B59")
    assert gossip.ipv6
    assert gossip.if_addr == "::" and gossip.destination == ("ff02::4b59", 45892)
    assert Gossip(multicast_addr="[ff05::1:3]", if_addr="fd13::1").if_addr == "fd13::1"
    assert parse(["--multicast-addr", "ff02::4b59", "--if-addr", "::"]).multicast_addr == (
        "ff02::4b59"
    )
    refusals = [
        ({"multicast_addr": "fd13::1"}, "is not a multicast group"),
        ({"multicast_addr": "ff02::1", "if_addr": "10.0.0.1"}, "not of the same IP version"),
        ({"multicast_addr": "230.1.1.251", "if_addr": "::"}, "not of the same IP version"),
        ({"multicast_addr": "ff02::1", "broadcast_only": True}, "IPv6 has no broadcast"),
        ({"multicast_addr": "ff02::1", "multicast_if": "10.0.0.5"}, "given by name"),
        ({"multicast_addr": "ff02::1", "multicast_if": "no-such-if0"}, "no such network"),
        ({"multicast_addr": "ff02::zz"}, "expected an IP address"),
    ]
    for options, why in refusals:
        with pytest.raises(ConfigError, match=why):
            Gossip(**options)


def test_library_arguments_are_checked() -> None:
    with pytest.raises(ConfigError, match="not a multicast group"):
        Gossip(multicast_addr="10.0.0.255")
    assert Gossip(multicast_addr="10.0.0.255", broadcast_only=True).destination == (
        "10.0.0.255",
        45892,
    )
    with pytest.raises(ConfigError, match="port"):
        Gossip(port=70000)
    with pytest.raises(ConfigError, match="interval"):
        Gossip(interval=0)
    with pytest.raises(ConfigError, match="multicast_ttl"):
        Gossip(multicast_ttl=-1)
    assert Gossip(secret="one").secrets == ["one"]
    assert Gossip(secret=["one", b"two"]).secrets == ["one", b"two"]
    assert "hunter2" not in repr(Gossip(secret="hunter2"))


# -- the receive path, driven directly --------------------------------------------------------


class FakeContext:
    """What _Run uses of a StrategyContext."""

    def __init__(self, *, connect_result: bool = True) -> None:
        self.node_name = ME
        self.advertised_name = ME
        self.log = logging.getLogger("skycluster.strategy.test-gossip")
        self.counters = Counters()
        self.telemetry: list[tuple[str, dict[str, float], dict[str, Any]]] = []
        self.linked: set[str] = set()
        self.connects: list[str] = []
        self.connect_result = connect_result

    def count(self, key: str, n: int = 1) -> None:
        self.counters.add(key, n)

    @property
    def stats(self) -> dict[str, int]:
        return self.counters.snapshot()

    def emit(self, event: str, measurements: dict[str, float], **metadata: Any) -> None:
        self.telemetry.append((event, measurements, metadata))

    def nodes(self) -> list[str]:
        return sorted(self.linked)

    async def connect(self, names: Iterable[NodeName | str]) -> dict[str, bool]:
        result = {}
        for name in names:
            assert isinstance(name, NodeName)
            self.connects.append(str(name))
            if self.connect_result:
                self.linked.add(name.identity)
            result[name.identity] = self.connect_result
        return result


def packet(codec: GossipCodec, node: NodeName = PEER, seq: int = 0, incarnation: int = 1) -> bytes:
    return codec.encode(Heartbeat(node, incarnation, seq, int(time.time() * 1000)))


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def run_with(ctx: FakeContext, strategy: Gossip) -> _Run:
    return _Run(strategy, cast(StrategyContext, ctx))


def test_a_new_node_is_linked_once_and_a_linked_node_not_again() -> None:
    async def main() -> None:
        ctx = FakeContext()
        run = run_with(ctx, Gossip(secret="s"))
        sender = GossipCodec(["s"])
        run.received(packet(sender, seq=0), ADDR)
        run.received(packet(sender, seq=1), ADDR)  # while the first attempt is running
        await settle()
        run.received(packet(sender, seq=2), ADDR)  # linked now
        await settle()
        assert ctx.connects == ["peer@10.0.0.2:4402"]
        assert ctx.stats["gossip_received"] == 3
        await run.tasks.aclose()

    asyncio.run(main())


def test_own_heartbeats_are_ignored_and_a_name_clash_is_reported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> None:
        ctx = FakeContext()
        run = run_with(ctx, Gossip())
        mine = GossipCodec()
        run.received(packet(mine, node=ME, incarnation=run.incarnation), ADDR)
        assert not caplog.records
        run.received(packet(mine, node=ME, incarnation=run.incarnation + 1), ADDR)
        await settle()
        assert ctx.connects == []
        assert ctx.stats["gossip_own"] == 2
        assert "gossip_received" not in ctx.stats

    with caplog.at_level(logging.WARNING):
        asyncio.run(main())
    assert any(
        "another node at 10.0.0.2 calls itself me@10.0.0.1" in r.message for r in caplog.records
    )


def test_drops_are_counted_per_reason_and_logged_once_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> None:
        ctx = FakeContext()
        run = run_with(ctx, Gossip(secret="right"))
        wrong = GossipCodec(["wrong"])
        right = GossipCodec(["right"])
        replayed = packet(right)
        run.received(replayed, ADDR)
        for i in range(100):  # 700 bad packets: under the flood limit
            run.received(b"\x00garbage", ADDR)
            run.received(packet(wrong, seq=i), ADDR)
            run.received(packet(GossipCodec(), seq=i), ADDR)
            run.received(replayed, ADDR)
            run.received(b"SKYG", ADDR)
            run.received(b"SKYG" + bytes(2000), ADDR)
            tampered = bytearray(packet(right, seq=i + 1))
            tampered[-1] ^= 1
            run.received(bytes(tampered), ADDR)
        await settle()
        for reason in (
            "foreign",
            "unknown_key",
            "unsealed",
            "replay",
            "truncated",
            "oversized",
            "authentication",
        ):
            assert ctx.stats[f"gossip_dropped_{reason}"] == 100, reason
            telemetry = [e for e in ctx.telemetry if e[2] == {"reason": reason}]
            assert len(telemetry) == 100 and telemetry[0][:2] == ("gossip.dropped", {"count": 1.0})
        assert ctx.connects == ["peer@10.0.0.2:4402"]  # only the genuine packet
        await run.tasks.aclose()

    with caplog.at_level(logging.INFO, logger="skycluster.strategy.test-gossip"):
        asyncio.run(main())
    drops = [r.getMessage() for r in caplog.records if "dropped a gossip packet" in r.getMessage()]
    assert len(drops) == 7  # 700 bad packets, one line per reason
    assert any("unknown_key" in line and "10.0.0.2:45892" in line for line in drops)


def test_a_later_report_says_how_many_were_not_logged(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # generous: the ten drops must fall within one interval even on a loaded machine
    monkeypatch.setattr(gossip_module, "LOG_INTERVAL", 0.5)

    async def main() -> None:
        run = run_with(FakeContext(), Gossip())
        for _ in range(10):
            run.received(b"junk", ADDR)
        await asyncio.sleep(0.6)
        run.received(b"junk", ADDR)

    with caplog.at_level(logging.INFO, logger="skycluster.strategy.test-gossip"):
        asyncio.run(main())
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2
    assert "[9 more since the last report]" in lines[1]


def test_a_failed_link_is_retried_with_backoff() -> None:
    async def main() -> None:
        ctx = FakeContext(connect_result=False)  # e.g. the peer's cookie differs
        # generous: the four packets below must arrive within the first backoff (the interval)
        run = run_with(ctx, Gossip(interval=0.5))
        sender = GossipCodec()
        run.received(packet(sender, seq=0), ADDR)
        await settle()
        for seq in range(1, 5):
            run.received(packet(sender, seq=seq), ADDR)  # within the backoff: no attempt
        await settle()
        assert len(ctx.connects) == 1
        await asyncio.sleep(0.6)
        run.received(packet(sender, seq=9), ADDR)
        await settle()
        assert len(ctx.connects) == 2
        assert ctx.stats["gossip_link_failures"] == 2
        await run.tasks.aclose()

    asyncio.run(main())


def test_a_flood_is_cut_at_the_rate_limit() -> None:
    async def main() -> None:
        ctx = FakeContext()
        run = run_with(ctx, Gossip())
        for _ in range(MAX_PACKETS_PER_SECOND * 3):
            run.received(b"junk", ADDR)
        dropped = ctx.stats.get("gossip_dropped_flood", 0)
        foreign = ctx.stats.get("gossip_dropped_foreign", 0)
        assert foreign + dropped == MAX_PACKETS_PER_SECOND * 3
        assert dropped >= MAX_PACKETS_PER_SECOND  # a burst of at most about a second's worth

    asyncio.run(main())


def test_many_forged_nodes_start_a_bounded_number_of_link_attempts() -> None:
    async def main() -> None:
        ctx = FakeContext()
        started = asyncio.Event()
        release = asyncio.Event()

        async def slow_connect(names: Iterable[NodeName | str]) -> dict[str, Any]:
            started.set()
            await release.wait()
            return {}

        ctx.connect = slow_connect  # type: ignore[method-assign]
        run = run_with(ctx, Gossip())
        plain = GossipCodec()
        for i in range(200):
            run.received(packet(plain, node=NodeName(f"n{i}", "10.0.0.3", 1000 + i)), ADDR)
        await started.wait()
        assert len(run.dialling) == gossip_module.MAX_DIALS
        assert ctx.stats["gossip_links_deferred"] == 200 - gossip_module.MAX_DIALS
        await run.tasks.aclose()

    asyncio.run(main())
