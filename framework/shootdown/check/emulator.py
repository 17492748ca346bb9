"""Known QEMU defects, by version, and whether one explains a scenario's failed probes.

The probes read unmapped addresses after the teardown; under TCG a stale
translation that still works means a TLBI did not remove it.  That is the
target's fault only if QEMU implements the TLBI correctly.  When QEMU itself
under-invalidates, a correct sequence (equal to the golden model's,
instruction by instruction) still leaves readable pages: the verdict is then
EMULATOR_LIMIT ("emulator limitation"), never FAIL and never a silent PASS.
The sequence check is not affected: a policy that really omits or shortens
the TLBI differs from the model and fails on the sequence.

Other defects make QEMU over-invalidate: they cannot cause a false FAIL, but
they make the probes blind to some under-invalidation bugs (only the
sequence catches those there).  :func:`blind_spots` names them.

Each defect has a demonstration scenario under ``guests/emulator/`` that
``shootdown doctor`` runs against a QEMU to show whether it has the defect.

The operand of a range TLBI (Arm ARM, "TLBI RVAE1IS" etc.): BaseADDR in
bits [36:0] (in pages of the TG granule), TTL [38:37], NUM [43:39], SCALE
[45:44], TG [47:46] (1: 4K, 2: 16K, 3: 64K), ASID [63:48]; it covers
``(NUM + 1) << (5 * SCALE + 1)`` pages from BaseADDR.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from shootdown.insn import Instruction, Tlbi

if TYPE_CHECKING:  # check.scenario imports this module
    from shootdown.check.scenario import ScenarioResult
from shootdown.trace.scenario import ObservedScenario

#: (major, minor, micro) of a QEMU release (as :mod:`shootdown.guest.qemu` parses it).
Version = tuple[int, int, int]

#: The range TLBI operations (FEAT_TLBIRANGE), EL1.
RANGE_TLBIS = frozenset({"rvae1is", "rvaae1is", "rvale1is", "rvaale1is",
                         "rvae1", "rvaae1", "rvale1", "rvaale1"})
#: TG field of a range operand -> page shift.
_TG_SHIFT = {1: 12, 2: 14, 3: 16}
#: Granule name -> page shift.
GRANULE_SHIFT = {"4k": 12, "16k": 14, "64k": 16}


@dataclass(frozen=True)
class Defect:
    """One known QEMU defect that affects what the probes see."""

    #: short name (``shootdown doctor`` prints it)
    key: str
    #: one line: what goes wrong
    title: str
    #: "under-invalidates" (a correct sequence leaves stale pages: false
    #: probe failures) or "over-invalidates" (the probes miss real bugs)
    effect: str
    #: first affected release, and the first fixed one (None: not fixed)
    since: Version
    fixed_in: Version | None
    #: the granules it shows on
    granules: frozenset[str]
    #: where in QEMU's source, for readers
    where: str
    #: the demonstration: scenario file under guests/emulator/, the policy to
    #: run it under and the injection (``none`` for an under-invalidation)
    demo: str
    demo_policy: str
    demo_inject: str = "none"
    #: a scenario under guests/emulator/ that must behave normally under the
    #: same policy and injection (the defect is specific, the probes work), or ""
    control: str = ""

    def affects(self, version: Version) -> bool:
        """Whether QEMU ``version`` has this defect (by the table)."""
        return self.since <= version and (self.fixed_in is None or version < self.fixed_in)


RANGE_LENGTH_32BIT = Defect(
    key="tlbi-range-length-32bit",
    title="range TLBI of exactly 4 GiB or 8 GiB on 4K pages invalidates nothing "
          "(length computed in 32 bits)",
    effect="under-invalidates",
    # tlbi_aa64_get_range() computes (num + 1) << (exponent + page_shift) in
    # unsigned int since the helper was rewritten for FEAT_LPA2 (QEMU 7.0);
    # 2^32 and 2^33 wrap to 0, and tlb_flush_range_by_mmuidx() with length 0
    # flushes at most the first page.  Other lengths that wrap stay >= 256 MiB,
    # more than QEMU's TLB, which it then flushes whole.  Seen on 7.2.22 and
    # 10.0.2 (and 11.1.3, issue 14); no fixed release known.
    since=(7, 0, 0), fixed_in=None,
    granules=frozenset({"4k"}),
    where="target/arm/tcg/tlb-insns.c (target/arm/helper.c in older releases): tlbi_aa64_get_range",
    demo="tlbirange-4g.toml", demo_policy="v6.19", control="tlbirange-2g.toml",
)

LARGE_PAGE_FLUSH = Defect(
    key="large-page-whole-flush",
    title="16K/64K pages: any by-VA TLBI inside a page larger than QEMU's 4K flushes the "
          "whole TLB",
    effect="over-invalidates",
    # QEMU's softmmu TLB has 4K entries; a bigger guest page is recorded as a
    # "large page" region, and tlb_flush_page_locked() flushes the whole
    # mmu index when the page lies inside it.  Long-standing, by design.
    since=(0, 0, 0), fixed_in=None,
    granules=frozenset({"16k", "64k"}),
    where="accel/tcg/cputlb.c: tlb_add_large_page, tlb_flush_page_locked",
    demo="large-page-16k.toml", demo_policy="v6.19", demo_inject="end_off_by_one",
    control="large-page-4k.toml",
)

ASID_IGNORED = Defect(
    key="asid-ignored",
    title="by-VA TLBIs ignore the ASID (and the last-level and TTL hints): a TLBI with "
          "a wrong ASID still removes the page",
    effect="over-invalidates",
    # tlbi_aa64_vae1is_write() and do_rvae_write() flush the VA in every
    # ASID ("we don't support flush-for-specific-ASID-only or
    # flush-last-level-only"), and QEMU has no walk cache.
    since=(0, 0, 0), fixed_in=None,
    granules=frozenset({"4k", "16k", "64k"}),
    where="target/arm/tcg/tlb-insns.c: tlbi_aa64_vae1is_write, do_rvae_write",
    demo="asid-ignored.toml", demo_policy="v6.19", demo_inject="wrong_asid",
)

#: Every known defect, the table docs/qemu.md prints.
DEFECTS: tuple[Defect, ...] = (RANGE_LENGTH_32BIT, LARGE_PAGE_FLUSH, ASID_IGNORED)


def range_lengths(xt: int, granule: str) -> tuple[int, int, int] | None:
    """(base VA, length in bytes, the length QEMU computes) of a range operand.

    None if the operand's TG does not match ``granule`` (the CPU ignores such
    a TLBI, and so does QEMU).  QEMU's length is ``(num + 1) << shift`` in 32
    bits; a shift of 32 or more is taken modulo 32, as the x86 shift
    instruction does with QEMU's undefined C shift.
    """
    tg = (xt >> 46) & 3
    shift = _TG_SHIFT.get(tg)
    if shift is None or shift != GRANULE_SHIFT.get(granule):
        return None
    num, scale = (xt >> 39) & 31, (xt >> 44) & 3
    exponent = 5 * scale + 1 + shift
    length = (num + 1) << exponent
    qemu = ((num + 1) << (exponent % 32)) & 0xFFFFFFFF
    base = (xt & ((1 << 37) - 1)) << shift
    return base, length, qemu


#: A length QEMU's TLB flush treats as "small" (flushes page by page, not
#: whole): anything under its largest TLB (2^22 entries of 32 bytes).
_QEMU_SMALL_FLUSH = 1 << 27


def _stale_span(ins: Instruction, granule: str) -> tuple[int, int] | None:
    """[start, end) a range TLBI should have removed but QEMU leaves, if any."""
    if not isinstance(ins, Tlbi) or ins.op not in RANGE_TLBIS or ins.xt is None:
        return None
    got = range_lengths(ins.xt, granule)
    if got is None:
        return None
    base, length, qemu = got
    if qemu >= length or qemu > _QEMU_SMALL_FLUSH:
        return None
    return base + max(qemu, 1 << GRANULE_SHIFT[granule]), base + length


@dataclass(frozen=True)
class Explanation:
    """A known defect that explains every failed probe of a scenario."""

    defect: Defect
    #: the steps whose probes it explains
    steps: tuple[int, ...]
    #: QEMU's version
    version: Version

    def describe(self) -> str:
        v = ".".join(str(n) for n in self.version)
        steps = ", ".join(str(s) for s in self.steps)
        return (f"emulator limitation: QEMU {v}: {self.defect.title} "
                f"[{self.defect.key}] explains the stale probes of step {steps} "
                "(the issued sequence equals the model's)")


def _va(addr: int) -> int:
    """A probe address as the range operand's BaseADDR sees it (user VAs: no tag)."""
    return addr & ((1 << 56) - 1)


