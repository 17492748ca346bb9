"""A throwaway OpenSSH server on 127.0.0.1, for tests and the overhead benchmark.

:func:`start_loopback_sshd` starts Debian's ``/usr/sbin/sshd`` in the
foreground on a free loopback port with a fresh host key, a fresh user key and
a configuration that all live in one directory; it writes a matching client
``ssh_config`` (aliases :data:`ALIAS` and :data:`JUMP_ALIAS`, the latter
reaching the same server through itself with ProxyJump) and ``known_hosts``.
Point ``SHOOTDOWN_SSH_CONFIG`` at :attr:`LoopbackSshd.ssh_config` and a guest
definition with ``host = "sd-loop"`` runs "remotely" on this machine.

Nothing of the machine's own ssh setup is read or changed, except that the
privilege-separation directory ``/run/sshd`` is created when missing (sshd
refuses to start without it).  Runs as root (log in as root with the key) or
as an ordinary user (log in as that user: sshd without privileges can only
authenticate its own user, which is all we need).
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from shootdown.errors import InfraError

SSHD = "/usr/sbin/sshd"
SFTP_SERVER = "/usr/lib/openssh/sftp-server"
#: Alias of the loopback server in the generated ssh_config.
ALIAS = "sd-loop"
#: Alias that reaches the same server through itself as a jump host.
JUMP_ALIAS = "sd-via-jump"


def sshd_missing() -> str | None:
    """Why a loopback sshd cannot start here (with the fix), or None."""
    if not os.path.exists(SSHD):
        return f"{SSHD} not found: apt-get install openssh-server"
    if shutil.which("ssh-keygen") is None:
        return "ssh-keygen not found: apt-get install openssh-client"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _keygen(path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "shootdown-loopback",
                    "-f", str(path)], check=True)
    return path.with_suffix(".pub").read_text().strip()


def descendants(pid: int) -> list[int]:
    """Every descendant of ``pid``, from ``/proc/<pid>/task/*/children``."""
    out: list[int] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for t in tasks:
            try:
                kids = Path(f"/proc/{p}/task/{t}/children").read_text().split()
            except OSError:
                continue
            out.extend(int(k) for k in kids)
            todo.extend(int(k) for k in kids)
    return out


def comm(pid: int) -> str:
    """A process's command name, '' if it is gone."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


@dataclass
class LoopbackSshd:
    """A running loopback sshd and the client-side files that reach it."""

    #: Directory holding every file below.
    dir: Path
    #: TCP port on 127.0.0.1.
    port: int
    #: The listener process.
    proc: subprocess.Popen[bytes]
    #: The server's public host key line (``ssh-ed25519 AAAA... comment``).
    host_key_pub: str
    #: The client's private key file.
    user_key: Path
    #: Generated client configuration (aliases :data:`ALIAS`, :data:`JUMP_ALIAS`).
    ssh_config: Path
    #: Client known_hosts holding the server's real key.
    known_hosts: Path
    #: The server's log (``sshd -e``).
    log: Path

    @property
    def known_hosts_name(self) -> str:
        """How known_hosts names this server."""
        return f"[127.0.0.1]:{self.port}"

    def session_pids(self) -> list[int]:
        """Per-connection sshd processes (not the listener, not what they run)."""
        return [p for p in descendants(self.proc.pid) if comm(p) == "sshd"]

    def descendants(self) -> list[int]:
        """Every process below the listener (sessions and what they run)."""
        return descendants(self.proc.pid)

    def kill_sessions(self) -> list[int]:
        """SIGKILL every sshd session process: the connections drop at once."""
        pids = self.session_pids()
        for p in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)
        return pids

    def stop(self) -> None:
        """Stop the listener (sessions end with it)."""
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> LoopbackSshd:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _sshd_config(d: Path, port: int, host_key: Path) -> Path:
    cfg = d / "sshd_config"
    sftp = SFTP_SERVER if os.path.exists(SFTP_SERVER) else "internal-sftp"
    cfg.write_text(f"""\
Port {port}
ListenAddress 127.0.0.1
HostKey {host_key}
PidFile {d}/sshd.pid
AuthorizedKeysFile {d}/authorized_keys
StrictModes no
UsePAM no
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
AllowTcpForwarding yes
AllowAgentForwarding no
X11Forwarding no
PrintMotd no
LogLevel VERBOSE
Subsystem sftp {sftp}
""")
    return cfg


def start_loopback_sshd(directory: Path, *, start_timeout: float = 10.0) -> LoopbackSshd:
    """Start sshd on a free loopback port with everything in ``directory``."""
    why = sshd_missing()
    if why:
        raise InfraError(why)
    d = directory
    d.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # privilege separation
    host_key = d / "ssh_host_ed25519_key"
    host_pub = _keygen(host_key)
    user_key = d / "id_ed25519"
    (d / "authorized_keys").write_text(_keygen(user_key) + "\n")
    port = _free_port()
    cfg = _sshd_config(d, port, host_key)
    log = d / "sshd.log"
    with log.open("wb") as log_f:
        proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(cfg), "-p", str(port)],
                                stdout=log_f, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + start_timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                raise InfraError(f"sshd did not start: {log.read_text()[-2000:]}") from None
            time.sleep(0.05)
    known_hosts = d / "known_hosts"
    kind, b64 = host_pub.split()[:2]
    known_hosts.write_text(f"[127.0.0.1]:{port} {kind} {b64}\n")
    user = getpass.getuser()
    block = f"""\
    HostName 127.0.0.1
    Port {port}
    User {user}
    IdentityFile {user_key}
    IdentitiesOnly yes
    UserKnownHostsFile {known_hosts}
"""
    ssh_config = d / "ssh_config"
    ssh_config.write_text(f"Host {ALIAS}\n{block}\nHost {JUMP_ALIAS}\n{block}"
                          f"    ProxyJump {ALIAS}\n")
    return LoopbackSshd(dir=d, port=port, proc=proc, host_key_pub=host_pub, user_key=user_key,
                        ssh_config=ssh_config, known_hosts=known_hosts, log=log)
