"""The Erlang cookie by Erlang's rules (with a real erl: test_erlang_link_with_erl.py)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from skycluster.erlang.cookie import load_erlang_cookie
from skycluster.errors import StartError


def test_the_argument_wins(tmp_path: Path) -> None:
    assert load_erlang_cookie(" abc\n", {"HOME": str(tmp_path)}) == b"abc"
    assert not (tmp_path / ".erlang.cookie").exists()
    with pytest.raises(StartError, match="empty"):
        load_erlang_cookie("", {"HOME": str(tmp_path)})
    with pytest.raises(StartError, match="longer than 255"):
        load_erlang_cookie("x" * 256, {"HOME": str(tmp_path)})


def test_a_missing_file_is_created_as_erlang_does(tmp_path: Path) -> None:
    cookie = load_erlang_cookie(None, {"HOME": str(tmp_path)})
    path = tmp_path / ".erlang.cookie"
    assert len(cookie) == 20 and cookie.isalpha() and cookie.isupper()
    assert stat.S_IMODE(path.stat().st_mode) == 0o400 and path.read_bytes() == cookie
    assert load_erlang_cookie(None, {"HOME": str(tmp_path)}) == cookie


def test_a_file_others_can_read_is_refused(tmp_path: Path) -> None:
    path = tmp_path / ".erlang.cookie"
    path.write_text("SECRETCOOKIE\n")
    path.chmod(0o644)
    with pytest.raises(StartError, match="can be read by others") as caught:
        load_erlang_cookie(None, {"HOME": str(tmp_path)})
    assert "SECRETCOOKIE" not in str(caught.value)
    path.chmod(0o600)
    assert load_erlang_cookie(None, {"HOME": str(tmp_path)}) == b"SECRETCOOKIE"
    path.write_text("\n")
    with pytest.raises(StartError, match="empty"):
        load_erlang_cookie(None, {"HOME": str(tmp_path)})


def test_a_directory_is_not_a_cookie(tmp_path: Path) -> None:
    (tmp_path / ".erlang.cookie").mkdir()
    with pytest.raises(StartError, match="not a file"):
        load_erlang_cookie(None, {"HOME": str(tmp_path)})
