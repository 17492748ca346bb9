"""Remote processes over a real sshd: console streaming, kill, dropped connections.

The "QEMU" here is either a small shell program (for the console plumbing)
or a real ``qemu-system-aarch64`` with no firmware, which sits in the boot
ROM for ever: a hung guest without needing the firmware build.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest

from shootdown.errors import FirmwareError, LaunchError, RemoteError
from shootdown.remote.config import resolve_host
from shootdown.remote.launcher import SshLauncher
from shootdown.remote.process import RemoteProcess

from .conftest import ALIAS, Sshd
from .test_connection import hostile

QEMU = os.environ.get("SHOOTDOWN_QEMU") or "qemu-system-aarch64"  # the QEMU the suite tests
needs_qemu = pytest.mark.skipif(shutil.which(QEMU) is None,
                                reason=f"{QEMU} not installed (apt-get install qemu-system-arm)")


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie (the remote host is this machine)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.05)
    return False


def hung_qemu_argv(tag: str) -> list[str]:
    """A real QEMU that never prints and never exits (no firmware to run)."""
    return [QEMU, "-M", "virt", "-cpu", "cortex-a57", "-m", "64M", "-nographic",
            "-nodefaults", "-no-user-config", "-serial", "stdio", "-name", tag]


@pytest.fixture
def launcher(ssh_env: Sshd, tmp_path: Path) -> Iterator[SshLauncher]:
    with SshLauncher(ALIAS, max_lifetime=120,
                     remote_cache_dir=str(tmp_path / "remote-cache")) as ssh:
        yield ssh


def test_console_round_trip_and_exit_status(launcher: SshLauncher, tmp_path: Path) -> None:
    log_path = tmp_path / "console.log"
    script = 'echo ready; read line; echo "got:$line"; exit 5'
    proc = launcher.spawn(["sh", "-c", script], log_path)
    try:
        assert proc.exitstatus is None and proc.is_alive()
        proc.console.expect(b"ready\r\n", timeout=10)
        proc.console.send(b"hello world\n")
        proc.console.expect(b"got:hello world\r\n", timeout=10)
        assert proc.wait(10) == 5
        with pytest.raises(pexpect.EOF):
            proc.console.read_nonblocking(100, timeout=5)
    finally:
        proc.kill()
    logged = log_path.read_bytes()
    assert logged.startswith(b"ready\r\n")
    assert b"got:hello world" in logged
    assert b"shootdown-remote-pid" not in logged, "the start marker is not console output"
    assert b"hello world\r\n" not in logged.split(b"got:")[0], "the pty does not echo"


def test_read_timeout(launcher: SshLauncher, tmp_path: Path) -> None:
    proc = launcher.spawn(["sleep", "60"], tmp_path / "log")
    try:
        t0 = time.monotonic()
        with pytest.raises(pexpect.TIMEOUT):
            proc.console.read_nonblocking(10, timeout=0.5)
        assert 0.4 < time.monotonic() - t0 < 3
    finally:
        proc.kill()
    assert wait_gone(proc.pid)


@needs_qemu
def test_kill_ends_the_remote_qemu(launcher: SshLauncher, tmp_path: Path) -> None:
    proc = launcher.spawn(hung_qemu_argv(f"sd-kill-{uuid.uuid4().hex[:8]}"), tmp_path / "log")
    assert pid_alive(proc.pid)
    assert proc.wait(1.0) is None, "a QEMU with no firmware keeps running"
    proc.kill()
    proc.kill()  # idempotent
    assert wait_gone(proc.pid)
    assert proc.exitstatus is not None and proc.exitstatus < 0


@needs_qemu
def test_dropped_connection_is_remote_error_and_leaves_nothing(
        launcher: SshLauncher, ssh_env: Sshd, tmp_path: Path, no_remote_qemu_left: None) -> None:
    proc = launcher.spawn(hung_qemu_argv(f"sd-drop-{uuid.uuid4().hex[:8]}"), tmp_path / "log")
    assert pid_alive(proc.pid)
    time.sleep(0.5)  # let QEMU set its terminal up: the hang-up must reach a running QEMU
    killed = ssh_env.kill_sessions()
    assert killed, "no sshd session process found"
    try:
        with pytest.raises(RemoteError, match="connection lost"):
            proc.console.read_nonblocking(100, timeout=10)
        assert wait_gone(proc.pid), "QEMU survived the dropped connection"
        assert proc.exitstatus == -signal.SIGHUP
    finally:
        proc.kill()  # must not raise on a dead connection
    # The launcher reconnects for the next guest.
    assert launcher.connection.run(["echo", "back"]).stdout == b"back\n"


@needs_qemu
def test_dropped_connection_without_lifetime_watchdog(ssh_env: Sshd, tmp_path: Path) -> None:
    """The pty hang-up alone ends QEMU: the ``timeout`` wrapper is not what does it."""
    with SshLauncher(ALIAS, max_lifetime=None) as launcher:
        proc = launcher.spawn(hung_qemu_argv("sd-drop-nowatchdog"), tmp_path / "log")
        time.sleep(0.5)
        assert ssh_env.kill_sessions()
        with pytest.raises(RemoteError):
            proc.console.read_nonblocking(100, timeout=10)
        assert wait_gone(proc.pid)
        proc.kill()


def test_lifetime_cap_kills(ssh_env: Sshd, tmp_path: Path) -> None:
    with SshLauncher(ALIAS, max_lifetime=1) as launcher:
        proc = launcher.spawn(["sleep", "60"], tmp_path / "log")
        assert proc.wait(10) is not None, "the lifetime watchdog did not fire"
        assert wait_gone(proc.pid)
        proc.kill()


@needs_qemu
def test_hostile_qemu_arguments_fail_cleanly(launcher: SshLauncher, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    argv = [QEMU, "-M", "virt", "-nographic", "-nodefaults", "-serial", "stdio",
            "-name", f"x; touch {marker}", *hostile(marker)]
    proc = launcher.spawn(argv, tmp_path / "log")
    try:
        proc.console.expect(pexpect.EOF, timeout=20)  # the log holds what was read
        status = proc.wait(20)
        assert status is not None and status != 0, "QEMU should reject the stray arguments"
    finally:
        proc.kill()
    assert not marker.exists()
    assert b"qemu-system-aarch64" in (tmp_path / "log").read_bytes()  # its error message


def test_hostile_argv_reaches_the_program_verbatim(launcher: SshLauncher,
                                                    tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    args = [a for a in hostile(marker) if "\n" not in a]  # one record per line below
    proc = launcher.spawn(["printf", "<%s>\\n", *args], tmp_path / "log")
    proc.console.expect(pexpect.EOF, timeout=10)
    proc.wait(10)
    proc.kill()
    lines = (tmp_path / "log").read_bytes().split(b"\r\n")[:-1]
    assert lines == [f"<{a}>".encode() for a in args]
    assert not marker.exists()


def test_missing_binary_is_launch_error(launcher: SshLauncher, tmp_path: Path) -> None:
    with pytest.raises(LaunchError, match="not found on"):
        launcher.spawn(["qemu-system-nonexistent", "-M", "virt"], tmp_path / "log")


def test_missing_firmware_is_firmware_error(launcher: SshLauncher, tmp_path: Path) -> None:
    with pytest.raises(FirmwareError, match="no such file"):
        launcher.spawn(["sh", "-kernel", str(tmp_path / "nope.elf")], tmp_path / "log")


def test_kernel_is_uploaded_and_rewritten(launcher: SshLauncher, tmp_path: Path) -> None:
    fw = tmp_path / "shootdown-4k.elf"
    fw.write_bytes(os.urandom(4096))
    argv = launcher.remote_argv(["qemu-system-aarch64", "-kernel", str(fw), "-m", "64M"])
    remote = argv[2]
    assert remote != str(fw) and Path(remote).read_bytes() == fw.read_bytes()
    assert argv[:2] == ["qemu-system-aarch64", "-kernel"] and argv[3:] == ["-m", "64M"]


def test_stale_remote_copy_is_uploaded_again(launcher: SshLauncher, tmp_path: Path) -> None:
    """The start script notices a damaged cached file; the launcher re-uploads and retries."""
    fw = tmp_path / "payload.bin"
    fw.write_bytes(os.urandom(4096))
    # "-kernel <file>" marks the file for upload; sh sees $0=-kernel, $1=the remote copy.
    argv = ["sh", "-c", 'sha256sum < "$1"', "-kernel", str(fw)]
    proc = launcher.spawn(argv, tmp_path / "log1")
    proc.console.expect(pexpect.EOF, timeout=10)
    proc.kill()
    digest = hashlib.sha256(fw.read_bytes()).hexdigest()
    assert digest.encode() in (tmp_path / "log1").read_bytes()
    cached = next((tmp_path / "remote-cache").iterdir())
    cached.write_bytes(b"damaged")
    launcher._verified.clear()  # a new launcher would not know either
    proc = launcher.spawn(argv, tmp_path / "log2")
    proc.console.expect(pexpect.EOF, timeout=10)
    proc.kill()
    assert digest.encode() in (tmp_path / "log2").read_bytes()
    assert cached.read_bytes() == fw.read_bytes()


@needs_qemu
def test_qemu_version_cached_by_binary_identity(ssh_env: Sshd, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The start script reports the binary's size:mtime; the version is cached under it."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    cache = tmp_path / "xdg" / "shootdown" / "remote-qemu-version.json"
    with SshLauncher(ALIAS) as launcher:
        proc = launcher.spawn([QEMU, "-version"], tmp_path / "log")
        proc.wait(20)
        proc.kill()
        assert proc.binary_id.count(":") == 1
        version = launcher.qemu_version(QEMU)
        assert version.startswith("QEMU emulator version")
    entries = json.loads(cache.read_text())
    (key,) = entries
    assert key.endswith(f"|{QEMU}|{proc.binary_id}") and entries[key] == version
    cache.write_text(json.dumps({key: "from the cache"}))
    with SshLauncher(ALIAS) as launcher:
        launcher.spawn([QEMU, "-version"], tmp_path / "log").kill()
        assert launcher.qemu_version(QEMU) == "from the cache"


@needs_qemu
def test_tcg_log_is_fetched_back(launcher: SshLauncher, tmp_path: Path,
                                 minimal_elf: Path, no_remote_qemu_left: None) -> None:
    """``-d in_asm -D <local file>``: QEMU logs on the host, the file comes back."""
    local_log = tmp_path / "trace" / "qemu.log"
    local_log.parent.mkdir()
    argv = [QEMU, "-M", "virt", "-cpu", "cortex-a57", "-nographic", "-nodefaults",
            "-no-user-config", "-serial", "stdio", "-kernel", str(minimal_elf),
            "-d", "in_asm", "-D", str(local_log)]
    proc = launcher.spawn(argv, tmp_path / "console.log")
    proc.console.expect(pexpect.EOF, timeout=30)
    assert proc.wait(10) == 0
    proc.kill()
    text = local_log.read_text()
    assert "IN:" in text, text[:500]
    logs = tmp_path / "logs"
    assert logs.is_dir() and not list(logs.iterdir()), "the remote copy is removed"


def test_start_direct(ssh_env: Sshd, tmp_path: Path) -> None:
    """RemoteProcess.start without a launcher: argv quoted, pid reported."""
    from shootdown.guest.console_log import ConsoleLog
    from shootdown.remote.connection import Connection

    with Connection(resolve_host(ALIAS)) as conn:
        proc = RemoteProcess.start(conn, ["sh", "-c", "echo $$; exit 0"],
                                   ConsoleLog(tmp_path / "log"), max_lifetime=None)
        proc.console.expect(rb"(\d+)\r\n", timeout=10)
        assert isinstance(proc.console.match, re.Match)
        assert int(proc.console.match.group(1)) == proc.pid, "QEMU is what the pid names"
        assert proc.wait(10) == 0
        proc.kill()


class FreezableProxy:
    """A TCP relay to the sshd that can stop relaying without closing anything:
    the link goes silent, as a dead network path does (no FIN, no RST)."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.frozen = threading.Event()
        self.stopped = threading.Event()
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(4)
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target))
            self.sockets += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        src.settimeout(0.1)
        while not self.stopped.is_set():
            if self.frozen.is_set():
                time.sleep(0.05)
                continue
            try:
                data = src.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data:
                return
            try:
                dst.sendall(data)
            except OSError:
                return

    def close(self) -> None:
        self.stopped.set()
        self.listener.close()
        for s in self.sockets:
            with contextlib.suppress(OSError):
                s.close()


