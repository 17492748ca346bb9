"""The SSH launcher: QEMU on another machine, looking like a local one.

:class:`SshLauncher` satisfies :class:`shootdown.guest.launcher.Launcher`, so
:class:`shootdown.guest.machine.Guest` takes it in place of the local one and
changes nothing else: same argv, same console records, same timeouts and
exceptions.  What it does on top:

- connects lazily, once per launcher, and reuses the connection for every
  guest it spawns (one handshake per host, not per boot);
- uploads the files QEMU loads (``-kernel``, ``-bios``, ``-dtb``,
  ``-initrd``) into the per-user cache on the host (content-addressed names)
  and rewrites those argv elements to the remote paths; the upload is
  skipped when the remote copy has the same SHA-256, which the start script
  checks in the same round trip that starts QEMU;
- has the start script check that the QEMU binary exists there, so a
  missing QEMU is a LaunchError naming the host, as it is locally;
- uploads the ``file=`` of ``-device loader,...`` (the session's scenario
  batch) before the start and rewrites it (``ships_loader_files``);
- writes QEMU's ``-D`` log (TCG logging, ``--trace``) on the host and
  fetches it into the local file the argv named once QEMU has ended.

:func:`launcher_for` picks the launcher for a guest definition: the SSH one
when it names a ``host``, the local one otherwise.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import posixpath
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from shootdown.errors import ConfigError, FirmwareError, LaunchError
from shootdown.guest.console_log import ConsoleLog
from shootdown.remote.config import SshHost, resolve_host
from shootdown.remote.connection import (
    REMOTE_CACHE_DIR,
    Connection,
    remote_cache_path,
    sha256_file,
)
from shootdown.remote.process import (
    DEFAULT_MAX_LIFETIME,
    ONCE_FD_PATH,
    RemoteFilesStale,
    RemoteProcess,
)

if TYPE_CHECKING:
    from shootdown.guest.definition import GuestDefinition
    from shootdown.guest.launcher import Launcher

log = logging.getLogger(__name__)

#: Environment variable overriding the remote upload directory.
REMOTE_CACHE_ENV = "SHOOTDOWN_REMOTE_CACHE_DIR"
#: QEMU options whose value is a local file QEMU reads: uploaded first.  The
#: ``file=`` of a ``-device loader,...`` is uploaded too.
FILE_OPTIONS = frozenset({"-kernel", "-bios", "-dtb", "-initrd"})
#: The QEMU option naming its log file (TCG logging, ``--trace``): the log is
#: written on the host and fetched back into the named local file.
LOG_OPTION = "-D"


def check_trace_supported(definition: GuestDefinition) -> None:
    """Refuse ``--trace`` for a guest it cannot work on, with the reason.

    Under KVM the guest runs on the real CPU: QEMU's TCG logging (``-d``),
    which ``--trace`` reads, does not exist there.  On a remote TCG host it
    works: the launcher fetches the ``-D`` log back when QEMU has ended.
    """
    if definition.accel == "kvm":
        raise ConfigError(
            f"{definition.source or definition.name}: --trace needs TCG (QEMU's -d logging); "
            f"this guest runs under accel = 'kvm' on the real CPU, where there is no TCG log. "
            "The console protocol and the probes still work: run without --trace")


class SshLauncher:
    """Starts QEMU on ``host`` over SSH (see the module docstring)."""

    #: Capability: files named by ``-device loader,file=...`` reach QEMU (they
    #: are uploaded), so the session's scenario batches work here too.
    ships_loader_files = True

    def __init__(self, host: str | SshHost, *, accept_new_host_key: bool | None = None,
                 max_lifetime: float | None = DEFAULT_MAX_LIFETIME,
                 config_path: Path | None = None,
                 remote_cache_dir: str | None = None) -> None:
        self.host = host if isinstance(host, SshHost) else resolve_host(
            host, config_path=config_path)
        self.accept_new_host_key = accept_new_host_key
        self.max_lifetime = max_lifetime
        #: Where uploads go on the host; relative to the login directory.
        self.remote_cache_dir = (remote_cache_dir or os.environ.get(REMOTE_CACHE_ENV)
                                 or REMOTE_CACHE_DIR)
        #: Where QEMU's -D logs are written on the host before they are fetched.
        self.remote_log_dir = posixpath.join(posixpath.dirname(
            self.remote_cache_dir.rstrip("/")) or ".", "logs")
        self._log_dir_made = False
        self._conn: Connection | None = None
        self._versions: dict[str, str] = {}
        #: QEMU binary name -> ``size:mtime`` on the host, from the start script.
        self._binary_ids: dict[str, str] = {}
        #: (sha256, remote path) known to be in place on this host.
        self._verified: set[tuple[str, str]] = set()

    @property
    def connection(self) -> Connection:
        """The connection to the host, opened (again) on demand."""
        if self._conn is None or not self._conn.is_active():
            if self._conn is not None:
                self._conn.close()
            self._conn = Connection(self.host, accept_new_host_key=self.accept_new_host_key)
        return self._conn

    def close(self) -> None:
        """Close the connection (guests still running on it are hung up)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> SshLauncher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def describe(self) -> str:
        return f"ssh://{self.host.alias}"

    def _plan(self, argv: Sequence[str]) -> tuple[list[str], list[_Upload],
                                                  list[tuple[str, str]]]:
        """The remote argv, the files to upload and the logs to fetch (nothing sent yet)."""
        out = list(argv)
        uploads: list[_Upload] = []
        downloads: list[tuple[str, str]] = []
        for i, arg in enumerate(out[:-1]):
            value = out[i + 1]
            if arg == LOG_OPTION:
                remote_log = posixpath.join(self.remote_log_dir,
                                            f"{uuid.uuid4().hex[:12]}-{Path(value).name}")
                downloads.append((remote_log, value))
                out[i + 1] = remote_log
            elif arg in FILE_OPTIONS:
                up = self._upload_for(Path(value), f"QEMU {arg}", eager=False)
                uploads.append(up)
                out[i + 1] = up.remote
            elif arg == "-device" and value.startswith("loader,"):
                opts = split_qemu_opts(value)
                for j, opt in enumerate(opts):
                    if opt.startswith("file="):
                        # A loader blob (a scenario batch) is new for every run:
                        # sent before the start, without asking the host first.
                        # The first one is opened by the start script on fd 3
                        # and unlinked at once, so no run leaves it behind.
                        once = not any(u.once for u in uploads)
                        up = self._upload_for(Path(opt[5:]), "QEMU -device loader", eager=True,
                                              once=once)
                        uploads.append(up)
                        opts[j] = "file=" + (ONCE_FD_PATH if once else up.remote)
                out[i + 1] = join_qemu_opts(opts)
        return out, uploads, downloads

    def _upload_for(self, local: Path, what: str, *, eager: bool,
                    once: bool = False) -> _Upload:
        if not local.is_file():
            raise FirmwareError(f"{local}: no such file ({what})")
        digest = sha256_file(local)
        return _Upload(local, digest, remote_cache_path(local, digest, self.remote_cache_dir),
                       eager, once)

    def remote_argv(self, argv: Sequence[str]) -> list[str]:
        """``argv`` with the files QEMU loads uploaded now and their paths rewritten."""
        remote, uploads, _ = self._plan(argv)
        for up in uploads:
            self.connection.upload_cached(up.local, cache_dir=self.remote_cache_dir,
                                          digest=up.digest)
            self._verified.add((up.digest, up.remote))
        return remote

    def spawn(self, argv: Sequence[str], log_path: str | os.PathLike[str]) -> RemoteProcess:
        """Start ``argv`` on the host; every console byte goes to ``log_path``.

        The start script checks the uploaded files (those not yet seen on this
        connection) in the same round trip; only when one is missing or
        different are they uploaded and QEMU started again.
        """
        if not argv:
            raise LaunchError("empty QEMU command line")
        remote, uploads, downloads = self._plan(argv)
        conn = self.connection
        if downloads and not self._log_dir_made:
            conn.run(["mkdir", "-p", "--", self.remote_log_dir])
            self._log_dir_made = True
        try:  # capped, head and tail kept, as for local guests: guest/console_log.py
            log_file = ConsoleLog(log_path)
        except OSError as exc:
            raise LaunchError(f"{os.fspath(log_path)}: cannot create the console log: "
                              f"{exc.strerror or exc}") from exc
        try:
            eager = [u for u in uploads if u.eager]
            cleanup = [u.remote for u in eager if not u.once]
            once = next((u.remote for u in uploads if u.once), "")
            for up in eager:
                # The start script checks its hash in the same round trip.
                conn.upload_cached(up.local, cache_dir=self.remote_cache_dir,
                                   digest=up.digest, check_first=False, verify=False)
            checks = [(u.digest, u.remote) for u in uploads
                      if (u.digest, u.remote) not in self._verified]
            try:
                proc = RemoteProcess.start(conn, remote, log_file,
                                           max_lifetime=self.max_lifetime, checks=checks,
                                           downloads=downloads, cleanup=cleanup, once=once)
            except RemoteFilesStale:
                for up in uploads:
                    conn.upload_cached(up.local, cache_dir=self.remote_cache_dir,
                                       digest=up.digest)
                proc = RemoteProcess.start(conn, remote, log_file,
                                           max_lifetime=self.max_lifetime,
                                           downloads=downloads, cleanup=cleanup, once=once)
        except BaseException:
            log_file.close()
            raise
        self._verified.update((u.digest, u.remote) for u in uploads if not u.eager)
        if proc.binary_id:
            self._binary_ids[argv[0]] = proc.binary_id
        return proc

    def qemu_version(self, binary: str) -> str:
        """First line of ``binary --version`` on the host.

        Cached per launcher and, once a guest has been spawned, on disk by
        host, binary name, size and mtime (which the start script reports):
        asking QEMU its version costs a remote command and a QEMU start-up,
        more than the rest of a warm run.
        """
        if binary not in self._versions:
            key = None
            if binary in self._binary_ids:
                key = f"{self.host.known_hosts_name}|{binary}|{self._binary_ids[binary]}"
                cached = _read_version_cache().get(key)
                if isinstance(cached, str):
                    self._versions[binary] = cached
                    return cached
            result = self.connection.run([binary, "--version"], check=False)
            if result.exit_status == 127:
                raise LaunchError(f"{binary}: QEMU binary not found on "
                                  f"{self.host.describe()}")
            lines = (result.stdout or result.stderr).decode(errors="replace").splitlines()
            # Skip a login-shell banner: QEMU's line starts with its name.
            first = next((ln.strip() for ln in lines if ln.startswith("QEMU")),
                         next((ln.strip() for ln in lines if ln.strip()),
                              f"unknown (exit status {result.exit_status})"))
            self._versions[binary] = first
            if key is not None and result.exit_status == 0:
                _write_version_cache(key, first)
        return self._versions[binary]


