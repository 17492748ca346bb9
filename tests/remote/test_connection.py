"""SSH connections against a real sshd: auth, host keys, jumps, quoting, uploads."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import pytest

from shootdown.errors import ConfigError, RemoteError
from shootdown.remote.config import resolve_host
from shootdown.remote.connection import Connection, shell_join
from shootdown.remote.hostkeys import ACCEPT_NEW_ENV

from .conftest import ALIAS, JUMP_ALIAS, Sshd


def hostile(marker: Path) -> list[str]:
    """Arguments that would run ``touch marker`` if any shell parsed them unquoted."""
    return [
        f"; touch {marker}",
        f"$(touch {marker})",
        f"`touch {marker}`",
        f"' ; touch {marker}; '",
        f'" ; touch {marker}; "',
        f"a b\ttab && touch {marker}",
        f"| touch {marker}",
        f"\ntouch {marker}\n",
        "*", "~", "$HOME", "\\", "-n", "--", "",
    ]


def test_connect_and_run(ssh_env: Sshd) -> None:
    with Connection(resolve_host(ALIAS)) as conn:
        result = conn.run(["echo", "hello", "world"])
        assert result.exit_status == 0
        assert result.stdout == b"hello world\n"
        failed = conn.run(["sh", "-c", "echo oops >&2; exit 7"], check=False)
        assert failed.exit_status == 7
        assert failed.stderr == b"oops\n"
        with pytest.raises(RemoteError, match="status 7: oops"):
            conn.run(["sh", "-c", "echo oops >&2; exit 7"])


def test_alias_resolution(ssh_env: Sshd) -> None:
    host = resolve_host(ALIAS)
    assert (host.hostname, host.port) == ("127.0.0.1", ssh_env.port)
    assert host.identity_files == (str(ssh_env.user_key),)
    assert host.identities_only
    assert host.user_known_hosts == (str(ssh_env.known_hosts),)
    via = resolve_host(JUMP_ALIAS)
    assert [j.alias for j in via.jumps] == [ALIAS]
    with pytest.raises(ConfigError, match="not a valid ssh destination"):
        resolve_host("a host; touch x")


def test_unknown_host_key_refused(ssh_env: Sshd, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    host = replace(resolve_host(ALIAS), user_known_hosts=(str(empty),))
    with pytest.raises(RemoteError, match=r"unknown host key .*SHA256:.*refusing"):
        Connection(host)
    assert empty.read_text() == "", "a refused key must not be recorded"


@pytest.mark.parametrize("how", ["option", "env"])
def test_unknown_host_key_accepted_on_opt_in(ssh_env: Sshd, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    known = tmp_path / "sub" / "known_hosts"  # the directory is created too
    host = replace(resolve_host(ALIAS), user_known_hosts=(str(known),))
    if how == "env":
        monkeypatch.setenv(ACCEPT_NEW_ENV, "1")
        conn = Connection(host)
    else:
        conn = Connection(host, accept_new_host_key=True)
    with conn:
        assert conn.run(["true"]).exit_status == 0
    kind, b64 = ssh_env.host_key_pub.split()[:2]
    assert known.read_text() == f"{ssh_env.known_hosts_name} {kind} {b64}\n"
    monkeypatch.delenv(ACCEPT_NEW_ENV, raising=False)
    with Connection(host, accept_new_host_key=False) as conn:  # now known: strict is fine
        conn.run(["true"])
    # OpenSSH's client agrees with what we recorded.
    out = subprocess.run(["ssh-keygen", "-F", ssh_env.known_hosts_name, "-f", str(known)],
                         capture_output=True, text=True, check=True)
    assert b64 in out.stdout


def test_accepted_key_hashed_when_configured(ssh_env: Sshd, tmp_path: Path) -> None:
    """HashKnownHosts yes: the new entry is hashed, and both paramiko and OpenSSH find it."""
    config = tmp_path / "ssh_config"
    known = tmp_path / "known_hosts"
    config.write_text(ssh_env.ssh_config.read_text().replace(
        str(ssh_env.known_hosts), str(known)) + "\nHost *\n    HashKnownHosts yes\n")
    host = resolve_host(ALIAS, config_path=config)
    assert host.hash_known_hosts
    with Connection(host, accept_new_host_key=True) as conn:
        conn.run(["true"])
    line = known.read_text()
    assert line.startswith("|1|") and "127.0.0.1" not in line
    with Connection(host, accept_new_host_key=False) as conn:
        conn.run(["true"])
    out = subprocess.run(["ssh-keygen", "-F", ssh_env.known_hosts_name, "-f", str(known)],
                         capture_output=True, text=True, check=True)
    assert "found" in out.stdout


@pytest.mark.parametrize("accept_new", [False, True])
def test_changed_host_key_refused(ssh_env: Sshd, tmp_path: Path, accept_new: bool) -> None:
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    kind, b64 = other.with_suffix(".pub").read_text().split()[:2]
    known = tmp_path / "known_hosts"
    known.write_text(f"{ssh_env.known_hosts_name} {kind} {b64}\n")
    host = replace(resolve_host(ALIAS), user_known_hosts=(str(known),))
    with pytest.raises(RemoteError, match=r"HOST KEY CHANGED.*refusing.*ssh-keygen -R"):
        Connection(host, accept_new_host_key=accept_new)
    assert known.read_text() == f"{ssh_env.known_hosts_name} {kind} {b64}\n"


def test_changed_key_type_refused(ssh_env: Sshd, tmp_path: Path) -> None:
    """A recorded key of another type is a change too, not an unknown host."""
    other = tmp_path / "rsa_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ecdsa", "-N", "", "-f", str(other)], check=True)
    kind, b64 = other.with_suffix(".pub").read_text().split()[:2]
    known = tmp_path / "known_hosts"
    known.write_text(f"{ssh_env.known_hosts_name} {kind} {b64}\n")
    host = replace(resolve_host(ALIAS), user_known_hosts=(str(known),))
    with pytest.raises(RemoteError, match="HOST KEY CHANGED"):
        Connection(host, accept_new_host_key=True)


def test_agent_auth(ssh_env: Sshd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No IdentityFile: the key comes from a real ssh-agent."""
    sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if sock.exists():
                break
            time.sleep(0.02)
        env = {**os.environ, "SSH_AUTH_SOCK": str(sock)}
        subprocess.run(["ssh-add", "-q", str(ssh_env.user_key)], env=env, check=True,
                       capture_output=True)
        monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))
        monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ssh/id_* to fall back on
        host = replace(resolve_host(ALIAS), identity_files=(), identities_only=False)
        with Connection(host) as conn:
            assert conn.run(["echo", "agent"]).stdout == b"agent\n"
        # Without the agent the same host has no key to offer.
        monkeypatch.delenv("SSH_AUTH_SOCK")
        with pytest.raises(RemoteError, match="no key to offer"):
            Connection(host)
    finally:
        agent.terminate()
        agent.wait()


