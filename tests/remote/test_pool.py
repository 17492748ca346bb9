"""Seat allocation over a host pool: limits hold across processes, crashes free seats."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from shootdown.errors import ConfigError, InfraError
from shootdown.remote.pool import HostPool, PoolHost


def pool(tmp_path: Path) -> HostPool:
    return HostPool([PoolHost("local", 2), PoolHost("arm64-kvm", 1)],
                    seats_dir=tmp_path / "seats")


def test_limits_per_host(tmp_path: Path) -> None:
    p = pool(tmp_path)
    seats = [p.acquire(timeout=1) for _ in range(3)]
    assert sorted((s.host.name, s.slot) for s in seats) == [
        ("arm64-kvm", 0), ("local", 0), ("local", 1)]
    assert p.try_acquire() is None
    with pytest.raises(InfraError, match="no free seat"):
        p.acquire(timeout=0.1)
    kvm = next(s for s in seats if s.host.name == "arm64-kvm")
    kvm.release()
    kvm.release()  # idempotent
    again = p.acquire(host="arm64-kvm", timeout=1)
    assert (again.host.name, again.slot) == ("arm64-kvm", 0)
    assert p.try_acquire(host="local") is None
    for s in [*seats, again]:
        s.release()


def test_unknown_host(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not in the pool"):
        pool(tmp_path).acquire(host="nowhere")


HOLDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from shootdown.remote.pool import HostPool, PoolHost
    p = HostPool([PoolHost("local", 2), PoolHost("arm64-kvm", 1)], seats_dir=Path(sys.argv[1]))
    seat = p.acquire(host="arm64-kvm", timeout=5)
    print("held", flush=True)
    time.sleep(60)
""")


def test_seats_are_shared_between_processes_and_freed_by_a_crash(tmp_path: Path) -> None:
    """Another process (an xdist worker) holds the KVM host; killing it frees the seat."""
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path / "seats")],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        p = pool(tmp_path)
        assert p.try_acquire(host="arm64-kvm") is None
        holder.kill()
        holder.wait()
        deadline = time.monotonic() + 5
        seat = None
        while seat is None and time.monotonic() < deadline:
            seat = p.try_acquire(host="arm64-kvm")
        assert seat is not None, "a killed worker's seat was not freed"
        seat.release()
    finally:
        holder.kill()
        holder.wait()


