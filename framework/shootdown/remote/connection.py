"""One authenticated SSH connection to a host, possibly through jump hosts.

:class:`Connection` is the only place that talks paramiko's connection API.
It offers what the launcher needs and nothing else:

- :meth:`Connection.run`: run a command given as an argument list and
  collect its output;
- :meth:`Connection.upload_cached`: put a file into the per-user cache
  directory on the host, skipped when the copy there already has the same
  SHA-256;
- :meth:`Connection.open_session`: a fresh channel for a long-running
  command (the launcher's QEMU).

**Quoting.** A remote command is a string that the remote user's login shell
parses, so every command here is built from an argument list with
:func:`shell_join` (``shlex.quote`` on every element).  No caller can pass a
command string: nothing from a guest definition or a scenario reaches a
remote shell unquoted.

**Secrets.** Only key and agent authentication are offered; no password or
passphrase is ever accepted, stored or logged.  Log lines name hosts, users,
ports and key *file names*, never key material.

paramiko's and socket errors are turned into :class:`RemoteError` at this
boundary (``raise ... from``), with the host in the message.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import posixpath
import re
import select
import shlex
import socket
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import paramiko

from shootdown.errors import RemoteError
from shootdown.remote.config import SshHost
from shootdown.remote.hostkeys import (
    AcceptNewHostKey,
    RefuseUnknownHostKey,
    accept_new_from_env,
    changed_key_error,
)

log = logging.getLogger(__name__)

#: Seconds to wait for TCP connect, the SSH banner and authentication.
CONNECT_TIMEOUT = 15.0
#: Seconds between keepalive packets: a dead link then fails a write quickly.
KEEPALIVE_INTERVAL = 5
#: Remote directory (relative to the login directory) for uploaded firmware.
REMOTE_CACHE_DIR = ".cache/shootdown/firmware"


def shell_join(argv: Sequence[str]) -> str:
    """Quote every element for a POSIX shell and join them with spaces.

    The one way this package builds a remote command line.  Rejects NUL,
    which no shell argument can carry and which would truncate the command.
    """
    if not argv:
        raise RemoteError("empty remote command")
    for arg in argv:
        if not isinstance(arg, str):
            raise RemoteError(f"remote command argument is not a string: {arg!r}")
        if "\0" in arg:
            raise RemoteError(f"remote command argument contains NUL: {arg!r}")
    return " ".join(shlex.quote(a) for a in argv)


_SHA256_LINE = re.compile(r"^\\?([0-9a-fA-F]{64}) [ *]", re.MULTILINE)


def remote_cache_path(local: Path, digest: str, cache_dir: str = REMOTE_CACHE_DIR) -> str:
    """Where ``local`` (with SHA-256 ``digest``) lives in the host's cache.

    ``<cache_dir>/<first 16 hex digits>-<file name>``: content-addressed, so
    two builds of ``shootdown-4k.elf`` from two checkouts never replace each
    other under a running QEMU, and the name still tells people what it is.
    """
    return posixpath.join(cache_dir, f"{digest[:16]}-{local.name}")


@dataclass(frozen=True)
class CommandResult:
    """What a finished remote command left behind."""

    #: The argument list that was run (before quoting).
    argv: tuple[str, ...]
    #: Its exit status; -1 when the server sent none (killed by a signal).
    exit_status: int
    #: Everything it wrote to stdout.
    stdout: bytes
    #: Everything it wrote to stderr.
    stderr: bytes


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a local file."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class Connection:
    """An open SSH connection to ``host`` (through its jump hosts, if any).

    Usable as a context manager; :meth:`close` is idempotent.
    """

    def __init__(self, host: SshHost, *, accept_new_host_key: bool | None = None,
                 timeout: float = CONNECT_TIMEOUT) -> None:
        self.host = host
        self.accept_new_host_key = (accept_new_from_env() if accept_new_host_key is None
                                    else accept_new_host_key)
        self.timeout = timeout
        self._clients: list[paramiko.SSHClient] = []
        self._home: str | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._made_dirs: set[str] = set()
        self.connect()

    # -- connecting ---------------------------------------------------------

    def connect(self) -> None:
        """Open the chain jump1 -> ... -> host; each hop's key is checked."""
        sock: paramiko.Channel | socket.socket | None = None
        chain = (*self.host.jumps, self.host)
        try:
            for i, hop in enumerate(chain):
                client = self._connect_one(hop, sock)
                self._clients.append(client)
                if i + 1 < len(chain):
                    sock = self._open_direct_tcpip(client, hop, chain[i + 1])
        except BaseException:
            self.close()
            raise
        self.transport.set_keepalive(KEEPALIVE_INTERVAL)
        log.info("connected to %s", self.host.describe())

    def _open_direct_tcpip(self, client: paramiko.SSHClient, hop: SshHost,
                           nxt: SshHost) -> paramiko.Channel:
        """A channel from ``hop`` to ``nxt``'s SSH port: the socket for the next hop."""
        transport = client.get_transport()
        assert transport is not None
        try:
            return transport.open_channel("direct-tcpip", (nxt.hostname, nxt.port),
                                          ("127.0.0.1", 0), timeout=self.timeout)
        except (paramiko.SSHException, OSError) as exc:
            raise RemoteError(f"{hop.describe()}: cannot forward to "
                              f"{nxt.hostname}:{nxt.port} (ProxyJump): {exc}") from exc

    def _open_socket(self, hop: SshHost) -> socket.socket:
        """TCP to the first hop, with Nagle off.

        paramiko leaves Nagle's algorithm on; every small SSH message (a
        channel open, a console command) then waits for the peer's delayed
        ACK, 40 ms a time on Linux.
        """
        try:
            sock = socket.create_connection((hop.hostname, hop.port), timeout=self.timeout)
        except (OSError, ValueError) as exc:
            raise RemoteError(f"{hop.describe()}: cannot connect: {exc}") from exc
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def _connect_one(self, hop: SshHost,
                     sock: paramiko.Channel | socket.socket | None) -> paramiko.SSHClient:
        client = paramiko.SSHClient()
        for path in (*hop.global_known_hosts, *hop.user_known_hosts):
            if not os.path.exists(path):
                continue
            try:
                # Read-only use: paramiko would rewrite a file given to
                # load_host_keys on save; AcceptNewHostKey appends instead.
                client.load_system_host_keys(path)
            except (OSError, paramiko.SSHException, ValueError) as exc:
                raise RemoteError(f"{path}: cannot read known host keys: {exc}") from exc
        if sock is None:
            sock = self._open_socket(hop)
        record_in = hop.user_known_hosts[0] if hop.user_known_hosts else os.path.expanduser(
            "~/.ssh/known_hosts")
        policy: paramiko.MissingHostKeyPolicy = (
            AcceptNewHostKey(record_in, hashed=hop.hash_known_hosts)
            if self.accept_new_host_key
            else RefuseUnknownHostKey(", ".join(hop.user_known_hosts) or "known_hosts"))
        client.set_missing_host_key_policy(policy)
        log.debug("connecting to %s (keys: %s, agent: %s)", hop.describe(),
                  ", ".join(hop.identity_files) or "default", not hop.identities_only)
        try:
            client.connect(
                hop.hostname, port=hop.port, username=hop.user,
                # paramiko takes a list here; its stubs only say str.
                key_filename=list(hop.identity_files) or None,  # type: ignore[arg-type]
                look_for_keys=not hop.identity_files, allow_agent=not hop.identities_only,
                sock=sock, timeout=self.timeout, banner_timeout=self.timeout,
                auth_timeout=self.timeout, passphrase=None, password=None)
        except RemoteError:
            client.close()
            raise
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise changed_key_error(hop.known_hosts_name, exc, record_in) from exc
        except paramiko.AuthenticationException as exc:
            client.close()
            raise RemoteError(f"{hop.describe()}: authentication failed ({exc}); "
                              "check IdentityFile in the ssh config or the ssh agent") from exc
        except paramiko.SSHException as exc:
            client.close()
            if "no authentication methods" in str(exc).lower():
                raise RemoteError(f"{hop.describe()}: authentication failed: no key to offer "
                                  "(no IdentityFile, no ssh agent, no ~/.ssh/id_*)") from exc
            raise RemoteError(f"{hop.describe()}: cannot connect: "
                              f"{exc or type(exc).__name__}") from exc
        except (OSError, EOFError, ValueError) as exc:
            client.close()
            raise RemoteError(f"{hop.describe()}: cannot connect: "
                              f"{exc or type(exc).__name__}") from exc
        return client

    @property
    def transport(self) -> paramiko.Transport:
        """The transport to the final host; RemoteError if the connection is gone."""
        transport = self._clients[-1].get_transport() if self._clients else None
        if transport is None or not transport.is_active():
            raise RemoteError(f"{self.host.describe()}: connection lost")
        return transport

    def is_active(self) -> bool:
        """Whether the connection to the final host is still up."""
        transport = self._clients[-1].get_transport() if self._clients else None
        return transport is not None and transport.is_active()

    def close_sftp(self) -> None:
        """Close the SFTP session if one is open (it is reopened on demand)."""
        if self._sftp is not None:
            with contextlib.suppress(Exception):
                self._sftp.close()
            self._sftp = None

    def close(self) -> None:
        """Close the SFTP session and every hop, innermost first."""
        self.close_sftp()
        while self._clients:
            with contextlib.suppress(Exception):
                self._clients.pop().close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- commands -----------------------------------------------------------

    def open_session(self, timeout: float | None = None) -> paramiko.Channel:
        """A new session channel on the connection (for a long-running command)."""
        try:
            return self.transport.open_session(timeout=timeout or self.timeout)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise RemoteError(f"{self.host.describe()}: cannot open a session: {exc}") from exc

    def run(self, argv: Sequence[str], *, timeout: float = 60.0,
            check: bool = True) -> CommandResult:
        """Run ``argv`` on the host (quoted, no pty) and collect its output.

        ``check``: raise RemoteError when the exit status is not 0.
        """
        command = shell_join(argv)
        log.debug("%s: run %s", self.host.alias, command)
        started = time.monotonic()
        chan = self.open_session(timeout=min(timeout, self.timeout))
        out: list[bytes] = []
        err: list[bytes] = []
        deadline = started + timeout
        # paramiko waits for the answer to an exec request without a time
        # limit; on a link that died silently that is for ever.  Closing the
        # channel at the deadline wakes it up (SSHException: channel closed).
        expired = threading.Event()

        def expire() -> None:
            expired.set()
            chan.close()

        watchdog = threading.Timer(max(deadline - time.monotonic(), 0.01), expire)
        watchdog.daemon = True
        watchdog.start()
        try:
            chan.exec_command(command)
            chan.shutdown_write()  # no stdin: a command that reads it sees EOF
            while True:
                remaining = deadline - time.monotonic()
                if chan.recv_ready():
                    out.append(chan.recv(65536))
                elif chan.recv_stderr_ready():
                    err.append(chan.recv_stderr(65536))
                elif chan.eof_received or chan.closed:
                    # No more output; the exit status may trail the EOF.
                    chan.status_event.wait(max(remaining, 0))
                    break
                elif remaining <= 0:
                    raise RemoteError(f"{self.host.describe()}: {argv[0]} did not "
                                      f"finish within {timeout:g} s")
                else:
                    select.select([chan], [], [], min(remaining, 1.0))
            if expired.is_set() or not chan.exit_status_ready():
                raise RemoteError(f"{self.host.describe()}: {argv[0]} did not "
                                  f"finish within {timeout:g} s")
            status = chan.exit_status
            if status == -1 and not self.is_active():
                raise RemoteError(f"{self.host.describe()}: connection lost while "
                                  f"running {argv[0]}")
        except (paramiko.SSHException, OSError, EOFError) as exc:
            if expired.is_set():
                raise RemoteError(f"{self.host.describe()}: {argv[0]} did not finish "
                                  f"within {timeout:g} s (link dead?)") from exc
            raise RemoteError(f"{self.host.describe()}: {argv[0]}: {exc}") from exc
        finally:
            watchdog.cancel()
            chan.close()
        result = CommandResult(tuple(argv), status, b"".join(out), b"".join(err))
        if check and status != 0:
            detail = result.stderr.decode(errors="replace").strip().splitlines()
            raise RemoteError(f"{self.host.describe()}: {argv[0]} exited with status "
                              f"{status}" + (f": {detail[-1]}" if detail else ""))
        return result

    # -- files --------------------------------------------------------------

    @property
    def sftp(self) -> paramiko.SFTPClient:
        """The connection's SFTP session, opened on first use."""
        if self._sftp is None:
            try:
                self._sftp = self._clients[-1].open_sftp()
            except (paramiko.SSHException, OSError, EOFError) as exc:
                raise RemoteError(f"{self.host.describe()}: cannot open SFTP: {exc}") from exc
        return self._sftp

    @property
    def home(self) -> str:
        """The login directory on the host, as an absolute path."""
        if self._home is None:
            try:
                self._home = self.sftp.normalize(".")
            except (OSError, paramiko.SSHException) as exc:
                raise RemoteError(f"{self.host.describe()}: cannot find the home "
                                  f"directory: {exc}") from exc
            finally:
                self.close_sftp()
        return self._home

    def _sftp_makedirs(self, directory: str) -> None:
        """``mkdir -p`` over SFTP: no remote shell (and its start-up) needed."""
        if not directory or directory in self._made_dirs:
            return
        parts = directory.split("/")
        for i in range(1, len(parts) + 1):
            prefix = "/".join(parts[:i])
            if not prefix or prefix in self._made_dirs:
                continue
            try:
                self.sftp.stat(prefix)
            except FileNotFoundError:
                with contextlib.suppress(OSError):  # made meanwhile by another run
                    self.sftp.mkdir(prefix, mode=0o700)
            self._made_dirs.add(prefix)

    def remote_sha256(self, path: str) -> str | None:
        """SHA-256 of a file on the host (``sha256sum``), None if it does not exist.

        The digest is looked for on its own line, so a login shell that
        prints a banner to stdout does not confuse it.
        """
        result = self.run(["sha256sum", "--", path], check=False)
        if result.exit_status != 0:
            return None
        # sha256sum marks a line whose file name needed escaping with a leading '\\'.
        found = _SHA256_LINE.findall(result.stdout.decode("ascii", errors="replace"))
        return found[-1].lower() if found else None

    def upload_cached(self, local: Path, *, cache_dir: str = REMOTE_CACHE_DIR,
                      digest: str | None = None, check_first: bool = True,
                      verify: bool = True) -> str:
        """Copy ``local`` into the cache directory on the host; its remote path.

        The remote name carries the content's hash (:func:`remote_cache_path`),
        so builds never overwrite each other and a QEMU already running keeps
        its file.  Skipped when the remote copy's SHA-256 (computed there with
        ``sha256sum``) equals the local one.  The upload goes to a temporary
        name and is renamed into place, so a concurrent run never sees half a
        file.  A relative ``cache_dir`` is relative to the login directory.
        ``check_first=False`` uploads without asking (content known to be new);
        ``verify=False`` skips the check after the upload (the caller checks).
        """
        digest = digest or sha256_file(local)
        remote = remote_cache_path(local, digest, cache_dir)
        if check_first and self.remote_sha256(remote) == digest:
            log.info("%s: %s is up to date (sha256 %s), upload skipped",
                     self.host.alias, remote, digest[:12])
            return remote
        tmp = f"{remote}.{uuid.uuid4().hex[:8]}.tmp"
        try:
            self._sftp_makedirs(posixpath.dirname(remote))
            self.sftp.put(str(local), tmp)
            self.sftp.posix_rename(tmp, remote)
        except (OSError, paramiko.SSHException) as exc:
            with contextlib.suppress(Exception):
                self.sftp.remove(tmp)
            raise RemoteError(f"{self.host.describe()}: uploading {local} to {remote} "
                              f"failed: {exc}") from exc
        finally:
            self.close_sftp()  # uploads are rare: no sftp-server idling on the host
        if verify and self.remote_sha256(remote) != digest:
            raise RemoteError(f"{self.host.describe()}: {remote}: SHA-256 differs after "
                              f"upload ({local} changed meanwhile?)")
        log.info("%s: uploaded %s to %s (sha256 %s)", self.host.alias, local, remote,
                 digest[:12])
        return remote

