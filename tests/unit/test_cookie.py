"""The cookie: argument, environment, then ~/.skycluster/cookie (created 0600 when missing).
Every test uses a temporary HOME; the real one is never touched."""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from skycluster.cookie import ENV, MAX_COOKIE, default_cookie_path, load_cookie
from skycluster.errors import StartError

SECRET = "cookie-Secret-1234"


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


def env(home: Path, **extra: str) -> dict[str, str]:
    return {"HOME": str(home), **extra}


def cookie_file(home: Path, content: bytes, mode: int = 0o600) -> Path:
    path = home / ".skycluster" / "cookie"
    path.parent.mkdir(mode=0o700, exist_ok=True)
    path.write_bytes(content)
    path.chmod(mode)
    return path


def assert_secret_hidden(exc: BaseException, secret: str = SECRET) -> None:
    assert secret not in str(exc)
    assert secret not in repr(exc)
    assert secret[:8] not in str(exc)


# --- sources and their order --------------------------------------------------------------------


def test_argument_wins_and_is_stripped(home: Path) -> None:
    environ = env(home, SKYCLUSTER_COOKIE="from-env")
    cookie_file(home, b"from-file")
    assert load_cookie(f"  {SECRET}\n", environ) == SECRET.encode()
    assert load_cookie(SECRET.encode(), environ) == SECRET.encode()


def test_environment_is_next(home: Path) -> None:
    assert load_cookie(None, env(home, SKYCLUSTER_COOKIE=f" {SECRET} ")) == SECRET.encode()
    assert not (home / ".skycluster").exists()  # no file made when not needed


def test_empty_environment_variable_falls_through_to_the_file(home: Path) -> None:
    cookie_file(home, b"from-file\n")
    assert load_cookie(None, env(home, SKYCLUSTER_COOKIE="")) == b"from-file"


def test_file_is_created_with_mode_0600(home: Path) -> None:
    cookie = load_cookie(None, env(home))
    path = home / ".skycluster" / "cookie"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert path.read_bytes() == cookie + b"\n"
    assert len(cookie) >= 32 and cookie.strip() == cookie
    # the next start reads the same cookie back; another HOME gets another one
    assert load_cookie(None, env(home)) == cookie
    other = home.parent / "other"
    other.mkdir()
    assert load_cookie(None, env(other)) != cookie


def test_file_is_created_under_an_existing_directory(home: Path) -> None:
    (home / ".skycluster").mkdir(mode=0o700)
    cookie = load_cookie(None, env(home))
    assert (home / ".skycluster" / "cookie").read_bytes().strip() == cookie


def test_existing_file_is_read_and_stripped(home: Path) -> None:
    cookie_file(home, f"\n {SECRET} \n".encode())
    assert load_cookie(None, env(home)) == SECRET.encode()


def test_file_through_a_symbolic_link(home: Path) -> None:
    target = home / "real-cookie"
    target.write_bytes(SECRET.encode())
    target.chmod(0o600)
    (home / ".skycluster").mkdir()
    (home / ".skycluster" / "cookie").symlink_to(target)
    assert load_cookie(None, env(home)) == SECRET.encode()


def test_default_path() -> None:
    assert default_cookie_path({"HOME": "/x"}) == Path("/x/.skycluster/cookie")
    assert default_cookie_path({}) == Path.home() / ".skycluster" / "cookie"


# --- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o700 | 0o001])
def test_loose_permissions_say_chmod_600(home: Path, mode: int) -> None:
    path = cookie_file(home, SECRET.encode(), mode)
    with pytest.raises(StartError) as info:
        load_cookie(None, env(home))
    message = str(info.value)
    assert f"run: chmod 600 {path}" in message
    assert f"(mode {mode:04o})" in message
    assert "can be read by others" in message
    assert_secret_hidden(info.value)


@pytest.mark.parametrize("content", [b"", b"\n", b"  \t\n"])
def test_empty_file(home: Path, content: bytes) -> None:
    path = cookie_file(home, content)
    with pytest.raises(StartError, match=f"cookie file {path} is empty"):
        load_cookie(None, env(home))


