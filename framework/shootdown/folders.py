"""Output folders a user names (``run --logdir``, ``matrix --out``): made, checked, locked.

Two runs writing into one folder destroy each other's files (a matrix
truncates ``results.jsonl``, console logs share names), so a run holds an
exclusive, non-blocking ``flock`` on ``<folder>/.shootdown.lock`` while it
writes there, and a second run is refused at once with the holder's pid.

Exit codes:

- a folder that cannot be made or written (``/proc/x``, a file where a
  folder is expected, no permission, read-only file system) is a path the
  user gave that cannot be used: :class:`ConfigError`, exit 2;
- a folder in use by another run is :class:`FolderBusy`, an
  :class:`InfraError` (exit 3): the path is fine, the machine is busy with
  it now, and the same command succeeds once the other run ends.  Nothing
  about the input is wrong, so it is not exit 2.

The kernel drops a ``flock`` when its process dies, however it dies, so a
stale lock file never blocks anybody.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Iterator

from shootdown.errors import ConfigError, InfraError

#: The lock file's name inside a locked folder.
LOCK_NAME = ".shootdown.lock"

_held: dict[str, int] = {}


class FolderBusy(InfraError):
    """Another process holds the folder's lock."""


def make_folder(path: str | os.PathLike[str], what: str) -> None:
    """``mkdir -p path``, or a one-line :class:`ConfigError` naming it and the OS reason."""
    try:
        os.makedirs(path, exist_ok=True)
    except FileExistsError:  # a file (or a device, a dangling link) where the folder goes
        pass
    except OSError as exc:
        raise ConfigError(f"{os.fspath(path)}: cannot use as {what}: "
                          f"{exc.strerror or exc}") from exc
    if not os.path.isdir(path):
        raise ConfigError(f"{os.fspath(path)}: cannot use as {what}: Not a directory")


def lock_folder(path: str | os.PathLike[str], what: str) -> None:
    """Make ``path`` and hold its lock until :func:`release_folders` or process exit."""
    key = os.path.realpath(path)
    if key in _held:
        return
    make_folder(path, what)
    lock = os.path.join(path, LOCK_NAME)
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
    except OSError as exc:
        raise ConfigError(f"{os.fspath(path)}: cannot use as {what}: "
                          f"{exc.strerror or exc}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        holder = _read_pid(fd)
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise FolderBusy(f"{os.fspath(path)}: {what} is in use by another shootdown run "
                             f"(pid {holder}); wait for it or choose another folder") from exc
        raise ConfigError(f"{os.fspath(path)}: cannot lock {what}: "
                          f"{exc.strerror or exc}") from exc
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
    except OSError as exc:
        os.close(fd)
        raise InfraError(f"{os.fspath(path)}: cannot write {LOCK_NAME}: "
                         f"{exc.strerror or exc}") from exc
    _held[key] = fd


def release_folders() -> None:
    """Drop every lock :func:`lock_folder` took in this process (the lock files stay)."""
    while _held:
        _, fd = _held.popitem()
        with contextlib.suppress(OSError):
            os.close(fd)


@contextlib.contextmanager
def locked_folder(path: str | os.PathLike[str], what: str) -> Iterator[None]:
    """:func:`lock_folder` for the ``with`` block."""
    key = os.path.realpath(path)
    ours = key not in _held
    lock_folder(path, what)
    try:
        yield
    finally:
        if ours:
            fd = _held.pop(key, None)
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)


def _read_pid(fd: int) -> str:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return "unknown"
    return text if text.isdigit() else "unknown"
