"""A QEMU running on a remote host, with its console streamed over SSH.

:class:`RemoteProcess` satisfies :class:`shootdown.guest.launcher.ConsoleProcess`
(the console, ``wait``, ``kill``, ``exitstatus``), so the running guest drives
it exactly like a local QEMU.

How the remote process is started
---------------------------------
One session channel with a pseudo-terminal runs::

    exec /bin/sh -c START_SCRIPT shootdown-qemu BINARY [SHA256 PATH]... -- \
        [timeout -k 10 CAP] ARGV...

with every word quoted (:func:`~shootdown.remote.connection.shell_join`).
:data:`START_SCRIPT` is a constant; the binary, the files and the QEMU argv
reach ``sh`` as positional parameters and are never parsed as shell code.
Before starting QEMU the script checks, in the same round trip, that each
uploaded file is there with its SHA-256 (``sha256sum``) and that the binary
exists; it answers with a marker line (stale files, missing binary, or the
pid), so a warm start costs one exec, not three.  Because sshd gives a pty
session its own ``setsid()`` and every step ``exec``\\ s, the pid ``sh``
printed leads its own session and process group, with the pty as its
controlling terminal: it is QEMU itself, or the ``timeout`` wrapper (the
lifetime cap below) with QEMU as its child in the same group.  That gives us:

- **kill**: ``kill -KILL -- -<pid>`` on a second exec channel ends QEMU and
  anything it started (the whole process group);
- **a dropped connection**: sshd closes the pty master when the connection
  (or the sshd session process) dies, the kernel sends SIGHUP to the session
  leader (QEMU, or ``timeout``, which passes it on), and QEMU quits on
  SIGHUP.  Nothing stays behind without a watchdog process of our own;
  ``tests/remote`` kills the sshd session in the middle of a run and checks
  it, with and without the cap.  As a last resort against a link that
  dies silently (no FIN, so sshd never notices), QEMU runs under
  ``timeout -k`` with a lifetime cap.

The pty makes QEMU's stdio behave as it does locally (pexpect uses a pty
too): same line endings (``\\r\\n``), stderr merged into the console.

The console
-----------
:class:`ChannelSpawn` is a small :class:`pexpect.spawnbase.SpawnBase`
subclass over the paramiko channel.  ``pexpect.fdpexpect`` cannot be used on
``channel.fileno()``: that descriptor only *signals* that data arrived, the
data itself is in paramiko's buffer.  End of file is a normal QEMU exit when
the server sent an exit status; when the connection itself is gone it is a
:class:`~shootdown.errors.RemoteError` (an infrastructure failure), raised
from ``read_nonblocking`` so it passes through ``expect`` unchanged.
"""

from __future__ import annotations

import contextlib
import logging
import re
import select
import signal
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import paramiko
import pexpect
import pexpect.spawnbase

from shootdown.errors import LaunchError, RemoteError
from shootdown.remote.connection import shell_join

if TYPE_CHECKING:
    from shootdown.guest.console_log import ConsoleLog
    from shootdown.remote.connection import Connection

log = logging.getLogger(__name__)

#: Printed by the start script before ``exec``; never part of the console log.
PID_MARKER = b"@@shootdown-remote-pid="
_PID_RE = re.compile(re.escape(PID_MARKER) + rb"(\d+) ([0-9:]*)@@\r?\n")
_STALE_MARK = b"@@shootdown-remote-stale@@"
_MISSING_MARK = b"@@shootdown-remote-missing@@"
#: The start script.  ``$1`` is the QEMU binary, ``$2`` a file to open on
#: descriptor 3 and unlink (a one-run upload, empty for none), then (sha256,
#: path) pairs up to ``--``, then the argv.  A constant: nothing is pasted in.
START_SCRIPT = (
    'stty -echo 2>/dev/null; '
    'bin=$1; once=$2; shift 2; '
    'while [ "$#" -gt 0 ]; do '
    'case $1 in --) shift; break;; esac; '
    'sum=$(sha256sum -- "$2" 2>/dev/null); sum=${sum#\\\\}; sum=${sum%% *}; '
    f'[ "$sum" = "$1" ] || {{ echo "{_STALE_MARK.decode()}"; exit 0; }}; '
    'shift 2; done; '
    'if [ -n "$once" ]; then '
    # (a failed redirection on exec would end the shell: test first)
    f'[ -r "$once" ] || {{ echo "{_STALE_MARK.decode()}"; exit 0; }}; '
    'exec 3<"$once"; rm -f -- "$once"; fi; '
    'command -v -- "$bin" >/dev/null 2>&1 || '
    f'{{ echo "{_MISSING_MARK.decode()}"; exit 127; }}; '
    'id=$(stat -L -c %s:%Y -- "$(command -v -- "$bin")" 2>/dev/null); '
    f'echo "{PID_MARKER.decode()}$$ $id@@"; exec "$@"')
