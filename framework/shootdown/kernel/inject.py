"""Real-kernel bug injections: a private copy of the Image, patched where the unmap flush is.

The firmware's injections (:mod:`shootdown.bugs`) are branches in its own C;
a real kernel has none, so its bugs are made by rewriting instruction words
in a copy of the Image that is then booted (the cached original is never
written; the copy lives in the run's temporary directory).  Linux checks
nothing about its own text when QEMU loads it with ``-kernel``.

Where: inside the unmap flush's functions, found by the kernel's symbols
(the guest's kallsyms, cached per Image, or ``--symbols``) and the
maintenance sites found by disassembly (:mod:`.sites`).  The functions are
:data:`FLUSH_FUNCTIONS` by base name (compiler clones such as
``__flush_tlb_range.constprop.0`` included, and every static copy of
``tlb_flush``: ``arch/arm64/include/asm/tlb.h`` is inlined into
``mm/mmu_gather.c`` and ``mm/mmap.c`` separately).  What (:data:`KERNEL_BUGS`):

* ``kernel_no_dsb_ish``: every ``DSB ISH`` in those functions that follows
  a TLBI becomes a NOP: the completion of ``__flush_tlb_range`` /
  ``flush_tlb_mm`` (``arch/arm64/include/asm/tlbflush.h``, v6.1: "DSB ISHST;
  TLBI ...IS; DSB ISH");
* ``kernel_local_tlbi``: every broadcast TLBI there (``...IS``, ``...OS``)
  becomes its local form: same operation and operand register, CRm 3 -> 7
  (by VA, ASID, all) or 2 -> 6 (range) (Arm ARM C5.5, the TLBI encodings);
* ``kernel_no_kpti_copy``: the KPTI user-ASID copy (``__tlbi_user``: the
  second TLBI, its operand ORed with ``USER_ASID_FLAG``, bit 48) becomes a
  NOP.  Which TLBIs are copies is found by a small data-flow pass over the
  function's control-flow graph (:func:`kpti_copy_offsets`): a TLBI whose
  operand register may hold a value with bit 48 set by an ``ORR #imm`` or a
  ``MOVK #1, LSL #48``.  Only taken with KPTI on.

Not patched: the branches the kernel rewrites at boot (static keys and
``alternative_has_cap_*`` around ``__tlbi_user``'s copy and the REPEAT_TLBI
erratum's extra ``TLBI; DSB``): the copy's TLBI is patched, not its branch.
That the kernel did not rewrite a patched word is verified in the running
guest (:func:`verify_in_guest`: the monitor reads every patched word after
READY), and that the patched code ran is read from the trace: a patched
site is traced as what it now is (``nop`` or the local TLBI,
:func:`patched_sites`), so a window shows the NOP where the DSB was.

The verdict (:func:`injection_verdict`) follows the firmware's
(:func:`shootdown.check.scenario.run_verdict`): CAUGHT if a step in which a
patched site executed failed; MISSED if such steps all passed;
NOT-APPLICABLE if no patched site executed in any checked step (e.g. the
KPTI copy without KPTI); FAIL if a step failed without the patch running.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from shootdown.errors import ConfigError, TraceError
from shootdown.kernel.locate import KernelFiles
from shootdown.kernel.observe import base_name
from shootdown.kernel.sites import Site, in_text
from shootdown.kernel.symbols import Symbols
from shootdown.result import Verdict
from shootdown.trace.decode import Tlbi, decode

log = logging.getLogger(__name__)

#: NOP (Arm ARM C6.2: HINT #0)
NOP = 0xD503201F
#: DSB ISH (CRm = 0b1011)
DSB_ISH = 0xD5033B9F
#: TLBI (SYS #op1, C8, Cm, #op2, Xt) CRm of a broadcast form -> its local form:
#: by VA/ASID/all IS (C3) and OS (C1) -> C7; range IS (C2) and OS (C5) -> C6
LOCAL_CRM = {3: 7, 1: 7, 2: 6, 5: 6}
#: USER_ASID_FLAG: bit 48 of a TLBI operand (ASID bit 0; arch/arm64/include/asm/mmu.h,
#: USER_ASID_BIT 48, v4.16+)
USER_ASID_FLAG = 1 << 48

#: The functions the unmap flush runs in, by base name (without clone suffixes):
#: arch/arm64/include/asm/tlbflush.h (flush_tlb_mm, __flush_tlb_range and, from
#: v6.10, __flush_tlb_range_nosync), arch/arm64/include/asm/tlb.h (tlb_flush),
#: mm/mmu_gather.c (tlb_flush_mmu[_tlbonly], tlb_finish_mmu), wherever the compiler
#: left them out of line.
FLUSH_FUNCTIONS = frozenset({
    "tlb_flush", "flush_tlb_mm", "__flush_tlb_range", "__flush_tlb_range_nosync",
    "flush_tlb_range", "tlb_flush_mmu", "tlb_flush_mmu_tlbonly", "tlb_finish_mmu",
})


@dataclass(frozen=True)
class KernelBug:
    """One real-kernel injection."""

    #: the name given to ``--inject``
    name: str
    #: what it patches
    patches: str
    #: the check (check/kernel.py) that must catch it
    caught_by: str
    #: when it applies
    applies: str


KERNEL_BUGS = (
    KernelBug("kernel_no_dsb_ish",
              "each DSB ISH after a TLBI in the flush functions (the completion of "
              "__flush_tlb_range/flush_tlb_mm) -> NOP",
              "coverage (no DSB ISH after the TLBI)", "every kernel"),
    KernelBug("kernel_local_tlbi",
              "each broadcast TLBI ...IS/OS in the flush functions -> its local form "
              "(same op, same Xt)",
              "coverage (the TLBI is local)", "every kernel"),
    KernelBug("kernel_no_kpti_copy",
              "the KPTI user-ASID copy (TLBI of ASID|USER_ASID_FLAG, __tlbi_user) -> NOP",
              "kpti (no TLBI of the user ASID)", "kpti=1 (--kpti)"),
)


def get_bug(name: str) -> KernelBug:
    """The injection called ``name``; ConfigError (exit 2) naming the known ones."""
    for bug in KERNEL_BUGS:
        if bug.name == name:
            return bug
    known = ", ".join(b.name for b in KERNEL_BUGS)
    raise ConfigError(f"--inject: unknown real-kernel bug {name!r} (known: {known}; "
                      "'shootdown bugs --kernel' lists them)")


# -- encodings (pure) ----------------------------------------------------------

def local_form(word: int) -> int:
    """The local (non-shareable) form of a broadcast TLBI ``word``: CRm swapped, rest kept."""
    found = decode(word)
    crm = (word >> 8) & 0xF
    if not isinstance(found, Tlbi) or (word >> 16) & 7 != 0 or crm not in LOCAL_CRM:
        raise ValueError(f"{word:#010x} is not a broadcast EL1 TLBI")
    return (word & ~(0xF << 8)) | LOCAL_CRM[crm] << 8


def capstone_text(word: int) -> str:
    """capstone's reading of one word ("" if it decodes nothing)."""
    import capstone  # type: ignore[import-untyped]

    cs = capstone.Cs(capstone.CS_ARCH_ARM64, capstone.CS_MODE_ARM)
    for insn in cs.disasm(word.to_bytes(4, "little"), 0, 1):
        return f"{insn.mnemonic} {insn.op_str}".strip()
    return ""


