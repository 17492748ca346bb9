"""Host key policy: refuse what we cannot verify, unless told otherwise.

A validation run that silently talks to the wrong machine produces results
nobody can trust, and a man in the middle could feed it any console text.  So:

- a host whose key is in a known_hosts file and matches: accepted;
- a host whose key differs from the recorded one (same or other key type):
  **always refused** (:class:`paramiko.BadHostKeyException`, turned into a
  RemoteError by the connection code), whatever the options say;
- a host with no recorded key: refused, unless the user opted in with
  ``accept_new_host_key=True`` or ``SHOOTDOWN_SSH_ACCEPT_NEW_HOST_KEY=1``, in
  which case the key is appended to the user's known_hosts file (OpenSSH's
  ``StrictHostKeyChecking=accept-new``) and later changes are refused.

Messages carry the SHA256 fingerprint in OpenSSH's notation so the user can
compare it with ``ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub`` on the host.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
from pathlib import Path

import paramiko

from shootdown.errors import RemoteError

log = logging.getLogger(__name__)

#: Environment variable that opts in to accepting (and recording) unknown keys.
ACCEPT_NEW_ENV = "SHOOTDOWN_SSH_ACCEPT_NEW_HOST_KEY"


def accept_new_from_env() -> bool:
    """True when the environment opts in to accepting unknown host keys."""
    return os.environ.get(ACCEPT_NEW_ENV, "").strip().lower() in ("1", "yes", "true")


def fingerprint(key: paramiko.PKey) -> str:
    """``SHA256:<base64>`` as ``ssh-keygen -l`` prints it."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


class RefuseUnknownHostKey(paramiko.MissingHostKeyPolicy):
    """Refuse a host that is not in any known_hosts file, with the fix in the message."""

    def __init__(self, known_hosts: str) -> None:
        self.known_hosts = known_hosts

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str,
                         key: paramiko.PKey) -> None:
        raise RemoteError(
            f"{hostname}: unknown host key {key.get_name()} {fingerprint(key)} "
            f"(not in {self.known_hosts}); refusing to connect. Verify the fingerprint, "
            f"then run `ssh {hostname}` once, or pass accept_new_host_key / "
            f"set {ACCEPT_NEW_ENV}=1 to record it")


class AcceptNewHostKey(paramiko.MissingHostKeyPolicy):
    """Record an unknown host's key in the user's known_hosts and go on.

    Only reached for hosts with no recorded key at all; a changed key never
    gets here (paramiko raises BadHostKeyException before asking a policy).
    The line is appended rather than the file rewritten, so the user's
    comments and hashed entries survive.
    """

    def __init__(self, known_hosts: str, *, hashed: bool = False) -> None:
        self.known_hosts = known_hosts
        #: Write the host name hashed (``HashKnownHosts yes``), as ssh would.
        self.hashed = hashed

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str,
                         key: paramiko.PKey) -> None:
        path = Path(self.known_hosts).expanduser()
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        name = paramiko.HostKeys.hash_host(hostname) if self.hashed else hostname
        with path.open("a", encoding="ascii") as f:
            f.write(f"{name} {key.get_name()} {key.get_base64()}\n")
        client.get_host_keys().add(hostname, key.get_name(), key)
        log.warning("%s: accepted new host key %s %s, recorded in %s",
                    hostname, key.get_name(), fingerprint(key), path)


def changed_key_error(host: str, exc: paramiko.BadHostKeyException,
                      known_hosts: str) -> RemoteError:
    """The RemoteError for a host whose key differs from the recorded one."""
    return RemoteError(
        f"{host}: HOST KEY CHANGED: got {exc.key.get_name()} {fingerprint(exc.key)}, "
        f"known_hosts has {exc.expected_key.get_name()} {fingerprint(exc.expected_key)}; "
        f"refusing to connect (possible man-in-the-middle). If the host was really "
        f"reinstalled, remove the old entry with `ssh-keygen -R '{host}' -f {known_hosts}`")