def explain_probes(version: Version | None, granule: str,
                   steps: Mapping[int, Sequence[Instruction]],
                   observed: ObservedScenario) -> Explanation | None:
    """The known defect of QEMU ``version`` that explains all of ``observed``'s bad
    probes, or None (then they are the target's failure).

    ``steps`` are the issued instructions per step (equal to the model's: the
    caller checks the sequence first).  Explained means: every bad probe is
    an unmapped address still readable (never a mapped page lost, never a
    missing probe), in a step that issued a range TLBI whose span QEMU
    shortens, and the address lies in the part it leaves.  ``version`` None
    (not TCG, or unknown) explains nothing.
    """
    if version is None or not RANGE_LENGTH_32BIT.affects(version) \
            or granule not in RANGE_LENGTH_32BIT.granules:
        return None
    bad_steps: set[int] = set()
    for p in observed.probes:
        if p.intact != p.mapped:
            return None  # a mapped page lost: no TLBI defect does that
        if p.faulted != p.unmapped:
            bad_steps.add(p.step)
    if not bad_steps and not observed.probe_failures:
        return None
    spans = {n: [s for i in steps.get(n, ()) if (s := _stale_span(i, granule)) is not None]
             for n in bad_steps | {f.step for f in observed.probe_failures}}
    for f in observed.probe_failures:
        if f.expect != "fault" or f.got != "read":
            return None
        if not any(lo <= _va(f.addr) < hi for lo, hi in spans[f.step]):
            return None
    if not all(spans[n] for n in bad_steps):
        return None
    return Explanation(RANGE_LENGTH_32BIT, tuple(sorted(spans)), version)


