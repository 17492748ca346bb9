"""Debian's archive through apt itself, with a private configuration.

The host's apt is used as a verified downloader, never as an installer:
every option that names a file or directory apt would read or write points
into the user's cache directory (``$XDG_CACHE_HOME/shootdown/apt/<suite>``),
so the host's sources, lists, package cache, preferences and dpkg status are
neither read nor changed, and nothing is installed.

Trust comes from apt's own chain: the private sources list names Debian's
keyring (``signed-by``, package ``debian-archive-keyring``), ``apt-get
update`` checks the suite's ``InRelease`` signature against it and the
``Packages`` index against the SHA256 sums in that signed file, and
``apt-get download`` checks the ``.deb`` against the SHA256 in the index (a
mismatch is an error, never a warning).  :func:`sha256_of` lets the caller
check the file once more against the index's field and record it.

A missing network or archive is an :class:`~shootdown.errors.InfraError`
(exit 3) with one line: apt's HTTP timeout is short, it does not retry, and
the whole command has a deadline.

A mirror whose signed ``InRelease`` is past its ``Valid-Until`` (a stale
mirror or snapshot: apt's protection against being replayed old indexes) is
refused like any failure, with a hint: ``$SHOOTDOWN_APT_ALLOW_EXPIRED=1``
makes apt accept it (``Acquire::Check-Valid-Until=false``); the signature and
every SHA256 are still checked.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from shootdown.errors import ConfigError, InfraError

#: Debian's archive (override with ``$SHOOTDOWN_DEBIAN_MIRROR``).
DEFAULT_MIRROR = "http://deb.debian.org/debian"
#: Debian's archive keyring, from the ``debian-archive-keyring`` package.
DEFAULT_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
#: Seconds apt waits on a silent connection before giving up on it.
HTTP_TIMEOUT_S = 20
#: Deadline of ``apt-get update`` (indexes are ~10 MB).
UPDATE_DEADLINE_S = 180
#: Deadline of ``apt-get download`` (a kernel package is ~60 MB).
DOWNLOAD_DEADLINE_S = 900
#: Set to 1 to accept a suite whose signed Release file is past its Valid-Until.
ALLOW_EXPIRED_ENV = "SHOOTDOWN_APT_ALLOW_EXPIRED"


def allow_expired() -> bool:
    """Whether ``$SHOOTDOWN_APT_ALLOW_EXPIRED`` is 1 (anything else: no)."""
    return os.environ.get(ALLOW_EXPIRED_ENV, "") == "1"


def failure_line(tool: str, what: str, suite: str, url: str, first: str) -> str:
    """The one line of an apt failure; an expired Release file gets the way out."""
    line = f"{tool} {what} ({suite}, {url}) failed: {first}"
    if "is expired" in first or "Valid-Until" in first:
        line += (f" [the mirror's signed Release file is past its Valid-Until (a stale "
                 f"mirror); {ALLOW_EXPIRED_ENV}=1 accepts it, signatures and SHA256 sums "
                 "still checked]")
    return line


def cache_root() -> Path:
    """``$XDG_CACHE_HOME/shootdown`` (``~/.cache/shootdown`` by default)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "shootdown"


def mirror() -> str:
    """The archive's URL: ``$SHOOTDOWN_DEBIAN_MIRROR`` or Debian's own."""
    return os.environ.get("SHOOTDOWN_DEBIAN_MIRROR") or DEFAULT_MIRROR