def _version_cache_path() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "shootdown" / "remote-qemu-version.json"


def _read_version_cache() -> dict[str, object]:
    try:
        data = json.loads(_version_cache_path().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_version_cache(key: str, version: str) -> None:
    """Add one entry; a read-only or racing cache is no reason to fail a run."""
    path = _version_cache_path()
    entries = _read_version_cache()
    entries[key] = version
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(entries, indent=1))
        os.replace(tmp, path)
    except OSError as exc:
        log.debug("cannot cache the remote QEMU version in %s: %s", path, exc)


class _Upload(NamedTuple):
    """A local file QEMU loads, and where it goes on the host."""

    local: Path
    digest: str
    remote: str
    #: Upload before starting QEMU without asking the host whether it has it.
    eager: bool = False
    #: QEMU reads it on descriptor 3; the start script unlinks it first.
    once: bool = False


def split_qemu_opts(value: str) -> list[str]:
    """QEMU's ``a=b,c=d`` option string as its parts; ``,,`` is a literal comma."""
    parts: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(value):
        if value[i] == ",":
            if value[i + 1:i + 2] == ",":
                current.append(",")
                i += 2
                continue
            parts.append("".join(current))
            current = []
        else:
            current.append(value[i])
        i += 1
    parts.append("".join(current))
    return parts


