"""The names ``skycluster`` exports: exactly the documented ones, each usable and
documented. A change to this list is a change to the public API: make it here on
purpose, and in the README."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import skycluster

PUBLIC = {
    # the handle, and what defines a topology
    "Cluster", "Strategy", "StrategyContext", "Topology", "NodeName", "InvalidNodeName",
    # events
    "Event", "NodeUp", "NodeDown", "DownReason", "AsyncSubscription", "SyncSubscription",
    # messaging
    "Mailbox", "Request", "TopicSubscription", "register_type",
    # errors
    "SkyclusterError", "ConfigError", "StartError", "NodeUnreachable", "MessagingError",
    "MessageTooLarge", "UnencodableMessage", "BufferFull", "NoSuchMailbox", "CallTimeout",
    "NodeDisconnected", "CallFailed", "AlreadyRegistered",
    "__version__",
}  # fmt: skip

README = Path(__file__).resolve().parents[2] / "README.md"


def test_exactly_the_public_names_are_exported() -> None:
    assert set(skycluster.__all__) == PUBLIC
    assert len(skycluster.__all__) == len(PUBLIC), "a name is listed twice in __all__"


def test_every_exported_name_exists_and_is_documented() -> None:
    for name in PUBLIC - {"__version__"}:
        value = getattr(skycluster, name)
        assert inspect.getdoc(value), f"skycluster.{name} has no docstring"
        assert not value.__module__.startswith("skycluster._"), (
            f"skycluster.{name} comes from a private module ({value.__module__})"
        )
    assert re.fullmatch(r"\d+\.\d+\.\d+", skycluster.__version__)


def test_the_exported_errors_share_one_base() -> None:
    errors = [
        value
        for value in (getattr(skycluster, name) for name in PUBLIC - {"__version__"})
        if isinstance(value, type) and issubclass(value, BaseException)
    ]
    assert len(errors) >= 14
    for error in errors:
        assert issubclass(error, skycluster.SkyclusterError), error


def test_the_readme_uses_only_exported_names() -> None:
    text = README.read_text()
    used = set(re.findall(r"\bskycluster\.([A-Z]\w+)", text))
    groups = re.findall(r"^\s*from skycluster import \(([^)]*)\)", text, re.M)
    groups += re.findall(r"^\s*from skycluster import ([\w, ]+)$", text, re.M)
    imported = {name.strip() for group in groups for name in group.split(",") if name.strip()}
    assert imported, "the README shows imports from skycluster"
    assert (used | imported) - PUBLIC == set()


def test_nothing_private_is_star_imported() -> None:
    namespace: dict[str, object] = {}
    exec("from skycluster import *", namespace)
    exported = {name for name in namespace if not name.startswith("__builtins__")}
    assert exported == PUBLIC