#: How QEMU names the file the start script opened on descriptor 3 and unlinked.
ONCE_FD_PATH = "/dev/fd/3"
#: Seconds to wait for the start script to report the pid.
START_TIMEOUT = 30.0
#: Seconds after which a remote QEMU is killed whatever happens (watchdog of
#: last resort, for links that die without sshd noticing).
DEFAULT_MAX_LIFETIME = 6 * 3600
#: Seconds the kill command over SSH may take (a silently dead link never answers).
KILL_TIMEOUT = 15.0
#: Seconds to wait for an exit status after end of file before calling it lost.
_EOF_GRACE = 2.0


class RemoteFilesStale(RemoteError):
    """An uploaded file is missing on the host or has another hash: upload, retry."""


def start_command(argv: list[str], max_lifetime: float | None,
                  checks: Sequence[tuple[str, str]] = (), once: str = "") -> str:
    """The remote command line that starts ``argv`` (all of it quoted).

    ``checks``: (sha256, remote path) of files that must be in place first;
    ``once``: a file QEMU reads as :data:`ONCE_FD_PATH`, unlinked before
    QEMU starts, so nothing of the run is left on the host.
    """
    words = ["/bin/sh", "-c", START_SCRIPT, "shootdown-qemu", argv[0], once]
    for digest, path in checks:
        words += [digest, path]
    words.append("--")
    if max_lifetime:
        # -k rather than --kill-after: BusyBox's timeout knows only the short form.
        words += ["timeout", "-k", "10", f"{int(max_lifetime)}"]
    return "exec " + shell_join([*words, *argv])


if TYPE_CHECKING:  # generic in the stubs only
    _SpawnBytes = pexpect.spawnbase.SpawnBase[bytes]
else:
    _SpawnBytes = pexpect.spawnbase.SpawnBase