def test_file_too_long(home: Path) -> None:
    cookie_file(home, SECRET.encode() * (MAX_COOKIE // len(SECRET) + 1))
    with pytest.raises(StartError, match=f"longer than {MAX_COOKIE} bytes") as info:
        load_cookie(None, env(home))
    assert_secret_hidden(info.value)


@pytest.mark.parametrize("mode", [0o700, 0o755])
def test_directory_instead_of_a_file(home: Path, mode: int) -> None:
    path = home / ".skycluster" / "cookie"
    path.mkdir(parents=True)
    path.chmod(mode)
    with pytest.raises(StartError) as info:
        load_cookie(None, env(home))
    assert str(info.value) == f"cookie file {path} is a directory; remove it or set {ENV}"


def test_file_where_the_directory_should_be(home: Path) -> None:
    (home / ".skycluster").write_bytes(b"not a directory")
    with pytest.raises(StartError, match=r"cannot create cookie file .*; set SKYCLUSTER_COOKIE"):
        load_cookie(None, env(home))


def test_dangling_symbolic_link(home: Path) -> None:
    (home / ".skycluster").mkdir()
    (home / ".skycluster" / "cookie").symlink_to(home / "nowhere")
    with pytest.raises(StartError, match=r"cannot create cookie file .*; set SKYCLUSTER_COOKIE"):
        load_cookie(None, env(home))


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory another user may enter (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="skycluster-cookie-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def as_another_user(path: Path, mode: int) -> Iterator[None]:
    """Make ``path`` inaccessible: chmod it to ``mode`` as a plain user; as root (which
    reads and writes anything) become nobody for a moment instead. Only the effective
    uid changes, so that root can be taken back; the capabilities go and come with it."""
    if os.geteuid() != 0:
        old = stat.S_IMODE(path.stat().st_mode)
        path.chmod(mode)
        try:
            yield
        finally:
            path.chmod(old)
        return
    os.seteuid(65534)
    try:
        yield
    finally:
        os.seteuid(0)


def test_unreadable_file(shared_dir: Path) -> None:
    home = shared_dir
    path = cookie_file(home, SECRET.encode())
    path.parent.chmod(0o755)
    with as_another_user(path, 0o000), pytest.raises(StartError) as info:
        load_cookie(None, env(home))
    assert str(info.value) == (
        f"cannot read cookie file {path}: permission denied; "
        f"make it readable by this user, or set {ENV}"
    )
    assert_secret_hidden(info.value)


def test_home_not_writable(shared_dir: Path) -> None:
    with as_another_user(shared_dir, 0o555), pytest.raises(StartError) as info:
        load_cookie(None, env(shared_dir))
    path = shared_dir / ".skycluster" / "cookie"
    assert str(info.value) == (
        f"cannot create cookie file {path}: Permission denied; set {ENV} or pass a cookie"
    )
    assert not path.parent.exists()


@pytest.mark.parametrize("value", ["", " ", "\n\t"])
def test_empty_argument_is_an_error_not_a_fallback(home: Path, value: str) -> None:
    cookie_file(home, b"from-file")
    with pytest.raises(StartError, match="the cookie argument is empty"):
        load_cookie(value, env(home))
    with pytest.raises(StartError, match="the cookie argument is empty"):
        load_cookie(value.encode(), env(home))


def test_blank_environment_variable(home: Path) -> None:
    with pytest.raises(StartError, match=f"environment variable {ENV} is empty"):
        load_cookie(None, env(home, SKYCLUSTER_COOKIE="   "))


@pytest.mark.parametrize("source", ["argument", "environment"])
def test_too_long_cookie_is_not_shown(home: Path, source: str) -> None:
    long = SECRET * (MAX_COOKIE // len(SECRET) + 1)
    with pytest.raises(StartError, match=f"longer than {MAX_COOKIE} bytes") as info:
        if source == "argument":
            load_cookie(long, env(home))
        else:
            load_cookie(None, env(home, SKYCLUSTER_COOKIE=long))
    assert_secret_hidden(info.value)


def test_cookie_of_exactly_the_limit_is_accepted(home: Path) -> None:
    assert load_cookie("x" * MAX_COOKIE, env(home)) == b"x" * MAX_COOKIE


def test_final_newline_does_not_count_against_the_limit(home: Path) -> None:
    cookie_file(home, b"x" * MAX_COOKIE + b"\n")
    assert load_cookie(None, env(home)) == b"x" * MAX_COOKIE
