"""Starting QEMU somewhere and handing back its console.

The running guest (:mod:`shootdown.guest.machine`) never starts a process
itself: it asks a :class:`Launcher` for a :class:`ConsoleProcess`.  A local
QEMU (:class:`LocalLauncher`, here) and a QEMU on a remote host reached over
SSH (:mod:`shootdown.remote`) therefore look the same to everything above
them, which depends on the capability (a console it can read and write, a
process it can kill), not on the driver.

The contract, for any launcher:

* ``spawn(argv, log_path)`` starts ``argv`` (``argv[0]`` is the QEMU
  binary) with the guest's first serial port on the returned console, and
  writes every byte read from that console to ``log_path`` (a path string;
  created or truncated).
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
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from shootdown.errors import InfraError, LaunchError
from shootdown.guest.console_log import ConsoleLog

if TYPE_CHECKING:  # imported once QEMU runs, not before: start-up time
    import logging
    import re

    import pexpect.fdpexpect


def _logger() -> logging.Logger:
    """This module's logger (:mod:`logging` imported on first use: start-up time)."""
    import logging

    return logging.getLogger(__name__)


class Console(Protocol):
    """What the running guest uses of a console (a pexpect object in bytes mode)."""

    def read_nonblocking(self, size: int = 1, timeout: float | None = -1) -> bytes:
        """Up to ``size`` bytes; raises ``pexpect.TIMEOUT`` or, at the end, ``pexpect.EOF``."""
        ...

    def send(self, s: bytes) -> int:
        """Write ``s`` to the guest's serial input."""
        ...


@runtime_checkable
class ConsoleProcess(Protocol):
    """A started QEMU: its serial console and its lifetime."""

    @property
    def console(self) -> Console:
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

    def spawn(self, argv: Sequence[str], log_path: str) -> ConsoleProcess:
        """Start ``argv``; every console byte goes to ``log_path``."""
        ...

    def qemu_version(self, binary: str) -> str:
        """First line of ``binary --version`` where the guests run."""
        ...

    def describe(self) -> str:
        """Where guests run, for results and messages (``local``, ``ssh://host``)."""
        ...


def _private_dir() -> str:
    """A new mode-0700 directory for one QEMU's console FIFOs; its path.

    On a memory file system when there is one: ``$XDG_RUNTIME_DIR`` (the
    user's runtime directory, made for FIFOs and sockets), else ``/dev/shm``.
    Creating and removing the directory and two FIFOs costs about 30 us
    there against about a millisecond on a disk's ``/tmp``, and it sits
    between ``shootdown run`` starting and QEMU starting.  ``$TMPDIR`` (or
    ``/tmp``) when neither is writable.  ``tempfile.mkdtemp`` without the
    import (start-up time).
    """
    bases = [os.environ.get("XDG_RUNTIME_DIR"), "/dev/shm", os.environ.get("TMPDIR"), "/tmp"]
    error: OSError | None = None
    for base in filter(None, bases):
        for _ in range(10):
            path = os.path.join(base, f"shootdown-console-{os.getpid()}-{os.urandom(4).hex()}")
            try:
                os.mkdir(path, 0o700)
                return path
            except FileExistsError:
                continue
            except OSError as exc:  # missing or not writable: the next one
                error = exc
                break
    raise LaunchError(f"cannot create a private directory for the console FIFOs in any of "
                      f"{', '.join(filter(None, bases))}: {error}")


