"""Starting QEMU somewhere and handing back its console.

The running guest (:mod:`shootdown.guest.machine`) never starts a process
itself: it asks a :class:`Launcher` for a :class:`ConsoleProcess`.  A local
QEMU (:class:`LocalLauncher`, here) and a QEMU on a remote host reached over
SSH (:mod:`shootdown.remote`) therefore look the same to everything above
them, which depends on the capability (a console it can read and write, a
process it can kill), not on the driver.

The contract, for any launcher:

* ``spawn(argv, log_path)`` starts ``argv`` (``argv[0]`` is the QEMU binary)
  with the guest's first serial port on the returned console, and writes
  every byte read from that console to ``log_path`` (created or truncated).
  A binary that cannot be started raises :class:`~shootdown.errors.LaunchError`
  (or :class:`~shootdown.errors.RemoteError` for a host that cannot be
  reached) with a one-line message naming the cause.  A QEMU that starts and
  then rejects its command line is *not* detected here: it shows up as an
  early end of file on the console, which the running guest reports.
* ``ConsoleProcess.console`` is a pexpect object in bytes mode
  (``encoding=None``).  The running guest uses only
  ``read_nonblocking(size, timeout)`` (raising ``pexpect.TIMEOUT`` or
  ``pexpect.EOF``) and ``send(bytes)``; ``expect`` works too for ad-hoc use.
* ``kill()`` ends QEMU and everything it started (the whole process group),
  reaps it and closes the console; it is idempotent and never raises for a
  process that is already gone.
* ``wait(timeout)`` returns the exit status once QEMU has exited by itself
  (``None`` if it is still running after ``timeout`` seconds).
* ``exitstatus`` is the exit code, ``-signal`` when QEMU was killed by a
  signal, or ``None`` while it runs.
* ``qemu_version(binary)`` on the launcher answers the first line of
  ``binary --version`` on the host that runs the guests; it may be cached.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Protocol, runtime_checkable

from shootdown.errors import LaunchError

if TYPE_CHECKING:  # pexpect is imported when a guest is spawned, not before
    import pexpect
    import pexpect.spawnbase

logger = logging.getLogger(__name__)


@runtime_checkable
class ConsoleProcess(Protocol):
    """A started QEMU: its serial console and its lifetime."""

    @property
    def console(self) -> pexpect.spawnbase.SpawnBase:
        """The guest's serial console, a pexpect object in bytes mode."""
        ...

    @property
    def exitstatus(self) -> int | None:
        """Exit code, ``-signal`` if killed by a signal, ``None`` while running."""
        ...

    def is_alive(self) -> bool:
        """Whether QEMU is still running."""
        ...

    def wait(self, timeout: float) -> int | None:
        """Wait up to ``timeout`` s for QEMU to exit; its exit status or ``None``."""
        ...

    def kill(self) -> None:
        """End QEMU and its process group, reap it, close the console (idempotent)."""
        ...


@runtime_checkable
class Launcher(Protocol):
    """Something that can start QEMU and hand back its console."""

    def spawn(self, argv: Sequence[str], log_path: Path) -> ConsoleProcess:
        """Start ``argv``; every console byte goes to ``log_path``."""
        ...

    def qemu_version(self, binary: str) -> str:
        """First line of ``binary --version`` where the guests run."""
        ...

    def describe(self) -> str:
        """Where guests run, for results and messages (``local``, ``ssh://host``)."""
        ...