@dataclass(frozen=True)
class PrivateApt:
    """apt for one Debian suite, arm64, configured entirely under ``root``."""

    #: the suite, e.g. ``bookworm``
    suite: str
    #: the private directory (lists, cache, state, sources)
    root: Path
    #: the archive's URL
    url: str = DEFAULT_MIRROR
    #: the keyring that must have signed the suite's Release file
    keyring: str = DEFAULT_KEYRING

    @classmethod
    def for_suite(cls, suite: str) -> PrivateApt:
        """The private apt of ``suite`` in the user's cache directory."""
        return cls(suite=suite, root=cache_root() / "apt" / suite, url=mirror())

    def options(self) -> list[str]:
        """The ``-o`` options that make apt read and write only under :attr:`root`."""
        r = self.root
        opts = {
            "Dir::Etc::sourcelist": r / "sources.list",
            "Dir::Etc::sourceparts": r / "empty.d",
            "Dir::Etc::preferences": r / "preferences",
            "Dir::Etc::preferencesparts": r / "empty.d",
            "Dir::State": r / "state",
            "Dir::State::Lists": r / "lists",
            "Dir::State::status": r / "status",
            "Dir::Cache": r / "cache",
            "APT::Architecture": "arm64",
            "APT::Architectures::": "arm64",
            "Acquire::Languages": "none",
            "Acquire::http::Timeout": str(HTTP_TIMEOUT_S),
            "Acquire::https::Timeout": str(HTTP_TIMEOUT_S),
            "Acquire::Retries": "0",
            "APT::Get::List-Cleanup": "true",
        }
        if allow_expired():
            opts["Acquire::Check-Valid-Until"] = "false"
        if os.geteuid() == 0:
            # Root's cache directory is not readable by apt's sandbox user
            # (_apt); apt would fall back with a warning on every run.
            opts["APT::Sandbox::User"] = "root"
        out: list[str] = []
        for key, value in opts.items():
            out += ["-o", f"{key}={value}"]
        return out

    def prepare(self) -> None:
        """Create the private tree and its sources list (idempotent)."""
        try:
            for sub in ("empty.d", "state", "lists/partial", "cache/archives/partial"):
                (self.root / sub).mkdir(parents=True, exist_ok=True)
            for name in ("preferences", "status"):
                (self.root / name).touch()
            line = (f"deb [arch=arm64 signed-by={self.keyring}] {self.url} "
                    f"{self.suite} main\n")
            sources = self.root / "sources.list"
            if not sources.is_file() or sources.read_text() != line:
                sources.write_text(line)
        except OSError as exc:
            raise InfraError(f"{self.root}: cannot prepare the private apt directory: "
                             f"{exc.strerror or exc}") from exc
        if not os.path.isfile(self.keyring):
            raise InfraError(f"{self.keyring}: Debian's archive keyring is missing "
                             "(apt-get install debian-archive-keyring, or run scripts/setup)")

    def _run(self, tool: str, args: list[str], deadline: float,
             cwd: Path | None = None) -> str:
        argv = [tool, *self.options(), *args]
        env = dict(os.environ, LC_ALL="C.UTF-8", DEBIAN_FRONTEND="noninteractive")
        env.pop("APT_CONFIG", None)
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=deadline,
                                  check=False, cwd=cwd, env=env, stdin=subprocess.DEVNULL)
        except FileNotFoundError as exc:
            raise InfraError(f"{tool}: not found (this needs Debian's apt)") from exc
        except subprocess.TimeoutExpired as exc:
            raise InfraError(f"{tool} {args[0]} ({self.suite}): no answer from {self.url} "
                             f"within {deadline:.0f} s") from exc
        problems = [line for line in done.stderr.splitlines()
                    if line.startswith(("E:", "W:", "Err:"))]
        if done.returncode != 0 or (tool == "apt-get" and problems):
            tail = done.stderr.strip().splitlines()
            first = problems[0] if problems else (tail[-1] if tail
                                                  else f"exit status {done.returncode}")
            raise InfraError(failure_line(tool, args[0], self.suite, self.url, first))
        return done.stdout

    def update(self) -> None:
        """``apt-get update``: fetch and verify the suite's signed indexes."""
        self.prepare()
        self._run("apt-get", ["update", "-q"], UPDATE_DEADLINE_S)

    def show(self, package: str) -> list[dict[str, str]]:
        """The index stanzas of ``package`` (every version), as field dicts."""
        from debian.deb822 import Packages

        try:
            text = self._run("apt-cache", ["show", "--no-all-versions", package], 60)
        except InfraError as exc:
            if "No packages found" in str(exc) or "Unable to locate" in str(exc):
                raise ConfigError(f"debian:{self.suite}: no package {package} in "
                                  f"{self.url} {self.suite} main (arm64)") from exc
            raise
        return [dict(p) for p in Packages.iter_paragraphs(text, use_apt_pkg=False)]

    def download(self, package: str, version: str, into: Path) -> Path:
        """``apt-get download package=version`` into ``into``; the ``.deb``'s path."""
        into.mkdir(parents=True, exist_ok=True)
        self._run("apt-get", ["download", "-q", f"{package}={version}"],
                  DOWNLOAD_DEADLINE_S, cwd=into)
        debs = sorted(into.glob(f"{package}_*.deb"))
        if len(debs) != 1:
            raise InfraError(f"apt-get download {package}={version}: expected one .deb in "
                             f"{into}, found {len(debs)}")
        return debs[0]


def sha256_of(path: Path) -> str:
    """The SHA256 of a file, hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
