"""Loading and validating scenario files: every example loads, bad input is one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from shootdown import cli
from shootdown.errors import ScenarioError
from shootdown.scenario import (
    FlushTlbKernelRangeStep,
    GatherOp,
    GatherStep,
    Geometry,
    Mapping,
    MunmapStep,
    load_scenario,
    load_scenario_text,
)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "docs" / "examples").glob("*.toml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_loads(path: Path) -> None:
    sc = load_scenario(path)
    assert sc.steps


def test_the_issue_example_parses_into_the_dataclass_tree() -> None:
    sc = load_scenario(ROOT / "docs" / "examples" / "basic.toml")
    assert (sc.granule, sc.va_bits, sc.asid, sc.kpti) == ("4k", 48, 42, False)
    assert sc.steps[0] == GatherStep(False, (
        GatherOp("remove_pte", 0x400000, 512), GatherOp("remove_pmd", 0x800000),
        GatherOp("free_pte_table", 0x400000), GatherOp("flush")))
    assert sc.steps[1] == FlushTlbKernelRangeStep(0xFFFF000008000000, 0xFFFF000008010000)


def test_munmap_defaults_layout_and_floor_ceiling() -> None:
    sc = load_scenario_text('[[step]]\nkind = "munmap"\nstart = 0x200000\nend = 0x400000\n')
    assert sc.steps[0] == MunmapStep(0x200000, 0x400000, (Mapping(3, 0x200000, 512),),
                                     0x200000, 0x400000)


@pytest.mark.parametrize(("granule", "va_bits", "levels", "pmd", "pud", "pgdir"), [
    ("4k", 39, 3, 21, 30, 30), ("4k", 48, 4, 21, 30, 39),
    ("16k", 36, 2, 25, 25, 25), ("16k", 47, 3, 25, 36, 36), ("16k", 48, 4, 25, 36, 47),
    ("64k", 42, 2, 29, 29, 29), ("64k", 48, 3, 29, 42, 42), ("64k", 52, 3, 29, 42, 42),
])
def test_geometry_matches_the_kernels_shifts(granule: str, va_bits: int, levels: int, pmd: int,
                                             pud: int, pgdir: int) -> None:
    g = Geometry(granule, va_bits)
    assert (g.levels, g.pmd_shift, g.pud_shift, g.pgdir_shift) == (levels, pmd, pud, pgdir)
    assert g.max_table_batch == {"4k": 509, "16k": 2045, "64k": 8189}[granule]


GOOD = '[[step]]\nkind = "flush_tlb_page"\naddr = 0x400000\n'

BAD = [
    ("granule = \"8k\"\n" + GOOD, "<scenario>: granule: unknown granule '8k'"),
    ("va_bits = 39\ngranule = \"64k\"\n" + GOOD, "<scenario>: va_bits: 39 is not a VA size"),
    ("colour = 1\n" + GOOD, "<scenario>: colour: unknown key"),
    ('[[step]]\nkind = "flush_tlb_page"\naddr = 0x400000\nsize = 1\n',
     "<scenario>: step 1: size: unknown key"),
    ('[[step]]\nkind = "flush_tlb_pages"\n', "<scenario>: step 1: kind: unknown kind"),
    ('[[step]]\nkind = "flush_tlb_page"\naddr = 0x400010\n',
     "<scenario>: step 1: addr: address 0x400010 is not aligned"),
    ('[[step]]\nkind = "flush_tlb_page"\naddr = 0x1000000000000\n',
     "<scenario>: step 1: addr: address 0x1000000000000 (+0x1000) is outside the 48-bit"),
    (GOOD + '[[step]]\nkind = "munmap"\nstart = 0x400000\nend = 0x400000\n',
     "<scenario>: step 2: end: start 0x400000 must be below end"),
    ('[[step]]\nkind = "gather"\nops = [ { op = "zap", addr = 0 } ]\n',
     "<scenario>: step 1: ops[0].op: unknown op 'zap'"),
    ('[[step]]\nkind = "gather"\nops = [ { op = "remove_pmd", addr = 0x1000 } ]\n',
     "<scenario>: step 1: ops[0].addr: address 0x1000 is not aligned to 0x200000"),
    ('[[step]]\nkind = "gather"\nops = [ { op = "flush", addr = 0 } ]\n',
     "<scenario>: step 1: ops[0].addr: unknown key"),
    ('granule = "16k"\n[[step]]\nkind = "gather"\nops = [ { op = "remove_pud", addr = 0 } ]\n',
     "<scenario>: step 1: ops[0].op: PUD blocks exist only with the 4k granule"),
    ('[[step]]\nkind = "flush_tlb_kernel_range"\nstart = 0x1000\nend = 0x2000\n',
     "<scenario>: step 1: start: address 0x1000 is outside the 48-bit kernel range"),
    ('cpu_features = ["sve"]\n' + GOOD, "<scenario>: cpu_features: unknown cpu feature 'sve'"),
    ("", "<scenario>: step: no [[step]]"),
    ("asid = 70000\n" + GOOD, "<scenario>: asid: ASID 70000 out of range"),
    ('[[step]]\nkind = "flush_tlb_range"\nstart = 0\nend = 0x2000\nstride = 0x1800\n',
     "<scenario>: step 1: stride: stride 0x1800 must be a power of two"),
    ("granule = \n", "<scenario>: not valid TOML"),
]


@pytest.mark.parametrize(("text", "message"), BAD, ids=[m.split(": ", 1)[1][:40] for _, m in BAD])
def test_invalid_scenarios_name_file_step_and_field(text: str, message: str) -> None:
    with pytest.raises(ScenarioError) as info:
        load_scenario_text(text)
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)


def test_overrides_are_validated_like_the_file() -> None:
    text = '[[step]]\nkind = "gather"\nops = [ { op = "remove_pmd", addr = 0x2000000 } ]\n'
    assert load_scenario_text(text, overrides={"granule": "16k"}).granule == "16k"
    with pytest.raises(ScenarioError, match="not aligned to 0x20000000"):
        load_scenario_text(text, overrides={"granule": "64k"})


def test_cli_reports_a_bad_scenario_in_one_line_with_exit_2(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[[step]]\nkind = "munmap"\nstart = 0x3000\nend = 0x1000\n')
    assert cli.main(["model", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"shootdown: error: {bad}: step 1: end: start 0x3000 must be below end 0x1000"]


def test_cli_unknown_policy_and_feature_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    path = str(ROOT / "docs" / "examples" / "basic.toml")
    assert cli.main(["model", path, "--policy", "v4.9"]) == 2
    assert "unknown policy 'v4.9'" in capsys.readouterr().err
    assert cli.main(["model", path, "--cpu-features", "ttl,sve"]) == 2
    assert "--cpu-features: unknown feature(s) sve" in capsys.readouterr().err
    assert cli.main(["model", str(ROOT / "nonexistent.toml")]) == 2
