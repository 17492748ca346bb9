"""The random scenario generator: seeded, valid, within the firmware's limits,
and (on a real guest) in agreement with the golden model."""

from __future__ import annotations

from pathlib import Path

import pytest

from shootdown.cli import main as cli_main
from shootdown.generate import MAX_MAPS, MAX_OPS, generate, generate_one
from shootdown.scenario.load import load_scenario_text
from shootdown.scenario.lower import lower
from shootdown.scenario.types import GatherStep


def test_same_seed_same_scenarios() -> None:
    a = [g.text for g in generate(11, 20)]
    b = [g.text for g in generate(11, 20)]
    assert a == b
    assert a != [g.text for g in generate(12, 20)]
    # Scenario i does not depend on the ones before it.
    assert generate_one(11, 7).text == a[7]


def test_generated_text_loads_and_fits_the_firmware() -> None:
    kinds: set[str] = set()
    geometries: set[tuple[str, int]] = set()
    for g in generate(5, 400):
        again = load_scenario_text(g.text, g.scenario.path)  # the text alone reproduces it
        assert again == g.scenario
        low = lower(g.scenario)
        assert len(low.layout.user) + len(low.layout.kernel) <= MAX_MAPS
        assert sum(len(s.step.ops) for s in low.steps
                   if isinstance(s.step, GatherStep)) <= MAX_OPS
        kinds |= {s.kind for s in g.scenario.steps}
        geometries.add((g.scenario.granule, g.scenario.va_bits))
    assert kinds == {"gather", "munmap", "flush_tlb_mm", "flush_tlb_page", "flush_tlb_range",
                     "flush_tlb_kernel_range", "flush_tlb_kernel_pgtable"}
    assert geometries == {("4k", 39), ("4k", 48), ("16k", 36), ("16k", 47), ("16k", 48),
                          ("64k", 42), ("64k", 48), ("4k", 52), ("16k", 52)}  # 52: LPA2


@pytest.mark.guest
def test_fuzz_command_passes_and_reproduces(firmware_elf: Path, qemu: str, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "failures"
    code = cli_main(["fuzz", "--seed", "3", "--count", "60", "--guest", "virt-max",
                     "--out", str(out), "--chunk", "30"])
    text = capsys.readouterr().out
    assert code == 0, text
    assert "FAIL" not in text and "PASS 60" in text
    # With a bug injected, random scenarios catch it, and the saved file says how to rerun.
    code = cli_main(["fuzz", "--seed", "3", "--count", "40", "--guest", "virt-max",
                     "--policy", "v6.19", "--inject", "end_off_by_one", "--out", str(out)])
    text = capsys.readouterr().out
    assert code == 0, text
    saved = sorted(out.glob("*.toml"))
    assert saved, text
    head = saved[0].read_text(encoding="utf-8")
    assert "# reproduce: shootdown fuzz --seed 3" in head and 'policy = "v6.19"' in head
    load_scenario_text(head, str(saved[0]))
