"""Real boots: the smoke scenario passes, results are complete, the CLI's exit codes hold."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from shootdown.errors import ConfigError, FirmwareError
from shootdown.firmware import FirmwareInfo, quick_check
from shootdown.guest.definition import find_guest
from shootdown.guest.launcher import LocalLauncher, LocalProcess
from shootdown.guest.machine import Guest
from shootdown.trace.console import Record

pytestmark = [pytest.mark.guest, pytest.mark.usefixtures("no_leftover_qemu")]

ROOT = Path(__file__).resolve().parents[1]
#: MIDR_EL1 values QEMU gives its named CPU models.
MIDR = {"virt-a57": 0x411FD070, "virt-a72": 0x410FD083}


@pytest.mark.parametrize("name", ["virt-a57", "virt-a72", "virt-max"])
def test_boot_smoke_poweroff(name: str, firmware_elf: Path, qemu: str, tmp_path: Path,
                             check_gone: Callable[[int], None]) -> None:
    guest = Guest(find_guest(name), log_path=tmp_path / "console.log")
    with guest:
        assert guest.begin is not None and guest.cpu is not None
        assert guest.begin.text("build_id") == quick_check(firmware_elf).build_id
        assert guest.begin.text("granule") == "4k"
        assert guest.cpu.number("smp") == 2
        if name in MIDR:
            assert guest.cpu.number("midr") == MIDR[name]
        assert [r.tag for r in guest.command("PING")] == ["PONG"]
        smoke = guest.command("SMOKE")
        assert [r.text("status") for r in smoke if r.tag == "SMOKE"] == ["pass"]
    assert guest.records[-1].tag == "END"
    assert guest.records[-1].text("status") == "ok"
    assert guest.exit_status == 0  # PSCI SYSTEM_OFF, not a kill
    process = guest.process
    assert isinstance(process, LocalProcess)
    check_gone(process.pid)
    log = (tmp_path / "console.log").read_text()
    assert "BEGIN" in log and "END" in log


def test_stale_firmware_is_caught(firmware_elf: Path, qemu: str, tmp_path: Path) -> None:
    real = quick_check(firmware_elf)
    stale = FirmwareInfo(path=real.path, entry=real.entry, build_id="0" * len(real.build_id))
    guest = Guest(find_guest("virt-a57"), log_path=tmp_path / "c.log", firmware=stale)
    with pytest.raises(FirmwareError, match="stale or mismatched firmware"):
        guest.launch()


def shootdown(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the ``shootdown`` command as a user would (the console script when installed)."""
    script = Path(sys.executable).parent / "shootdown"
    command = [str(script)] if script.is_file() else [sys.executable, "-m", "shootdown.cli"]
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})}, check=False)


def test_cli_run_passes(firmware_elf: Path, qemu: str) -> None:
    out = shootdown("run")
    assert out.returncode == 0, out.stderr
    assert "virt-a57" in out.stdout and "cortex-a57" in out.stdout
    assert quick_check(firmware_elf).build_id[:16] in out.stdout
    assert out.stdout.rstrip().endswith("PASS")


def test_cli_json(firmware_elf: Path, qemu: str, tmp_path: Path) -> None:
    out = shootdown("run", "--guest", "virt-a72", "--json", "--logdir", str(tmp_path))
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    g = result["guest"]
    # The QEMU the user chose (SHOOTDOWN_QEMU), as given, else the default name.
    chosen = os.environ.get("SHOOTDOWN_QEMU") or "qemu-system-aarch64"
    assert g["qemu_argv"][0] == chosen and "-kernel" in g["qemu_argv"]
    assert g["qemu_argv"][g["qemu_argv"].index("-cpu") + 1] == "cortex-a72"
    assert g["build_id"] == quick_check(firmware_elf).build_id
    assert g["qemu_version"].startswith("QEMU emulator version")
    assert g["exit_status"] == 0
    assert result["verdict"] == "pass"
    assert result["checks"][0]["name"] == "smoke"
    t = result["timings"]
    assert 0 < t["boot_s"] <= t["total_s"] and 0 < t["scenario_s"] <= t["total_s"]
    assert [r["tag"] for r in result["records"]][:1] == ["BEGIN"]
    assert result["records"][-1]["tag"] == "END"
    assert Path(g["log_path"]).parent == tmp_path and Path(g["log_path"]).is_file()


def test_cli_unknown_guest_is_bad_input() -> None:
    out = shootdown("run", "--guest", "no-such-guest")
    assert out.returncode == 2
    assert "unknown guest 'no-such-guest'" in out.stderr


def test_cli_bad_definition_is_bad_input(tmp_path: Path) -> None:
    (tmp_path / "broken.toml").write_text('name = "broken"\nsmp = "two"\n')
    out = shootdown("run", "--guests-dir", str(tmp_path), "--guest", "broken")
    assert out.returncode == 2
    assert "broken.toml: key 'smp': expected an integer" in out.stderr