class LocalProcess:
    """A QEMU started on this machine under a pseudo-terminal.

    pexpect's child calls ``setsid()`` before ``exec``, so QEMU leads its own
    session and process group whose id is its pid: killing that group ends
    QEMU and anything it started, and a Ctrl-C in our terminal does not
    reach it (we clean it up ourselves in a ``finally``).
    """

    def __init__(self, child: pexpect.spawn, log: BinaryIO) -> None:
        self._child = child
        self._log = log
        self._status: int | None = None
        self._closed = False

    @property
    def console(self) -> pexpect.spawn:
        return self._child

    @property
    def pid(self) -> int:
        """QEMU's pid, which is also its process group id."""
        return int(self._child.pid)

    @property
    def exitstatus(self) -> int | None:
        if self._status is None and not self._closed:
            self.is_alive()  # reaps if it has exited
        return self._status

    def is_alive(self) -> bool:
        if self._status is not None:
            return False
        try:
            alive = bool(self._child.isalive())
        except Exception:  # ptyprocess raises if the child was reaped elsewhere
            alive = False
        if not alive:
            self._record_status()
        return alive

    def _record_status(self) -> None:
        if self._status is not None:
            return
        if self._child.signalstatus is not None:
            self._status = -int(self._child.signalstatus)
        elif self._child.exitstatus is not None:
            self._status = int(self._child.exitstatus)

    def wait(self, timeout: float) -> int | None:
        deadline = time.monotonic() + timeout
        delay = 0.002
        while self.is_alive():
            if time.monotonic() >= deadline:
                return None
            time.sleep(delay)
            delay = min(delay * 2, 0.05)
        return self._status

    def kill(self) -> None:
        if self._closed:
            return
        try:
            if self.is_alive():
                _kill_group(self.pid)
                self.wait(5.0)
        finally:
            self._closed = True
            with contextlib.suppress(Exception):
                self._child.close(force=True)
            self._record_status()
            with contextlib.suppress(OSError):
                self._log.close()


def _kill_group(pid: int) -> None:
    """SIGKILL the process group ``pid`` leads, and ``pid`` itself.

    The pid is used as the group id rather than asking ``getpgid``: right
    after ``fork`` the child may not have called ``setsid`` yet, and then
    ``getpgid`` would name *our* group.
    """
    for kill in (os.killpg, os.kill):
        try:
            kill(pid, signal.SIGKILL)
        except OSError as exc:
            if exc.errno not in (errno.ESRCH, errno.EPERM):
                raise


class LocalLauncher:
    """Starts QEMU on this machine with :class:`pexpect.spawn`."""

    def spawn(self, argv: Sequence[str], log_path: Path) -> LocalProcess:
        if not argv:
            raise LaunchError("empty QEMU command line")
        binary = argv[0]
        if shutil.which(binary) is None:
            raise LaunchError(f"{binary}: QEMU binary not found or not executable "
                              "(install qemu-system-arm, or set --qemu / SHOOTDOWN_QEMU)")
        import pexpect  # deferred: start-up time

        log = open(log_path, "wb")  # noqa: SIM115 - owned and closed by LocalProcess.kill
        logger.debug("spawning %s", " ".join(argv))
        try:
            child = pexpect.spawn(binary, list(argv[1:]), encoding=None, echo=False,
                                  timeout=None, use_poll=True)
        except (pexpect.ExceptionPexpect, OSError) as exc:
            log.close()
            raise LaunchError(f"{binary}: cannot start: {exc}") from exc
        child.logfile_read = log
        return LocalProcess(child, log)

    def qemu_version(self, binary: str) -> str:
        return _cached_qemu_version(binary)

    def describe(self) -> str:
        return "local"


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "shootdown"


def _cached_qemu_version(binary: str) -> str:
    """``binary --version``'s first line, cached by the binary's path, size and mtime.

    Running QEMU only to ask its version costs about as much as booting the
    guest, so the answer is kept in the user's cache directory and asked
    again only when the binary changes.
    """
    path = shutil.which(binary)
    if path is None:
        raise LaunchError(f"{binary}: QEMU binary not found or not executable")
    real = os.path.realpath(path)
    st = os.stat(real)
    key = f"{real}:{st.st_size}:{st.st_mtime_ns}"
    cache = _cache_dir() / "qemu-version.json"
    try:
        entries = json.loads(cache.read_text())
        if isinstance(entries, dict) and isinstance(entries.get(key), str):
            return str(entries[key])
    except (OSError, ValueError):
        entries = {}
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True,
                             timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LaunchError(f"{binary} --version: {exc}") from exc
    lines = (out.stdout or out.stderr).strip().splitlines()
    version = lines[0] if lines else f"unknown (exit status {out.returncode})"
    if not isinstance(entries, dict):
        entries = {}
    entries[key] = version
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(entries, indent=1))
        os.replace(tmp, cache)
    except OSError as exc:  # a read-only home is no reason to fail a run
        logger.debug("cannot cache the QEMU version in %s: %s", cache, exc)
    return version
