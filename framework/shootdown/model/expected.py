"""The golden model's entry point: scenario + policy -> expected instructions.

The model runs the *lowered* scenario (munmap expanded by
:func:`shootdown.scenario.lower`), i.e. exactly the calls the guest makes, and
groups what it emits per step, as the guest reports it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from shootdown.errors import ConfigError, ScenarioError
from shootdown.model.arm64 import Arm64
from shootdown.model.gather import MmuGather, ModelLimitError
from shootdown.model.instructions import Instruction, Why
from shootdown.model.policy import DEFAULT_POLICY, POLICIES, Policy, get_policy
from shootdown.scenario.geometry import valid_geometry
from shootdown.scenario.lower import LoweredStep, lower
from shootdown.scenario.types import (
    CPU_FEATURES,
    FlushTlbKernelPgtableStep,
    FlushTlbKernelRangeStep,
    FlushTlbMmStep,
    FlushTlbPageStep,
    FlushTlbRangeStep,
    GatherOp,
    GatherStep,
    Scenario,
)


@dataclass(frozen=True)
class StepResult:
    """The instructions one step is expected to issue, in program order."""

    #: step number, from 1
    index: int
    #: the kind written in the scenario ("munmap" for an expanded munmap)
    kind: str
    instructions: tuple[Instruction, ...]


def resolve_policy(policy: str | Policy | None, scenario: Scenario) -> Policy:
    """The CLI's choice, else the scenario's, else :data:`DEFAULT_POLICY`."""
    if isinstance(policy, Policy):
        return policy
    return get_policy(policy or scenario.policy or DEFAULT_POLICY)


def check_features(features: Iterable[str]) -> frozenset[str]:
    feats = frozenset(features)
    unknown = feats - set(CPU_FEATURES)
    if unknown:
        raise ConfigError(f"--cpu-features: unknown feature(s) {', '.join(sorted(unknown))} "
                          f"(known: {', '.join(CPU_FEATURES)})")
    return feats


def check_lpa2(scenario: Scenario, pol: Policy, feats: frozenset[str]) -> None:
    """LPA2 goes with a 52-bit 4K/16K geometry, both ways, and needs a release
    that has it (CONFIG_ARM64_LPA2, v6.9): anything else is no kernel's case."""
    geo = scenario.geometry
    needs = not valid_geometry(geo.granule, geo.va_bits)
    if ("lpa2" in feats) != needs:
        raise ConfigError(f"{scenario.path}: cpu_features: lpa2 is in use exactly when "
                          f"va_bits = 52 on a 4k or 16k granule (this is {geo.granule}, "
                          f"{geo.va_bits}-bit, features {', '.join(sorted(feats)) or 'none'})")
    if needs and not pol.lpa2_ranges:
        raise ConfigError(f"{scenario.path}: cpu_features: lpa2: {pol.name} has no LPA2 "
                          "(52-bit VA on 4K/16K pages came with CONFIG_ARM64_LPA2 in v6.9)")


def _run_gather(arm: Arm64, step: GatherStep, index: int) -> None:
    g = MmuGather(arm, step.fullmm, index)
    for j, op in enumerate(step.ops):
        try:
            _run_op(g, op)
        except ModelLimitError as exc:
            exc.field = exc.field or f"ops[{j}].count"
            raise
    g.finish()


def _run_op(g: MmuGather, op: GatherOp) -> None:
    name = op.op
    if name == "remove_pte":
        g.remove_pte(op.addr, op.count)
    elif name == "remove_pmd":
        g.remove_pmd(op.addr)
    elif name == "remove_pud":
        g.remove_pud(op.addr)
    elif name == "free_pte_table":
        g.free_pte_table(op.addr)
    elif name == "free_pmd_table":
        g.free_pmd_table(op.addr)
    elif name == "free_pud_table":
        g.free_pud_table(op.addr)
    elif name == "free_p4d_table":
        g.free_p4d_table(op.addr)
    elif name == "flush":
        g.flush()
    else:  # pragma: no cover - the loader rejects unknown ops
        raise AssertionError(name)


def run_step(arm: Arm64, ls: LoweredStep) -> None:
    """Emit what one lowered step issues into ``arm.out``."""
    step = ls.step
    arm.why = Why(ls.index, step.kind)
    if isinstance(step, GatherStep):
        _run_gather(arm, step, ls.index)
    elif isinstance(step, FlushTlbMmStep):
        arm.flush_tlb_mm()
    elif isinstance(step, FlushTlbPageStep):
        arm.flush_tlb_page(step.addr)
    elif isinstance(step, FlushTlbRangeStep):
        arm.flush_tlb_range(step.start, step.end, step.stride, step.last_level, step.level)
    elif isinstance(step, FlushTlbKernelRangeStep):
        arm.flush_tlb_kernel_range(step.start, step.end)
    elif isinstance(step, FlushTlbKernelPgtableStep):
        # pmd_free_pte_page(): the only caller; its pmd_clear orders the store
        # (a barrier in v4.19 only), then the walk-cache invalidation.
        arm.why = Why(ls.index, "pmd_free_pte_page: pmd_clear")
        arm.pmd_clear()
        arm.why = Why(ls.index, "pmd_free_pte_page > __flush_tlb_kernel_pgtable")
        arm.flush_tlb_kernel_pgtable(step.addr)
    else:  # pragma: no cover
        raise AssertionError(step)


def expected_sequence(scenario: Scenario, policy: str | Policy | None = None, *,
                      cpu_features: Iterable[str] | None = None,
                      kpti: bool | None = None) -> list[StepResult]:
    """The exact instructions each step of ``scenario`` should issue under ``policy``.

    ``cpu_features`` and ``kpti`` override the scenario's own fields when given.
    """
    pol = resolve_policy(policy, scenario)
    feats = check_features(scenario.cpu_features if cpu_features is None else cpu_features)
    use_kpti = scenario.kpti if kpti is None else kpti
    check_lpa2(scenario, pol, feats)
    results: list[StepResult] = []
    for ls in lower(scenario).steps:
        out: list[Instruction] = []
        arm = Arm64(pol, scenario.geometry, asid=scenario.asid, kpti=use_kpti, features=feats,
                    out=out)
        try:
            run_step(arm, ls)
        except ModelLimitError as exc:
            field = exc.field if ls.source_kind == "gather" else None
            raise ScenarioError(scenario.path, str(exc), step=ls.index, field=field) from None
        results.append(StepResult(ls.index, ls.source_kind, tuple(out)))
    return results


def flatten(results: Iterable[StepResult]) -> list[Instruction]:
    """All instructions of all steps, in order."""
    return [ins for r in results for ins in r.instructions]


__all__ = ["POLICIES", "StepResult", "check_features", "expected_sequence", "flatten",
           "resolve_policy", "run_step"]