def test_proxy_jump(ssh_env: Sshd) -> None:
    """ProxyJump through the same sshd: the second hop rides a direct-tcpip channel."""
    with Connection(resolve_host(JUMP_ALIAS)) as conn:
        assert conn.run(["echo", "via jump"]).stdout == b"via jump\n"
        assert len(conn._clients) == 2


def test_bad_key_is_an_auth_error(ssh_env: Sshd, tmp_path: Path) -> None:
    stranger = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)],
                   check=True)
    host = replace(resolve_host(ALIAS), identity_files=(str(stranger),))
    with pytest.raises(RemoteError, match="authentication failed"):
        Connection(host)


def test_unreachable_host(ssh_env: Sshd) -> None:
    host = replace(resolve_host(ALIAS), port=1)
    with pytest.raises(RemoteError, match="cannot connect"):
        Connection(host, timeout=5)


def test_hostile_arguments_are_data(ssh_env: Sshd, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    args = hostile(marker)
    with Connection(resolve_host(ALIAS)) as conn:
        out = conn.run(["printf", "%s\\0", *args]).stdout
    assert out.split(b"\0")[:-1] == [a.encode() for a in args]
    assert not marker.exists()


def test_shell_join_refuses_nul() -> None:
    with pytest.raises(RemoteError, match="NUL"):
        shell_join(["echo", "a\0b"])


def test_upload_skipped_when_hash_matches(ssh_env: Sshd, tmp_path: Path,
                                          caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="shootdown.remote")
    local = tmp_path / "shootdown-4k.elf"
    local.write_bytes(os.urandom(100_000))
    cache = tmp_path / "remote-cache"
    with Connection(resolve_host(ALIAS)) as conn:
        remote = conn.upload_cached(local, cache_dir=str(cache))
        digest = hashlib.sha256(local.read_bytes()).hexdigest()
        assert remote == str(cache / f"{digest[:16]}-{local.name}")
        assert Path(remote).read_bytes() == local.read_bytes()
        assert "uploaded" in caplog.text
        mtime = os.stat(remote).st_mtime_ns
        caplog.clear()
        assert conn.upload_cached(local, cache_dir=str(cache)) == remote
        assert "upload skipped" in caplog.text and "uploaded" not in caplog.text
        assert os.stat(remote).st_mtime_ns == mtime
        # A remote copy that was damaged is replaced.
        Path(remote).write_bytes(b"garbage")
        caplog.clear()
        assert conn.upload_cached(local, cache_dir=str(cache)) == remote
        assert "uploaded" in caplog.text
        assert Path(remote).read_bytes() == local.read_bytes()
        # A different build with the same name goes beside it, not over it.
        first = local.read_bytes()
        local.write_bytes(os.urandom(1000))
        other = conn.upload_cached(local, cache_dir=str(cache))
        assert other != remote and Path(other).read_bytes() == local.read_bytes()
        assert Path(remote).read_bytes() == first
    assert len(list(cache.iterdir())) == 2, "no temporary file left"


def test_upload_hostile_file_name(ssh_env: Sshd, tmp_path: Path) -> None:
    # A file name cannot hold '/', so the marker is relative: it would land in
    # the remote login directory (the cwd of remote commands).
    marker = f"pwned-{os.getpid()}"
    local = tmp_path / f"fw $(touch {marker}); `touch {marker}` 'q\"$HOME.elf"
    local.write_bytes(b"\x7fELF" + os.urandom(64))
    cache = tmp_path / f"cache; touch {marker}"
    with Connection(resolve_host(ALIAS)) as conn:
        remote = conn.upload_cached(local, cache_dir=str(cache))
        assert conn.upload_cached(local, cache_dir=str(cache)) == remote
        home = conn.home
    assert Path(remote).read_bytes() == local.read_bytes()
    assert not (Path(home) / marker).exists()
    assert not (tmp_path / marker).exists()


def test_secrets_never_logged(ssh_env: Sshd, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with Connection(resolve_host(ALIAS)) as conn:
        conn.run(["true"])
    key_text = ssh_env.user_key.read_text()
    body = "".join(key_text.strip().splitlines()[1:-1])
    for chunk in (body[i:i + 24] for i in range(0, len(body), 24)):
        assert chunk not in caplog.text


def test_hosts_check_command(ssh_env: Sshd, tmp_path: Path,
                             capsys: pytest.CaptureFixture[str]) -> None:
    """``shootdown hosts`` (module main): ready host, missing QEMU, refused host key."""
    import argparse

    from shootdown.remote import command

    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    assert command.main(parser.parse_args([ALIAS, "--json"])) == 0
    (report,) = json.loads(capsys.readouterr().out)
    assert report["ready"] and report["arch"] and report["cpus"] >= 1
    assert report["kvm"] in ("yes", "no-access", "absent")
    if report["qemu"]:
        assert report["qemu_version"].startswith("QEMU emulator version")
    assert command.main(parser.parse_args([ALIAS, "--qemu", "no-such-qemu"])) == 3
    assert "no-such-qemu not found" in capsys.readouterr().err
    pool = tmp_path / "hosts.toml"
    pool.write_text(f'[[host]]\nname = "local"\n[[host]]\nname = "{JUMP_ALIAS}"\n')
    assert command.main(parser.parse_args(["--hosts-file", str(pool)])) == 0
    assert JUMP_ALIAS in capsys.readouterr().out


def test_sha256sum_output_parsing(tmp_path: Path) -> None:
    """Real sha256sum output (escaped names too), after a login-shell banner."""
    from shootdown.remote.connection import _SHA256_LINE

    odd = tmp_path / "new\nline\\name.elf"
    odd.write_bytes(b"payload")
    out = subprocess.run(["sha256sum", "--", str(odd)], capture_output=True, text=True,
                         check=True).stdout
    assert out.startswith("\\")  # GNU escapes such names
    banner = "Welcome to the lab!\nLast login: never\n"
    (digest,) = _SHA256_LINE.findall(banner + out)
    assert digest == hashlib.sha256(b"payload").hexdigest()
