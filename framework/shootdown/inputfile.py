"""Reading the files a user hands us: scenarios, matrices, guests, pools, suppressions, results.

Every reader of user input goes through here so that each hostile file gets
the same one-line answer (:class:`~shootdown.errors.ConfigError`, exit 2)
naming the file, instead of a hang or a traceback:

* a folder, FIFO, socket or device where a file is expected is refused
  without blocking (the file is opened ``O_NONBLOCK`` and ``fstat``-ed
  before anything is read: a FIFO named ``x.toml`` would otherwise wait
  for a writer forever);
* a file larger than ``max_bytes`` is refused (a scenario is a few KB);
* bytes that are not UTF-8 are named by offset;
* TOML or JSON nested past what Python's parsers can recurse is "nested
  too deeply", not a RecursionError.

``error`` lets a caller raise its own kind of bad-input error (a
:class:`~shootdown.errors.ScenarioError` for scenarios); it receives the
reason without the path and must add the path itself.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable  # no pathlib: guest loading must stay light (test_run)
from typing import Any

from shootdown.errors import ConfigError, ShootdownError

#: Larger input files are refused: scenarios, matrices and pools are a few KB,
#: a results file of a big matrix a few MB.
MAX_INPUT_BYTES = 64 << 20

ErrorFactory = Callable[[str], ShootdownError]


def _default_error(path: str) -> ErrorFactory:
    return lambda reason: ConfigError(f"{path}: {reason}")


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "a special file"


def read_bytes(path: str | os.PathLike[str], what: str = "file", *,
               max_bytes: int = MAX_INPUT_BYTES, error: ErrorFactory | None = None) -> bytes:
    """The contents of the regular file ``path`` (``what`` names it in errors)."""
    spath = os.fspath(path)
    fail = error or _default_error(spath)
    try:
        fd = os.open(spath, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise fail(f"no such {what}") from None
    except IsADirectoryError:
        raise fail(f"is a folder, not a {what}") from None
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # a socket, or a FIFO opened for writing only
            raise fail(f"is a special file, not a {what}") from None
        raise fail(f"cannot read: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise fail(f"is {_kind(st.st_mode)}, not a {what}")
        if st.st_size > max_bytes:
            raise fail(f"{st.st_size} bytes: larger than any {what} "
                       f"(limit {max_bytes >> 20} MiB)")
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(max_bytes + 1)
    except OSError as exc:
        raise fail(f"cannot read: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if len(data) > max_bytes:  # grew while we read it
        raise fail(f"larger than any {what} (limit {max_bytes >> 20} MiB)")
    return data


def decode(data: bytes, error: ErrorFactory) -> str:
    """``data`` as UTF-8; bad bytes are named by offset."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise error(f"line {line}: byte {data[exc.start]:#04x} at offset {exc.start} "
                    "is not UTF-8 text") from None


def read_text(path: str | os.PathLike[str], what: str = "file", *,
              max_bytes: int = MAX_INPUT_BYTES, error: ErrorFactory | None = None) -> str:
    """The regular file ``path`` as UTF-8 text."""
    fail = error or _default_error(os.fspath(path))
    return decode(read_bytes(path, what, max_bytes=max_bytes, error=fail), fail)


def parse_toml(text: str, error: ErrorFactory) -> dict[str, Any]:
    """TOML text as a table; syntax errors and runaway nesting are bad input."""
    import tomllib  # not at module level: its import costs as much as a guest's start

    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise error(f"not valid TOML: {exc}") from None
    except RecursionError:
        raise error("not valid TOML: nested too deeply") from None


def read_toml(path: str | os.PathLike[str], what: str = "file", *,
              error: ErrorFactory | None = None) -> dict[str, Any]:
    """The regular file ``path`` parsed as TOML."""
    fail = error or _default_error(os.fspath(path))
    return parse_toml(read_text(path, what, error=fail), fail)


def parse_json(text: str, error: ErrorFactory) -> Any:
    """One JSON value; syntax errors, runaway nesting and non-finite numbers are bad input."""
    import json
    import math

    def finite_only(name: str) -> float:
        raise ValueError(f"{name} is not a JSON number")

    def finite(literal: str) -> float:
        value = float(literal)
        if not math.isfinite(value):
            raise ValueError(f"{literal} is out of range")
        return value

    try:
        return json.loads(text, parse_constant=finite_only, parse_float=finite)
    except ValueError as exc:  # JSONDecodeError included
        raise error(f"not valid JSON: {exc}") from None
    except RecursionError:
        raise error("not valid JSON: nested too deeply") from None


def regular_file(path: str | os.PathLike[str], what: str = "file", *,
                 error: ErrorFactory | None = None) -> str:
    """``path`` if it names a regular file (for readers that open it themselves,
    such as pyelftools); a folder, FIFO or device is bad input, checked without
    opening it."""
    spath = os.fspath(path)
    fail = error or _default_error(spath)
    try:
        st = os.stat(spath)
    except FileNotFoundError:
        raise fail(f"no such {what}") from None
    except OSError as exc:
        raise fail(f"cannot read: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        raise fail(f"is {_kind(st.st_mode)}, not a {what}")
    return spath