class ConsoleFifos:
    """The FIFO pair a local QEMU's console runs over, and the host's ends of it.

    ``-serial pipe:<dir>/console`` makes QEMU open ``console.in`` (the
    guest's input) and ``console.out`` (its output), both read-write.  A FIFO
    is much cheaper than a pty for QEMU's PL011 output, which it writes a
    byte at a time: one ``write`` into a pipe instead of one through the tty
    line discipline (``benchmarks/throughput.py``, batch rows: about 240-290
    scenarios/s over a pty, 270-340 over FIFOs, on a busy 2-core machine).

    Both are opened here, before QEMU starts, so that no open blocks:
    ``console.out`` read-only and non-blocking (the host must hold no write
    end, or it would never see the end of file when QEMU exits),
    ``console.in`` read-write (a FIFO opened for writing alone needs a
    reader already) and non-blocking (see :meth:`FifoConsole.send`).  The
    directory is private (mode 0700, see :func:`_private_dir`) and removed
    by :meth:`remove`.
    """

    def __init__(self) -> None:
        path = _private_dir()
        self.dir = path
        self.out_fd = self.in_fd = -1
        try:
            os.mkfifo(os.path.join(path, "console.in"), 0o600)
            os.mkfifo(os.path.join(path, "console.out"), 0o600)
            self.out_fd = os.open(os.path.join(path, "console.out"),
                                  os.O_RDONLY | os.O_NONBLOCK)
            self.in_fd = os.open(os.path.join(path, "console.in"), os.O_RDWR | os.O_NONBLOCK)
        except OSError as exc:
            self.close()
            self.remove()
            raise LaunchError(f"{path}: cannot create the console FIFOs: "
                              f"{exc.strerror or exc}") from exc

    @property
    def chardev(self) -> str:
        """The ``-serial`` value that puts the guest's console on this pair."""
        return f"pipe:{self.dir}/console"

    @property
    def out_path(self) -> str:
        """``console.out``, which QEMU's stderr is opened on as well."""
        return os.path.join(self.dir, "console.out")

    def close(self) -> None:
        """Close the host's ends that no :class:`FifoConsole` took over (idempotent)."""
        for fd in (self.out_fd, self.in_fd):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.out_fd = self.in_fd = -1

    def remove(self) -> None:
        """Remove the FIFOs and their directory (idempotent; open ends keep working)."""
        for name in ("console.in", "console.out"):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(self.dir, name))
        with contextlib.suppress(OSError):
            os.rmdir(self.dir)


class FifoConsole:
    """The guest's console over a :class:`ConsoleFifos` pair, as a pexpect-like object.

    Reading is a :class:`pexpect.fdpexpect.fdspawn` on ``console.out`` (so
    ``read_nonblocking`` raises ``pexpect.TIMEOUT`` and ``pexpect.EOF``, and
    ``expect`` works), logging every byte read; writing goes to
    ``console.in``.  Takes over both of the pair's descriptors.
    """

    def __init__(self, fifos: ConsoleFifos, log: ConsoleLog, alive: Callable[[], bool]) -> None:
        import pexpect.fdpexpect

        reader: pexpect.fdpexpect.fdspawn[bytes] = pexpect.fdpexpect.fdspawn(
            fifos.out_fd, encoding=None, use_poll=True, timeout=None)
        reader.logfile_read = log
        self._reader = reader
        self._in_fd = fifos.in_fd
        fifos.out_fd = fifos.in_fd = -1
        self._alive = alive

    def read_nonblocking(self, size: int = 1, timeout: float | None = -1) -> bytes:
        """Up to ``size`` bytes; raises ``pexpect.TIMEOUT``, or ``pexpect.EOF`` once QEMU exited."""
        return self._reader.read_nonblocking(size, timeout)

    def expect(self, pattern: bytes | re.Pattern[bytes], timeout: float | None = -1) -> int:
        """:meth:`pexpect.spawnbase.SpawnBase.expect` on the guest's output (ad-hoc use)."""
        return self._reader.expect(pattern, timeout=timeout)

    @property
    def before(self) -> bytes | None:
        """What preceded the last :meth:`expect` match."""
        before = self._reader.before
        return before if isinstance(before, bytes) else None

    def send(self, s: bytes) -> int:
        """Write all of ``s`` to the guest's input; returns ``len(s)``.

        The host holds ``console.in`` open read-write, so a write never fails
        when QEMU is gone: it would block on a full FIFO instead.  It is
        therefore non-blocking, waits for room in short steps, and drops the
        rest once QEMU has exited (the reader then sees the end of file, and
        the guest reports how QEMU ended).
        """
        import select

        view = memoryview(s)
        while view:
            try:
                view = view[os.write(self._in_fd, view):]
            except BlockingIOError:
                if not self._alive():
                    _logger().debug("QEMU has exited: %d console bytes not sent", len(view))
                    break
                poller = select.poll()
                poller.register(self._in_fd, select.POLLOUT)
                poller.poll(100)
        return len(s)

    def sendline(self, s: bytes = b"") -> int:
        """:meth:`send` ``s`` and a newline."""
        return self.send(s + b"\n")

    def close(self) -> None:
        """Close both descriptors (idempotent)."""
        self._reader.close()
        if self._in_fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._in_fd)
            self._in_fd = -1


