"""The Erlang cookie by Erlang's rules: the one given (``-setcookie``, here the
``cookie`` argument), else the file ``$HOME/.erlang.cookie``, which must be readable
by its owner only (Erlang refuses it otherwise), and which is created like
Erlang creates it when missing: 20 random capital letters, mode 0400. The cookie is
never logged or shown."""

from __future__ import annotations

import os
import secrets
import stat
import string
from collections.abc import Mapping
from pathlib import Path

from skycluster.errors import StartError

FILE_NAME = ".erlang.cookie"
MAX_COOKIE = 255  # Erlang's cookie is an atom


def erlang_cookie_path(environ: Mapping[str, str]) -> Path:
    home = environ.get("HOME") or str(Path.home())
    return Path(home) / FILE_NAME


def load_erlang_cookie(explicit: str | bytes | None, environ: Mapping[str, str]) -> bytes:
    if explicit is not None:
        cookie = explicit.encode() if isinstance(explicit, str) else explicit
        return _checked(cookie, "the Erlang cookie argument")
    path = erlang_cookie_path(environ)
    if not path.exists():
        return _create(path)
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise StartError(f"Erlang cookie file {path} is not a file")
        if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise StartError(
                f"Erlang cookie file {path} can be read by others (mode "
                f"{stat.S_IMODE(info.st_mode):04o}); Erlang refuses it too: run chmod 400 {path}"
            )
        data = path.read_bytes()
    except PermissionError:
        raise StartError(f"cannot read Erlang cookie file {path}: permission denied") from None
    return _checked(data, f"Erlang cookie file {path}")


def _checked(cookie: bytes, source: str) -> bytes:
    cookie = cookie.strip()
    if not cookie:
        raise StartError(f"{source} is empty; give a non-empty cookie")
    if len(cookie) > MAX_COOKIE:
        raise StartError(f"{source} is longer than {MAX_COOKIE} bytes (an Erlang atom)")
    return cookie


def _create(path: Path) -> bytes:
    cookie = "".join(secrets.choice(string.ascii_uppercase) for _ in range(20)).encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
    except FileExistsError:  # another process made it first: read theirs
        return load_erlang_cookie(None, {"HOME": str(path.parent)})
    except OSError as exc:
        raise StartError(f"cannot create Erlang cookie file {path}: {exc.strerror}") from None
    with os.fdopen(fd, "wb") as file:
        file.write(cookie)
    return cookie