@needs_qemu
def test_silently_dead_link(ssh_env: Sshd, tmp_path: Path,
                            monkeypatch: pytest.MonkeyPatch) -> None:
    """No FIN, no RST, just silence: reads time out, kill gives up in bounded time,
    and the lifetime cap ends the remote QEMU that sshd never hears about."""
    from dataclasses import replace

    from shootdown.remote import process

    monkeypatch.setattr(process, "KILL_TIMEOUT", 2.0)
    proxy = FreezableProxy(ssh_env.port)
    known = tmp_path / "known_hosts"
    kind, b64 = ssh_env.host_key_pub.split()[:2]
    known.write_text(f"[127.0.0.1]:{proxy.port} {kind} {b64}\n")
    host = replace(resolve_host(ALIAS), port=proxy.port, user_known_hosts=(str(known),))
    try:
        with SshLauncher(host, max_lifetime=3) as launcher:
            proc = launcher.spawn(hung_qemu_argv("sd-silent"), tmp_path / "log")
            pid = proc.pid
            proxy.frozen.set()
            with pytest.raises(pexpect.TIMEOUT):
                proc.console.read_nonblocking(100, timeout=0.5)
            t0 = time.monotonic()
            proc.kill()
            assert time.monotonic() - t0 < 10, "kill must not hang on a dead link"
            assert wait_gone(pid, timeout=20), "the lifetime cap did not end QEMU"
    finally:
        proxy.close()
