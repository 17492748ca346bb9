"""A real OpenSSH server on a loopback port, for the remote-host tests.

The ``sshd`` fixture starts Debian's ``/usr/sbin/sshd -D -e`` on
127.0.0.1:<free port> with a throwaway host key, a throwaway user key and a
configuration in a temporary directory (:mod:`shootdown.remote.loopback`),
once per test session.  The client side gets its own ``ssh_config`` with
aliases and its own ``known_hosts``; ``ssh_env`` exports it through
``SHOOTDOWN_SSH_CONFIG``, so the tests exercise alias resolution too.

Tests are skipped, with the fix in the message, only when ``sshd`` or
``ssh-keygen`` is absent.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from shootdown.remote.loopback import (
    ALIAS,
    JUMP_ALIAS,
    LoopbackSshd,
    comm,
    sshd_missing,
    start_loopback_sshd,
)

Sshd = LoopbackSshd
__all__ = ["ALIAS", "JUMP_ALIAS", "Sshd"]


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    """A real sshd on 127.0.0.1:<free port>, for the whole test session."""
    why = sshd_missing()
    if why:
        pytest.skip(f"OpenSSH server needed for the remote tests: {why}")
    with start_loopback_sshd(tmp_path_factory.mktemp("sshd")) as server:
        yield server


@pytest.fixture
def ssh_env(sshd: Sshd, monkeypatch: pytest.MonkeyPatch) -> Sshd:
    """The sshd, with ``SHOOTDOWN_SSH_CONFIG`` pointing at its client config."""
    monkeypatch.setenv("SHOOTDOWN_SSH_CONFIG", str(sshd.ssh_config))
    monkeypatch.delenv("SHOOTDOWN_SSH_ACCEPT_NEW_HOST_KEY", raising=False)
    return sshd


def _live(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def remote_qemus(server: Sshd) -> list[int]:
    """QEMU processes started through ``server`` (live, not zombies)."""
    return [p for p in server.descendants() if comm(p).startswith("qemu-system") and _live(p)]


def remote_leftovers(server: Sshd) -> list[str]:
    """Anything but sshd itself still running under ``server``: QEMU, its
    ``timeout`` wrapper, a start script shell."""
    return [f"{p} {comm(p)}" for p in server.descendants() if comm(p) != "sshd" and _live(p)]


@pytest.fixture
def no_remote_qemu_left(sshd: Sshd) -> Iterator[None]:
    """Fail the test if a process started through the test sshd still runs after it.

    Only the sshd's descendants are looked at: other QEMUs on the machine
    (other test runs) are none of this test's business.  A QEMU gets a few
    seconds to finish exiting after the hang-up.
    """
    yield
    deadline = time.monotonic() + 5
    while remote_leftovers(sshd) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = remote_leftovers(sshd)
    assert not left, f"remote processes left behind: {left}"
