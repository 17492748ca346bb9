"""Seats on a pool of hosts, shared by every process on this machine.

The matrix runner does not schedule: pytest-xdist's load scheduling hands
jobs to workers, and each worker, for each guest it boots, takes a *seat*:
one of ``max_guests`` slots on one host of the pool (this machine's cores
count as the host ``local``).  A seat is an exclusive ``flock`` on a small
file, ``<lock dir>/<host>.<slot>.lock``, so

- any number of processes (xdist workers, several pytest runs, a ``shootdown``
  run at the same time) share the limits without a server;
- a worker that crashes or is killed frees its seats automatically: the
  kernel drops a ``flock`` when the last descriptor of its file closes;
- no seat is taken twice even within one process (a flock belongs to the
  open file description, and each attempt opens the file anew).

The pool file (TOML, ``$SHOOTDOWN_HOSTS`` or a path given by the runner)::

    [[host]]
    name = "local"          # this machine (no SSH)
    max_guests = 2          # default: the number of CPUs
    [[host]]
    name = "x86-tcg-1"      # an ssh alias or [user@]host[:port]
    max_guests = 8

Limits are per controlling machine: two machines driving the same remote
host do not see each other's seats.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import re
import stat
import tempfile
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from shootdown.errors import ConfigError, InfraError
from shootdown.inputfile import read_toml

if TYPE_CHECKING:
    from shootdown.guest.definition import GuestDefinition
    from shootdown.guest.launcher import Launcher
    from shootdown.remote.launcher import SshLauncher

log = logging.getLogger(__name__)

#: Environment variable naming the pool file.
HOSTS_ENV = "SHOOTDOWN_HOSTS"
#: Environment variable naming the lock directory (default: a per-user temp dir).
SEATS_ENV = "SHOOTDOWN_SEATS_DIR"
#: The host name that means "this machine, no SSH".
LOCAL = "local"
#: Upper bound for one host's ``max_guests``: a typo should not open 10^6 seats.
MAX_SEATS_PER_HOST = 256

_SAFE_RE = re.compile(r"[^A-Za-z0-9_.-]")
#: Per-process launchers, one per remote host (see :meth:`Seat.launcher`).
_LAUNCHERS: dict[str, SshLauncher] = {}


@dataclass(frozen=True)
class PoolHost:
    """One host of a pool."""

    #: ``local``, an ssh alias or ``[user@]host[:port]``.
    name: str
    #: How many guests may run on it at once.
    max_guests: int

    @property
    def is_local(self) -> bool:
        return self.name == LOCAL


class Seat:
    """A held slot on one host; release it (or use it as a context manager)."""

    def __init__(self, host: PoolHost, slot: int, fd: int, path: Path) -> None:
        self.host = host
        self.slot = slot
        self._fd: int | None = fd
        self.path = path

    def __repr__(self) -> str:
        return f"Seat({self.host.name!r}, slot {self.slot})"

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Give the seat back (idempotent)."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
            log.debug("released %r", self)

    def __enter__(self) -> Seat:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def place(self, definition: GuestDefinition) -> GuestDefinition:
        """``definition`` moved onto this seat's host (unchanged if it names one)."""
        if definition.host or self.host.is_local:
            return definition
        return definition._replace(host=self.host.name)

    def launcher(self) -> Launcher:
        """A launcher for this seat's host, shared by every seat on it in this process.

        Reusing one :class:`SshLauncher` per host keeps its connection open and
        its firmware checks and QEMU version cached, so a worker pays the SSH
        handshake once per host, not once per guest (it reconnects by itself
        when the link dropped).
        """
        if self.host.is_local:
            from shootdown.guest.launcher import LocalLauncher

            return LocalLauncher()
        launcher = _LAUNCHERS.get(self.host.name)
        if launcher is None:
            from shootdown.remote.launcher import SshLauncher

            launcher = _LAUNCHERS[self.host.name] = SshLauncher(self.host.name)
        return launcher


def default_seats_dir() -> Path:
    """Where the lock files live: ``$SHOOTDOWN_SEATS_DIR`` or a per-user directory."""
    env = os.environ.get(SEATS_ENV)
    if env:
        return Path(env)
    base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    return Path(base) / f"shootdown-seats-{os.getuid()}"


def private_seats_dir(path: Path) -> None:
    """Make ``path`` (mode 0700) or check that it is ours alone; refuse it otherwise.

    The lock directory may sit in a shared place (``/tmp``): a directory that
    another user created, that others may write to, or that is a symbolic
    link would let them plant links to files we then create or lock.
    """
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            path.mkdir(mode=0o700)
        st = os.lstat(path)
    except OSError as exc:
        raise InfraError(f"{path}: cannot make the seat-lock directory: "
                         f"{exc.strerror or exc}") from exc
    if not stat.S_ISDIR(st.st_mode):
        raise InfraError(f"{path}: seat-lock directory is not a directory (a link or a file): "
                         "refused")
    if st.st_uid != os.getuid():
        raise InfraError(f"{path}: seat-lock directory is owned by uid {st.st_uid}, "
                         f"not by us (uid {os.getuid()}): refused")
    if stat.S_IMODE(st.st_mode) & 0o077:
        raise InfraError(f"{path}: seat-lock directory has mode "
                         f"{stat.S_IMODE(st.st_mode):04o}, expected 0700: refused")


