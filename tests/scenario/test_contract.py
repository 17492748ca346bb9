"""The kernel's calling contract: raw calls the kernel never makes are bad input (exit 2)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from shootdown import cli
from shootdown.errors import ScenarioError
from shootdown.scenario import load_scenario, load_scenario_text
from shootdown.scenario.contract import check_contract

ROOT = Path(__file__).resolve().parents[2]
LIBRARY = sorted([*(ROOT / "guests" / "scenarios").rglob("*.toml"),
                  *(ROOT / "docs" / "examples").glob("*.toml")])


def flush_range(stride: int, *, granule: str = "4k", level: int | None = None,
                start: int = 0x40000000, end: int = 0x40800000) -> str:
    text = (f'granule = "{granule}"\n[[step]]\nkind = "flush_tlb_range"\n'
            f"start = {start:#x}\nend = {end:#x}\nstride = {stride:#x}\n")
    return text + (f"level = {level}\n" if level is not None else "")


@pytest.mark.parametrize(("granule", "stride"), [
    ("4k", 0x2000), ("4k", 0x10000), ("4k", 0x400000), ("4k", 0x80000000),
    ("16k", 0x8000), ("16k", 0x1000000),       # CONT_PTE size on 16K is never a stride
    ("64k", 0x20000), ("64k", 0x200000),       # CONT_PTE on 64K: 2 MiB
])
def test_a_stride_no_kernel_caller_passes_is_refused(granule: str, stride: int) -> None:
    sc = load_scenario_text(flush_range(stride, granule=granule, end=0x4_0000_0000 * 4))
    with pytest.raises(ScenarioError) as info:
        check_contract(sc)
    msg = str(info.value)
    assert msg.startswith("<scenario>: step 1: stride: ")
    assert "__flush_tlb_range" in msg and "PMD_SIZE" in msg


@pytest.mark.parametrize(("stride", "level"), [(0x1000, 2), (0x200000, 3), (0x200000, 1),
                                                (0x40000000, 2), (0x1000, 0)])
def test_a_level_hint_that_does_not_match_the_stride_is_refused(stride: int, level: int) -> None:
    sc = load_scenario_text(flush_range(stride, level=level, end=0x80000000))
    with pytest.raises(ScenarioError, match=r"^<scenario>: step 1: level: level "):
        check_contract(sc)


@pytest.mark.parametrize(("granule", "stride", "level"), [
    ("4k", 0x1000, 3), ("4k", 0x200000, 2), ("4k", 0x40000000, 1), ("4k", 0x200000, None),
    ("16k", 0x4000, 3), ("16k", 0x2000000, 2), ("64k", 0x10000, 3), ("64k", 0x20000000, 2),
])
def test_every_stride_and_level_the_kernel_passes_is_accepted(granule: str, stride: int,
                                                              level: int | None) -> None:
    # An end not aligned to the stride is within the contract: tlb_flush() passes one.
    check_contract(load_scenario_text(flush_range(stride, granule=granule, level=level,
                                                  end=0x80010000)))


@pytest.mark.parametrize("path", LIBRARY, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_scenario_library_keeps_the_contract(path: Path) -> None:
    check_contract(load_scenario(path))


def test_shootdown_run_refuses_an_out_of_contract_stride_without_booting(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "stride.toml"
    bad.write_text(flush_range(0x2000))
    marker = tmp_path / "qemu-started"
    fake = tmp_path / "qemu"
    fake.write_text(f"#!/bin/sh\ntouch {marker}\nexit 1\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    code = cli.main(["run", str(bad), "--policy", "v4.20,v6.19", "--qemu", str(fake)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1, err
    assert f"{bad}: step 1: stride: " in err and "__flush_tlb_range" in err
    assert not marker.exists()