# -- where ---------------------------------------------------------------------

@dataclass(frozen=True)
class Patch:
    """One rewritten word."""

    #: byte offset in the Image
    offset: int
    #: its address in the running kernel
    address: int
    #: the function it is in (kallsyms' name)
    function: str
    #: the word before and after
    old: int
    new: int
    #: capstone's text of both (the new one checked to be what was meant)
    old_text: str
    new_text: str


def flush_functions(symbols: Symbols, base: int,
                    names: Iterable[str] = FLUSH_FUNCTIONS) -> list[tuple[str, int, int]]:
    """(name, start, end) Image offsets of every function whose base name is in ``names``.

    A function ends where the next symbol starts (kallsyms has no sizes).
    """
    wanted = frozenset(names)
    out = []
    for i, name in enumerate(symbols.names[:-1]):
        if base_name(name) in wanted:
            out.append((name, symbols.addresses[i] - base, symbols.addresses[i + 1] - base))
    return out


_REG = re.compile(r"^[xw](\d+)$")


def _reg(name: str) -> int | None:
    m = _REG.match(name)
    return int(m.group(1)) if m else None


def kpti_copy_offsets(code: bytes, start: int) -> set[int]:
    """Offsets of the TLBIs in one function whose operand may carry ``USER_ASID_FLAG`` (pure).

    ``code`` is the function's bytes, ``start`` its offset.  A may-analysis
    over the function's control flow.  A register is *flagged* (bit 48 may
    be set) after ``ORR Xd, Xn, #imm`` or ``MOV Xd, #imm`` with bit 48 in
    imm, or ``MOVK Xd, #odd, LSL #48``; ``ORR``/``MOV``/``CSEL`` of a flagged
    register pass it on; any other write clears it (a W write clears the X
    register's upper half); a call (BL/BLR) clears x0-x18.  Flags merge by
    union where paths join.  A register is also *constant* while it holds
    only immediates (``MOV #imm``, then ``MOVK``): the compiler hoists
    ``USER_ASID_FLAG`` into one (``mov x18, #0x400000000000; movk x18, #1,
    lsl #48``, v6.12).  Code no branch of the Image reaches is entered
    through a branch the kernel patches in at boot (a NOP in the Image:
    ``alternative_has_cap_*``, static keys); it starts with the flagged
    constants seen before it, not with every flagged operand.
    """
    import capstone

    cs = capstone.Cs(capstone.CS_ARCH_ARM64, capstone.CS_MODE_ARM)
    cs.detail = True
    insns = list(cs.disasm(code, start))
    index = {insn.address: i for i, insn in enumerate(insns)}
    conditional = ("b.", "cbz", "cbnz", "tbz", "tbnz")
    succ: list[list[int]] = []
    for i, insn in enumerate(insns):
        m = insn.mnemonic
        target = None
        if m == "b" or m.startswith(conditional):
            target = next((op.imm for op in insn.operands
                           if op.type == capstone.arm64.ARM64_OP_IMM), None)
        nxt = [i + 1] if i + 1 < len(insns) else []
        if m == "b":
            succ.append([index[target]] if target in index else [])
        elif m.startswith(conditional):
            succ.append(nxt + ([index[target]] if target in index else []))
        elif m in ("ret", "br", "eret", "retaa", "retab", "brk", "udf"):
            succ.append([])
        else:
            succ.append(nxt)

    State = tuple[frozenset[int], frozenset[int]]  # (flagged, constant)

    def transfer(insn: Any, state: State) -> State:
        flagged, const = set(state[0]), set(state[1])
        m = insn.mnemonic
        if m in ("bl", "blr"):
            return (frozenset(r for r in flagged if r > 18), frozenset(r for r in const if r > 18))
        ops = insn.operands
        names = [insn.reg_name(o.reg) if o.type == capstone.arm64.ARM64_OP_REG else None
                 for o in ops]
        imms = [o.imm if o.type == capstone.arm64.ARM64_OP_IMM else None for o in ops]
        was = (frozenset(flagged), frozenset(const))
        for w in insn.regs_access()[1]:
            r = _reg(insn.reg_name(w))
            if r is not None:
                flagged.discard(r)
                const.discard(r)
        dest = _reg(names[0]) if names and names[0] else None
        if dest is None or not (names[0] or "").startswith("x"):
            return (frozenset(flagged), frozenset(const))
        sources = [r for n in names[1:] if n for r in [_reg(n)] if r is not None]
        flag_in = any(r in was[0] for r in sources)
        imm_flag = any(i is not None and i & USER_ASID_FLAG for i in imms)
        if m in ("orr", "csel") and (flag_in or imm_flag):
            flagged.add(dest)
        elif m == "mov":
            if imm_flag or flag_in:
                flagged.add(dest)
            if not sources or all(r in was[1] for r in sources):
                const.add(dest)
        elif m == "movk":
            shift = ops[1].shift.value if len(ops) > 1 else 0
            if dest in was[0] or (shift == 48 and (imms[1] or 0) & 1):
                flagged.add(dest)
            if dest in was[1]:
                const.add(dest)
        return (frozenset(flagged), frozenset(const))

    state: list[State | None] = [None] * len(insns)
    seed: State = (frozenset(), frozenset())
    while None in state:
        first = state.index(None)
        state[first] = seed
        work = [first]
        while work:
            i = work.pop()
            current = state[i]
            assert current is not None
            after = transfer(insns[i], current)
            for j in succ[i]:
                old = state[j]
                merged = after if old is None else (old[0] | after[0], old[1] & after[1])
                if merged != old:
                    state[j] = merged
                    work.append(j)
        constants = frozenset().union(*(st[0] & st[1] for st in state if st is not None))
        seed = (constants, constants)
    out = set()
    for i, insn in enumerate(insns):
        found = decode(int.from_bytes(insn.bytes, "little"))
        st = state[i]
        if isinstance(found, Tlbi) and st is not None and found.rt in st[0]:
            out.add(insn.address)
    return out