class LocalProcess:
    """A QEMU started on this machine, a pseudo-terminal as its controlling terminal.

    QEMU leads its own session and process group (``setsid``), whose id is
    its pid: killing that group ends QEMU and anything it started, and a
    Ctrl-C in our terminal does not reach it (we clean it up ourselves, in
    a ``finally``).  The pty is its stdin and stdout; if the host dies
    without cleaning up, the kernel hangs the pty up and QEMU quits.

    The console is created on first use, so that pexpect is imported while
    QEMU is already booting: a :class:`FifoConsole` when the console runs
    over ``fifos`` (see :class:`LocalLauncher`), else a
    :class:`pexpect.fdpexpect.fdspawn` on the pty's master side.
    """

    def __init__(self, pid: int, master_fd: int, log: ConsoleLog,
                 fifos: ConsoleFifos | None = None) -> None:
        self._pid = pid
        self._fd = master_fd
        self._fifos = fifos
        try:  # Linux >= 5.3
            self._pidfd: int | None = os.pidfd_open(pid)
        except (AttributeError, OSError):
            self._pidfd = None
        self._log = log
        self._console: pexpect.fdpexpect.fdspawn[bytes] | FifoConsole | None = None
        self._status: int | None = None
        self._reaped = False
        self._closed = False

    @property
    def console(self) -> pexpect.fdpexpect.fdspawn[bytes] | FifoConsole:
        if self._console is None:
            if self._fifos is not None:
                self._console = FifoConsole(self._fifos, self._log, self.is_alive)
            else:
                import pexpect.fdpexpect

                console: pexpect.fdpexpect.fdspawn[bytes] = pexpect.fdpexpect.fdspawn(
                    self._fd, encoding=None, use_poll=True, timeout=None)
                console.logfile_read = self._log
                self._console = console
        return self._console
    @property
    def pid(self) -> int:
        """QEMU's pid, which is also its process group id."""
        return self._pid

    @property
    def exitstatus(self) -> int | None:
        if self._status is None:
            self._peek()
        return self._status

    def _peek(self) -> bool:
        """Whether QEMU has exited, noting its status *without* reaping it.

        QEMU stays a zombie until :meth:`kill` reaps it, and a zombie keeps
        its pid and process group id reserved: killing the group later can
        then never hit an unrelated process that got the same number.
        """
        if self._status is not None:
            return True
        try:
            info = os.waitid(os.P_PID, self._pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:  # reaped already
            self._reaped = True
            self._status = -signal.SIGKILL
            return True
        if info is None:
            return False
        self._status = info.si_status if info.si_code == os.CLD_EXITED else -info.si_status
        return True

    def is_alive(self) -> bool:
        return not self._peek()

    def wait(self, timeout: float) -> int | None:
        if self._peek():
            return self._status
        if self._pidfd is not None:
            # A pidfd becomes readable when the process exits: no polling
            # delay between QEMU's exit and the verdict.
            import select

            poller = select.poll()
            poller.register(self._pidfd, select.POLLIN)
            poller.poll(max(timeout, 0.0) * 1000)
            return self._status if self._peek() else None
        deadline = time.monotonic() + timeout
        delay = 0.0005
        while not self._peek():
            if time.monotonic() >= deadline:
                return None
            time.sleep(delay)
            delay = min(delay * 2, 0.01)
        return self._status

    def kill(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            if not self._reaped:
                # QEMU running or a zombie: its group id is still ours to kill.
                _kill_group(self._pid)
                if self.wait(5.0) is None:  # pragma: no cover - SIGKILL does not fail
                    _logger().error("QEMU pid %d survived SIGKILL", self._pid)
                else:
                    with contextlib.suppress(ChildProcessError):
                        os.waitpid(self._pid, 0)
                    self._reaped = True
        finally:
            if self._console is not None:
                with contextlib.suppress(Exception):
                    self._console.close()
            if self._fifos is not None:
                self._fifos.close()  # the ends no console took over
                self._fifos.remove()
            if self._fifos is not None or self._console is None:
                with contextlib.suppress(OSError):  # the pty, unless the console closed it
                    os.close(self._fd)
            try:  # writes the log's kept tail (guest/console_log.py)
                self._log.close()
            except InfraError as exc:  # a full disk: the run's outcome stands, say what is lost
                _logger().warning("%s", exc)
            if self._pidfd is not None:
                with contextlib.suppress(OSError):
                    os.close(self._pidfd)
                self._pidfd = None


def _kill_group(pid: int) -> None:
    """SIGKILL the process group ``pid`` leads, and ``pid`` itself.

    Only called while ``pid`` is unreaped, so both numbers are still QEMU's.
    """
    for kill in (os.killpg, os.kill):
        try:
            kill(pid, signal.SIGKILL)
        except OSError as exc:
            if exc.errno not in (errno.ESRCH, errno.EPERM):
                raise


def _which(binary: str) -> str | None:
    """``shutil.which`` without importing shutil (start-up time)."""
    if os.sep in binary:
        return binary if os.access(binary, os.X_OK) and os.path.isfile(binary) else None
    for directory in os.environ.get("PATH", os.defpath).split(os.pathsep):
        path = os.path.join(directory or ".", binary)
        if os.access(path, os.X_OK) and os.path.isfile(path):
            return path
    return None


class LocalLauncher:
    """Starts QEMU on this machine: its console on a FIFO pair, a pty as its terminal.

    ``os.posix_spawn`` rather than ``pexpect.spawn``: it costs a fraction of
    a millisecond instead of a fork of the Python process plus the pexpect
    import, and start-up time is a product feature.

    An argv whose console is ``-serial stdio`` (as :func:`~shootdown.guest.argv.build_argv`
    writes it) runs with ``-serial pipe:<dir>/console`` instead (see
    :class:`ConsoleFifos`): QEMU writes the guest's output a byte at a time,
    and a FIFO takes that at a fraction of a pty's cost.  QEMU's stderr goes
    to the same ``console.out``, so what QEMU says as it refuses an option
    or dies sits after the guest's records, as it would on a terminal, and
    reaches the error message.  Its stdin and stdout stay on a new pty, its
    controlling terminal.  An argv that puts the console elsewhere keeps
    all three on the pty, which is then the console.
    """

    def spawn(self, argv: Sequence[str], log_path: str | os.PathLike[str]) -> LocalProcess:
        from shootdown.guest.argv import with_console

        if not argv:
            raise LaunchError("empty QEMU command line")
        binary = argv[0]
        path = _which(binary)
        if path is None:
            raise LaunchError(f"{binary}: QEMU binary not found or not executable "
                              "(install qemu-system-arm, or set --qemu / SHOOTDOWN_QEMU)")
        fifos = ConsoleFifos() if with_console(argv, "") is not None else None
        if fifos is not None:
            moved = with_console(argv, fifos.chardev)
            assert moved is not None
            argv = moved
            if "logging" in sys.modules:  # else nothing is configured to show it,
                # and importing logging here would delay QEMU's start by milliseconds
                _logger().debug("QEMU command line as run: %s", " ".join(argv))
            stderr: tuple[object, ...] = (os.POSIX_SPAWN_OPEN, 2, fifos.out_path, os.O_WRONLY, 0)
        else:
            stderr = (os.POSIX_SPAWN_DUP2, 0, 2)
        try:  # head and tail kept, capped: guest/console_log.py
            log = ConsoleLog(log_path)
        except OSError as exc:
            if fifos is not None:
                fifos.close()
                fifos.remove()
            raise LaunchError(f"{log_path}: cannot create the console log: "
                              f"{exc.strerror or exc}") from exc
        master, slave = os.openpty()  # both close-on-exec
        try:
            pid = os.posix_spawn(
                path, list(argv), os.environ,
                # The child opens the pty by name after setsid() (glibc applies
                # setsid before the file actions), so the pty becomes QEMU's
                # controlling terminal: if we die without cleaning up, the
                # kernel hangs it up when the master closes and QEMU quits on
                # SIGHUP instead of running on, orphaned.
                file_actions=[(os.POSIX_SPAWN_OPEN, 0, os.ttyname(slave), os.O_RDWR, 0),
                              (os.POSIX_SPAWN_DUP2, 0, 1), stderr],
                setsid=True,
                # Python ignores SIGPIPE and SIGXFSZ; QEMU should not inherit that.
                setsigdef=(signal.SIGPIPE, signal.SIGXFSZ),
                setsigmask=(),
            )
        except OSError as exc:
            os.close(master)
            log.close()
            if fifos is not None:
                fifos.close()
                fifos.remove()
            raise LaunchError(f"{binary}: cannot start: {exc.strerror or exc}") from exc
        finally:
            os.close(slave)  # only QEMU holds the slave: its exit is our end of file
        return LocalProcess(pid, master, log, fifos)

    def qemu_version(self, binary: str) -> str:
        from shootdown.guest.qemu import version_line  # the one place that asks QEMU

        return version_line(binary)

    def describe(self) -> str:
        return "local"
