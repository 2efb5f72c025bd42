"""The ``skycluster`` command.

Exit codes: 0 success (also after SIGTERM/SIGINT), 1 the node failed at run
time (port in use, unreadable cookie file), 2 bad flags, values or environment.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NoReturn, TextIO

from skycluster import config
from skycluster._version import __version__
from skycluster.cluster import Cluster
from skycluster.config import OPTIONS, Option
from skycluster.distribution import portmapper
from skycluster.distribution.settings import PortMapperSettings
from skycluster.errors import ConfigError, NodeUnreachable, StartError
from skycluster.events import event_record
from skycluster.ops import logs, members
from skycluster.runtime import loop_factory
from skycluster.strategy import BUILTIN, STRATEGY, strategy_class, topologies_from

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

DESCRIPTION = """\
Copies of a service find each other and form a cluster.
Every flag can also be given as an environment variable: --heartbeat-interval
is SKYCLUSTER_HEARTBEAT_INTERVAL (the seed's LIBCLUSTER_* names work too)."""


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line and exits 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _strategy_options(specs: Sequence[str] | None) -> list[Option]:
    """Flags of the strategies named in ``specs`` (None: of every built-in one).
    Loading only the selected strategies keeps an agent's start-up lean."""
    seen: dict[str, Option] = {}
    for name in BUILTIN if specs is None else specs:
        try:
            cls = strategy_class(name)
        except ConfigError:
            continue  # reported with the flag or variable that named it, later
        for option in cls.options:
            seen.setdefault(option.key, option)
    return list(seen.values())


def _selected_strategies(argv: Sequence[str], environ: Mapping[str, str]) -> list[str] | None:
    """The strategies an ``agent`` command line runs; None when help is asked for."""
    if "-h" in argv or "--help" in argv or not argv or argv[0] != "agent":
        return None
    spec = ""
    for index, arg in enumerate(argv):
        if arg == "--strategy" and index + 1 < len(argv):
            spec = argv[index + 1]
        elif arg.startswith("--strategy="):
            spec = arg.partition("=")[2]
    if not spec:
        found = config.env_value(environ, STRATEGY.env)
        spec = found[1] if found else ""
    return [part.strip() for part in spec.split(",") if part.strip()]


def _foreign_flags(extras: Sequence[str]) -> str | None:
    """Explain flags that belong to a strategy this agent does not run."""
    owners: dict[str, str] = {}
    for name in BUILTIN:
        for option in strategy_class(name).options:
            owners.setdefault(option.flag, name)
    for extra in extras:
        flag = extra.partition("=")[0]
        if flag in owners or flag.replace("--no-", "--", 1) in owners:
            owner = owners.get(flag) or owners[flag.replace("--no-", "--", 1)]
            return (
                f"{flag} is an option of the {owner} strategy, which this agent does not run; "
                f"add it with --strategy {owner}"
            )
    return None


def option_help(option: Option) -> str:
    """An option's --help line: what it does, its default (from the table), its variables."""
    shown = option.help_default
    default = f" [{shown}]" if shown is not None else ""
    listed = ", comma separated" if option.multiple else ""
    return f"{option.help}{default} (env {', '.join(option.env)}{listed})"


def _add_options(parser: argparse.ArgumentParser, options: Sequence[Option], title: str) -> None:
    group = parser.add_argument_group(title)
    for option in options:
        if option.parse is config.parse_bool:
            group.add_argument(
                option.flag,
                dest=option.key,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=option_help(option),
            )
        else:
            group.add_argument(
                option.flag,
                dest=option.key,
                action="append" if option.multiple else "store",
                metavar=option.metavar or option.key.upper(),
                help=option_help(option),
            )


def build_parser(strategies: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The command line; ``strategies`` limits the agent's strategy flags to those."""
    parser = _Parser(
        prog="skycluster",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"skycluster {__version__}")
    common = _Parser(add_help=False)
    common.add_argument(
        "--log-level",
        default=os.environ.get("SKYCLUSTER_LOG_LEVEL", "warning").lower(),
        choices=["debug", "info", "warning", "error"],
        help="log level on stderr [warning] (env SKYCLUSTER_LOG_LEVEL)",
    )
    common.add_argument(
        "--log-format",
        default=os.environ.get("SKYCLUSTER_LOG_FORMAT", "text").lower(),
        choices=["text", "json"],
        help="log lines as text or one JSON object each [text] (env SKYCLUSTER_LOG_FORMAT)",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    agent = commands.add_parser(
        "agent",
        parents=[common],
        help="run a node and print membership events",
        description="Run a node, join the cluster through a strategy and print events "
        "(NodeUp/NodeDown) as they happen. SIGTERM or SIGINT leave gracefully.",
    )
    _add_options(agent, config.NODE_OPTIONS, "node")
    _add_options(agent, [STRATEGY], "discovery")
    _add_options(agent, _strategy_options(strategies), "strategy options")
    output = agent.add_argument_group("output")
    output.add_argument("--json", action="store_true", help="one JSON object per line")

    names = commands.add_parser(
        "names",
        parents=[common],
        help="list the nodes a host's port mapper knows",
        description="Ask HOST's port mapper (skycluster's or Erlang's epmd) for its nodes.",
    )
    names.add_argument("host", nargs="?", default="127.0.0.1", help="host to ask [127.0.0.1]")
    names.add_argument("--epmd-port", metavar="PORT", help=option_help(OPTIONS["epmd_port"]))
    names.add_argument("--timeout", metavar="S", default="2", help="seconds to wait [2]")
    names.add_argument("--json", action="store_true", help="print a JSON array")

    epmd = commands.add_parser(
        "epmd",
        parents=[common],
        help="run a standalone port mapper",
        description="Serve the EPMD protocol for the nodes on this host, as a daemon would. "
        "Nodes also start one on their own when none runs.",
    )
    epmd.add_argument("--epmd-port", metavar="PORT", help=option_help(OPTIONS["epmd_port"]))
    served = PortMapperSettings()
    epmd.add_argument(
        "--bind",
        metavar="HOST",
        default=os.environ.get(OPTIONS["epmd_bind"].env[0], served.bind),
        help=f"address to listen on; 0.0.0.0 for every interface [{served.bind}] "
        f"(env {OPTIONS['epmd_bind'].env[0]})",
    )
    members = commands.add_parser(
        "members",
        parents=[common],
        help="show a running node's members",
        description="Link to NODE as a hidden node (no event is published anywhere) and "
        "print its membership view: each peer with its address, since when it is linked, "
        "its heartbeat round-trip time and metadata. The cookie comes from --cookie, "
        "SKYCLUSTER_COOKIE or ~/.skycluster/cookie.",
    )
    members.add_argument("node", metavar="NODE", help="name@host[:port] of a running node")
    members.add_argument("--cookie", help="shared secret (prefer SKYCLUSTER_COOKIE)")
    members.add_argument("--timeout", metavar="S", default="5", help="seconds to wait [5]")
    members.add_argument("--json", action="store_true", help="print the view as JSON")
    return parser


def _epmd_port(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    if args.epmd_port is not None:
        return int(OPTIONS["epmd_port"].convert(args.epmd_port, "--epmd-port"))
    try:
        return portmapper.epmd_port_from_env(environ)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


async def _names(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    port = _epmd_port(args, environ)
    timeout = config.Option("timeout", config.parse_seconds, "").convert(args.timeout, "--timeout")
    try:
        found = await portmapper.names(args.host, epmd_port=port, timeout=timeout)
    except portmapper.PortMapperError as exc:
        print(f"skycluster names: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        print(json.dumps([{"name": name, "port": p} for name, p in found]))
    else:
        for name, p in found:
            print(f"{name}\t{p}")
    return EXIT_OK


async def fetch_members(
    target: str, environ: Mapping[str, str], *, cookie: str | None = None, timeout: float = 5.0
) -> dict[str, Any]:
    """The membership view of ``target`` (``name@host[:port]``), asked as a hidden node."""
    tool = Cluster(
        f"members{os.getpid()}@127.0.0.1",
        cookie=cookie,
        hidden=True,
        connect_timeout=timeout,
        environ=environ,
    )
    async with tool:
        try:
            return await tool.remote_status(target, timeout)
        except TimeoutError:
            raise NodeUnreachable(f"no answer from {target} within {timeout} s") from None


async def _members(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    timeout = config.Option("timeout", config.parse_seconds, "").convert(args.timeout, "--timeout")
    target = config.Option("node", config.parse_name, "").convert(args.node, "NODE")
    try:
        status = await fetch_members(target, environ, cookie=args.cookie, timeout=timeout)
    except (NodeUnreachable, OSError) as exc:
        print(f"skycluster members: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(json.dumps(status, indent=1) if args.json else members.table(status))
    return EXIT_OK


async def _epmd(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    port = _epmd_port(args, environ)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    server = portmapper.PortMapperServer(PortMapperSettings(port=port, bind=args.bind))
    try:
        await server.start()
    except OSError as exc:
        raise StartError(str(exc.strerror or exc)) from None
    print(f"port mapper listening on {args.bind}:{server.port}", flush=True)
    try:
        await stop.wait()
    finally:
        await server.stop()
    return EXIT_OK


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    environ = os.environ if environ is None else environ
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(_selected_strategies(argv, environ))
    args, extras = parser.parse_known_args(argv)
    if extras:
        parser.error(_foreign_flags(extras) or f"unrecognized arguments: {' '.join(extras)}")
    logs.configure(args.log_level, args.log_format)
    try:
        if args.command == "agent":
            cluster = cluster_from_args(args, environ)
            # The agent's loop reads the links once they are up (Node.read_on): it
            # takes the node thread's kind of loop (uvloop when installed), whose
            # wake-ups cost about half as much, as every idle peer's tick is one.
            choice = cluster.settings.node_loop
            factory = loop_factory("auto" if choice == "shared" else choice)
            with asyncio.Runner(loop_factory=factory) as runner:
                return runner.run(_agent(cluster, args))
        if args.command == "names":
            return asyncio.run(_names(args, environ))
        if args.command == "epmd":
            return asyncio.run(_epmd(args, environ))
        if args.command == "members":
            return asyncio.run(_members(args, environ))
    except ConfigError as exc:
        print(f"skycluster {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except StartError as exc:
        print(f"skycluster {args.command}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_OK
    parser.error(f"unknown command {args.command!r}")


def cluster_from_args(args: argparse.Namespace, environ: Mapping[str, str]) -> Cluster:
    flags = vars(args)
    values = config.resolve(config.NODE_OPTIONS, environ, flags)
    values["topologies"] = topologies_from(environ, flags)
    return Cluster(environ=environ, **values)


async def _agent(cluster: Cluster, args: argparse.Namespace) -> int:
    show = _json_line if args.json else _text_line
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    subscription = cluster.subscribe()
    await cluster.start()
    try:
        started = {"event": "started", "node": cluster.name, "address": cluster.address}
        if cluster.http_address is not None:
            started["http"] = cluster.http_address
        _emit(show, started)
        printer = asyncio.create_task(_print_events(subscription, show, stop))
        await stop.wait()
    finally:
        await cluster.stop()
    await printer
    _emit(show, {"event": "stopped", "node": cluster.name})
    return EXIT_OK


async def _print_events(
    subscription: Any, show: Callable[[dict[str, Any]], str], stop: asyncio.Event
) -> None:
    async for event in subscription:
        if not _emit(show, event_record(event)):
            stop.set()  # stdout is gone: nobody is listening any more
            return


def _emit(
    show: Callable[[dict[str, Any]], str], record: dict[str, Any], out: TextIO | None = None
) -> bool:
    out = out or sys.stdout
    try:
        out.write(show(record) + "\n")
        out.flush()
    except (BrokenPipeError, ValueError):
        return False
    return True


def _json_line(record: dict[str, Any]) -> str:
    return json.dumps(record, separators=(",", ":"))


def _text_line(record: dict[str, Any]) -> str:
    stamp = time.strftime("%H:%M:%S", time.localtime(record.get("time", time.time())))
    kind = record["event"]
    if kind == "started":
        http = f", operations on http://{record['http']}/" if record.get("http") else ""
        return f"{stamp} started {record['node']} listening on {record['address']}{http}"
    if kind == "stopped":
        return f"{stamp} stopped {record['node']}"
    if kind == "nodeup":
        return f"{stamp} nodeup   {record['node']} ({record['address']})"
    return f"{stamp} nodedown {record['node']} ({record['reason']})"


if __name__ == "__main__":
    sys.exit(main())
