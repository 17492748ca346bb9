"""The fuzzer draws every value the kernel's calling contract allows (pure logic).

A fuzzer that never draws a value cannot find the bug that hides behind it:
issue 13's model/firmware disagreement on a TTL level hint went unseen because
the generator only drew levels 2 and 3, and only with --with-level. The sets
asserted here come from the contract itself (shootdown.scenario.contract) and
the scenario language (CPU_FEATURES), not from the generator.
"""

from __future__ import annotations

import itertools
from collections import defaultdict

import pytest

from shootdown.generate import Generated, generate
from shootdown.scenario.contract import check_contract, strides
from shootdown.scenario.types import CPU_FEATURES, FlushTlbRangeStep

SEED, COUNT = 2026, 1500


@pytest.fixture(scope="module")
def drawn() -> list[Generated]:
    return list(generate(SEED, COUNT))


def _raw_strides(g: Generated) -> set[int]:
    """The strides a raw flush_tlb_range may use here: every stride of the
    contract that is not larger than the largest leaf the granule maps (a
    PUD_SIZE stride over pages leaves them cached: no caller makes it)."""
    geo = g.scenario.geometry
    largest = geo.block_size(1) if geo.pud_blocks else geo.pmd_size
    return {s for s in strides(g.scenario) if s <= largest}


def test_every_drawn_scenario_keeps_the_contract(drawn: list[Generated]) -> None:
    for g in drawn:
        check_contract(g.scenario)


def test_every_stride_and_level_of_the_contract_is_drawn(drawn: list[Generated]) -> None:
    seen: dict[tuple[str, int], set[tuple[int, int | None]]] = defaultdict(set)
    wanted: dict[tuple[str, int], set[tuple[int, int | None]]] = {}
    for g in drawn:
        key = (g.scenario.granule, g.scenario.va_bits)
        levels = strides(g.scenario)
        # each stride with its own TTL level, and with none (unknown)
        wanted[key] = {(s, lvl) for s in _raw_strides(g) for lvl in (levels[s], None)}
        for step in g.scenario.steps:
            if isinstance(step, FlushTlbRangeStep):
                seen[key].add((step.stride, step.level))
    assert len(wanted) == 9, sorted(wanted)  # every granule and VA size drawn (LPA2: 2)
    missing = {key: sorted(want - seen[key], key=str) for key, want in wanted.items()
               if want - seen[key]}
    assert not missing, f"(stride, level) pairs never drawn: {missing}"
    all_levels = {lvl for pairs in seen.values() for _, lvl in pairs}
    assert all_levels == {None, 1, 2, 3}


def test_pud_strides_are_drawn_over_pud_blocks(drawn: list[Generated]) -> None:
    for g in drawn:
        geo = g.scenario.geometry
        for step in g.scenario.steps:
            if isinstance(step, FlushTlbRangeStep) and step.stride == geo.pud_size \
                    and geo.pud_size != geo.pmd_size:
                assert geo.pud_blocks, g.text
                assert any(m.level == 1 and m.addr <= step.start < m.addr + m.count
                           * geo.pud_size for m in g.scenario.maps), g.text


def test_kpti_and_every_feature_combination_are_drawn(drawn: list[Generated]) -> None:
    kpti = {g.scenario.kpti for g in drawn}
    assert kpti == {False, True}
    combos = {tuple(sorted(g.scenario.cpu_features)) for g in drawn}
    every = {tuple(sorted(c)) for n in range(len(CPU_FEATURES) + 1)
             for c in itertools.combinations(CPU_FEATURES, n)}
    assert combos == every
    # each combination often enough to matter (uniform: about COUNT / 4 each)
    for c in every:
        n = sum(1 for g in drawn if tuple(sorted(g.scenario.cpu_features)) == c)
        assert n > COUNT // (2 * len(every)), (c, n)
    last = {s.last_level for g in drawn for s in g.scenario.steps
            if isinstance(s, FlushTlbRangeStep)}
    assert last == {False, True}


def test_feature_sets_follow_what_is_offered() -> None:
    from shootdown.generate import feature_sets

    assert feature_sets(False) == [()]
    assert feature_sets(["ttl"]) == [(), ("ttl",)]
    assert len(feature_sets(True)) == 2 ** len(CPU_FEATURES)
    assert tuple(CPU_FEATURES) in feature_sets(True)
    assert sorted(feature_sets(["ttl", "tlbirange"])) == [(), ("tlbirange",), ("ttl",),
                                                          ("ttl", "tlbirange")]
    assert {g.scenario.cpu_features for g in generate(3, 30, features=False)} == {frozenset()}


def test_the_fuzz_header_names_the_policy_used() -> None:
    from shootdown.commands.fuzz import describe_policies

    assert describe_policies("v6.19", ["v6.19"]) == "policy v6.19"
    assert describe_policies("v6.1", ["v5.14"]) == "policy v5.14 (v6.1 -> v5.14)"
    assert describe_policies("random", ["v4.19", "v5.0", "v6.19"]) == \
        "policy random (one of 3: v4.19..v6.19)"
    assert describe_policies("all", ["v4.19", "v6.19"]) == "policy all (each of 2: v4.19..v6.19)"
