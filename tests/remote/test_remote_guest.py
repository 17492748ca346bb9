"""Real guests run "remotely" through the loopback sshd: the runner cannot tell.

The guest definitions name ``host = "sd-loop"`` (an alias in the throwaway
ssh_config); the firmware is uploaded over SFTP into a temporary cache
directory and QEMU is started by sshd.  Everything above the launcher is the
unchanged local runner (:class:`shootdown.guest.machine.Guest`, ``shootdown
run``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from shootdown.cli import main as cli_main
from shootdown.errors import ConfigError, GuestTimeout, RemoteError
from shootdown.guest.definition import load_definition
from shootdown.guest.machine import Guest
from shootdown.remote import SshLauncher, check_trace_supported, launcher_for

from .conftest import ALIAS, JUMP_ALIAS, Sshd, remote_qemus
from .test_process import wait_gone

pytestmark = pytest.mark.guest


@pytest.fixture
def remote_guest(ssh_env: Sshd, tmp_path: Path, firmware_elf: Path, qemu: str,
                 make_guest: Callable[..., Path],
                 monkeypatch: pytest.MonkeyPatch) -> Callable[..., Path]:
    """Write a guest definition that runs on the loopback sshd; its path."""
    monkeypatch.setenv("SHOOTDOWN_REMOTE_CACHE_DIR", str(tmp_path / "remote-cache"))

    def write(name: str = "remote-quick", host: str = ALIAS, **kw: object) -> Path:
        # Idle 5 s rather than the local tests' 2: spawning over SSH and the
        # runner's QEMU version query happen inside the first idle window,
        # and the machine running the tests may be busy.
        kw.setdefault("idle", 5)
        kw.setdefault("boot", 20)
        return make_guest(tmp_path / "guests", name, str(firmware_elf),
                          extra=f'host = "{host}"', **kw)
    return write


def test_definition_with_host_gets_the_ssh_launcher(remote_guest: Callable[..., Path]) -> None:
    definition = load_definition(remote_guest())
    launcher = launcher_for(definition)
    assert isinstance(launcher, SshLauncher)
    assert launcher.describe() == f"ssh://{ALIAS}"
    assert launcher.max_lifetime == 60.0  # 2 x total (30 s), at least a minute
    assert launcher_for(definition) is launcher, "one shared launcher per host and settings"
    assert launcher_for(definition, accept_new_host_key=True) is not launcher


def test_smoke_passes_remotely(remote_guest: Callable[..., Path], no_remote_qemu_left: None,
                               capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code = cli_main(["run", "--guest", str(remote_guest()), "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    out = json.loads(captured.out)
    assert out["verdict"] == "pass"
    assert out["guest"]["launcher"] == f"ssh://{ALIAS}"
    assert out["guest"]["qemu_version"].startswith("QEMU emulator version")
    # The argv recorded is the local one; QEMU ran the uploaded copy.
    assert next(iter((tmp_path / "remote-cache").iterdir())).name.endswith("-shootdown-4k.elf")


def test_smoke_through_a_jump_host(remote_guest: Callable[..., Path],
                                   no_remote_qemu_left: None) -> None:
    assert cli_main(["run", "--guest", str(remote_guest(host=JUMP_ALIAS))]) == 0


SCENARIO = Path(__file__).resolve().parents[2] / "docs" / "examples" / "basic.toml"


def test_scenario_fail_verdict_remotely(remote_guest: Callable[..., Path],
                                        no_remote_qemu_left: None,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    """A validation failure over SSH is a verdict (exit 1), exactly as locally.

    ``last_level_with_freed_tables`` runs in the basic scenario but has no
    visible effect there (the gather ends in an ASID-wide flush): a missed
    injection means the checks are blind there, which is a FAIL.
    """
    guest = str(remote_guest())
    assert cli_main(["run", "--guest", guest, "--inject", "last_level_with_freed_tables",
                     str(SCENARIO)]) == 1
    assert "MISSED" in capsys.readouterr().out
    assert cli_main(["run", "--guest", guest, "--inject", "skip_dsb_ish", str(SCENARIO)]) == 0
    assert "CAUGHT" in capsys.readouterr().out


def test_trace_on_a_remote_tcg_host(remote_guest: Callable[..., Path], tmp_path: Path,
                                    no_remote_qemu_left: None,
                                    capsys: pytest.CaptureFixture[str],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """--trace: QEMU's execution log is written on the host, fetched back, and must
    equal the guest's report, as locally."""
    monkeypatch.setenv("SHOOTDOWN_REMOTE_CACHE_DIR", str(tmp_path / "logs-on-host" / "fw"))
    code = cli_main(["run", "--guest", str(remote_guest()), "--trace", "--keep",
                     "--logdir", str(tmp_path / "logs"), str(SCENARIO)])
    out = capsys.readouterr()
    assert code == 0, out.out + out.err
    assert "PASS" in out.out
    (trace,) = (tmp_path / "logs").glob("*.exec.log")
    assert trace.stat().st_size > 0, "the execution log came back from the host"
    remote_logs = tmp_path / "logs-on-host" / "logs"  # beside the firmware cache
    assert remote_logs.is_dir() and not list(remote_logs.iterdir()), "removed on the host"