def find_patches(bug: str, image: bytes, sites: Sequence[Site], symbols: Symbols,
                 base: int) -> list[Patch]:
    """The words ``bug`` rewrites in ``image`` (pure; none found is a ConfigError)."""
    get_bug(bug)
    text = in_text(list(sites), symbols.marker("_stext") - base, symbols.marker("_etext") - base)
    patches: list[Patch] = []
    functions = flush_functions(symbols, base)
    for name, lo, hi in functions:
        inside = sorted((s for s in text if lo <= s.offset < hi), key=lambda s: s.offset)
        chosen: list[tuple[Site, int]] = []
        if bug == "kernel_no_dsb_ish":
            seen_tlbi = False
            for s in inside:
                seen_tlbi = seen_tlbi or s.kind == "tlbi"
                if s.kind == "dsb" and s.op == "ish" and seen_tlbi:
                    chosen.append((s, NOP))
        elif bug == "kernel_local_tlbi":
            for s in inside:
                if s.kind == "tlbi" and s.op.endswith(("is", "os")):
                    chosen.append((s, local_form(s.word)))
        else:
            copies = kpti_copy_offsets(image[lo:hi], lo)
            chosen = [(s, NOP) for s in inside if s.offset in copies]
        for s, new in chosen:
            patches.append(_checked(s, new, name, base))
    if not patches:
        where = ", ".join(sorted({base_name(n) for n, _, _ in functions})) or "none of them"
        raise ConfigError(f"--inject {bug}: no site to patch in this kernel's flush functions "
                          f"(found: {where}; looked for {', '.join(sorted(FLUSH_FUNCTIONS))})")
    return patches


