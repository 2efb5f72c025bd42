"""Fixtures of the integration tests (real processes on loopback)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from agents import AgentFactory


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
