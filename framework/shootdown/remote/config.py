"""Resolving a host name the way ``ssh`` does, through ``~/.ssh/config``.

A guest definition names a host (``host = "arm64-kvm"``); that name is an
alias in the user's OpenSSH client configuration, so the same file that makes
``ssh arm64-kvm`` work makes shootdown work: ``HostName``, ``Port``, ``User``,
``IdentityFile``, ``IdentitiesOnly``, ``ProxyJump`` and ``UserKnownHostsFile``
are honoured.  Nothing here opens a connection; this module only turns a name
into a :class:`SshHost` record.

``StrictHostKeyChecking`` is deliberately *not* honoured: accepting a new host
key is an explicit shootdown option (see :mod:`shootdown.remote.hostkeys`),
and a changed key is always refused.

The configuration file is ``$SHOOTDOWN_SSH_CONFIG`` when set (the tests use
it to point at a throwaway file), else ``~/.ssh/config``.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import paramiko

from shootdown.errors import ConfigError

log = logging.getLogger(__name__)

#: Environment variable naming an alternative ssh client configuration file.
SSH_CONFIG_ENV = "SHOOTDOWN_SSH_CONFIG"

#: Where OpenSSH keeps the known host keys when the configuration says nothing.
DEFAULT_USER_KNOWN_HOSTS = "~/.ssh/known_hosts"
DEFAULT_GLOBAL_KNOWN_HOSTS = "/etc/ssh/ssh_known_hosts"

#: What a DNS name, an IPv4 or an IPv6 address (with a %zone) may contain.
_HOSTNAME_RE = re.compile(r"[A-Za-z0-9_.:%-]+")

#: OpenSSH refuses ProxyJump chains longer than this; so do we, to stop loops.
MAX_JUMPS = 8


@dataclass(frozen=True)
class SshHost:
    """One SSH endpoint, resolved from the client configuration."""

    #: The name the user wrote (guest definition ``host`` or a ProxyJump hop).
    alias: str
    #: The real host name or address to connect to (``HostName``).
    hostname: str
    #: TCP port (``Port``), 22 by default.
    port: int = 22
    #: Login name (``User``); None means the local user name, as ssh does.
    user: str | None = None
    #: Private key files to offer (``IdentityFile``), already ``~``-expanded.
    identity_files: tuple[str, ...] = ()
    #: ``IdentitiesOnly yes``: do not ask the agent, only the files above.
    identities_only: bool = False
    #: Hosts to hop through, outermost first (``ProxyJump``).
    jumps: tuple[SshHost, ...] = ()
    #: Files that hold this user's known host keys; new keys go to the first.
    user_known_hosts: tuple[str, ...] = (DEFAULT_USER_KNOWN_HOSTS,)
    #: ``HashKnownHosts yes``: record new host keys under a hashed name.
    hash_known_hosts: bool = False
    #: System-wide known host keys, read only.
    global_known_hosts: tuple[str, ...] = (DEFAULT_GLOBAL_KNOWN_HOSTS,)
    #: The configuration file this came from, for error messages.
    config_path: str | None = field(default=None, compare=False)

    @property
    def known_hosts_name(self) -> str:
        """The name under which known_hosts stores this host's key.

        OpenSSH writes ``host`` for port 22 and ``[host]:port`` otherwise;
        paramiko looks keys up the same way.
        """
        if self.port == 22:
            return self.hostname
        return f"[{self.hostname}]:{self.port}"

    def describe(self) -> str:
        """``user@host:port`` (via jumps) for messages; never holds a secret."""
        who = f"{self.user}@" if self.user else ""
        text = f"{who}{self.hostname}:{self.port}"
        if self.alias != self.hostname:
            text = f"{self.alias} ({text})"
        if self.jumps:
            text += " via " + " -> ".join(j.alias for j in self.jumps)
        return text


def get_config_path() -> Path:
    """The ssh client configuration file shootdown reads."""
    return Path(os.environ.get(SSH_CONFIG_ENV) or "~/.ssh/config").expanduser()


#: OpenSSH's system-wide client configuration, read after the user's file.
SYSTEM_SSH_CONFIG = Path("/etc/ssh/ssh_config")


def _load_config(path: Path) -> paramiko.SSHConfig:
    """The user's file, then the system's, first value winning, as ``ssh`` does.

    With ``$SHOOTDOWN_SSH_CONFIG`` only that file is read, as with ``ssh -F``.
    (paramiko ignores ``Include``.)
    """
    config = paramiko.SSHConfig()
    files = [path] if os.environ.get(SSH_CONFIG_ENV) else [path, SYSTEM_SSH_CONFIG]
    for f in files:
        if not f.exists():
            continue
        try:
            with f.open() as fh:
                config.parse(fh)
        except (OSError, UnicodeDecodeError, paramiko.ssh_exception.ConfigParseError) as exc:
            raise ConfigError(f"{f}: cannot read ssh client configuration: {exc}") from exc
    return config


def _split_destination(text: str) -> tuple[str | None, str, int | None]:
    """Split a ProxyJump hop ``[user@]host[:port]`` (``[v6addr]:port`` too)."""
    user: str | None = None
    if "@" in text:
        user, text = text.rsplit("@", 1)
    port: int | None = None
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest.startswith(":"):
            port = int(rest[1:])
    elif text.count(":") == 1:
        host, port_text = text.split(":")
        port = int(port_text)
    else:
        host = text
    return user, host, port


def _paths(value: str | list[str] | None, default: Sequence[str]) -> tuple[str, ...]:
    if value is None:
        return tuple(default)
    items = value if isinstance(value, list) else value.split()
    return tuple(os.path.expanduser(v) for v in items if v.lower() != "none")


def resolve_host(name: str, *, config_path: Path | None = None) -> SshHost:
    """Resolve ``name`` (an alias or ``[user@]host[:port]``) to an :class:`SshHost`.

    Raises ConfigError on a malformed name or configuration, naming the file.
    """
    path = config_path or get_config_path()
    config = _load_config(path)
    return _resolve(name, config, str(path), depth=0)


def _resolve(name: str, config: paramiko.SSHConfig, path: str, depth: int) -> SshHost:
    if depth > MAX_JUMPS:
        raise ConfigError(f"{path}: ProxyJump: more than {MAX_JUMPS} hops (a loop?)")
    if not name or any(c.isspace() for c in name) or name.startswith("-"):
        raise ConfigError(f"host {name!r}: not a valid ssh destination "
                          f"([user@]host[:port], or a Host alias in {path})")
    try:
        user, alias, port = _split_destination(name)
    except ValueError as exc:
        raise ConfigError(f"{path}: host: invalid port in {name!r}") from exc
    entry = config.lookup(alias)
    if "proxycommand" in entry:
        raise ConfigError(f"{path}: {alias}: ProxyCommand is not supported, use ProxyJump")
    try:
        port = port or int(entry.get("port", 22))
    except ValueError as exc:
        raise ConfigError(f"{path}: {alias}: Port: not a number: {entry.get('port')!r}") from exc
    hostname = entry.get("hostname", alias)
    if not _HOSTNAME_RE.fullmatch(hostname):
        # OpenSSH refuses these too; they can only be a mistake or an attack.
        raise ConfigError(f"host {name!r}: host name {hostname!r} contains characters no "
                          f"host name has (see {path})")
    jumps: tuple[SshHost, ...] = ()
    jump_spec = entry.get("proxyjump")
    if jump_spec and jump_spec.lower() != "none":
        hops: list[SshHost] = []
        for hop in jump_spec.split(","):
            resolved = _resolve(hop.strip(), config, path, depth + 1)
            # A hop's own hops come first: ssh does the same for nested jumps.
            hops.extend(resolved.jumps)
            hops.append(SshHost(**{**resolved.__dict__, "jumps": ()}))
        jumps = tuple(hops)
    host = SshHost(
        alias=alias,
        hostname=hostname,
        port=port,
        user=user or entry.get("user"),
        identity_files=_paths(entry.get("identityfile"), ()),
        identities_only=entry.get("identitiesonly", "no").lower() == "yes",
        hash_known_hosts=entry.get("hashknownhosts", "no").lower() == "yes",
        jumps=jumps,
        user_known_hosts=_paths(entry.get("userknownhostsfile"),
                                (os.path.expanduser(DEFAULT_USER_KNOWN_HOSTS),)),
        global_known_hosts=_paths(entry.get("globalknownhostsfile"),
                                  (DEFAULT_GLOBAL_KNOWN_HOSTS,)),
        config_path=path,
    )
    log.debug("resolved host %r to %s", name, host.describe())
    return host