def test_many_workers_never_exceed_the_limits(tmp_path: Path) -> None:
    """Six processes each take a seat, note it, hold it briefly: never over the limit."""
    script = textwrap.dedent("""
        import os, sys, time
        from pathlib import Path
        from shootdown.remote.pool import HostPool, PoolHost
        d = Path(sys.argv[1])
        p = HostPool([PoolHost("local", 2), PoolHost("x86-tcg", 1)], seats_dir=d / "seats")
        for _ in range(3):
            with p.acquire(timeout=30, prefer=sys.argv[2]) as seat:
                mark = d / f"in.{seat.host.name}.{os.getpid()}"
                mark.touch()
                busy = {h: len(list(d.glob(f"in.{h}.*"))) for h in ("local", "x86-tcg")}
                (d / f"seen.{os.getpid()}.{time.monotonic_ns()}").write_text(repr(busy))
                time.sleep(0.05)
                mark.unlink()
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path), f"gw{i}"])
             for i in range(6)]
    assert all(p.wait(60) == 0 for p in procs)
    seen = [eval(f.read_text()) for f in tmp_path.glob("seen.*")]
    assert len(seen) == 18
    assert max(s["local"] for s in seen) <= 2
    assert max(s["x86-tcg"] for s in seen) <= 1


def test_load_pool_file(tmp_path: Path) -> None:
    f = tmp_path / "hosts.toml"
    f.write_text('[[host]]\nname = "local"\nmax_guests = 2\n'
                 '[[host]]\nname = "ci@x86-1:2222"\nmax_guests = 8\n')
    p = HostPool.load(f, seats_dir=tmp_path / "seats")
    assert [(h.name, h.max_guests) for h in p.hosts] == [("local", 2), ("ci@x86-1:2222", 8)]
    f.write_text('[[host]]\nname = "a"\nmax_guests = 0\n')
    with pytest.raises(ConfigError, match=r"host\[0\]: key 'max_guests'"):
        HostPool.load(f, seats_dir=tmp_path / "seats")
    f.write_text('[[host]]\nname = "a"\nmax_gests = 2\n')
    with pytest.raises(ConfigError, match="key 'max_gests': unknown"):
        HostPool.load(f, seats_dir=tmp_path / "seats")


def test_seat_places_a_definition(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from shootdown.guest.definition import definition_from_dict
    from shootdown.remote.launcher import SshLauncher

    src = tmp_path / "g.toml"
    d = definition_from_dict({"name": "g", "machine": "virt", "cpu": "max",
                              "firmware": "/fw.elf"}, source=str(src))
    monkeypatch.setenv("SHOOTDOWN_SSH_CONFIG", str(tmp_path / "no_ssh_config"))
    p = pool(tmp_path)
    with p.acquire(host="arm64-kvm", timeout=1) as seat:
        assert seat.place(d).host == "arm64-kvm"
        launcher = seat.launcher()  # resolves the name; connects only on first spawn
        assert isinstance(launcher, SshLauncher)
        assert launcher.describe() == "ssh://arm64-kvm"
        assert seat.launcher() is launcher, "one launcher (one connection) per host"
    with p.acquire(host="local", timeout=1) as seat:
        assert seat.place(d).host is None
    # seat_for: a pinned guest gets its host; one the pool does not list, max 1.
    with p.seat_for(d._replace(host="arm64-kvm"), prefer="gw1", timeout=1) as seat:
        assert seat.host.name == "arm64-kvm"
    with p.seat_for(d._replace(host="elsewhere"), timeout=1) as seat:
        assert (seat.host.name, seat.host.max_guests) == ("elsewhere", 1)
        assert p.try_acquire(host="elsewhere") is None


# The seat-lock directory may live in /tmp: one another user made, one others
# may write to, or a link planted inside it must never be used.

def test_seat_dir_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    if os.getuid() != 0:
        pytest.skip("needs root to give a directory to another uid")
    d = tmp_path / "seats"
    d.mkdir(mode=0o700)
    os.chown(d, 65534, 65534)
    with pytest.raises(InfraError, match=r"owned by uid 65534.*refused"):
        HostPool([PoolHost("local", 1)], seats_dir=d)


def test_seat_dir_writable_by_others_is_refused(tmp_path: Path) -> None:
    d = tmp_path / "seats"
    d.mkdir()
    d.chmod(0o770)
    with pytest.raises(InfraError, match=r"mode 0770, expected 0700: refused"):
        HostPool([PoolHost("local", 1)], seats_dir=d)


def test_seat_dir_that_is_a_link_is_refused(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    (tmp_path / "seats").symlink_to(real)
    with pytest.raises(InfraError, match="not a directory"):
        HostPool([PoolHost("local", 1)], seats_dir=tmp_path / "seats")


def test_link_planted_in_the_seat_dir_is_not_followed(tmp_path: Path) -> None:
    p = pool(tmp_path)
    target = tmp_path / "victim"
    for host, slot in p._candidates(None):
        p._lock_path(host, slot).symlink_to(target)
    with pytest.raises(InfraError, match="cannot open a seat lock"):
        p.try_acquire()
    assert not target.exists()


def test_default_seat_dir_is_made_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SHOOTDOWN_SEATS_DIR", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    p = HostPool([PoolHost("local", 1)])
    assert p.seats_dir.parent == tmp_path
    st = os.lstat(p.seats_dir)
    assert st.st_mode & 0o777 == 0o700 and st.st_uid == os.getuid()
