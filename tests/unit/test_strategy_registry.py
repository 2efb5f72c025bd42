"""strategy_class: built-in names, the seed's module names, import paths, and bad specs."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from skycluster.errors import ConfigError
from skycluster.strategy import BUILTIN, SEED_NAMES, Epmd, Strategy, strategy_class


def assert_lists_accepted(message: str) -> None:
    assert "accepted: " in message
    for name in BUILTIN:
        assert name in message
    assert "Cluster.Strategy.Epmd" in message
    assert "module:Class" in message


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_every_builtin_name(name: str) -> None:
    cls = strategy_class(name)
    assert isinstance(cls, type) and issubclass(cls, Strategy)
    module, _, class_name = BUILTIN[name].partition(":")
    assert (cls.__module__, cls.__name__) == (module, class_name)
    assert strategy_class(f"  {name.upper()}  ") is cls
    assert strategy_class(BUILTIN[name]) is cls  # the import path of the same class


def test_epmd_by_every_spelling() -> None:
    for spec in (
        "epmd",
        "Epmd",
        "EPMD",
        " epmd\n",
        "Cluster.Strategy.Epmd",
        "Elixir.Cluster.Strategy.Epmd",
        ":Cluster.Strategy.Epmd",
        "skycluster.strategy.epmd:Epmd",
        "skycluster.strategy:Epmd",
    ):
        assert strategy_class(spec) is Epmd, spec


@pytest.mark.parametrize("seed", sorted(SEED_NAMES))
def test_seed_names(seed: str) -> None:
    ours = SEED_NAMES[seed]
    if ours in BUILTIN:
        assert strategy_class(seed) is strategy_class(ours)
        assert strategy_class("Elixir." + seed) is strategy_class(ours)
    else:  # a seed strategy not provided (yet): named, with what is accepted
        with pytest.raises(ConfigError) as info:
            strategy_class(seed)
        assert str(info.value).startswith(f"unknown strategy {seed!r}; ")
        assert_lists_accepted(str(info.value))


def test_custom_strategy_by_import_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "my_discovery.py").write_text(
        textwrap.dedent(
            """
            from skycluster.strategy import Strategy

            class Ec2(Strategy):
                async def run(self, ctx):
                    pass

            class Half(Strategy):
                pass

            NOT_A_CLASS = 5

            class NotAStrategy:
                async def run(self, ctx):
                    pass
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import my_discovery  # type: ignore[import-not-found]

    assert strategy_class("my_discovery:Ec2") is my_discovery.Ec2
    assert strategy_class(" my_discovery:Ec2 ") is my_discovery.Ec2
    for spec in ("my_discovery:NOT_A_CLASS", "my_discovery:NotAStrategy"):
        with pytest.raises(ConfigError) as info:
            strategy_class(spec)
        assert str(info.value).startswith(
            f"strategy {spec!r} is not a skycluster.strategy.Strategy subclass"
        )
        assert_lists_accepted(str(info.value))
    with pytest.raises(
        ConfigError, match="'my_discovery:Half' is abstract: it does not implement run"
    ):
        strategy_class("my_discovery:Half")


BAD: list[tuple[str, str]] = [
    ("", "unknown strategy ''"),
    ("nosuch", "unknown strategy 'nosuch'"),
    ("cluster.strategy.epmd", "unknown strategy"),  # seed names are case-sensitive
    ("Cluster.Strategy.Nope", "unknown strategy"),
    ("epmd2", "unknown strategy"),
    ("no_such_module_zz:Thing", "cannot load strategy 'no_such_module_zz:Thing': No module"),
    ("skycluster.strategy.epmd:Nope", "cannot load strategy"),
    ("skycluster.strategy.epmd:", "cannot load strategy"),
    (":Epmd", "cannot load strategy"),
    (":epmd", "cannot load strategy"),
    ("skycluster.strategy.epmd:Epmd:x", "cannot load strategy"),
    ("a b:c", "cannot load strategy"),
    ("os:path", "is not a skycluster.strategy.Strategy subclass"),
    ("collections:OrderedDict", "is not a skycluster.strategy.Strategy subclass"),
]


@pytest.mark.parametrize(("spec", "why"), BAD)
def test_bad_specs(spec: str, why: str) -> None:
    with pytest.raises(ConfigError) as info:
        strategy_class(spec)
    assert why in str(info.value)
    assert_lists_accepted(str(info.value))
    assert isinstance(info.value, ValueError)


def test_the_abstract_base_is_refused() -> None:
    with pytest.raises(ConfigError, match="is abstract: it does not implement run"):
        strategy_class("skycluster.strategy.base:Strategy")
