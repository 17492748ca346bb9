"""Workload scenarios: what a real process does, for a real kernel (``target = "kernel"``).

A workload file (``docs/scenarios.md``, "Workloads for real kernels") lists
system calls a process makes: ``mmap``, ``munmap``, ``madvise_dontneed``,
``mprotect`` and ``exit`` (a forked child that mapped a region exits). The
workload program (``workload/init.c``) performs them under a real kernel;
this module

* loads and validates the files (:func:`load_workload`, :func:`load_workloads`):
  one-line :class:`~shootdown.errors.ScenarioError` naming the file, the step
  and the field;
* keeps the process's address space as the host knows it
  (:class:`AddressSpace`): the VMAs of the workload's own ELF
  (:func:`elf_vmas`, read with pyelftools), the regions the steps mapped and
  split, which pages and THP blocks are populated, which page tables exist;
* expands each step into the kernel's calls (:func:`expand`): a gather step
  (the lowered ``munmap`` of :mod:`shootdown.scenario.lower` for the
  free_pgtables walk, with floor/ceiling from the neighbouring VMAs) or a
  raw flush, or "not modelled" with the reason; and
* turns an expansion into the golden model's instructions
  (:func:`expected_for`), through a one-step :class:`Scenario` and
  :func:`shootdown.model.expected.expected_sequence`.

Everything here is pure: no I/O except reading the files asked for.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from shootdown.errors import ScenarioError
from shootdown.inputfile import read_toml
from shootdown.scenario.geometry import GRANULE_SHIFT, Geometry
from shootdown.scenario.types import (
    FlushTlbRangeStep,
    GatherOp,
    GatherStep,
    Mapping,
    MunmapStep,
    Scenario,
)

#: the step kinds of a workload file
WORKLOAD_KINDS: tuple[str, ...] = ("mmap", "munmap", "madvise_dontneed", "mprotect", "exit")
#: the protections ``mprotect`` takes (the workload's words)
PROTS: tuple[str, ...] = ("none", "r", "rw")
#: where the steps may map: above the workload's image (at 4 MiB) with room for
#: its bss and brk, and far below the stack, vDSO and mmap base at the top of
#: the 47/48-bit space; [4 GiB, 256 GiB) also keeps every region in the
#: top-level table entry the image uses with 4K pages (512 GiB per entry)
MIN_ADDR = 0x1_0000_0000
MAX_ADDR = 0x40_0000_0000
#: the start of the VMAs above the workload's regions (stack, vDSO, the probe
#: and child stacks are in the image's bss): the free_pgtables ceiling of the
#: highest region.  The real ones sit near 2^47/2^48; any value whose
#: table-aligned forms are above MAX_ADDR at every level below the top gives
#: the same walk (the top level is never freed: the image is below, the floor).
HIGH_VMAS = 1 << 46
#: the VA size the model runs with, per granule (Debian's 48-bit builds; see expand)
KEYS_TOP = {"target", "description", "granule", "step"}
KEYS = {
    "mmap": {"kind", "addr", "len", "populate", "thp"},
    "munmap": {"kind", "addr", "len"},
    "madvise_dontneed": {"kind", "addr", "len"},
    "mprotect": {"kind", "addr", "len", "prot"},
    "exit": {"kind", "addr", "len", "thp"},
}
_SIZE = re.compile(r"^(0x[0-9a-f_]+|[0-9_]+)\s*([kmg]?)(i?b)?$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


@dataclass(frozen=True)
class WorkStep:
    """One system call of a workload."""

    #: one of WORKLOAD_KINDS
    kind: str
    #: the range, [addr, addr + length), page-aligned
    addr: int
    length: int
    #: mmap: write one byte per page (page faults populate the range)
    populate: bool = True
    #: mmap, exit: madvise(MADV_HUGEPAGE) (else MADV_NOHUGEPAGE)
    thp: bool = False
    #: mprotect: none, r or rw
    prot: str = "rw"

    @property
    def end(self) -> int:
        return self.addr + self.length


@dataclass(frozen=True)
class Workload:
    """A validated workload file."""

    #: where it came from
    path: str
    #: the file's stem, for people
    name: str
    #: the page size it was written for ("4k", "16k", "64k"): it runs only on such kernels
    granule: str
    steps: tuple[WorkStep, ...]
    description: str = ""


def is_workload(data: dict[str, Any]) -> bool:
    """Whether a parsed TOML document is a workload (``target = "kernel"``)."""
    return data.get("target") == "kernel"


def _number(path: str, value: Any, step: int, name: str) -> int:
    if isinstance(value, bool):
        raise ScenarioError(path, f"expected a number, got {value!r}", step=step, field=name)
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        m = _SIZE.match(value.strip())
        if m:
            return int(m.group(1).replace("_", ""), 0) * _UNITS[m.group(2).lower()]
    raise ScenarioError(path, f"expected a number (0x..., or a size like \"2M\"), got {value!r}",
                        step=step, field=name)


def _flag(path: str, raw: dict[str, Any], key: str, default: bool, step: int) -> bool:
    value = raw.get(key, default)
    if not isinstance(value, bool):
        raise ScenarioError(path, f"expected true or false, got {value!r}", step=step, field=key)
    return value


def _parse_step(path: str, raw: Any, i: int, page: int) -> WorkStep:
    if not isinstance(raw, dict):
        raise ScenarioError(path, "a step is a table ([[step]])", step=i)
    kind = raw.get("kind")
    if kind not in KEYS:
        raise ScenarioError(path, f"unknown kind {kind!r} (known: {', '.join(WORKLOAD_KINDS)})",
                            step=i, field="kind")
    unknown = sorted(set(raw) - KEYS[kind])
    if unknown:
        raise ScenarioError(path, f"unknown key for {kind} (known: "
                            f"{', '.join(sorted(KEYS[kind]))})", step=i, field=unknown[0])
    for key in ("addr", "len"):
        if key not in raw:
            raise ScenarioError(path, f"{kind} needs {key}", step=i, field=key)
    addr = _number(path, raw["addr"], i, "addr")
    length = _number(path, raw["len"], i, "len")
    if addr % page:
        raise ScenarioError(path, f"{addr:#x} is not aligned to the page size ({page:#x})",
                            step=i, field="addr")
    if length <= 0 or length % page:
        raise ScenarioError(path, f"{length:#x}: a positive multiple of the page size "
                            f"({page:#x})", step=i, field="len")
    if addr < MIN_ADDR or addr + length > MAX_ADDR:
        raise ScenarioError(path, f"[{addr:#x}, {addr + length:#x}) is outside [{MIN_ADDR:#x}, "
                            f"{MAX_ADDR:#x}), where workloads map (clear of the workload's "
                            "image below and its stack above)", step=i, field="addr")
    prot = raw.get("prot", "rw")
    if kind == "mprotect":
        if "prot" not in raw:
            raise ScenarioError(path, "mprotect needs prot", step=i, field="prot")
        if prot not in PROTS:
            raise ScenarioError(path, f"unknown protection {prot!r} (known: {', '.join(PROTS)})",
                                step=i, field="prot")
    return WorkStep(kind, addr, length, populate=_flag(path, raw, "populate", True, i),
                    thp=_flag(path, raw, "thp", False, i), prot=prot)


def parse_workload(path: str, data: dict[str, Any]) -> Workload:
    """A workload from its parsed TOML (``data``), validated; ``path`` names it in errors."""
    unknown = sorted(set(data) - KEYS_TOP)
    if unknown:
        raise ScenarioError(path, f"unknown key (known: {', '.join(sorted(KEYS_TOP))})",
                            field=unknown[0])
    if not is_workload(data):
        raise ScenarioError(path, "a workload file says target = \"kernel\"", field="target")
    granule = data.get("granule", "4k")
    if granule not in GRANULE_SHIFT:
        raise ScenarioError(path, f"unknown granule {granule!r} (known: "
                            f"{', '.join(GRANULE_SHIFT)})", field="granule")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise ScenarioError(path, "expected a string", field="description")
    raw_steps = data.get("step")
    if not isinstance(raw_steps, list) or not raw_steps:
        raise ScenarioError(path, "no steps: add [[step]] tables", field="step")
    page = 1 << GRANULE_SHIFT[granule]
    steps = tuple(_parse_step(path, raw, i, page) for i, raw in enumerate(raw_steps, start=1))
    workload = Workload(path, Path(path).stem, granule, steps, description)
    AddressSpace(Geometry(granule, 48), ()).replay(workload)  # every step possible, in order
    return workload


def load_workload(path: str | Path) -> Workload:
    """Read and validate one workload file."""
    name = str(path)
    data = read_toml(name, "workload file", error=lambda reason: ScenarioError(name, reason))
    return parse_workload(name, data)


def load_workloads(path: str | Path) -> list[Workload]:
    """A workload file, or every ``*.toml`` of a folder (sorted); all validated first."""
    p = Path(path)
    if p.is_dir():
        files = sorted(p.glob("*.toml"))
        if not files:
            raise ScenarioError(str(p), "no *.toml workload files in this folder")
        return [load_workload(f) for f in files]
    if not p.exists():
        raise ScenarioError(str(p), "no such file or folder")
    return [load_workload(p)]


# --------------------------------------------------------------------------
# the address space as the host knows it


def elf_vmas(elf_path: str | Path, page_size: int) -> tuple[tuple[int, int], ...]:
    """The VMAs the kernel makes for a static ELF's PT_LOAD segments, page-aligned.

    ``load_elf_binary`` maps each segment from its page-aligned start to the
    page-aligned end of its memory size (the bss included).  Read with
    pyelftools; a file that is not an ELF is an error naming it.
    """
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile

    try:
        with open(elf_path, "rb") as f:
            segments = [(s["p_vaddr"], s["p_memsz"]) for s in ELFFile(f).iter_segments()
                        if s["p_type"] == "PT_LOAD"]
    except (OSError, ELFError) as exc:
        raise ScenarioError(str(elf_path), f"cannot read the workload's ELF: {exc}") from None
    out = []
    for vaddr, memsz in segments:
        lo = vaddr - vaddr % page_size
        hi = -(-(vaddr + memsz) // page_size) * page_size
        out.append((lo, hi))
    return tuple(sorted(out))


@dataclass
class _Vma:
    start: int
    end: int
    thp: bool
    prot: str


@dataclass
class AddressSpace:
    """The workload's VMAs, populated entries and page tables, step by step.

    ``image`` are the ELF's VMAs (never touched by the steps); ``vmas`` the
    regions the steps mapped, split by mprotect and partial munmap.  Pages
    and THP blocks are what page faults populated; ``pte_tables`` /
    ``pmd_tables`` are the tables that exist (by the address their span
    starts at), including empty ones a munmap left because a neighbour
    still shared them.
    """

    geo: Geometry
    image: tuple[tuple[int, int], ...]
    vmas: list[_Vma] = field(default_factory=list)
    pages: set[int] = field(default_factory=set)
    blocks: set[int] = field(default_factory=set)
    pte_tables: set[int] = field(default_factory=set)
    pmd_tables: set[int] = field(default_factory=set)

    # -- queries --------------------------------------------------------
    def _inside(self, start: int, end: int) -> list[_Vma]:
        return [v for v in self.vmas if v.start < end and start < v.end]

    def covered(self, start: int, end: int) -> bool:
        """Whether the steps' VMAs cover [start, end) without a hole."""
        pos = start
        for v in sorted(self._inside(start, end), key=lambda v: v.start):
            if v.start > pos:
                return False
            pos = max(pos, v.end)
        return pos >= end

    def neighbours(self, start: int, end: int) -> tuple[int, int]:
        """(floor, ceiling) for free_pgtables: the previous VMA's end, the next one's start."""
        # a VMA cut by the range keeps its outer part: that part is the neighbour
        below = [e for _, e in self.image if e <= start] + [min(v.end, start) for v in self.vmas
                                                             if v.start < start]
        above = [max(v.start, end) for v in self.vmas if v.end > end]
        return max(below, default=0), min(above, default=HIGH_VMAS)

    def entries(self, start: int, end: int) -> list[Mapping]:
        """The populated entries in [start, end): runs of pages, single blocks, in order."""
        geo = self.geo
        out: list[Mapping] = []
        for b in sorted(x for x in self.blocks if start <= x < end):
            out.append(Mapping(2, b, 1))
        pages = sorted(p for p in self.pages if start <= p < end)
        for p in pages:
            last = out[-1] if out and out[-1].level == 3 else None
            if last is not None and last.addr + last.count * geo.page_size == p:
                out[-1] = Mapping(3, last.addr, last.count + 1)
            else:
                out.append(Mapping(3, p, 1))
        return sorted(out, key=lambda m: m.addr)

    def present(self) -> tuple[Mapping, ...]:
        """Mappings that make the walk see every table that exists (for ``Scenario.maps``)."""
        geo = self.geo
        maps = list(self.entries(0, 1 << 64))
        maps += [Mapping(3, s, 1) for s, _ in self.image]
        leaves = {m.addr >> geo.pmd_shift for m in maps if m.level == 3}
        maps += [Mapping(3, t, 1) for t in sorted(self.pte_tables)
                 if t >> geo.pmd_shift not in leaves and t not in self.pages]
        if geo.levels >= 3:
            mids = {m.addr >> geo.pud_shift for m in maps}
            maps += [Mapping(2, t, 1) for t in sorted(self.pmd_tables)
                     if t >> geo.pud_shift not in mids]
        return tuple(maps)

    # -- changes ---------------------------------------------------------
    def _populate(self, start: int, end: int, thp: bool) -> None:
        geo = self.geo
        addr = start
        while addr < end:
            if thp and addr % geo.pmd_size == 0 and addr + geo.pmd_size <= end:
                self.blocks.add(addr)
                self.pmd_tables.add(addr - addr % geo.pud_size)
                addr += geo.pmd_size
                continue
            self.pages.add(addr)
            self.pte_tables.add(addr - addr % geo.pmd_size)
            self.pmd_tables.add(addr - addr % geo.pud_size)
            addr += geo.page_size

    def _clear(self, start: int, end: int) -> None:
        self.pages = {p for p in self.pages if not start <= p < end}
        self.blocks = {b for b in self.blocks if not start <= b < end}

    def _split(self, start: int, end: int) -> None:
        """Cut the VMAs at start and end (the kernel's __split_vma)."""
        out: list[_Vma] = []
        for v in self.vmas:
            cuts = sorted({v.start, v.end} | {c for c in (start, end) if v.start < c < v.end})
            out += [_Vma(a, b, v.thp, v.prot) for a, b in itertools.pairwise(cuts)]
        self.vmas = sorted(out, key=lambda v: v.start)

    def _merge(self) -> None:
        """Adjacent pieces of one region with the same flags merge again (vma_merge)."""
        out: list[_Vma] = []
        for v in sorted(self.vmas, key=lambda v: v.start):
            if out and out[-1].end == v.start and (out[-1].thp, out[-1].prot) == (v.thp, v.prot):
                out[-1] = _Vma(out[-1].start, v.end, v.thp, v.prot)
            else:
                out.append(v)
        self.vmas = out

    def forget_tables(self, ops: Iterable[GatherOp]) -> None:
        """The tables the walk freed no longer exist."""
        for op in ops:
            if op.op == "free_pte_table":
                self.pte_tables.discard(op.addr)
            elif op.op == "free_pmd_table":
                self.pmd_tables.discard(op.addr)

    def check(self, path: str, i: int, step: WorkStep) -> None:
        """Refuse a step the process cannot make, or one whose kernel path is not expressed."""
        geo = self.geo
        if step.kind in ("mmap", "exit"):
            hit = self._inside(step.addr - geo.page_size, step.end + geo.page_size)
            if hit:
                raise ScenarioError(path, f"[{step.addr:#x}, {step.end:#x}) overlaps or touches "
                                    f"the mapped [{hit[0].start:#x}, {hit[0].end:#x}): leave a "
                                    "page between regions (touching VMAs merge)", step=i,
                                    field="addr")
            return
        if step.kind == "munmap" and not self._inside(step.addr, step.end):
            raise ScenarioError(path, f"[{step.addr:#x}, {step.end:#x}) holds no mapping of "
                                "an earlier mmap step: nothing to unmap", step=i, field="addr")
        if step.kind != "munmap" and not self.covered(step.addr, step.end):
            raise ScenarioError(path, f"[{step.addr:#x}, {step.end:#x}) is not all mapped by "
                                f"earlier mmap steps ({step.kind} fails with ENOMEM on a hole)",
                                step=i, field="addr")
        for v in self._inside(step.addr, step.end):
            for cut in (step.addr, step.end):
                if v.start < cut < v.end and v.thp and cut % geo.pmd_size:
                    raise ScenarioError(path, f"{cut:#x} splits a THP region inside a "
                                        f"{geo.pmd_size:#x} block (split_huge_pmd is not "
                                        "expressed): use block-aligned bounds", step=i,
                                        field="addr" if cut == step.addr else "len")

    def apply(self, step: WorkStep) -> None:
        """What the step leaves behind (tables freed by a munmap: see :meth:`forget_tables`)."""
        if step.kind == "mmap":
            self.vmas.append(_Vma(step.addr, step.end, step.thp, "rw"))
            self.vmas.sort(key=lambda v: v.start)
            if step.populate:
                self._populate(step.addr, step.end, step.thp)
        elif step.kind == "munmap":
            self._split(step.addr, step.end)
            self.vmas = [v for v in self.vmas if not step.addr <= v.start < step.end]
            self._clear(step.addr, step.end)
        elif step.kind == "madvise_dontneed":
            self._clear(step.addr, step.end)
        elif step.kind == "mprotect":
            self._split(step.addr, step.end)
            for v in self._inside(step.addr, step.end):
                v.prot = step.prot
            self._merge()

    def replay(self, workload: Workload) -> None:
        """Check, expand and apply every step (the loader's validation)."""
        for i, step in enumerate(workload.steps, start=1):
            self.check(workload.path, i, step)
            _advance(self, step, expand_step(self, step, (6, 0)))