def join_qemu_opts(parts: Sequence[str]) -> str:
    """The inverse of :func:`split_qemu_opts`: commas in values doubled."""
    return ",".join(p.replace(",", ",,") for p in parts)


def launcher_for(target: str | GuestDefinition, *,
                 accept_new_host_key: bool | None = None) -> Launcher:
    """The launcher for a guest definition (or a bare host name).

    A definition without ``host`` runs locally.  For a definition, the remote
    QEMU's lifetime is capped at twice the guest's total budget (at least a
    minute): the watchdog of last resort for a link that dies without either
    side noticing.  A bare host name gets :data:`DEFAULT_MAX_LIFETIME`.

    SSH launchers are shared within a process (one per host and settings), so
    a matrix worker that runs many guests on one host keeps one connection
    open, checks the firmware once and asks the QEMU version once.  They are
    closed at interpreter exit.
    """
    if isinstance(target, str):
        host, lifetime = target, float(DEFAULT_MAX_LIFETIME)
    elif not target.host:
        from shootdown.guest.launcher import LocalLauncher

        return LocalLauncher()
    else:
        host, lifetime = target.host, max(60.0, 2 * target.timeouts.total)
    # Keyed by the resolved host and the cache directory (the environment may
    # change between calls, in tests at least), not by the name.
    resolved = resolve_host(host)
    key = (resolved, lifetime, accept_new_host_key, os.environ.get(REMOTE_CACHE_ENV))
    launcher = _SHARED.get(key)
    if launcher is None:
        if not _SHARED:
            atexit.register(close_shared_launchers)
        launcher = _SHARED[key] = SshLauncher(resolved, accept_new_host_key=accept_new_host_key,
                                              max_lifetime=lifetime)
    return launcher


#: Launchers handed out by :func:`launcher_for`, by (host, lifetime, accept-new).
_SHARED: dict[tuple[SshHost, float, bool | None, str | None], SshLauncher] = {}


def close_shared_launchers() -> None:
    """Close every shared launcher's connection (sshd then ends its sessions)."""
    while _SHARED:
        _, launcher = _SHARED.popitem()
        launcher.close()
