"""Policies: the behaviour of one kernel release, as a set of named rules.

Each field is one rule that changed at some release, with the release in its
comment; :data:`POLICIES` builds every named release from the previous one by
changing only what that release changed.  ``docs/policies.md`` is the same
table for people (and for the firmware's C policies, which use the same names).
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, replace
from typing import Literal


@dataclass(frozen=True)
class Policy:
    """The arm64 mmu_gather / TLBI rules of one release."""

    #: release name, "vX.Y"
    name: str
    #: v4.19: each freed table is invalidated synchronously (TLBI VAE1IS; DSB ISH)
    sync_table_flush: bool = True
    #: v4.20: the gather tracks freed_tables / cleared_* and flushes by them
    gather_flags: bool = False
    #: v4.20: filling the table batch flushes the gathered range (RCU_TABLE_INVALIDATE)
    table_batch_invalidate: bool = False
    #: v4.20: set_pmd/set_pud barrier only for valid entries (clears issue none)
    pmd_barrier_valid_only: bool = False
    #: v5.4: an ISB follows the DSB ISHST of set_pmd/set_pud/set_pgd/set_p4d
    pgtable_isb: bool = False
    #: v4.20: __flush_tlb_kernel_pgtable starts with DSB ISHST
    kernel_pgtable_ishst: bool = False
    #: v5.4: __flush_tlb_kernel_pgtable ends with ISB
    kernel_pgtable_isb: bool = False
    #: kernel range op: VAAE1IS (v4.19) or VAALE1IS (v4.20)
    kernel_range_op: str = "vaae1is"
    #: user range cut-off: "1024_gt" (v4.19, v4.20: > 1024 * stride),
    #: "ptrs_ge" (v5.0: >= PTRS_PER_PTE * stride)
    range_cutoff: Literal["1024_gt", "ptrs_ge"] = "1024_gt"
    #: kernel range cut-off in pages: 1024 (v4.19) or PTRS_PER_PTE (v5.0), compared with >
    kernel_cutoff_ptrs: bool = False
    #: v5.2: __flush_tlb_range rounds start down and end up to the stride
    round_to_stride: bool = False
    #: up to v5.4 (5level-fixup.h): p4d_clear/pgd_clear are set_pgd and p4d_free_tlb is empty
    p4d_hack: bool = True
    #: flush skipped when end == 0 (up to v5.4) or when no flag is set (v5.9)
    skip_without_flags: bool = False
    #: v5.9: TTL hints (FEAT_TTL) and range TLBIs (FEAT_TLBIRANGE) exist
    ttl_and_range: bool = False
    #: v5.14: no TTL hint when tables were freed
    no_ttl_when_freed: bool = False
    #: range loop: "up" (v5.9: odd page first, scale 0 upwards) or "down" (v6.8)
    range_loop: Literal["up", "down"] = "up"
    #: v6.8: "unknown" level is TLBI_TTL_UNKNOWN, and level 0 is a valid hint
    ttl_unknown_constant: bool = False
    #: v6.9: __TLBI_RANGE_NUM clamps (NUM up to 31) instead of masking
    range_num_clamp: bool = False
    #: v6.9: a page batch moves on when one slot is left (nr >= max - 1), not when full
    page_batch_keep_one_free: bool = False
    #: v6.9: LPA2 (CONFIG_ARM64_LPA2): with it in use, range operands carry the base
    #: address in 64 KiB units and a range starts 64 KiB aligned (single ops until then)
    lpa2_ranges: bool = False
    #: v6.9: __flush_tlb_range = __flush_tlb_range_nosync + DSB ISH; the whole-ASID
    #: fallback (flush_tlb_mm, ends in DSB ISH) returns into it: a second DSB ISH.
    #: Off again from v7.1 (see range_fallback_returns)
    range_nosync_split: bool = False
    #: v6.10: range cut-off is pages > MAX_TLBI_RANGE_PAGES (was >=)
    range_max_inclusive: bool = False
    #: v6.13: flush_tlb_kernel_range uses the range loop and the shared cut-off
    kernel_range_loop: bool = False
    #: v6.19 (after v6.13): zap_huge_pud queues the (DAX) PUD page in the page batch
    pud_page_batched: bool = False
    #: v7.1: __do_flush_tlb_range (TLBF_* flags) returns straight after the whole-ASID
    #: fallback, so flush_tlb_mm's DSB ISH is the only completion (no second DSB ISH)
    range_fallback_returns: bool = False
    #: v7.1: without FEAT_TLBIRANGE the cut-off is only pages >= MAX_DVM_OPS strides
    #: (the pages > MAX_TLBI_RANGE_PAGES test applies only with range ops)
    cutoff_dvm_only_without_range: bool = False
    #: v7.1: flush_tlb_page goes through __do_flush_tlb_range with level 3: a TTL hint
    page_flush_ttl: bool = False
    #: v7.1 (and stable, see STABLE_BACKPORTS): "Optimize ARM64_WORKAROUND_REPEAT_TLBI":
    #: the erratum's repeat moves from every TLBI (DSB ISH; the same TLBI) to every
    #: completion (__tlbi_sync_s1ish: DSB ISH; TLBI VALE1IS, XZR; DSB ISH)
    repeat_tlbi_sync: bool = False

    @property
    def version(self) -> tuple[int, int]:
        major, minor = self.name[1:].split(".")[:2]  # "v5.10.223" (stable) -> (5, 10)
        return int(major), int(minor)


def _build() -> dict[str, Policy]:
    p = Policy("v4.19")
    out = {p.name: p}

    def step(name: str, **changes: object) -> None:
        nonlocal p
        p = replace(p, name=name, **changes)  # type: ignore[arg-type]
        out[name] = p

    step("v4.20", sync_table_flush=False, gather_flags=True, table_batch_invalidate=True,
         pmd_barrier_valid_only=True, kernel_pgtable_ishst=True, kernel_range_op="vaale1is")
    step("v5.0", range_cutoff="ptrs_ge", kernel_cutoff_ptrs=True)
    step("v5.2", round_to_stride=True)
    step("v5.4", pgtable_isb=True, kernel_pgtable_isb=True)
    step("v5.9", p4d_hack=False, skip_without_flags=True, ttl_and_range=True)
    step("v5.14", no_ttl_when_freed=True)
    step("v6.8", range_loop="down", ttl_unknown_constant=True)
    step("v6.9", range_num_clamp=True, page_batch_keep_one_free=True,
         range_nosync_split=True, lpa2_ranges=True)
    step("v6.10", range_max_inclusive=True)
    step("v6.13", kernel_range_loop=True)
    step("v6.19", pud_page_batched=True)
    step("v7.1", range_nosync_split=False, range_fallback_returns=True,
         cutoff_dvm_only_without_range=True, page_flush_ttl=True, repeat_tlbi_sync=True)
    return out


#: release name -> Policy, oldest first
POLICIES: dict[str, Policy] = _build()

#: the policy used when neither the CLI nor the scenario names one
DEFAULT_POLICY = "v7.1"

#: Rules that reached an older stable series by backport (the upstream commit carried
#: "Cc: stable"), as (rule, the release that brought it upstream, the stable series,
#: the first sublevel of that series known to carry it).  The sublevel is the oldest one
#: seen to behave so, not necessarily the backport's own: a kernel below it keeps the
#: series' upstream policy.
#:
#: * no_ttl_when_freed: "arm64: tlb: fix the TTL value of tlb_get_level" (v5.14,
#:   arch/arm64/include/asm/tlb.h tlb_get_level: ``if (tlb->freed_tables) return 0;``),
#:   "Cc: <stable@vger.kernel.org> # 5.9.x"; Debian's 5.10.223 (bullseye) issues TTL 0
#:   for a range flush that freed a PMD table, where upstream v5.10 gave TTL 1.
#: * repeat_tlbi_sync: "arm64: tlb: Optimize ARM64_WORKAROUND_REPEAT_TLBI" (Mark Rutland,
#:   2026, with the CME DVMSync erratum series, backported to the stable series):
#:   Debian's linux-source-6.1 6.1.176 and linux-source-6.12 6.12.117 have
#:   __tlbi_sync_s1ish() = dsb(ish); __repeat_tlbi_sync(vale1is, 0) in tlbflush.h
#:   (6.1: lines 153-168; 6.12: 176-191), and the 6.1 kernel on a Cortex-A76 issues
#:   TLBI VALE1IS, XZR; DSB ISH after each completing DSB ISH.
STABLE_BACKPORTS: tuple[tuple[str, str, tuple[int, int], int], ...] = (
    ("no_ttl_when_freed", "v5.14", (5, 10), 223),
    ("repeat_tlbi_sync", "v7.1", (6, 1), 176),
    ("repeat_tlbi_sync", "v7.1", (6, 12), 117),
)


def stable_policy(upstream: tuple[int, int, int]) -> Policy | None:
    """The policy of a stable kernel (``upstream`` = major, minor, sublevel) when
    backports make it differ from its series' upstream policy; None when they do not.

    It is the series' policy (the newest not newer than major.minor) with every
    backported rule on, named ``vMAJOR.MINOR.SUBLEVEL`` (:data:`STABLE_BACKPORTS`)."""
    series = upstream[:2]
    rules = {rule: True for rule, _, s, first in STABLE_BACKPORTS
             if s == series and upstream[2] >= first}
    if not rules:
        return None
    base = POLICIES[resolve_policy_name(f"v{series[0]}.{series[1]}")]
    if all(getattr(base, r) for r in rules):
        return None
    name = "v" + ".".join(str(n) for n in upstream)
    policy = replace(base, name=name, **rules)  # type: ignore[arg-type]
    STABLE_POLICIES[name] = policy
    return policy


#: stable policies made by :func:`stable_policy`, by name (get_policy finds them too)
STABLE_POLICIES: dict[str, Policy] = {}


def resolve_policy_name(name: str) -> str:
    """The policy a release name stands for: itself if it is a policy, else the
    newest policy not newer than it ("v6.1" and "6.1" -> "v5.14").  ConfigError
    (exit 2) for a malformed name or one older than the oldest policy."""
    from shootdown.errors import ConfigError

    if name in POLICIES:
        return name
    m = re.fullmatch(r"v?(\d+)\.(\d+)", name.strip())
    if m:
        want = (int(m.group(1)), int(m.group(2)))
        older = [p.name for p in POLICIES.values() if p.version <= want]
        if older:
            return older[-1]
    raise ConfigError(f"--policy: unknown policy {name!r} (a release vX.Y from "
                      f"{next(iter(POLICIES))}; known: {', '.join(POLICIES)})")


def get_policy(name: str) -> Policy:
    """The policy for a release name (see :func:`resolve_policy_name`); a release
    that is not itself a policy is noted on stderr ("v6.1 -> policy v5.14")."""
    m = re.fullmatch(r"v(\d+)\.(\d+)\.(\d+)", name)
    if m:  # a stable release: its own policy if backports make one, else its series'
        stable = stable_policy((int(m.group(1)), int(m.group(2)), int(m.group(3))))
        if stable is not None:
            return stable
        name = f"v{m.group(1)}.{m.group(2)}"
    resolved = resolve_policy_name(name)
    if resolved != name:
        print(f"{name} -> policy {resolved}", file=sys.stderr)
    return POLICIES[resolved]