def blind_spots(version: Version | None, granule: str) -> list[Defect]:
    """The over-invalidating defects of QEMU ``version`` on ``granule``: bugs the
    probes cannot see there (the sequence check still does)."""
    if version is None:
        return []
    return [d for d in DEFECTS if d.effect == "over-invalidates" and d.affects(version)
            and granule in d.granules]


def affecting(version: Version) -> Iterable[Defect]:
    """The defects the table says QEMU ``version`` has."""
    return (d for d in DEFECTS if d.affects(version))


@dataclass(frozen=True)
class Demonstration:
    """What running a defect's demonstration on one QEMU showed."""

    defect: Defect
    #: True: QEMU has the defect; False: it does not; None: inconclusive
    present: bool | None
    #: one line saying what was seen
    evidence: str


def _seq_ok(r: ScenarioResult) -> bool | None:
    return None if r.sequence is None else r.sequence.ok


def _probes_ok(r: ScenarioResult) -> bool | None:
    return None if r.probes is None else r.probes.ok


def judge_demonstration(defect: Defect, demo: Sequence[ScenarioResult],
                        control: Sequence[ScenarioResult] = ()) -> Demonstration:
    """Whether the results of ``defect``'s demonstration (run twice or more in one
    boot, in order) and of its control show the defect.

    Under-invalidation: present when some run's sequence equals the model's but
    its probes failed; the control must pass.  Over-invalidation: present when
    the injection changed the sequence of the last run but its probes all held;
    the control (same injection, where QEMU does not over-invalidate) must see
    it in the probes.  The first scenario after boot is not telling on its own
    (QEMU's large-page record then makes every range TLBI flush everything).
    """
    if not demo or any(_seq_ok(r) is None for r in demo):
        return Demonstration(defect, None, "the demonstration did not run: "
                             + (demo[0].reason if demo else "no result"))
    broken = [r for r in control if _probes_ok(r) is not (defect.effect == "under-invalidates")]
    if defect.effect == "under-invalidates":
        hit = [r for r in demo if _seq_ok(r) and not _probes_ok(r)]
        if broken:
            return Demonstration(defect, None, "the control failed too: "
                                 + broken[0].reason)
        if hit:
            return Demonstration(defect, True, f"correct sequence, stale probes "
                                               f"(verdict {hit[-1].verdict})")
        return Demonstration(defect, False, "correct sequence, every probe held")
    last = demo[-1]
    if _seq_ok(last):
        return Demonstration(defect, None, f"the injection {defect.demo_inject} did not "
                                           "change the sequence")
    if broken:
        return Demonstration(defect, None, "the control's probes did not see the injection "
                                           "either")
    if _probes_ok(last):
        return Demonstration(defect, True, f"{defect.demo_inject}: the sequence differs but "
                                           "every probe held")
    return Demonstration(defect, False, f"{defect.demo_inject}: the probes caught it")
