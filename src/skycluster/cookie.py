"""The shared secret: from the argument, else ``SKYCLUSTER_COOKIE``, else the file
``~/.skycluster/cookie``, created with random content and mode 0600 when missing
(Erlang's ``~/.erlang.cookie`` habit). The cookie is never logged or shown."""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Mapping
from pathlib import Path

from skycluster.errors import StartError

ENV = "SKYCLUSTER_COOKIE"
MAX_COOKIE = 4096


def default_cookie_path(environ: Mapping[str, str]) -> Path:
    home = environ.get("HOME") or str(Path.home())
    return Path(home) / ".skycluster" / "cookie"


def load_cookie(explicit: str | bytes | None, environ: Mapping[str, str]) -> bytes:
    if explicit is not None:  # an empty argument is an error, not "use the file"
        cookie = explicit.encode() if isinstance(explicit, str) else explicit
        return _checked(cookie, "the cookie argument")
    if environ.get(ENV):
        return _checked(environ[ENV].encode(), f"environment variable {ENV}")
    return _from_file(default_cookie_path(environ))


def _checked(cookie: bytes, source: str) -> bytes:
    cookie = cookie.strip()  # the limit is on the cookie, not on a file's final newline
    if not cookie:
        raise StartError(f"{source} is empty; give a non-empty cookie")
    if len(cookie) > MAX_COOKIE:
        raise StartError(f"{source} is longer than {MAX_COOKIE} bytes; use a shorter cookie")
    return cookie


def _from_file(path: Path) -> bytes:
    if not path.exists():
        return _create(path)
    try:
        mode = path.stat().st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError  # said below, rather than "chmod 600" a directory
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise StartError(
                f"cookie file {path} can be read by others (mode {stat.S_IMODE(mode):04o}); "
                f"run: chmod 600 {path}"
            )
        data = path.read_bytes()
    except PermissionError:
        raise StartError(
            f"cannot read cookie file {path}: permission denied; "
            f"make it readable by this user, or set {ENV}"
        ) from None
    except IsADirectoryError:
        raise StartError(f"cookie file {path} is a directory; remove it or set {ENV}") from None
    except OSError as exc:
        raise StartError(f"cannot read cookie file {path}: {exc.strerror}") from None
    return _checked(data, f"cookie file {path}")


def _create(path: Path) -> bytes:
    cookie = secrets.token_urlsafe(32).encode()
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            if not path.exists():  # a dangling symbolic link: reading would loop back here
                raise
            return _from_file(path)  # another node created it first
        with os.fdopen(fd, "wb") as file:
            file.write(cookie + b"\n")
    except OSError as exc:  # including a file where the directory should be
        raise StartError(
            f"cannot create cookie file {path}: {exc.strerror}; set {ENV} or pass a cookie"
        ) from None
    return cookie