def test_scenario_batch_is_shipped_to_the_host(remote_guest: Callable[..., Path],
                                               tmp_path: Path,
                                               no_remote_qemu_left: None) -> None:
    """The session's batch mode (a ``-device loader,file=...`` blob in guest RAM)
    works remotely: the blob is uploaded and the argv rewritten (commas escaped)."""
    from shootdown.scenario.load import load_scenario
    from shootdown.session import Job, run_boot

    definition = load_definition(remote_guest())
    examples = SCENARIO.parent
    jobs = [Job(load_scenario(p), "v6.19") for p in sorted(examples.glob("*.toml"))
            if load_scenario(p).granule in (None, "4k")]
    assert len(jobs) >= 2
    logdir = tmp_path / "odd,dir"  # a comma QEMU's option syntax must see doubled
    logdir.mkdir()
    with SshLauncher(ALIAS) as launcher:
        report = run_boot(definition, "4k", jobs, log_path=str(logdir / "console.log"),
                          launcher=launcher, batch=True)
    assert [r.verdict.ok for r in report.results] == [True] * len(jobs), report.results
    argv = " ".join(report.qemu_argv)
    assert "loader,file=" in argv
    console = (logdir / "console.log").read_text()
    assert "SCN id=1 status=start" in console and "READY n=1" not in console, \
        "all scenarios came in one BATCH, not one command each"
    cached = [p.name for p in (tmp_path / "remote-cache").iterdir()]
    assert cached and not [n for n in cached if n.endswith(".batch")], \
        f"the one-run batch blob is removed from the host: {cached}"


def test_trace_refused_for_a_kvm_guest(remote_guest: Callable[..., Path],
                                       capsys: pytest.CaptureFixture[str]) -> None:
    path = remote_guest(name="kvm-guest", cpu="host")
    path.write_text(path.read_text().replace("[timeouts]", 'accel = "kvm"\n[timeouts]'))
    assert cli_main(["run", "--guest", str(path), "--trace", str(SCENARIO)]) == 2
    assert "--trace" in capsys.readouterr().err


def test_hang_is_killed(remote_guest: Callable[..., Path], no_remote_qemu_left: None,
                        capsys: pytest.CaptureFixture[str]) -> None:
    t0 = time.monotonic()
    code = cli_main(["run", "--guest", str(remote_guest()), "--debug-command", "hang"])
    assert code == 3
    assert "no console output" in capsys.readouterr().err
    assert time.monotonic() - t0 < 20  # idle timeout is 5 s


def test_crash_is_reported(remote_guest: Callable[..., Path], no_remote_qemu_left: None,
                           capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["run", "--guest", str(remote_guest()), "--debug-command", "crash"]) == 3
    assert "unexpected exception" in capsys.readouterr().err