def test_cli_hang_is_infra(guests_dir: Path, tmp_path: Path) -> None:
    out = shootdown("run", "--guests-dir", str(guests_dir), "--guest", "quick",
                    "--debug-command", "hang", "--logdir", str(tmp_path / "logs"))
    assert out.returncode == 3
    assert "(hang)" in out.stderr
    log = Path(out.stderr.split("log: ")[-1].strip())
    assert log.parent == tmp_path / "logs" and "READY" in log.read_text(), out.stderr


def test_cli_crash_is_infra(guests_dir: Path, tmp_path: Path) -> None:
    out = shootdown("run", "--guests-dir", str(guests_dir), "--guest", "quick",
                    "--debug-command", "crash", "--logdir", str(tmp_path))
    assert out.returncode == 3
    assert "esr=0x" in out.stderr and "log: " in out.stderr
    assert "FAULT" in Path(out.stderr.split("log: ")[-1].strip()).read_text()


def test_cli_temporary_logdir_kept_only_on_failure(guests_dir: Path, tmp_path: Path) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {"TMPDIR": str(tmp)}
    assert shootdown("run", "--guests-dir", str(guests_dir), "--guest", "quick",
                     env=env).returncode == 0
    assert list(tmp.iterdir()) == []
    out = shootdown("run", "--guests-dir", str(guests_dir), "--guest", "quick",
                    "--debug-command", "crash", env=env)
    assert out.returncode == 3
    (kept,) = tmp.iterdir()
    assert kept.name.startswith("shootdown-") and str(kept) in out.stderr


def test_cli_missing_qemu_is_infra(firmware_elf: Path) -> None:
    out = shootdown("run", env={"SHOOTDOWN_QEMU": "/nonexistent/qemu-system-aarch64"})
    assert out.returncode == 3
    assert "QEMU binary not found" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_granule_the_cpu_lacks_is_bad_input(firmware_elf: Path, qemu: str,
                                            tmp_path: Path) -> None:
    # QEMU's Cortex-A57 does not implement the 16K granule (ID_AA64MMFR0_EL1.TGran16 = 0).
    guest = Guest(find_guest("virt-a57"), log_path=tmp_path / "c.log", granule="16k")
    with pytest.raises(ConfigError, match="granule_unsupported"):
        guest.launch()


@pytest.mark.slow
@pytest.mark.parametrize("granule", ["4k", "16k", "64k"])
@pytest.mark.parametrize("name", ["virt-a57", "virt-a72", "virt-max"])
def test_matrix(name: str, granule: str, firmware_elf: Path, qemu: str, tmp_path: Path) -> None:
    """Every shipped guest with every granule: smoke passes, or the CPU lacks the granule."""
    guest = Guest(find_guest(name), log_path=tmp_path / "c.log", granule=granule)
    if granule == "16k" and name != "virt-max":
        with pytest.raises(ConfigError, match="granule_unsupported"):
            guest.launch()
        return
    with guest:
        assert guest.begin is not None and guest.begin.text("granule") == granule
        smoke = guest.command("SMOKE")
    assert [r.text("status") for r in smoke if r.tag == "SMOKE"] == ["pass"]
    assert guest.exit_status == 0


#: Modules that must not be imported before QEMU starts (start-up time).
HEAVY = {"pathlib", "logging", "dataclasses", "inspect", "pexpect", "json", "tempfile",
         "subprocess", "shootdown.result", "shootdown.trace.console", "elftools"}

PROBE = """
import sys
import shootdown.guest.launcher as launcher
spawn = launcher.LocalLauncher.spawn
seen = []
def probe(self, argv, log_path):
    seen.extend(sorted(sys.modules))
    return spawn(self, argv, log_path)
launcher.LocalLauncher.spawn = probe
from shootdown.cli import main
code = main(["run"])
print(" ".join(seen))
sys.exit(code)
"""


def test_nothing_heavy_is_imported_before_qemu_starts(firmware_elf: Path, qemu: str,
                                                      tmp_path: Path) -> None:
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path)}
    for run in ("cold cache", "warm cache"):
        out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                             timeout=60, check=False, env=env)
        assert out.returncode == 0, out.stderr
        before_spawn = set(out.stdout.split("\n")[-2].split())
        assert "shootdown.guest.machine" in before_spawn
        heavy = HEAVY | ({"tomllib"} if run == "warm cache" else set())
        assert not {m.split(".")[0] if m.split(".")[0] != "shootdown" else m
                    for m in before_spawn} & heavy, run


