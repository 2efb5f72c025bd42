"""Fixtures of the integration tests (real processes on loopback)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from agents import AgentFactory
from local_host import Host

if TYPE_CHECKING:
    from k8s_api_server import FakeKubernetes


@pytest.fixture
def agent_factory(tmp_path: Path) -> Iterator[AgentFactory]:
    """Starts ``skycluster agent`` processes (and helper programs); at the end of the
    test kills every one of them and checks that each agent's nodeup/nodedown
    events alternate per peer."""
    factory = AgentFactory(tmp_path / "home")
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture
def host(agent_factory: AgentFactory, tmp_path: Path) -> Iterator[Host]:
    """One host's port mapper and agents (see local_host.py); closed at the end
    (the agents are killed by agent_factory's finalizer)."""
    h = Host(agent_factory, tmp_path)
    try:
        yield h
    finally:
        h.close()


@pytest.fixture
def api(tmp_path: Path) -> Iterator[FakeKubernetes]:
    """A fake Kubernetes API server over HTTPS (see k8s_api_server.py)."""
    from k8s_api_server import FakeKubernetes  # its dependencies load only for these tests

    server = FakeKubernetes(tmp_path / "api")
    try:
        yield server
    finally:
        server.close()