def test_unknown_host_key_is_exit_3(remote_guest: Callable[..., Path], ssh_env: Sshd,
                                    tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "ssh_config"
    config.write_text(ssh_env.ssh_config.read_text().replace(
        str(ssh_env.known_hosts), str(tmp_path / "empty_known_hosts")))
    monkeypatch.setenv("SHOOTDOWN_SSH_CONFIG", str(config))
    assert cli_main(["run", "--guest", str(remote_guest())]) == 3
    assert "unknown host key" in capsys.readouterr().err


def test_connection_dropped_mid_run(remote_guest: Callable[..., Path], ssh_env: Sshd,
                                    tmp_path: Path, no_remote_qemu_left: None) -> None:
    definition = load_definition(remote_guest())
    with SshLauncher(ALIAS) as launcher:
        guest = Guest(definition, log_path=tmp_path / "console.log", launcher=launcher)
        guest.launch()
        proc = guest._proc
        assert proc is not None
        pid = proc.pid  # type: ignore[attr-defined]
        guest.command("PING")
        assert ssh_env.kill_sessions()
        with pytest.raises(RemoteError, match=r"connection lost|cannot write"):
            guest.command("DEBUG hang")
        guest.shutdown()
        assert wait_gone(pid), "the remote QEMU survived the dropped connection"


def test_hostile_extra_args_fail_cleanly(remote_guest: Callable[..., Path],
                                         tmp_path: Path, no_remote_qemu_left: None,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    marker = tmp_path / "pwned"
    path = remote_guest()
    hostile = [f"; touch {marker}", f"$(touch {marker})", f"`touch {marker}`",
               f"' ; touch {marker} '"]
    path.write_text(path.read_text().replace(
        "[timeouts]", f"extra_args = {json.dumps(hostile)}\n[timeouts]"))
    assert cli_main(["run", "--guest", str(path)]) == 3  # QEMU refuses: LaunchError
    assert "exited with status" in capsys.readouterr().err
    assert not marker.exists()


def test_hostile_host_name_is_config_error(remote_guest: Callable[..., Path],
                                           tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    assert cli_main(["run", "--guest",
                     str(remote_guest(host=f"x; touch {marker}"))]) == 2
    no_space = f"$(touch${{IFS}}{marker})`touch${{IFS}}{marker}`"
    assert cli_main(["run", "--guest", str(remote_guest(host=no_space))]) == 2
    # A plausible name that does not resolve is a connection failure.
    assert cli_main(["run", "--guest", str(remote_guest(host="no-such-host.invalid"))]) == 3
    assert not marker.exists()


def test_hostile_guest_name_is_refused(remote_guest: Callable[..., Path], tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    """A definition whose name could mean something to a shell never gets near one."""
    marker = tmp_path / "pwned"
    good = remote_guest()
    for name in (f"x; touch {marker}", f"$(touch {marker})", "it's", "a b"):
        bad = good.with_name(f"{name.replace('/', '_')}.toml")
        # A JSON string is a valid TOML basic string for these names.
        bad.write_text(good.read_text().replace('name = "remote-quick"',
                                                f"name = {json.dumps(name)}"))
        assert cli_main(["run", "--guest", str(bad)]) == 2
        assert "key 'name'" in capsys.readouterr().err
    assert not marker.exists()


def test_trace_refused_under_kvm(remote_guest: Callable[..., Path]) -> None:
    check_trace_supported(load_definition(remote_guest()))  # remote TCG: fine
    kvm = load_definition(remote_guest(name="kvm-guest", cpu="host"))
    kvm = kvm._replace(accel="kvm")
    with pytest.raises(ConfigError, match=r"accel = 'kvm'.*no TCG log"):
        check_trace_supported(kvm)


def test_guests_on_pool_seats(remote_guest: Callable[..., Path], tmp_path: Path,
                              no_remote_qemu_left: None) -> None:
    """The matrix runner's pattern: take a seat, place the guest there, run, give it back."""
    from shootdown.commands.run import run_smoke
    from shootdown.remote.pool import HostPool, PoolHost

    pool = HostPool([PoolHost(ALIAS, 1)], seats_dir=tmp_path / "seats")
    base = load_definition(remote_guest())._replace(host=None)
    connections = []
    for i in range(2):
        with pool.acquire(timeout=5, prefer="gw0") as seat:
            assert pool.try_acquire() is None, "max_guests = 1"
            definition = seat.place(base)
            assert definition.host == ALIAS
            launcher = seat.launcher()
            result = run_smoke(Guest(definition, log_path=tmp_path / f"{i}.log",
                                     launcher=launcher))
            assert result.verdict.ok
            assert result.guest.launcher == f"ssh://{ALIAS}"
            connections.append(launcher.connection)  # type: ignore[attr-defined]
    assert connections[0] is connections[1], "the second guest reused the connection"
    connections[0].close()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_killing_the_run_kills_the_remote_qemu(remote_guest: Callable[..., Path],
                                               ssh_env: Sshd, tmp_path: Path,
                                               sig: signal.Signals) -> None:
    """Ctrl-C on ``shootdown run`` kills QEMU over SSH; SIGKILL drops the link (SIGHUP)."""
    guest = remote_guest(idle=60, total=120)
    env = {**os.environ, "SHOOTDOWN_SSH_CONFIG": str(ssh_env.ssh_config)}
    cli = subprocess.Popen([sys.executable, "-m", "shootdown.cli", "run", "--guest", str(guest),
                            "--debug-command", "hang"], env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not remote_qemus(ssh_env) and time.monotonic() < deadline:
            time.sleep(0.05)
        qemus = remote_qemus(ssh_env)
        assert qemus, "the remote QEMU did not start"
        time.sleep(1.0)  # let the guest boot and hang
        cli.send_signal(sig)
        cli.wait(30)
        for pid in qemus:
            assert wait_gone(pid), f"remote QEMU {pid} survived {sig.name} of the run"
    finally:
        cli.kill()
        cli.communicate()


def test_hang_times_out_with_guest_timeout(remote_guest: Callable[..., Path],
                                           tmp_path: Path, no_remote_qemu_left: None) -> None:
    definition = load_definition(remote_guest())
    with SshLauncher(ALIAS) as launcher:
        guest = Guest(definition, log_path=tmp_path / "console.log", launcher=launcher)
        guest.launch()
        pid = guest._proc.pid  # type: ignore[union-attr]
        with pytest.raises(GuestTimeout):
            guest.command("DEBUG hang")
        guest.shutdown()
        assert wait_gone(pid)


def test_a_chatty_remote_guest_leaves_a_capped_log(ssh_env: Sshd, make_guest: Callable[..., Path],
                                                   chatty_elf: Path, tmp_path: Path, qemu: str,
                                                   no_remote_qemu_left: None,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A remote console is capped like a local one (guest/console_log.py): a guest
    that prints for ever over SSH leaves head, marker and tail, never more.  The
    real ConsoleLog with 64 KiB head and tail, so that the SSH channel need not
    carry the 16 MiB of the default limit (tests/test_console_log.py does, locally)."""
    import functools

    import pexpect

    import shootdown.remote.launcher
    from shootdown.guest.argv import build_argv
    from shootdown.guest.console_log import ConsoleLog

    HEAD_BYTES = TAIL_BYTES = 64 * 1024
    CONSOLE_LOG_LIMIT = HEAD_BYTES + TAIL_BYTES
    monkeypatch.setattr(shootdown.remote.launcher, "ConsoleLog",
                        functools.partial(ConsoleLog, head=HEAD_BYTES, tail=TAIL_BYTES))
    monkeypatch.setenv("SHOOTDOWN_REMOTE_CACHE_DIR", str(tmp_path / "remote-cache"))
    definition = load_definition(make_guest(tmp_path / "g", "chatty", str(chatty_elf),
                                            extra=f'host = "{ALIAS}"'))
    log = tmp_path / "chatty.console.log"
    with SshLauncher(ALIAS) as launcher:
        proc = launcher.spawn(build_argv(definition, chatty_elf, qemu=qemu), str(log))
        seen, deadline = 0, time.monotonic() + 120
        try:
            while seen < 4 * CONSOLE_LOG_LIMIT:
                assert time.monotonic() < deadline, f"only {seen} console bytes in 120 s"
                try:
                    seen += len(proc.console.read_nonblocking(65536, timeout=1))
                except pexpect.TIMEOUT:
                    continue
        finally:
            proc.kill()
    data = log.read_bytes()
    head, rest = data.split(b"\n[shootdown: ", 1)
    line, tail = rest.split(b"\n", 1)
    assert b"console bytes dropped here" in line
    assert len(head) == HEAD_BYTES and len(tail) == TAIL_BYTES
    assert len(data) < CONSOLE_LOG_LIMIT + 200
