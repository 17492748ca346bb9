"""A real OpenSSH server on a loopback port, for the remote-host tests.

The ``sshd`` fixture starts Debian's ``/usr/sbin/sshd`` in the foreground with
a throwaway host key, a throwaway user key and a configuration that lives in a
temporary directory; nothing of the machine's own ssh setup is read or
changed (except creating the privilege-separation directory ``/run/sshd``
that sshd insists on).  The client side gets its own ``ssh_config`` with
aliases and its own ``known_hosts``, exported through
``SHOOTDOWN_SSH_CONFIG``, so the tests exercise alias resolution too.

Tests are skipped, with the fix in the message, only when ``sshd`` or
``ssh-keygen`` is absent.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SSHD = "/usr/sbin/sshd"
SFTP_SERVER = "/usr/lib/openssh/sftp-server"
#: Alias of the loopback server in the generated ssh_config.
ALIAS = "sd-loop"
#: Alias that reaches the same server through itself as a jump host.
JUMP_ALIAS = "sd-via-jump"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _keygen(path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "shootdown-test",
                    "-f", str(path)], check=True)
    return path.with_suffix(".pub").read_text().strip()


def _descendants(pid: int) -> list[int]:
    """All descendants of ``pid`` (via /proc/<pid>/task/*/children)."""
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
            for k in kids:
                out.append(int(k))
                todo.append(int(k))
    return out


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


@dataclass
class Sshd:
    """A running test sshd and the client-side files that reach it."""

    #: Temporary directory holding every file below.
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
    #: Client known_hosts with the server's real key.
    known_hosts: Path
    #: The server's log (``sshd -e``).
    log: Path

    @property
    def known_hosts_name(self) -> str:
        return f"[127.0.0.1]:{self.port}"

    def session_pids(self) -> list[int]:
        """Per-connection sshd processes (not the listener, not their children)."""
        return [p for p in _descendants(self.proc.pid) if _comm(p) == "sshd"]

    def descendants(self) -> list[int]:
        """Every process below the listener (sessions and what they run)."""
        return _descendants(self.proc.pid)

    def kill_sessions(self) -> list[int]:
        """SIGKILL every sshd session process: the connection drops mid-run."""
        pids = self.session_pids()
        for p in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)
        return pids


def _write_config(d: Path, port: int, host_key: Path, log_level: str = "VERBOSE") -> Path:
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
LogLevel {log_level}
Subsystem sftp {sftp}
""")
    return cfg


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    """A real sshd on 127.0.0.1:<free port>, for the whole test session."""
    if not os.path.exists(SSHD) or shutil.which("ssh-keygen") is None:
        pytest.skip("OpenSSH server not installed: apt-get install openssh-server "
                    "(needs /usr/sbin/sshd and ssh-keygen)")
    d = tmp_path_factory.mktemp("sshd")
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # privilege-separation directory
    host_key = d / "ssh_host_ed25519_key"
    host_pub = _keygen(host_key)
    user_key = d / "id_ed25519"
    user_pub = _keygen(user_key)
    (d / "authorized_keys").write_text(user_pub + "\n")
    port = _free_port()
    cfg = _write_config(d, port, host_key)
    log = d / "sshd.log"
    with log.open("wb") as log_f:
        proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(cfg), "-p", str(port)],
                                stdout=log_f, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"sshd did not start: {log.read_text()[-2000:]}")
            time.sleep(0.05)
    known_hosts = d / "known_hosts"
    kind, b64 = host_pub.split()[:2]
    known_hosts.write_text(f"[127.0.0.1]:{port} {kind} {b64}\n")
    user = os.environ.get("USER") or __import__("getpass").getuser()
    ssh_config = d / "ssh_config"
    ssh_config.write_text(f"""\
Host {ALIAS}
    HostName 127.0.0.1
    Port {port}
    User {user}
    IdentityFile {user_key}
    IdentitiesOnly yes
    UserKnownHostsFile {known_hosts}

Host {JUMP_ALIAS}
    HostName 127.0.0.1
    Port {port}
    User {user}
    IdentityFile {user_key}
    IdentitiesOnly yes
    UserKnownHostsFile {known_hosts}
    ProxyJump {ALIAS}
""")
    server = Sshd(dir=d, port=port, proc=proc, host_key_pub=host_pub, user_key=user_key,
                  ssh_config=ssh_config, known_hosts=known_hosts, log=log)
    try:
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def ssh_env(sshd: Sshd, monkeypatch: pytest.MonkeyPatch) -> Sshd:
    """The sshd, with ``SHOOTDOWN_SSH_CONFIG`` pointing at its client config."""
    monkeypatch.setenv("SHOOTDOWN_SSH_CONFIG", str(sshd.ssh_config))
    monkeypatch.delenv("SHOOTDOWN_SSH_ACCEPT_NEW_HOST_KEY", raising=False)
    return sshd


def remote_qemus(server: Sshd) -> list[int]:
    """QEMU processes started through ``server`` (live, not zombies)."""
    out = []
    for pid in server.descendants():
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if _comm(pid).startswith("qemu-system") and state != "Z":
            out.append(pid)
    return out


@pytest.fixture
def no_remote_qemu_left(sshd: Sshd) -> Iterator[None]:
    """Fail the test if a QEMU started through the test sshd is still running after it.

    Only the sshd's descendants are looked at: other QEMUs on the machine
    (other test runs) are none of this test's business.  A QEMU gets a few
    seconds to finish exiting after the hang-up.
    """
    yield
    deadline = time.monotonic() + 5
    while remote_qemus(sshd) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = remote_qemus(sshd)
    assert not left, f"remote QEMU processes left behind: {left}"