def _checked(site: Site, new: int, function: str, base: int) -> Patch:
    """A Patch whose new word capstone and shootdown's decoder read as intended."""
    text = capstone_text(new)
    found = decode(new)
    if new == NOP:
        ok = text == "nop" and found is None
    elif isinstance(found, Tlbi):
        old = decode(site.word)
        words = text.replace(",", " ").split()
        ok = (isinstance(old, Tlbi) and found.rt == old.rt and found.op == old.op[:-2]
              and words[:2] == ["tlbi", found.op])
    else:
        ok = False
    if not ok:
        raise ConfigError(f"inject: {new:#010x} at {function}+{site.offset:#x} decodes as "
                          f"{text!r} / {found}, not what was meant")
    return Patch(site.offset, base + site.offset, function, site.word, new, site.text, text)


# -- the booted copy ------------------------------------------------------------

def apply(image: bytes, patches: Sequence[Patch]) -> bytes:
    """``image`` with every patch applied (pure); each old word must be there."""
    out = bytearray(image)
    for p in patches:
        now = int.from_bytes(out[p.offset:p.offset + 4], "little")
        if now != p.old:
            raise ConfigError(f"inject: Image offset {p.offset:#x} holds {now:#010x}, "
                              f"not {p.old:#010x}")
        out[p.offset:p.offset + 4] = p.new.to_bytes(4, "little")
    return bytes(out)


def patched_sites(sites: Sequence[Site], patches: Sequence[Patch]) -> list[Site]:
    """The sites of the patched Image: each patched site as what it now is (a NOP is kind
    ``nop``), so the tracer records what really ran there."""
    by_offset = {p.offset: p for p in patches}
    out = []
    for s in sites:
        p = by_offset.get(s.offset)
        if p is None:
            out.append(s)
        elif p.new == NOP:
            out.append(Site(s.offset, NOP, "nop", "", 31, "nop"))
        else:
            found = decode(p.new)
            assert isinstance(found, Tlbi)
            out.append(Site(s.offset, p.new, "tlbi", found.op, found.rt, p.new_text))
    return out


