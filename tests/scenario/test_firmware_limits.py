"""The firmware's limits, checked on the host before booting (exit 2), read from its sources."""

from __future__ import annotations

import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from shootdown import cli
from shootdown.errors import ScenarioError
from shootdown.scenario import load_scenario, load_scenario_text
from shootdown.scenario.limits import FirmwareLimits, check_firmware_limits, read_limits

ROOT = Path(__file__).resolve().parents[2]
LIMITS = read_limits()
MIB = 1 << 20

#: the 4-line scenario that flushes the whole 48-bit user VA (exit 3 before the check)
WHOLE_VA = '[[step]]\nkind = "flush_tlb_range"\nstart = 0\nend = 0x1000000000000\n'


def refused(text: str, memory: int | None = None) -> str:
    with pytest.raises(ScenarioError) as info:
        check_firmware_limits(load_scenario_text(text), LIMITS, memory)
    return str(info.value)


def pages(addr: int, count: int) -> str:
    return f'{{ op = "remove_pte", addr = {addr:#x}, count = {count:#x} }}'


def test_the_limits_are_the_ones_the_firmware_is_compiled_with(tmp_path: Path) -> None:
    """The C compiler, not this parser, has the last word on each value."""
    cc = shutil.which("aarch64-linux-gnu-gcc")
    if cc is None:
        pytest.skip("aarch64-linux-gnu-gcc missing (scripts/setup installs it)")
    probe = tmp_path / "limits.c"
    probe.write_text(
        '#include "shootdown.h"\n#include "scenario.h"\n#include "uspace.h"\n'
        f"_Static_assert(SCN_MAX_MAPS == {LIMITS.max_maps}, \"maps\");\n"
        f"_Static_assert(SCN_MAX_STEPS == {LIMITS.max_steps}, \"steps\");\n"
        f"_Static_assert(SCN_MAX_OPS == {LIMITS.max_ops}, \"ops\");\n"
        f"_Static_assert(SCN_MAX_COUNT == {LIMITS.max_count}UL, \"count\");\n"
        f"_Static_assert(RAM_MAP_SIZE == {LIMITS.ram_map_size}UL, \"ram\");\n"
        f"_Static_assert(DATA_POOL_PAGES == {LIMITS.data_pool_pages}, \"data\");\n")
    main_c = (ROOT / "firmware" / "src" / "main.c").read_text()
    line_max = next(line for line in main_c.splitlines() if line.startswith("#define LINE_MAX"))
    probe.write_text(probe.read_text() + line_max + "\n"
                     f"_Static_assert(LINE_MAX == {LIMITS.line_max}, \"line\");\n")
    subprocess.run([cc, "-fsyntax-only", "-ffreestanding", "-DGRANULE_SHIFT=12",
                    f"-I{ROOT / 'firmware' / 'include'}", str(probe)], check=True)


def test_whole_user_va_is_over_scn_max_count() -> None:
    msg = refused(WHOLE_VA)
    assert msg.startswith("<scenario>: step 1: end: ") and "SCN_MAX_COUNT = 0x400000" in msg


def test_a_remove_pte_over_scn_max_count() -> None:
    msg = refused(f'[[step]]\nkind = "gather"\nops = [{pages(0x400000, LIMITS.max_count + 1)}]\n')
    assert msg.startswith("<scenario>: step 1: ops[0].count: ") and "SCN_MAX_COUNT" in msg


def test_two_adjacent_runs_merged_into_one_map_over_scn_max_count() -> None:
    half = LIMITS.max_count // 2 + 1
    msg = refused(f'[[step]]\nkind = "gather"\nops = [{pages(0x400000, half)}, '
                  f'{pages(0x400000 + half * 0x1000, half)}]\n')
    assert "SCN_MAX_COUNT" in msg and "ops[0].count" in msg


def test_steps_over_scn_max_steps() -> None:
    msg = refused('[[step]]\nkind = "flush_tlb_mm"\n' * (LIMITS.max_steps + 1))
    assert msg.startswith(f"<scenario>: step {LIMITS.max_steps + 1}: step: ")
    assert "SCN_MAX_STEPS = 0x40 (64)" in msg


def test_gather_calls_over_scn_max_ops() -> None:
    per_step = 200
    step = '[[step]]\nkind = "gather"\nops = [' + ", ".join(['{ op = "flush" }'] * per_step) + "]\n"
    n = LIMITS.max_ops // per_step + 1
    msg = refused(step * n)
    assert msg.startswith(f"<scenario>: step {n}: ops: ") and "SCN_MAX_OPS" in msg


def test_mappings_over_scn_max_maps() -> None:
    maps = "".join(f"[[map]]\nlevel = 3\naddr = {0x400000 + k * 0x200000:#x}\n"
                   for k in range(LIMITS.max_maps + 1))
    msg = refused(maps + '[[step]]\nkind = "flush_tlb_mm"\n')
    assert msg.startswith("<scenario>: map: ") and "SCN_MAX_MAPS" in msg


def test_page_tables_over_the_guests_page_pool() -> None:
    # 1024 runs of 4096 pages, each in its own 1 GiB: 8192 PTE tables, 1024 PMD tables
    ops = ", ".join(pages(k << 30, 4096) for k in range(1, 1025))
    text = f'[[step]]\nkind = "gather"\nops = [{ops}]\n'
    small = FirmwareLimits(**{**LIMITS.__dict__, "max_ops": 1 << 20, "max_maps": 1 << 20})
    with pytest.raises(ScenarioError,
                       match=r"page pool \(8 MiB of RAM\): over the firmware's limit RAM_MAP_SIZE"):
        check_firmware_limits(load_scenario_text(text), small, 8 * MIB)
    check_firmware_limits(load_scenario_text(text), small, 128 * MIB)


@pytest.mark.parametrize("path", sorted([*(ROOT / "guests" / "scenarios").rglob("*.toml"),
                                         *(ROOT / "docs" / "examples").glob("*.toml")]),
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_the_scenario_library_fits_the_firmware(path: Path) -> None:
    check_firmware_limits(load_scenario(path), LIMITS, 128 * MIB)


def fake_qemu(tmp_path: Path) -> tuple[Path, Path]:
    marker = tmp_path / "qemu-started"
    fake = tmp_path / "qemu"
    fake.write_text(f"#!/bin/sh\ntouch {marker}\nexit 1\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    return fake, marker


@pytest.mark.parametrize(("text", "field"), [
    (WHOLE_VA, "step 1: end: "),
    (f'[[step]]\nkind = "gather"\nops = [{pages(0x400000, LIMITS.max_count + 1)}]\n',
     "step 1: ops[0].count: "),
], ids=["whole-va", "over-count"])
def test_shootdown_run_refuses_over_the_limit_without_booting(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, field: str) -> None:
    path = tmp_path / "big.toml"
    path.write_text(text)
    fake, marker = fake_qemu(tmp_path)
    code = cli.main(["run", str(path), "--policy", "all", "--qemu", str(fake)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("shootdown: error: "), err
    assert f"{path}: {field}" in err and "SCN_MAX_COUNT = 0x400000" in err
    assert not marker.exists()


def test_shootdown_model_still_models_what_the_firmware_cannot_hold(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "big.toml"
    path.write_text(f'[[step]]\nkind = "gather"\nops = [{pages(0x400000, LIMITS.max_count + 1)}]\n')
    assert cli.main(["model", str(path), "--policy", "v6.19", "--format", "summary"]) == 0
    assert "v6.19" in capsys.readouterr().out