class ChannelSpawn(_SpawnBytes):
    """A pexpect console (bytes mode) over a paramiko session channel."""

    def __init__(self, channel: paramiko.Channel, where: str) -> None:
        super().__init__(timeout=None, encoding=None)
        self.channel = channel
        self.where = where
        self.child_fd = channel.fileno()  # readable when data or EOF arrives
        self.name = f"<ssh {where}>"
        self.closed = False
        self._pending = b""  # bytes read ahead while waiting for the start marker

    def _to_logs(self, data: bytes, *, sent: bool) -> None:
        """What SpawnBase does with its log files: ``logfile`` gets both ways."""
        for f in (self.logfile, self.logfile_send if sent else self.logfile_read):
            if f is not None:
                f.write(data)
                f.flush()

    def push_back(self, data: bytes) -> None:
        """Return ``data`` to the front of the stream (read ahead by ``expect``)."""
        self._pending = data + self._pending

    def _lost(self) -> bool:
        """True when the connection died rather than QEMU exiting."""
        transport = self.channel.get_transport()
        return transport is None or not transport.is_active()

    def read_nonblocking(self, size: int = 1, timeout: float | None = -1) -> bytes:
        """Up to ``size`` bytes; pexpect.TIMEOUT if none come within ``timeout``.

        ``timeout`` -1 means ``self.timeout``; None waits for ever.
        """
        if timeout == -1:
            timeout = self.timeout
        if self._pending:
            data, self._pending = self._pending[:size], self._pending[size:]
            self._to_logs(data, sent=False)
            return data
        chan = self.channel
        deadline = None if timeout is None else time.monotonic() + timeout
        while not chan.recv_ready() and not chan.closed and not chan.eof_received:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise pexpect.TIMEOUT(f"no console output from {self.where} within "
                                      f"{timeout} s")
            # Wake up now and then to notice a transport that died silently.
            select.select([chan], [], [], 0.5 if remaining is None else min(remaining, 0.5))
            if self._lost() and not chan.recv_ready():
                break
        data = chan.recv(size) if chan.recv_ready() else b""
        if data:
            self._to_logs(data, sent=False)
            return bytes(data)
        # End of file: QEMU exited (an exit status follows) or the link died.
        grace = time.monotonic() + _EOF_GRACE
        while chan.exit_status == -1 and not self._lost() and time.monotonic() < grace:
            chan.status_event.wait(0.05)
        if chan.exit_status == -1 and self._lost():
            raise RemoteError(f"{self.where}: connection lost while the guest was running")
        self.flag_eof = True
        raise pexpect.EOF(f"console of {self.where} closed")

    def send(self, s: bytes | str) -> int:
        """Write to QEMU's stdin (the guest's serial input)."""
        b = s.encode() if isinstance(s, str) else bytes(s)
        self._to_logs(b, sent=True)
        try:
            self.channel.sendall(b)
        except OSError as exc:  # paramiko raises socket.error on a closed channel
            raise RemoteError(f"{self.where}: cannot write to the console: {exc}") from exc
        return len(b)

    def sendline(self, s: bytes | str = b"") -> int:
        b = s.encode() if isinstance(s, str) else s
        return self.send(b + b"\n")

    def write(self, s: bytes | str) -> None:
        self.send(s)

    def isalive(self) -> bool:
        return not self.channel.exit_status_ready()

    def close(self, force: bool = True) -> None:
        self.channel.close()
        self.closed = True


