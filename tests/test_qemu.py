"""shootdown.guest.qemu: the QEMU version, its option spellings, and the query that must
not leave a hung QEMU's children behind."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from shootdown.errors import ConfigError, LaunchError
from shootdown.guest import qemu as q


@pytest.mark.parametrize(("line", "expected"), [
    ("QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)", (7, 2, 22)),
    ("QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)", (10, 0, 2)),
    ("QEMU emulator version 11.1.3", (11, 1, 3)),
    ("QEMU emulator version 9.0", (9, 0, 0)),
    ("qemu: unknown", None),
])
def test_parse_version(line: str, expected: tuple[int, int, int] | None) -> None:
    assert q.parse_version(line) == expected


BASE = ["qemu-system-aarch64", "-M", "virt", "-accel", "tcg,thread=single", "-kernel", "fw.elf"]


def test_one_insn_per_tb_before_8_1_is_the_singlestep_option() -> None:
    assert q.with_one_insn_per_tb(BASE, (7, 2, 22)) == [*BASE, "-singlestep"]
    assert q.with_one_insn_per_tb(BASE, (8, 0, 5)) == [*BASE, "-singlestep"]


@pytest.mark.parametrize("version", [(8, 1, 0), (10, 0, 2), (11, 1, 3)])
def test_one_insn_per_tb_since_8_1_is_merged_into_the_guests_accel(
        version: tuple[int, int, int]) -> None:
    out = q.with_one_insn_per_tb(BASE, version)
    # A second -accel would be a fallback QEMU never uses: there must be one.
    assert out.count("-accel") == 1 and "-singlestep" not in out
    assert out[out.index("-accel") + 1] == "tcg,thread=single,one-insn-per-tb=on"
    assert q.with_one_insn_per_tb(out, version) == out  # not twice
    bare = ["qemu-system-aarch64", "-M", "virt"]
    assert q.with_one_insn_per_tb(bare, version) == [*bare, "-accel", "tcg,one-insn-per-tb=on"]
    with pytest.raises(ConfigError, match="needs TCG"):
        q.with_one_insn_per_tb([*bare, "-accel", "kvm"], version)


def test_hmp_spelling() -> None:
    assert q.hmp_one_insn_per_tb((7, 2, 22)) == "singlestep on"
    assert q.hmp_one_insn_per_tb((10, 0, 2), on=False) == "one-insn-per-tb off"


def fake_qemu(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


def test_hung_version_query_is_killed_with_its_children(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 'qemu' that starts a child and hangs: the query gives up and nothing stays behind."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(q, "QUERY_TIMEOUT_S", 1.0)
    pids = tmp_path / "pids"
    binary = fake_qemu(tmp_path / "qemu-system-aarch64",
                       f"sleep 20 & echo $! > {pids}\necho $$ >> {pids}\nwait\n")
    started = time.monotonic()
    with pytest.raises(LaunchError, match="no answer after 1 s"):
        q.version_line(str(binary))
    assert time.monotonic() - started < 10
    child, leader = (int(p) for p in pids.read_text().split())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(_alive(p) for p in (child, leader)):
        time.sleep(0.05)
    assert not _alive(child), "the hung QEMU's child was left running"
    assert not _alive(leader)


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for init counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_version_and_cpu_models_are_cached_per_binary(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    calls = tmp_path / "calls"
    binary = fake_qemu(tmp_path / "qemu", f"""echo "$@" >> {calls}
if [ "$1" = --version ]; then echo 'QEMU emulator version 10.0.2 (test)'; exit 0; fi
printf 'Available CPUs:\\n  cortex-a57\\n  neoverse-n2\\n  max\\n'
""")
    assert q.version(str(binary)) == (10, 0, 2)
    assert q.cpu_models(str(binary)) == {"cortex-a57", "neoverse-n2", "max"}
    assert q.version(str(binary)) == (10, 0, 2)
    assert q.missing_cpu(str(binary), "neoverse-n2") is None
    assert len(calls.read_text().splitlines()) == 2  # each asked once
    reason = q.missing_cpu(str(binary), "cortex-a710")
    assert reason == (f"{binary} is QEMU 10.0.2, which has no CPU model 'cortex-a710' "
                      "(cortex-a710 and neoverse-n2 arrived in QEMU 8.2; scripts/setup-qemu "
                      "installs 10.x)")


def test_no_version_number_is_an_infrastructure_error(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    binary = fake_qemu(tmp_path / "qemu", "echo 'not a QEMU'\n")
    with pytest.raises(LaunchError, match="no version number in 'not a QEMU'"):
        q.version(str(binary))


def test_private_qemus_are_found_oldest_first(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Both layouts of scripts/setup-qemu: a package tree (usr/bin) and a private root
    run through its wrapper (bin); the root's own binary is never picked."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    top = tmp_path / "shootdown" / "qemu"
    for series, bindir in (("10.0.2", "usr/bin"), ("9.2.0", "usr/bin"), ("11.1.3", "bin"),
                           ("11.1.3", "root/usr/bin")):
        (top / series / bindir).mkdir(parents=True, exist_ok=True)
        fake_qemu(top / series / bindir / "qemu-system-aarch64", "exit 0\n")
    found = [os.path.relpath(p, top) for p in q.private_qemus()]
    assert found == [os.path.join(*parts, "qemu-system-aarch64") for parts in (
        ("9.2.0", "usr", "bin"), ("10.0.2", "usr", "bin"), ("11.1.3", "bin"))]


@pytest.mark.guest
def test_real_qemu_version_and_named_cores(each_qemu: str) -> None:
    """Each QEMU under test answers a version; the Armv9 named cores follow it."""
    v = q.version(each_qemu)
    assert v >= (7, 2, 0)
    assert "cortex-a57" in q.cpu_models(each_qemu)
    for core in ("neoverse-n2", "cortex-a710"):  # both arrived in QEMU 8.2
        assert (q.missing_cpu(each_qemu, core) is None) == (v >= (8, 2, 0)), core