def test_qemu_version_is_cached_until_the_binary_changes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    binary = tmp_path / "qemu-system-aarch64"
    binary.write_text("#!/bin/sh\necho 'QEMU emulator version 1.0'\necho 'Copyright'\n")
    binary.chmod(0o755)
    launcher = LocalLauncher()
    assert launcher.qemu_version(str(binary)) == "QEMU emulator version 1.0"
    cache = tmp_path / "cache" / "shootdown" / "qemu-version.json"
    entries = json.loads(cache.read_text())
    assert list(entries.values()) == ["QEMU emulator version 1.0"]
    # The cached answer is used as long as the binary is unchanged ...
    cache.write_text(json.dumps({key: "from the cache" for key in entries}))
    assert launcher.qemu_version(str(binary)) == "from the cache"
    # ... and asked again once it changes.
    binary.write_text("#!/bin/sh\necho 'QEMU emulator version 2.0 (new build)'\n")
    assert launcher.qemu_version(str(binary)) == "QEMU emulator version 2.0 (new build)"


def test_firmware_older_than_its_sources_is_noticed(tmp_path: Path) -> None:
    from shootdown.commands.run import newer_firmware_source

    (tmp_path / "src").mkdir()
    (tmp_path / "build").mkdir()
    (tmp_path / "Makefile").write_text("all:\n")
    source = tmp_path / "src" / "mmu.c"
    source.write_text("int x;\n")
    elf = tmp_path / "build" / "shootdown-4k.elf"
    elf.write_bytes(b"\x7fELF")
    os.utime(source, ns=(1_000_000_000, 1_000_000_000))
    os.utime(tmp_path / "Makefile", ns=(1_000_000_000, 1_000_000_000))
    assert newer_firmware_source(str(elf)) is None
    os.utime(source, ns=(9_000_000_000_000_000_000, 9_000_000_000_000_000_000))
    assert newer_firmware_source(str(elf)) == str(source)
    assert newer_firmware_source(str(tmp_path / "src" / "mmu.c")) is None  # not in build/


def test_multi_line_command(firmware_elf: Path, qemu: str, tmp_path: Path) -> None:
    """A scenario (SCN .. GO) is one command: the lines before GO are not answered."""
    scenario = ["SCN id=1 policy=v6.19 granule=4k va_bits=48 asid=1 kpti=0 ttl=0 tlbirange=0 "
                "inject=none", "MAP level=3 addr=0x400000 count=1",
                "STEP n=0 kind=flush_tlb_page addr=0x400000"]
    with Guest(find_guest("virt-a57"), log_path=tmp_path / "c.log") as guest:
        records = guest.command("GO", before=scenario)
        assert records[0].tag == "SCN" and records[-1].tag == "SCNEND"
        assert records[-1].number("probefail") == 0
        assert [r.tag for r in guest.command("PING")] == ["PONG"]  # still in step


def test_smoke_verdicts() -> None:
    import zlib

    from shootdown.commands.run import check_smoke
    from shootdown.errors import ProtocolError
    from shootdown.result import Verdict, overall
    from shootdown.trace.console import parse_record

    def smoke(payload: str) -> list[Record]:
        body = f"SD1 4 SMOKE {payload}"
        return [parse_record(f"{body} *{zlib.crc32(body.encode()):08x}".encode())]

    assert check_smoke(smoke("status=pass stale=2")).verdict is Verdict.PASS
    failed = check_smoke(smoke("status=fail why=stale_read"))
    assert failed.verdict is Verdict.FAIL and failed.detail == "why=stale_read"
    assert overall([Verdict.PASS, failed.verdict]) is Verdict.FAIL
    assert overall([Verdict.CAUGHT, Verdict.PASS]) is Verdict.PASS
    assert overall([Verdict.SKIP, Verdict.SKIP]) is Verdict.NOTHING_RAN
    assert overall([]) is Verdict.NOTHING_RAN
    assert overall([Verdict.SKIP, Verdict.PASS]) is Verdict.PASS
    assert not Verdict.MISSED.ok
    with pytest.raises(ProtocolError, match="neither pass nor fail"):
        check_smoke(smoke("status=maybe"))
    with pytest.raises(ProtocolError, match="expected one SMOKE record"):
        check_smoke([])


def test_lpa2_scenarios_are_skipped_before_any_boot_with_the_reason(tmp_path: Path) -> None:
    """The firmware has no LPA2 translation regime: such a scenario never reaches a
    guest (no boot at all), is a SKIP naming why, and the model still answers it."""
    lpa2 = str(ROOT / "guests" / "model-only" / "lpa2-munmap-range-unaligned.toml")
    out = shootdown("run", lpa2, "--guest", "virt-max", "--logdir", str(tmp_path))
    assert out.returncode == 5, out.stdout + out.stderr   # nothing ran
    assert "no LPA2 translation regime" in out.stdout and "0 boot(s)" in out.stdout
    assert not list(tmp_path.glob("*.console.log"))
    model = shootdown("model", lpa2)
    assert model.returncode == 0 and "rvale1is" in model.stdout, model.stderr