@dataclass(frozen=True)
class Injection:
    """An injection prepared for one run."""

    #: the bug
    bug: KernelBug
    #: the words rewritten
    patches: tuple[Patch, ...]
    #: the patched copy that is booted (in the run's temporary directory)
    image: Path

    @property
    def addresses(self) -> frozenset[int]:
        """Where the patched words are in the running kernel."""
        return frozenset(p.address for p in self.patches)


def prepare(bug: str, files: KernelFiles, sites: Sequence[Site], symbols: Symbols,
            base: int, workdir: Path) -> tuple[KernelFiles, list[Site], Injection]:
    """Write the patched copy into ``workdir``; (files to boot, their sites, the injection)."""
    known = get_bug(bug)
    original = files.image.read_bytes()
    patches = find_patches(bug, original, sites, symbols, base)
    copy = workdir / f"Image.{bug}"
    if copy.resolve() == files.image.resolve():
        raise ConfigError(f"inject: refusing to patch the original {files.image}")
    copy.write_bytes(apply(original, patches))
    log.info("%s: %d words patched into %s", bug, len(patches), copy)
    return (replace(files, image=copy), patched_sites(sites, patches),
            Injection(known, tuple(patches), copy))


_X_WORD = re.compile(r"^([0-9a-f]+):\s+0x([0-9a-f]{8})", re.M)


def read_word(monitor: Callable[[str, int | None], str], address: int, cpus: int,
              deadline_s: float = 5.0) -> int:
    """The 32-bit word at kernel ``address``, read through the monitor.

    The monitor translates through one vCPU's current regime, with its
    permissions: a vCPU that is at EL0 at that moment (the workload itself, or
    under KPTI the trampoline-only TTBR1) cannot see the kernel's text.  Each
    vCPU is asked in turn until one answers or ``deadline_s`` has passed.
    """
    end = time.monotonic() + deadline_s
    answer = ""
    while True:
        for cpu in range(max(cpus, 1)):
            answer = monitor(f"x /1wx {address:#x}", cpu)
            m = _X_WORD.search(answer)
            if m is not None and int(m.group(1), 16) == address:
                return int(m.group(2), 16)
        if time.monotonic() >= end:
            raise TraceError(f"inject: cannot read {address:#x} through the monitor on any of "
                             f"{cpus} vCPUs for {deadline_s:g} s: {answer.strip()!r}")
        time.sleep(0.05)


def verify_in_guest(monitor: Callable[[str, int | None], str], injection: Injection,
                    cpus: int = 1) -> None:
    """Every patched word, read back from the running kernel (after boot-time patching).

    A word the kernel rewrote at boot (alternatives, static keys) is a
    TraceError: the injection is not in effect and the run would say nothing.
    """
    for p in injection.patches:
        now = read_word(monitor, p.address, cpus)
        if now != p.new:
            raise TraceError(f"inject {injection.bug.name}: the kernel rewrote {p.function}+"
                             f"{p.offset:#x} at boot ({now:#010x}, patched {p.new:#010x}: "
                             f"{capstone_text(now)!r}): the injection is not in effect")


# -- the verdict (pure) -----------------------------------------------------------

def step_verdict(executed: bool, failed: bool) -> Verdict:
    """One step under an injection: whether a patched site ran in its window, and its checks."""
    if executed:
        return Verdict.CAUGHT if failed else Verdict.MISSED
    return Verdict.FAIL if failed else Verdict.NOT_APPLICABLE


def injection_verdict(steps: Sequence[Verdict]) -> Verdict:
    """The run's verdict from its steps' (:func:`step_verdict`), as the firmware's run_verdict."""
    for v in (Verdict.FAIL, Verdict.CAUGHT, Verdict.MISSED):
        if v in steps:
            return v
    return Verdict.NOT_APPLICABLE


def executed_in(addresses: frozenset[int], pcs: Iterable[int]) -> bool:
    """Whether any of ``pcs`` (a window's executed sites) is a patched address."""
    return any(pc in addresses for pc in pcs)