class RemoteProcess:
    """A QEMU started on a remote host; see the module docstring for how."""

    def __init__(self, conn: Connection, channel: paramiko.Channel, pid: int,
                 console: ChannelSpawn, log_file: ConsoleLog, *, binary_id: str = "",
                 downloads: Sequence[tuple[str, str]] = (),
                 cleanup: Sequence[str] = ()) -> None:
        self._conn = conn
        self._downloads = list(downloads)
        #: Files on the host used by this run only (loader blobs): removed at the end.
        self._cleanup = list(cleanup)
        #: ``size:mtime`` of the QEMU binary that was started (for version caching).
        self.binary_id = binary_id
        self._channel = channel
        self._pid = pid
        self._console = console
        self._log = log_file
        self._killed_with: int | None = None
        self._closed = False

    @classmethod
    def start(cls, conn: Connection, argv: list[str], log_file: ConsoleLog, *,
              max_lifetime: float | None = DEFAULT_MAX_LIFETIME,
              checks: Sequence[tuple[str, str]] = (),
              downloads: Sequence[tuple[str, str]] = (),
              cleanup: Sequence[str] = (), once: str = "") -> RemoteProcess:
        """Start ``argv`` on the host behind ``conn``; its console logs to ``log_file``.

        Raises :class:`RemoteFilesStale` when a file of ``checks`` is not in
        place (nothing was started), LaunchError when ``argv[0]`` is not found.
        ``downloads``: (remote, local) files QEMU writes, fetched by :meth:`kill`;
        ``cleanup``: files on the host that :meth:`kill` removes; ``once``:
        see :func:`start_command`.
        """
        command = start_command(argv, max_lifetime, checks, once)
        log.debug("%s: start %s", conn.host.alias, command)
        channel = conn.open_session()
        where = conn.host.alias
        try:
            try:
                channel.get_pty(term="dumb", width=200, height=50)
                channel.exec_command(command)
            except (paramiko.SSHException, OSError, EOFError) as exc:
                raise RemoteError(f"{where}: cannot start QEMU: {exc}") from exc
            console = ChannelSpawn(channel, where)
            try:
                which = console.expect([_PID_RE, re.escape(_STALE_MARK),
                                        re.escape(_MISSING_MARK)], timeout=START_TIMEOUT)
            except pexpect.EOF as exc:
                out = (console.before or b"").decode(errors="replace").strip()
                raise RemoteError(f"{where}: the start script exited before QEMU "
                                  f"started: {out[-300:]}") from exc
            except pexpect.TIMEOUT as exc:
                raise RemoteError(f"{where}: QEMU did not start within "
                                  f"{START_TIMEOUT:g} s") from exc
            if which == 1:
                raise RemoteFilesStale(f"{where}: uploaded files missing or changed")
            if which == 2:
                raise LaunchError(f"{argv[0]}: QEMU binary not found on "
                                  f"{conn.host.describe()} (install qemu-system-arm there, "
                                  "or set --qemu)")
        except BaseException:
            channel.close()
            raise
        assert isinstance(console.match, re.Match)
        pid = int(console.match.group(1))
        binary_id = console.match.group(2).decode()
        log.debug("%s: QEMU started, remote pid %d", where, pid)
        # Whatever followed the marker is already QEMU's output: hand it back
        # to the stream so the running guest (and the log) see every byte.
        console.push_back(bytes(console.buffer))
        console.buffer = b""
        console.logfile_read = log_file
        return cls(conn, channel, pid, console, log_file, binary_id=binary_id,
                   downloads=downloads, cleanup=cleanup)

    @property
    def pid(self) -> int:
        """QEMU's pid on the remote host, also its process group id."""
        return self._pid

    @property
    def console(self) -> ChannelSpawn:
        return self._console

    @property
    def exitstatus(self) -> int | None:
        chan = self._channel
        if not chan.exit_status_ready():
            return None
        if chan.exit_status != -1:
            return int(chan.exit_status)
        # No exit-status message: killed by a signal (paramiko does not read
        # OpenSSH's exit-signal message, so the signal is the one we sent, or
        # SIGKILL when someone else did), or the connection died, in which
        # case the pty's hang-up is what ends QEMU on the host.
        if self._killed_with is not None:
            return -self._killed_with
        if not self._conn.is_active():
            return -signal.SIGHUP
        return -signal.SIGKILL

    def is_alive(self) -> bool:
        return not self._channel.exit_status_ready()

    def wait(self, timeout: float) -> int | None:
        self._channel.status_event.wait(timeout)
        return self.exitstatus

    def kill(self) -> None:
        """SIGKILL QEMU's process group over a separate channel; close the console.

        Then fetch the files QEMU wrote on the host (its ``-D`` log) into their
        local paths and remove them there; a failure is logged, not raised
        (whoever reads the file will find it missing).
        """
        if self._closed:
            return
        try:
            if self.is_alive() and self._conn.is_active():
                self._killed_with = signal.SIGKILL
                try:
                    self._conn.run(["kill", "-KILL", "--", f"-{self._pid}"],
                                   check=False, timeout=KILL_TIMEOUT)
                except RemoteError as exc:
                    # Closing the channel below still hangs up QEMU's pty.
                    log.warning("%s: could not kill remote pid %d: %s",
                                self._conn.host.alias, self._pid, exc)
                self.wait(min(5.0, KILL_TIMEOUT))
        finally:
            self._closed = True
            with contextlib.suppress(Exception):
                self._console.close()
            with contextlib.suppress(OSError):
                self._log.close()
            self._fetch_downloads()

    def _fetch_downloads(self) -> None:
        """Fetch what QEMU wrote, then remove it and the one-run uploads on the host."""
        remove = list(self._cleanup)
        self._cleanup.clear()
        if not self._conn.is_active():
            if self._downloads or remove:
                log.warning("%s: connection lost, %s left on the host", self._conn.host.alias,
                            ", ".join([r for r, _ in self._downloads] + remove))
            self._downloads.clear()
            return
        try:
            while self._downloads:
                remote, local = self._downloads.pop(0)
                try:
                    self._conn.sftp.get(remote, local)
                except (OSError, paramiko.SSHException, RemoteError) as exc:
                    log.warning("%s: cannot fetch %s to %s: %s", self._conn.host.alias,
                                remote, local, exc)
                remove.append(remote)
        finally:
            self._conn.close_sftp()
        if remove:
            try:
                self._conn.run(["rm", "-f", "--", *remove], timeout=KILL_TIMEOUT)
            except RemoteError as exc:
                log.warning("%s: cannot remove %s: %s", self._conn.host.alias,
                            ", ".join(remove), exc)