class HostPool:
    """A set of hosts with per-host limits, and seat allocation over them."""

    def __init__(self, hosts: list[PoolHost], *, seats_dir: Path | None = None) -> None:
        if not hosts:
            raise ConfigError("host pool: no hosts")
        names = [h.name for h in hosts]
        if len(set(names)) != len(names):
            raise ConfigError(f"host pool: a host is listed twice: {names}")
        self.hosts = hosts
        self.seats_dir = seats_dir or default_seats_dir()
        private_seats_dir(self.seats_dir)

    @classmethod
    def load(cls, path: str | Path | None = None, *,
             seats_dir: Path | None = None) -> HostPool:
        """Read a pool file (see the module docstring); without one, just ``local``."""
        where = path or os.environ.get(HOSTS_ENV)
        if not where:
            return cls([PoolHost(LOCAL, os.cpu_count() or 1)], seats_dir=seats_dir)
        data = read_toml(where, "host pool file")
        unknown = set(data) - {"host"}
        if unknown:
            raise ConfigError(f"{where}: key '{sorted(unknown)[0]}': unknown (known: host)")
        entries = data.get("host", [])
        if not isinstance(entries, list):
            raise ConfigError(f"{where}: key 'host': expected an array of tables ([[host]])")
        hosts = []
        for i, entry in enumerate(entries):
            hosts.append(_pool_host(entry, f"{where}: host[{i}]"))
        if not hosts:
            raise ConfigError(f"{where}: no [[host]] tables: the pool has no hosts")
        return cls(hosts, seats_dir=seats_dir)

    def _lock_path(self, host: PoolHost, slot: int) -> Path:
        # Host names may hold '@', ':' or '['; keep the file name plain and unique.
        safe = _SAFE_RE.sub("_", host.name)
        tag = f"{zlib.crc32(host.name.encode()):08x}"
        return self.seats_dir / f"{safe}.{tag}.{slot}.lock"

    def _candidates(self, prefer: str | None) -> Iterator[tuple[PoolHost, int]]:
        # Start each worker at a different place so they do not all fight
        # over slot 0 of the first host; keep the listed host order otherwise.
        offset = zlib.crc32((prefer or str(os.getpid())).encode())
        pairs = [(h, s) for h in self.hosts for s in range(h.max_guests)]
        start = offset % len(pairs)
        yield from pairs[start:] + pairs[:start]

    def seat_for(self, definition: GuestDefinition, *, prefer: str | None = None,
                 timeout: float = 3600.0) -> Seat:
        """A seat for ``definition``: on its own host if it names one, else anywhere.

        A guest pinned to a host the pool does not list gets that host with
        ``max_guests = 1`` (its lock files work the same), so a pinned KVM
        guest never runs twice at once on a machine nobody declared.
        """
        if definition.host and definition.host not in {h.name for h in self.hosts}:
            log.info("host %s is not in the pool: at most one guest at a time there",
                     definition.host)
            self.hosts.append(PoolHost(definition.host, 1))
        return self.acquire(host=definition.host or None, prefer=prefer, timeout=timeout)

    def try_acquire(self, *, host: str | None = None, prefer: str | None = None) -> Seat | None:
        """A free seat now (on ``host`` if given), or None.

        ``prefer`` (e.g. the xdist worker id) spreads the starting point.
        """
        for candidate, slot in self._candidates(prefer):
            if host is not None and candidate.name != host:
                continue
            path = self._lock_path(candidate, slot)
            try:  # never follow a link planted in the lock directory
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
            except OSError as exc:
                raise InfraError(f"{path}: cannot open a seat lock: "
                                 f"{exc.strerror or exc}") from exc
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                    continue
                raise InfraError(f"{path}: cannot lock a seat: {exc}") from exc
            seat = Seat(candidate, slot, fd, path)
            log.debug("took %r", seat)
            return seat
        return None

    def acquire(self, *, host: str | None = None, prefer: str | None = None,
                timeout: float = 3600.0) -> Seat:
        """Wait up to ``timeout`` s for a free seat (on ``host`` if given)."""
        if host is not None and host not in {h.name for h in self.hosts}:
            raise ConfigError(f"host '{host}' is not in the pool "
                              f"({', '.join(h.name for h in self.hosts)})")
        deadline = time.monotonic() + timeout
        delay = 0.01
        while True:
            seat = self.try_acquire(host=host, prefer=prefer)
            if seat is not None:
                return seat
            if time.monotonic() >= deadline:
                raise InfraError(f"no free seat on {host or 'any host of the pool'} "
                                 f"within {timeout:g} s")
            time.sleep(delay)
            delay = min(delay * 2, 0.5)


def _pool_host(entry: object, where: str) -> PoolHost:
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: expected a table")
    unknown = set(entry) - {"name", "max_guests"}
    if unknown:
        raise ConfigError(f"{where}: key '{sorted(unknown)[0]}': unknown "
                          "(known: name, max_guests)")
    name = entry.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{where}: key 'name': expected a host name")
    default = (os.cpu_count() or 1) if name == LOCAL else 1
    max_guests = entry.get("max_guests", default)
    if not isinstance(max_guests, int) or isinstance(max_guests, bool) \
            or not 1 <= max_guests <= MAX_SEATS_PER_HOST:
        raise ConfigError(f"{where}: key 'max_guests': expected 1 to {MAX_SEATS_PER_HOST}, "
                          f"got {max_guests!r}")
    return PoolHost(name, max_guests)