# --------------------------------------------------------------------------
# expansion


@dataclass(frozen=True)
class Expansion:
    """What the kernel does for one step, as the model can express it."""

    #: the workload step
    step: WorkStep
    #: the kernel's calls, in order (gathers and raw flushes); empty: none
    calls: tuple[GatherStep | FlushTlbRangeStep, ...]
    #: the page tables present before the step (``Scenario.maps``)
    maps: tuple[Mapping, ...]
    #: None when modelled, else why not (a distinct per-step status, never a pass)
    not_modelled: str | None = None
    #: the range the step must invalidate, [start, end) (the populated entries'
    #: hull; start == end: nothing was populated), for the model-free checks
    start: int = 0
    end: int = 0
    #: the expansion frees page tables
    tables_freed: bool = False
    #: 2 when the invalidated entries are PMD blocks only, else 3
    leaf_level: int = 3
    #: free_pgtables' floor and ceiling (munmap, exit), for people
    floor: int = 0
    ceiling: int = 0
    #: the populated entries the step invalidates (runs of pages, blocks), in order
    entries: tuple[Mapping, ...] = ()
    #: of those, the ones a load may read before the step (not PROT_NONE)
    readable: tuple[Mapping, ...] = ()
    #: the tables the step frees, [start, end) of their addresses (walk-cache check)
    freed: tuple[int, int] = (0, 0)

    def runs(self, page_size: int, *, readable: bool = False) -> list[tuple[int, int]]:
        """The populated (``readable``: and readable) entries as merged [start, end) runs."""
        out: list[tuple[int, int]] = []
        for m in self.readable if readable else self.entries:
            size = m.count * (page_size if m.level == 3 else (page_size // 8) * page_size)
            if out and out[-1][1] == m.addr:
                out[-1] = (out[-1][0], m.addr + size)
            else:
                out.append((m.addr, m.addr + size))
        return out


def _zaps(entries: Sequence[Mapping]) -> list[GatherOp]:
    """unmap_page_range()/change_protection_range() of one VMA: a call per entry run."""
    ops: list[GatherOp] = []
    for m in entries:
        if m.level == 3:
            ops.append(GatherOp("remove_pte", m.addr, m.count))
        else:
            ops.append(GatherOp("remove_pmd", m.addr))
    return ops


def _free_walk(space: AddressSpace, start: int, end: int, *, floor: int | None = None,
               ceiling: int | None = None) -> tuple[tuple[int, int], list[GatherOp]]:
    """free_pgtables() over [start, end): the lowered munmap's walk, with the real neighbours."""
    from shootdown.scenario.lower import lower

    lo, hi = space.neighbours(start, end)
    lo = lo if floor is None else floor
    hi = hi if ceiling is None else ceiling
    scenario = Scenario(path="<workload>", granule=space.geo.granule, va_bits=space.geo.va_bits,
                        asid=2, kpti=False, cpu_features=frozenset(), policy=None,
                        steps=(MunmapStep(start, end, (), lo, hi),), maps=space.present())
    gather = lower(scenario).steps[0].step
    assert isinstance(gather, GatherStep) and gather.ops[0].op == "flush"
    return (lo, hi), list(gather.ops[1:])


def _hull(entries: Sequence[Mapping], geo: Geometry) -> tuple[int, int, int]:
    if not entries:
        return 0, 0, 3
    end = max(m.addr + m.count * geo.block_size(m.level) for m in entries)
    return entries[0].addr, end, 2 if all(m.level == 2 for m in entries) else 3


def expand_step(space: AddressSpace, step: WorkStep, release: tuple[int, int]) -> Expansion:
    """The kernel's calls for one step, given the address space before it (pure)."""
    geo = space.geo
    maps = space.present()
    vmas = sorted(space._inside(step.addr, step.end), key=lambda v: v.start)
    pieces = [(max(v.start, step.addr), min(v.end, step.end), v) for v in vmas]
    if step.kind == "mmap":
        return Expansion(step, (), maps, "mmap populates; it tears nothing down (not traced)")
    if step.kind == "munmap":
        # unmap_region(): one gather; unmap_vmas() zaps each VMA and tlb_end_vma()
        # flushes it (not fullmm); free_pgtables(floor, ceiling); tlb_finish_mmu().
        ops: list[GatherOp] = []
        entries: list[Mapping] = []
        for lo, hi, _ in pieces:
            run = space.entries(lo, hi)
            entries += run
            ops += [*_zaps(run), GatherOp("flush")]
        # free_pgtables(): VMAs closer than PMD_SIZE are walked together; each walk has
        # the unmap's floor and, as ceiling, the next unmapped VMA's start (else the
        # unmap's ceiling).
        floor, ceiling = space.neighbours(step.addr, step.end)
        groups: list[list[int]] = []
        for lo, hi, _ in pieces:
            if groups and lo <= groups[-1][1] + geo.pmd_size:
                groups[-1][1] = hi
            else:
                groups.append([lo, hi])
        frees: list[GatherOp] = []
        for k, (lo, hi) in enumerate(groups):
            top = groups[k + 1][0] if k + 1 < len(groups) else ceiling
            frees += _free_walk(space, lo, hi, floor=floor, ceiling=top)[1]
        start, end, leaf = _hull(entries, geo)
        readable = [m for lo, hi, v in pieces if v.prot != "none" for m in space.entries(lo, hi)]
        return Expansion(step, (GatherStep(False, tuple(ops + frees)),), maps, None, start, end,
                         bool(frees), leaf, floor, ceiling, tuple(entries), tuple(readable),
                         _freed(frees, geo))
    if step.kind == "madvise_dontneed":
        # madvise_dontneed_single_vma() -> zap_page_range() per VMA: a gather each,
        # unmap_single_vma() (tlb_end_vma flushes), tlb_finish_mmu(); no table freed.
        calls = []
        entries = []
        for lo, hi, _ in pieces:
            run = space.entries(lo, hi)
            entries += run
            calls.append(GatherStep(False, (*_zaps(run), GatherOp("flush"))))
        start, end, leaf = _hull(entries, geo)
        return Expansion(step, tuple(calls), maps, None, start, end, False, leaf,
                         entries=tuple(entries))
    if step.kind == "mprotect":
        changed = [(lo, hi) for lo, hi, v in pieces if v.prot != step.prot]
        entries = [m for lo, hi in changed for m in space.entries(lo, hi)]
        start, end, leaf = _hull(entries, geo)
        if release >= (6, 0):
            # v6.0+ (mm/mprotect: use mmu_gather): do_mprotect_pkey() gathers; per
            # changed VMA change_protection() records each changed PTE/PMD
            # (tlb_flush_pte_range/tlb_flush_pmd_range, the model's remove_pte /
            # remove_pmd without the page) and tlb_end_vma() flushes.
            ops = []
            for lo, hi in changed:
                ops += [*_zaps(space.entries(lo, hi)), GatherOp("flush")]
            calls_m: tuple[GatherStep | FlushTlbRangeStep, ...] = (
                (GatherStep(False, tuple(ops)),) if ops else ())
        else:
            # before v6.0: change_protection_range() -> flush_tlb_range(vma, start, end)
            # when it changed a page (PAGE_SIZE stride, not last-level, no TTL hint).
            calls_m = tuple(FlushTlbRangeStep(lo, hi, geo.page_size, False)
                            for lo, hi in changed if space.entries(lo, hi))
        return Expansion(step, calls_m, maps, None, start, end, False, leaf,
                         entries=tuple(entries))
    return _expand_exit(space, step)


def _expand_exit(space: AddressSpace, step: WorkStep) -> Expansion:
    """The child's exit_mmap() (v6.1 mm/mmap.c): tlb_gather_mmu_fullmm(); unmap_vmas() over
    every VMA (no per-VMA flush: tlb_end_vma() returns under fullmm); free_pgtables(
    FIRST_USER_ADDRESS, USER_PGTABLES_CEILING); tlb_finish_mmu().

    The child is a fork of the workload: its image, a copy of the parent's regions with
    their populated entries (copy_page_range copies anonymous VMAs that have an anon_vma),
    its own region, and the VMAs at the top of the user VA: the stack, and the vDSO
    and mmap base within CONFIG_ARCH_MMAP_RND_BITS (18: 1 GiB) and the stack gap below
    it, all in the last top-level table entry (one VMA stands for them: at this level
    only which tables exist matters; under fullmm the zaps emit nothing).
    """
    geo = space.geo
    child = AddressSpace(geo, space.image)
    child.vmas = [_Vma(v.start, v.end, v.thp, v.prot) for v in space.vmas]
    child.pages, child.blocks = set(space.pages), set(space.blocks)
    for p in child.pages:
        child.pte_tables.add(p - p % geo.pmd_size)
        child.pmd_tables.add(p - p % geo.pud_size)
    child.pmd_tables |= {b - b % geo.pud_size for b in child.blocks}
    child.apply(WorkStep("mmap", step.addr, step.length, True, step.thp))
    top = geo.map_window  # the stack's top: 2^48 (2^47 on 16K) even with 52-bit VA
    child.vmas.append(_Vma(top - 2 * geo.page_size, top, False, "rw"))
    child._populate(top - geo.page_size, top, False)
    spans = sorted([*space.image, *((v.start, v.end) for v in child.vmas)])
    zaps: list[GatherOp] = []
    groups: list[list[int]] = []
    for lo, hi in spans:
        zaps += _zaps(child.entries(lo, hi))
        if groups and lo <= groups[-1][1] + geo.pmd_size:
            groups[-1][1] = hi
        else:
            groups.append([lo, hi])
    frees: list[GatherOp] = []
    for k, (lo, hi) in enumerate(groups):
        ceiling = groups[k + 1][0] if k + 1 < len(groups) else 0
        frees += _free_walk(child, lo, hi, floor=0, ceiling=ceiling)[1]
    run = child.entries(step.addr, step.end)
    start, end, leaf = _hull(run, geo)
    return Expansion(step, (GatherStep(True, (*zaps, *frees)),), child.present(), None,
                     start, end, bool(frees), leaf, 0, 0, tuple(run),
                     freed=_freed([f for f in frees if step.addr <= f.addr < step.end], geo))


def _freed(frees: Sequence[GatherOp], geo: Geometry) -> tuple[int, int]:
    addrs = [f.addr for f in frees if f.op != "flush"]
    return (min(addrs), max(addrs) + geo.page_size) if addrs else (0, 0)


@dataclass(frozen=True)
class ExpandedWorkload:
    """A workload's steps with their expansions, in order."""

    workload: Workload
    steps: tuple[Expansion, ...]
    #: the munmaps (untraced) of what the workload left mapped, run after it
    cleanup: tuple[WorkStep, ...] = ()


def expand(workloads: Sequence[Workload], *, page_size: int, va_bits: int,
           release: tuple[int, int], image: Sequence[tuple[int, int]],
           thp: bool = True) -> list[ExpandedWorkload]:
    """Every workload's expansion, in boot order, sharing one address space.

    The workloads run one after another in the same process, so the tables a
    workload leaves are seen by the next.  What a workload leaves mapped is
    unmapped after it (``cleanup``, untraced) and expanded too, so the address
    space stays what the kernel has.
    """
    geo = Geometry({4096: "4k", 16384: "16k", 65536: "64k"}[page_size], va_bits)
    space = AddressSpace(geo, tuple(image))
    out: list[ExpandedWorkload] = []
    for wl in workloads:
        steps = []
        for step in wl.steps:
            if not thp and step.thp:  # THP off in this kernel: the region maps pages
                step = replace(step, thp=False)
            exp = expand_step(space, step, release)
            steps.append(exp)
            _advance(space, step, exp)
        cleanup = []
        for v in list(space.vmas):
            extra = WorkStep("munmap", v.start, v.end - v.start)
            cleanup.append(extra)
            _advance(space, extra, expand_step(space, extra, release))
        out.append(ExpandedWorkload(wl, tuple(steps), tuple(cleanup)))
    return out


def _advance(space: AddressSpace, step: WorkStep, exp: Expansion) -> None:
    space.apply(step)
    for call in exp.calls:
        if isinstance(call, GatherStep) and not call.fullmm:
            space.forget_tables(call.ops)


def expected_for(exp: Expansion, *, granule: str, va_bits: int, asid: int, kpti: bool,
                 features: frozenset[str], policy: str) -> list[Any]:
    """The model's instructions for an expansion (all its calls, in order)."""
    from shootdown.model.expected import expected_sequence

    if not exp.calls:
        return []
    scenario = Scenario(path=f"<workload step {exp.step.kind}>", granule=granule,
                        va_bits=va_bits, asid=asid, kpti=kpti, cpu_features=features,
                        policy=policy, steps=exp.calls, maps=exp.maps)
    return [ins for r in expected_sequence(scenario, policy) for ins in r.instructions]
