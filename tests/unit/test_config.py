"""Settings resolution: precedence, environment names, value parsing and error messages."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
from typing import Any

import pytest

from skycluster import cli, config
from skycluster.cluster import Cluster
from skycluster.config import NODE_OPTIONS, Option, env_value, resolve
from skycluster.errors import ConfigError

SECRET = "hunter2-Secret"


def option(key: str) -> Option:
    (found,) = [o for o in NODE_OPTIONS if o.key == key]
    return found


# --- names derived once -----------------------------------------------------------------------


def test_flag_and_environment_names_are_derived_from_the_key() -> None:
    hb = option("heartbeat_interval")
    assert hb.flag == "--heartbeat-interval"
    assert hb.env == ("SKYCLUSTER_HEARTBEAT_INTERVAL",)
    assert option("epmd_port").env == ("SKYCLUSTER_EPMD_PORT", "ERL_EPMD_PORT")
    keys = [o.key for o in NODE_OPTIONS]
    assert len(keys) == len(set(keys))
    for o in NODE_OPTIONS:
        assert o.env[0] == "SKYCLUSTER_" + o.key.upper()


def test_only_the_cookie_is_secret() -> None:
    assert [o.key for o in NODE_OPTIONS if o.secret] == ["cookie"]


# --- precedence -------------------------------------------------------------------------------


def test_flag_beats_environment_beats_default() -> None:
    options = [option("heartbeat_interval")]
    env = {"SKYCLUSTER_HEARTBEAT_INTERVAL": "3"}
    assert resolve(options, env, {"heartbeat_interval": "2"}) == {"heartbeat_interval": 2.0}
    assert resolve(options, env, {"heartbeat_interval": None}) == {"heartbeat_interval": 3.0}
    assert resolve(options, env) == {"heartbeat_interval": 3.0}
    assert resolve(options, {}) == {}  # unset: the table's default applies
    assert resolve(options, {}, {"heartbeat_interval": None}) == {}


def test_empty_environment_variable_counts_as_unset() -> None:
    options = [option("epmd_port")]
    assert resolve(options, {"SKYCLUSTER_EPMD_PORT": ""}) == {}
    both = {"SKYCLUSTER_EPMD_PORT": "", "ERL_EPMD_PORT": "4370"}
    assert resolve(options, both) == {"epmd_port": 4370}


def test_flag_values_that_are_not_text_pass_through() -> None:
    options = [option("hidden"), option("heartbeat_timeout")]
    env = {"SKYCLUSTER_HIDDEN": "true", "SKYCLUSTER_HEARTBEAT_TIMEOUT": "9"}
    flags = {"hidden": False, "heartbeat_timeout": 0.25}
    assert resolve(options, env, flags) == {"hidden": False, "heartbeat_timeout": 0.25}


def test_other_keys_in_flags_are_ignored() -> None:
    assert resolve([option("dist_port")], {}, {"command": "agent", "json": True}) == {}


# --- legacy names -----------------------------------------------------------------------------


def test_legacy_variable_is_read_after_ours() -> None:
    options = [option("epmd_port")]
    assert resolve(options, {"ERL_EPMD_PORT": "4370"}) == {"epmd_port": 4370}
    env = {"ERL_EPMD_PORT": "4370", "SKYCLUSTER_EPMD_PORT": "4371"}
    assert resolve(options, env) == {"epmd_port": 4371}
    assert resolve(options, env, {"epmd_port": "4372"}) == {"epmd_port": 4372}


def test_seed_libcluster_names() -> None:
    mcast = Option(
        "multicast_port", config.parse_port, "gossip port", ("LIBCLUSTER_MULTICAST_PORT",)
    )
    assert mcast.env == ("SKYCLUSTER_MULTICAST_PORT", "LIBCLUSTER_MULTICAST_PORT")
    assert resolve([mcast], {"LIBCLUSTER_MULTICAST_PORT": "45892"}) == {"multicast_port": 45892}
    with pytest.raises(ConfigError, match="environment variable LIBCLUSTER_MULTICAST_PORT"):
        resolve([mcast], {"LIBCLUSTER_MULTICAST_PORT": "x"})


def test_env_value_takes_the_first_set_name() -> None:
    names = ("SKYCLUSTER_STRATEGY", "LIBCLUSTER_STRATEGY")
    seed = {"LIBCLUSTER_STRATEGY": "Cluster.Strategy.Epmd"}
    assert env_value(seed, names) == ("LIBCLUSTER_STRATEGY", "Cluster.Strategy.Epmd")
    both = {**seed, "SKYCLUSTER_STRATEGY": "epmd"}
    assert env_value(both, names) == ("SKYCLUSTER_STRATEGY", "epmd")
    assert env_value({"SKYCLUSTER_STRATEGY": "", **seed}, names) == seed.popitem()
    assert env_value({}, names) is None


# --- values -------------------------------------------------------------------------------------

GOOD: list[tuple[str, str, Any]] = [
    ("heartbeat_interval", "1", 1.0),
    ("heartbeat_interval", " 0.5 ", 0.5),
    ("heartbeat_timeout", "1e-3", 0.001),
    ("dist_port", "4401", 4401),
    ("dist_port", " 65535 ", 65535),
    ("dist_port", "1", 1),
    ("full_mesh", "yes", True),
    ("full_mesh", "OFF", False),
    ("hidden", " True ", True),
    ("hidden", "0", False),
    ("cookie", "  abc  ", "abc"),
    ("name", " a@127.0.0.1:4401 ", "a@127.0.0.1:4401"),
    ("name", "a@[::0001]", "a@[::1]"),
    ("listen", "127.0.0.1:4401", "127.0.0.1:4401"),
    ("listen", "[::1]:4401", "[::1]:4401"),
    ("listen", "[0:0::1]:1", "[::1]:1"),
    ("node_loop", " UVLOOP ", "uvloop"),
    ("node_loop", "asyncio", "asyncio"),
    ("node_loop", "auto", "auto"),
    ("node_loop", "Shared", "shared"),
    ("busy_wait", "0.0001", 0.0001),
    ("busy_wait", " 0 ", 0.0),
    ("busy_wait", "1e-2", 0.01),
]


@pytest.mark.parametrize(("key", "text", "value"), GOOD)
def test_good_values(key: str, text: str, value: Any) -> None:
    assert resolve([option(key)], {}, {key: text}) == {key: value}
    env = {option(key).env[0]: text}
    assert resolve([option(key)], env) == {key: value}


BAD: list[tuple[str, str, str]] = [
    # key, bad text, part of the accepted form
    ("heartbeat_interval", "abc", "a number of seconds such as 1 or 0.5"),
    ("heartbeat_interval", "0", "a positive number of seconds"),
    ("heartbeat_interval", "-1", "a positive number of seconds"),
    ("heartbeat_interval", "nan", "a positive number of seconds"),
    ("heartbeat_interval", "inf", "a positive number of seconds"),
    ("connect_timeout", "1e400", "a positive number of seconds"),
    ("dist_port", "0", "a port number from 1 to 65535"),
    ("dist_port", "65536", "a port number from 1 to 65535"),
    ("dist_port", "http", "a port number from 1 to 65535"),
    ("dist_port", "-5", "a port number from 1 to 65535"),
    ("dist_port", "4401.0", "a port number from 1 to 65535"),
    ("dist_port", "\u00b2", "a port number from 1 to 65535"),  # isdigit(), yet no int
    ("dist_port", "\u0663", "a port number from 1 to 65535"),  # a non-ASCII digit
    ("dist_port", "9" * 5000, "a port number from 1 to 65535"),
    ("full_mesh", "maybe", "true or false (also 1/0, yes/no, on/off)"),
    ("hidden", "2", "true or false"),
    ("epmd_bind", "   ", "a non-empty value"),
    ("name", "no-at", "accepted forms: name@host"),
    ("name", "a@b:0", "accepted forms: name@host"),
    ("listen", "127.0.0.1", "a port is required"),
    ("listen", "::1:4401", "brackets"),
    ("node_loop", "tokio", "expected auto, asyncio, uvloop or shared"),
    ("node_loop", "uv loop", "expected auto, asyncio, uvloop or shared"),
    ("busy_wait", "100us", "expected seconds such as 0.0001 (100 µs), or 0 for off"),
    ("busy_wait", "-0.001", "expected seconds from 0 (off) to 0.01"),
    ("busy_wait", "0.5", "expected seconds from 0 (off) to 0.01"),
    ("busy_wait", "nan", "expected seconds from 0 (off) to 0.01"),
    ("busy_wait", "inf", "expected seconds from 0 (off) to 0.01"),
]


@pytest.mark.parametrize(("key", "text", "accepted"), BAD)
def test_bad_flag_names_the_flag_the_value_and_the_accepted_form(
    key: str, text: str, accepted: str
) -> None:
    opt = option(key)
    with pytest.raises(ConfigError) as info:
        resolve([opt], {}, {key: text})
    message = str(info.value)
    assert message.startswith(f"{opt.flag}: invalid value {text!r}"[:200])
    assert accepted in message


@pytest.mark.parametrize(("key", "text", "accepted"), BAD)
def test_bad_environment_value_names_the_variable(key: str, text: str, accepted: str) -> None:
    opt = option(key)
    for variable in opt.env:
        with pytest.raises(ConfigError) as info:
            resolve([opt], {variable: text})
        message = str(info.value)
        assert message.startswith(f"environment variable {variable}: invalid value {text!r}")
        assert accepted in message


def test_bad_value_is_a_value_error_too() -> None:
    with pytest.raises(ValueError):
        resolve([option("dist_port")], {"SKYCLUSTER_DIST_PORT": "x"})


# --- lists ----------------------------------------------------------------------------------


def test_multiple_values_from_flags_and_environment() -> None:
    seeds = Option("seeds", config.parse_name, "seed nodes", multiple=True)
    assert resolve([seeds], {}, {"seeds": ["a@h:1", "b@h"]}) == {"seeds": ["a@h:1", "b@h"]}
    env = {"SKYCLUSTER_SEEDS": "a@h:1, b@h,,"}
    assert resolve([seeds], env) == {"seeds": ["a@h:1", "b@h"]}
    with pytest.raises(ConfigError, match=r"environment variable SKYCLUSTER_SEEDS: .*'bad'"):
        resolve([seeds], {"SKYCLUSTER_SEEDS": "a@h,bad"})
    with pytest.raises(ConfigError, match=r"--seeds: invalid value 'bad'"):
        resolve([seeds], {}, {"seeds": ["a@h", "bad"]})


def test_parse_names_splits_on_commas_and_whitespace() -> None:
    assert config.parse_names("a@h:1, b@h\n c@[::1]:2") == ["a@h:1", "b@h", "c@[::1]:2"]
    assert config.parse_names("") == []


# --- secrets --------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["", "   ", "\t\n"])
def test_blank_cookie_error_hides_the_value(value: str) -> None:
    opt = option("cookie")
    with pytest.raises(ConfigError) as info:
        resolve([opt], {}, {"cookie": value})
    assert str(info.value) == "--cookie: invalid value (hidden): expected a non-empty value"
    if value:  # an empty variable counts as unset
        with pytest.raises(ConfigError) as info:
            resolve([opt], {"SKYCLUSTER_COOKIE": value})
        assert str(info.value) == (
            "environment variable SKYCLUSTER_COOKIE: invalid value (hidden): "
            "expected a non-empty value"
        )


def test_good_cookie_is_never_in_the_error_of_another_option() -> None:
    env = {"SKYCLUSTER_COOKIE": SECRET, "SKYCLUSTER_DIST_PORT": "x"}
    with pytest.raises(ConfigError) as info:
        resolve(NODE_OPTIONS, env)
    assert SECRET not in str(info.value)


@pytest.mark.parametrize("parse", [config.parse_port, config.parse_name, config.parse_listen])
def test_secret_option_hides_the_value_even_when_the_parser_echoes_it(
    parse: Any,
) -> None:
    secret = Option("token", parse, "a secret", secret=True)
    for call in (
        {"environ": {}, "flags": {"token": SECRET}},
        {"environ": {"SKYCLUSTER_TOKEN": SECRET}},
    ):
        with pytest.raises(ConfigError) as info:
            resolve([secret], **call)
        assert SECRET not in str(info.value)
        assert "(hidden)" in str(info.value)


# --- one table: Cluster's defaults, the CLI's help and the node's settings come from it -------


def test_cluster_keyword_defaults_are_the_table_s() -> None:
    parameters = inspect.signature(Cluster.__init__).parameters
    keywords = set(parameters) - {"self", "topologies", "environ"}
    assert keywords == set(config.OPTIONS)
    for key in keywords:
        assert parameters[key].default == config.OPTIONS[key].default, key
        assert parameters[key].default is config.DEFAULTS[key], key


def test_node_settings_without_options_hold_the_table_s_defaults() -> None:
    settings = Cluster.from_env({"SKYCLUSTER_COOKIE": "x"}).settings
    plain = {"port_mapper"}  # a switch in the table, the port mapper's settings in the node's
    for field in dataclasses.fields(settings):
        if field.name in set(config.OPTIONS) - plain and config.DEFAULTS[field.name] is not None:
            assert getattr(settings, field.name) == config.DEFAULTS[field.name], field.name
    assert settings.port_mapper is not None and config.DEFAULTS["port_mapper"] is True
    assert settings.port_mapper.port == int(option("epmd_port").help_default or 0) == 4369


def _agent_help() -> str:
    parser = cli.build_parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return " ".join(commands.choices["agent"].format_help().split())


def test_cli_help_shows_the_table_s_defaults() -> None:
    shown = _agent_help()
    for o in NODE_OPTIONS:
        line = " ".join(cli.option_help(o).split())
        assert line in shown, o.key
        if o.help_default is not None:
            assert f"{' '.join(o.help.split())} [{o.help_default}]" in shown, o.key
    assert "seconds between heartbeats [1] (env SKYCLUSTER_HEARTBEAT_INTERVAL)" in shown
    assert "[true]" in shown and "[4369]" in shown and "[auto]" in shown


def test_changing_a_default_in_the_table_changes_the_help(monkeypatch: pytest.MonkeyPatch) -> None:
    index = [o.key for o in NODE_OPTIONS].index("heartbeat_interval")
    changed = dataclasses.replace(NODE_OPTIONS[index], default=0.25)
    options = (*NODE_OPTIONS[:index], changed, *NODE_OPTIONS[index + 1 :])
    monkeypatch.setattr(config, "NODE_OPTIONS", options)
    assert "seconds between heartbeats [0.25]" in _agent_help()


# --- bad values: keyword, environment variable and flag name the option and the accepted form --

BAD_SETTINGS: list[tuple[str, Any, str, str]] = [
    # key, bad keyword value, bad text (variable, flag), part of the accepted form
    ("heartbeat_interval", 0, "0", "positive number of seconds"),
    ("connect_timeout", "5", "soon", "number of seconds"),
    ("dist_port", 70000, "70000", "port number from 1 to 65535"),
    ("epmd_port", 0, "0", "port number from 1 to 65535"),
    ("min_nodes", -1, "-1", "whole number"),
    ("node_loop", "tokio", "tokio", "auto, asyncio, uvloop or shared"),
    ("busy_wait", 0.5, "0.5", "seconds from 0 (off) to 0.01"),
    ("http", "nowhere", "nowhere", "HOST:PORT or PORT"),
    ("listen", "nowhere", "nowhere", "a port is required"),
    ("metadata", {"blob": "x" * 5000}, "blob=" + "x" * 5000, "at most 4096"),
]


@pytest.mark.parametrize(("key", "value", "text", "accepted"), BAD_SETTINGS)
def test_bad_keyword_names_the_option(key: str, value: Any, text: str, accepted: str) -> None:
    with pytest.raises(ConfigError) as info:
        Cluster("a@127.0.0.1", cookie="x", environ={}, **{key: value})
    message = str(info.value)
    assert message.startswith(config.OPTIONS[key].spelled), message
    assert accepted in message


@pytest.mark.parametrize(("key", "value", "text", "accepted"), BAD_SETTINGS)
def test_bad_variable_names_the_variable(key: str, value: Any, text: str, accepted: str) -> None:
    variable = option(key).env[0]
    with pytest.raises(ConfigError) as info:
        Cluster.from_env({"SKYCLUSTER_COOKIE": "x", variable: text})
    message = str(info.value)
    assert variable in message and accepted in message


@pytest.mark.parametrize(("key", "value", "text", "accepted"), BAD_SETTINGS)
def test_bad_flag_exits_2_naming_the_flag(
    key: str, value: Any, text: str, accepted: str, capsys: pytest.CaptureFixture[str]
) -> None:
    flag = option(key).flag
    argv = ["agent", "--name", "a@127.0.0.1", "--cookie", "x", f"{flag}={text}"]
    assert cli.main(argv, environ={}) == cli.EXIT_USAGE
    error = capsys.readouterr().err
    assert error.startswith("skycluster agent: error: ") and flag in error and accepted in error


@pytest.mark.parametrize("node_loop", ["auto", "asyncio", "shared"])
def test_busy_wait_fits_every_node_loop(node_loop: str) -> None:
    # with a node thread the application's loop polls (it reads the links)
    cluster = Cluster(
        "a@127.0.0.1", cookie="x", environ={}, node_loop=node_loop, busy_wait=0.001
    )
    assert cluster.settings.busy_wait == 0.001


@pytest.mark.parametrize(
    ("keywords", "argv", "parts"),
    [
        (
            {"heartbeat_interval": 2, "heartbeat_timeout": 1},
            ["--heartbeat-interval", "2", "--heartbeat-timeout", "1"],
            ["--heartbeat-timeout", "must be longer than", "--heartbeat-interval"],
        ),
        ({"tls_cert": "c.pem"}, ["--tls-cert", "c.pem"], ["tls_cert", "tls_key", "tls_ca"]),
    ],
)
def test_options_that_do_not_fit_together(
    keywords: dict[str, Any],
    argv: list[str],
    parts: list[str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(ConfigError) as info:
        Cluster("a@127.0.0.1", cookie="x", environ={}, **keywords)
    assert all(part in str(info.value) for part in parts), info.value
    base = ["agent", "--name", "a@127.0.0.1", "--cookie", "x"]
    assert cli.main([*base, *argv], environ={}) == cli.EXIT_USAGE
    error = capsys.readouterr().err
    assert all(part in error for part in parts), error


@pytest.mark.parametrize(
    ("key", "value", "accepted"),
    [
        ("max_frame_size", 0, "whole number of bytes above 0"),
        ("send_buffer_size", 1.5, "whole number of bytes above 0"),
        ("strategy_restart_backoff", (5.0, 1.0), "0 < initial <= maximum"),
        ("strategy_restart_backoff", 3, "(initial, maximum) seconds"),
    ],
)
def test_bad_keyword_only_option(key: str, value: Any, accepted: str) -> None:
    with pytest.raises(ConfigError) as info:
        Cluster("a@127.0.0.1", cookie="x", environ={}, **{key: value})
    assert str(info.value).startswith(f"{key}: ") and accepted in str(info.value)
    assert repr(value) in str(info.value)


def test_every_keyword_reaches_the_node_settings() -> None:
    given: dict[str, Any] = {
        "dist_port": 4444,
        "heartbeat_interval": 0.5,
        "heartbeat_timeout": 9.0,
        "handshake_timeout": 7.0,
        "connect_timeout": 8.0,
        "full_mesh": False,
        "hidden": True,
        "max_frame_size": 1000,
        "max_message_size": 2000,
        "send_buffer_size": 3000,
        "min_nodes": 2,
        "node_loop": "shared",
        "busy_wait": 0.001,
    }
    assert all(given[key] != config.DEFAULTS[key] for key in given)
    settings = Cluster(
        "a@127.0.0.1",
        cookie="x",
        environ={},
        listen="127.0.0.2:4401",
        metadata={"role": "api"},
        tls_cert="c",
        tls_key="k",
        tls_ca="a",
        http="9100",
        epmd_port=4370,
        epmd_bind="127.0.0.3",
        **given,
    ).settings
    assert {key: getattr(settings, key) for key in given} == given
    assert (settings.listen_host, settings.listen_port) == ("127.0.0.2", 4401)
    assert settings.metadata == {"role": "api"} and settings.http == ("127.0.0.1", 9100)
    assert settings.tls is not None and (settings.tls.cert, settings.tls.ca) == ("c", "a")
    assert settings.port_mapper is not None
    assert (settings.port_mapper.port, settings.port_mapper.bind) == (4370, "127.0.0.3")
    assert (
        Cluster("a@127.0.0.1", cookie="x", port_mapper=False, environ={}).settings.port_mapper
        is None
    )


def test_node_settings_refuses_options_that_are_not_the_node_s() -> None:
    with pytest.raises(TypeError, match="heartbeat_intervall"):
        config.node_settings({"heartbeat_intervall": 1.0}, {})
    with pytest.raises(TypeError, match="cookie"):
        config.node_settings({"cookie": "x"}, {})
