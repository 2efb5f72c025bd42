"""The live membership page in a real headless browser (Debian's chromium, driven
by Playwright's Python package): it shows a node joining and leaving."""

from __future__ import annotations

import shutil
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from agents import AgentFactory

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.skip("needs Debian's chromium (scripts/install-system-deps installs it)")
    playwright_api = pytest.importorskip("playwright.sync_api")
    with playwright_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"),  # a fresh user data dir
            executable_path=CHROMIUM,
            headless=True,
            args=FLAGS,
            viewport={"width": 1200, "height": 640},
        )
        try:
            yield context
        finally:
            context.close()


def test_the_page_shows_a_node_joining_and_leaving(
    agent_factory: AgentFactory, browser: Any, tmp_path: Path
) -> None:
    a = agent_factory("a", args=["--http", "127.0.0.1:0", "--metadata", "role=api"])
    where = a.events[0]["http"]
    page = browser.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.on("requestfailed", lambda request: problems.append(f"failed: {request.url}"))
    page.goto(f"http://{where}/")
    page.wait_for_selector("#conn.live", timeout=10_000)
    assert page.inner_text("#self").startswith(a.identity)
    assert page.is_visible("#empty")

    b = agent_factory("b", hosts=[a], args=["--metadata", "role=worker,zone=eu-1"])
    row = f"tr[data-node='{b.identity}']"
    page.wait_for_selector(row, timeout=10_000)
    assert b.address in page.inner_text(row)
    assert "role=worker" in page.inner_text(row) and "zone=eu-1" in page.inner_text(row)
    page.wait_for_selector(f"#mesh g[data-node='{b.identity}']", timeout=5_000)
    assert page.locator("#mesh line").count() == 1
    assert page.inner_text("#count") == "1 peer"
    shot = tmp_path / "membership-page.png"
    page.screenshot(path=str(shot))
    assert shot.stat().st_size > 10_000

    b.signal(signal.SIGTERM)
    page.wait_for_selector(row, state="detached", timeout=10_000)
    assert page.locator(f"#mesh g[data-node='{b.identity}']").count() == 0
    assert "left (shutdown)" in page.inner_text("#log")
    assert page.is_visible("#empty")
    page.screenshot(path=str(tmp_path / "membership-page-after.png"))
    # nothing loaded from elsewhere, no script error
    assert problems == []
