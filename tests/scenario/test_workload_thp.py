"""A kernel with THP off (below 512 MiB of RAM, mm/huge_memory.c hugepage_init, or
mode "never") maps a thp workload's region with pages: the expansion must say so,
or the model expects a PMD-block flush (TTL 2) where the kernel issues TTL 3."""

from __future__ import annotations

from pathlib import Path

from shootdown.scenario.types import GatherStep
from shootdown.scenario.workload import expand, load_workloads

THP = Path(__file__).resolve().parents[2] / "guests" / "kernel" / "thp.toml"
IMAGE = ((0x400000, 0x404000), (0x41F000, 0x433000))


def ops(thp: bool) -> set[str]:
    [ew] = expand(load_workloads(str(THP)), page_size=4096, va_bits=48, release=(6, 1),
                  image=IMAGE, thp=thp)
    return {op.op for exp in ew.steps for call in exp.calls if isinstance(call, GatherStep)
            for op in call.ops}


def test_thp_on_zaps_a_pmd_block_and_off_zaps_pages() -> None:
    assert "remove_pmd" in ops(thp=True)
    off = ops(thp=False)
    assert "remove_pmd" not in off and "remove_pte" in off
