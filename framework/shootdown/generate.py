"""Seeded random scenarios, written as TOML text and loaded through the real loader.

The generator writes scenario *files* (text), not dataclasses, so every
generated scenario also exercises the scenario language: its loader, its
validation and the munmap lowering.  Each scenario has its own
:class:`random.Random` seeded from ``(seed, index)``, so scenario ``i`` of a run
can be regenerated alone (``generate_one(seed, i)``) and a failure reproduces
from the two numbers as well as from the saved file.

What "valid" means here is the kernel's contract, not only the loader's:

* every object (a run of pages, some blocks, a small page-table tree) lives in
  its own *slot*, a naturally aligned span that nothing else touches, so a
  table freed by a gather op or by a munmap's ``free_pgtables`` never holds a
  page that is still mapped (``free_pgtables`` only runs after the zap);
* a table is freed only after every leaf under it was removed, in post-order
  (PTE table, then PMD, PUD and the folded p4d);
* a raw ``flush_tlb_range`` uses a stride no larger than the leaves it covers
  (its caller knows the mapping size), and ``flush_tlb_kernel_pgtable`` follows
  the vunmap of every page under the table;
* the firmware's limits hold (``firmware/include/scenario.h``): at most 64
  merged mappings, 64 steps, 1024 gather ops (munmaps lowered), a bounded
  number of probe points; a draw that breaks one is drawn again.

What it draws covers every value the kernel's calling contract
(:mod:`shootdown.scenario.contract`) lets a raw ``flush_tlb_range`` take: every
stride of the granule (PAGE_SIZE, PMD_SIZE, and PUD_SIZE over PUD blocks where
the granule has them: 4K; on 16K/64K no leaf is as large as PUD_SIZE, so a
PUD-stride flush would leave the pages under it cached, a call no caller
makes), each with its TTL level or none; KPTI off and on; and every
combination of the CPU features (``ttl``, ``tlbirange``), each equally likely.
``tests/test_fuzz_coverage.py`` holds it to that.

Kernel steps need the 48-bit kernel range (the firmware's scenario window is
``0xffff000000000000`` .. ``0xffff7fffffffffff``), so they appear only in
``va_bits = 48`` scenarios.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from shootdown.errors import ScenarioError
from shootdown.scenario.contract import check_contract
from shootdown.scenario.geometry import GRANULE_VA_BITS, LPA2_VA_BITS, Geometry
from shootdown.scenario.load import load_scenario_text
from shootdown.scenario.lower import lower
from shootdown.scenario.types import CPU_FEATURES, GatherStep, Scenario

log = logging.getLogger(__name__)

#: firmware limits (firmware/include/scenario.h); kept lower where it keeps runs fast
MAX_MAPS = 64
MAX_STEPS = 64
MAX_OPS = 1024
#: leaves (pages and blocks) per scenario: the guest maps, touches and probes each
MAX_POINTS = 12000

#: the firmware's window for kernel test mappings (docs: firmware/README.md)
KERNEL_WINDOW = (0xFFFF000000000000, 0xFFFF800000000000)


@dataclass(frozen=True)
class Generated:
    """One generated scenario."""

    #: the run's seed and the scenario's index in it
    seed: int
    index: int
    #: the TOML text (``policy`` unset)
    text: str
    #: the same text, loaded and validated by the real loader
    scenario: Scenario

    @property
    def name(self) -> str:
        """A stable file-name stem: ``seed<S>-<index>``."""
        return f"seed{self.seed}-{self.index:06d}"


class _NoRoom(Exception):
    """No free slot of the wanted size: the caller draws another object."""


def _hex(value: int) -> str:
    return f"{value:#x}"


class _Builder:
    """Draws one scenario; the sizes come from the geometry, the choices from rng."""

    def __init__(self, rng: random.Random, granule: str, va_bits: int,
                 features: Sequence[str]) -> None:
        self.rng = rng
        self.geo = Geometry(granule, va_bits)
        self.features = list(features)
        self.used: list[tuple[int, int]] = []    # user slots taken
        self.kused: list[tuple[int, int]] = []   # kernel slots taken
        self.maps: list[str] = []
        self.steps: list[str] = []

    # -- slots -------------------------------------------------------------
    def slot(self, size: int, *, kernel: bool = False) -> int:
        """A free, ``size``-aligned span of ``size`` bytes (user or kernel window)."""
        lo, hi = KERNEL_WINDOW if kernel else (0, self.geo.task_size)
        used = self.kused if kernel else self.used
        n = (hi - lo) // size
        if n < 1:
            raise _NoRoom
        for _ in range(40):
            # Low slots most of the time (small tables), anywhere sometimes.
            k = self.rng.randrange(min(n, 64)) if self.rng.random() < 0.6 else \
                self.rng.randrange(n)
            start = lo + k * size
            if all(start + size <= s or start >= e for s, e in used):
                used.append((start, start + size))
                return start
        raise _NoRoom

    def pages(self, big: bool = False) -> int:
        """A page count: mostly small, sometimes near a cut-off."""
        ptrs = self.geo.ptrs_per_pte
        r = self.rng.random()
        if r < 0.55:
            return self.rng.randint(1, 8)
        if r < 0.8:
            return self.rng.randint(9, 300)
        if r < 0.9 or not big:
            return self.rng.choice([ptrs - 1, ptrs, ptrs + 1, 511, 512, 513]) \
                if ptrs <= 2048 else self.rng.randint(300, 1100)
        return self.rng.choice([1023, 1024, 1025, ptrs - 1, ptrs, ptrs + 1])

    # -- gather objects: each returns (leaf ops, table-free ops) ------------
    def obj_ptes(self) -> tuple[list[str], list[str]]:
        """Runs of pages in one or two PMD spans; maybe their PTE tables freed."""
        geo = self.geo
        spans = 2 if self.rng.random() < 0.3 else 1
        base = self.slot(spans * geo.pmd_size)
        total = spans * geo.ptrs_per_pte
        leaf: list[str] = []
        pos = 0
        if spans == 2 and self.rng.random() < 0.7:
            # A run across the PMD boundary: both PTE tables touched.
            before = self.rng.randint(1, 64)
            pos = geo.ptrs_per_pte - before
            count = before + self.rng.randint(1, 64)
            leaf.append(self._remove_pte(base + pos * geo.page_size, count))
            pos += count
        for _ in range(self.rng.randint(0 if leaf else 1, 2)):
            if pos >= total:
                break
            start = self.rng.randint(pos, total - 1)
            count = min(self.pages(big=True), total - start)
            leaf.append(self._remove_pte(base + start * geo.page_size, count))
            pos = start + count
        frees: list[str] = []
        if self.rng.random() < 0.5:
            frees = [f'{{ op = "free_pte_table", addr = {_hex(base + k * geo.pmd_size)} }}'
                     for k in range(spans)]
        return leaf, frees

    def _remove_pte(self, addr: int, count: int) -> str:
        return f'{{ op = "remove_pte", addr = {_hex(addr)}, count = {count} }}'

    def obj_pmds(self) -> tuple[list[str], list[str]]:
        """A few PMD blocks in one PUD span; maybe the PMD table freed."""
        geo = self.geo
        n = self.rng.randint(1, 4)
        if geo.levels >= 3:
            base = self.slot(geo.pud_size)
            per = geo.pud_size // geo.pmd_size
            first = self.rng.randrange(per - n + 1)
        else:
            base = self.slot(n * geo.pmd_size)
            first = 0
        addrs = [base + (first + k) * geo.pmd_size for k in range(n)]
        leaf = [f'{{ op = "remove_pmd", addr = {_hex(a)} }}' for a in addrs]
        frees: list[str] = []
        if geo.levels >= 3 and self.rng.random() < 0.5:
            frees.append(f'{{ op = "free_pmd_table", addr = {_hex(base)} }}')
        return leaf, frees

    def obj_puds(self) -> tuple[list[str], list[str]]:
        """PUD blocks (4K only); maybe the PUD table freed (4 levels)."""
        geo = self.geo
        if not geo.pud_blocks:
            raise _NoRoom
        n = self.rng.randint(1, 2)
        span = 1 << geo.p4d_shift if geo.levels >= 4 else n * geo.pud_size
        base = self.slot(span)
        leaf = [f'{{ op = "remove_pud", addr = {_hex(base + k * geo.pud_size)} }}'
                for k in range(n)]
        frees: list[str] = []
        if geo.levels >= 4 and self.rng.random() < 0.5:
            frees.append(f'{{ op = "free_pud_table", addr = {_hex(base)} }}')
        return leaf, frees

    def obj_tree(self) -> tuple[list[str], list[str]]:
        """A whole top-level entry: pages and a block, then every table, post-order."""
        geo = self.geo
        base = self.slot(geo.pgdir_size)
        leaf = [self._remove_pte(base, self.rng.randint(1, 16))]
        frees = [f'{{ op = "free_pte_table", addr = {_hex(base)} }}']
        if geo.pud_size > geo.pmd_size and self.rng.random() < 0.6:
            leaf.append(f'{{ op = "remove_pmd", addr = {_hex(base + geo.pmd_size)} }}')
        if geo.pgdir_size > geo.pud_size and self.rng.random() < 0.5:
            far = base + geo.pud_size
            leaf.append(self._remove_pte(far, self.rng.randint(1, 4)))
            frees += [f'{{ op = "free_pte_table", addr = {_hex(far)} }}',
                      f'{{ op = "free_pmd_table", addr = {_hex(far)} }}']
        frees.append(f'{{ op = "free_pmd_table", addr = {_hex(base)} }}')
        frees.append(f'{{ op = "free_pud_table", addr = {_hex(base)} }}')
        if self.rng.random() < 0.7:
            frees.append(f'{{ op = "free_p4d_table", addr = {_hex(base)} }}')
        return leaf, frees

    # -- steps ---------------------------------------------------------------
    def step_gather(self) -> None:
        makers = [self.obj_ptes] * 5 + [self.obj_pmds] * 2 + [self.obj_puds, self.obj_tree]
        leaf: list[str] = []
        frees: list[str] = []
        for _ in range(self.rng.randint(1, 3)):
            try:
                lo, fr = self.rng.choice(makers)()
            except _NoRoom:
                continue
            leaf += lo
            frees += fr
        if not leaf:
            leaf, frees = self.obj_ptes()
        # Objects interleave (the kernel zaps VMAs in any order); a table is
        # freed after the leaves under it, optionally with a flush between.
        self.rng.shuffle(leaf)
        ops = leaf
        if self.rng.random() < 0.3:
            ops.insert(self.rng.randint(1, len(ops)), '{ op = "flush" }')
        if frees and self.rng.random() < 0.5:
            ops.append('{ op = "flush" }')
        ops += frees
        fullmm = self.rng.random() < 0.2
        body = ",\n  ".join(ops)
        self.steps.append(f'kind = "gather"\nfullmm = {str(fullmm).lower()}\n'
                          f'ops = [\n  {body},\n]')

    def step_munmap(self) -> None:
        geo = self.geo
        choices = [geo.pmd_size, geo.pmd_size * 2]
        if geo.levels >= 3:
            choices.append(geo.pud_size)
        if geo.levels >= 4 and geo.granule != "16k":
            choices.append(1 << geo.p4d_shift)
        size = self.rng.choice(choices)
        base = self.slot(size)
        page = geo.page_size
        npages = size // page
        # [start, end): page aligned inside the slot, not too many pages.
        if self.rng.random() < 0.5:
            start, end = base, base + size
        else:
            a = self.rng.randrange(npages)
            b = self.rng.randint(a + 1, min(npages, a + 1 + self.pages()))
            start, end = base + a * page, base + b * page
        layout: list[str] = []
        if end - start <= 600 * page and self.rng.random() < 0.5:
            layout = []  # default layout: every page of [start, end)
        else:
            layout = self._munmap_layout(start, end)
            if not layout:
                layout = [f'{{ level = 3, addr = {_hex(start)}, count = 1 }}']
        floor = self.rng.choice([start, base])
        ceiling = self.rng.choice([end, base + size])
        if base + size == geo.task_size and self.rng.random() < 0.5:
            ceiling = 0
        text = f'kind = "munmap"\nstart = {_hex(start)}\nend = {_hex(end)}\n'
        if floor != start:
            text += f"floor = {_hex(floor)}\n"
        if ceiling != end:
            text += f"ceiling = {_hex(ceiling)}\n"
        if layout:
            text += "layout = [\n  " + ",\n  ".join(layout) + ",\n]"
        self.steps.append(text.rstrip("\n"))

    def _munmap_layout(self, start: int, end: int) -> list[str]:
        """A few disjoint runs in [start, end): pages, PMD blocks, a PUD block."""
        geo = self.geo
        out: list[str] = []
        pos = start
        for _ in range(self.rng.randint(1, 4)):
            if pos >= end:
                break
            kind = self.rng.random()
            for level in ((1,) if kind < 0.1 and geo.pud_blocks else ()) + \
                    ((2,) if kind < 0.4 else ()):
                size = geo.block_size(level)
                first = -(-pos // size) * size
                if first + size <= end:
                    n = self.rng.randint(1, max(1, min(3, (end - first) // size)))
                    out.append(f"{{ level = {level}, addr = {_hex(first)}, count = {n} }}")
                    pos = first + n * size
                    break
            else:
                left = (end - pos) // geo.page_size
                skip = self.rng.randint(0, min(left - 1, 64))
                addr = pos + skip * geo.page_size
                n = min(self.pages(), left - skip)
                out.append(f"{{ level = 3, addr = {_hex(addr)}, count = {n} }}")
                pos = addr + n * geo.page_size
        return out

    def step_flush_tlb_mm(self) -> None:
        if not self.maps or self.rng.random() < 0.5:
            base = self.slot(self.geo.pmd_size)
            self.maps.append(f"level = 3\naddr = {_hex(base)}\ncount = {self.rng.randint(1, 8)}")
        self.steps.append('kind = "flush_tlb_mm"')

    def step_flush_tlb_page(self) -> None:
        geo = self.geo
        base = self.slot(geo.pmd_size)
        k = self.rng.randrange(1, geo.ptrs_per_pte - 1)
        addr = base + k * geo.page_size
        if self.rng.random() < 0.6:  # the neighbours must survive
            self.maps.append(f"level = 3\naddr = {_hex(addr - geo.page_size)}\ncount = 3")
        self.steps.append(f'kind = "flush_tlb_page"\naddr = {_hex(addr)}')

    def levels(self) -> dict[int, int]:
        """The TTL level of each stride (contract.strides: folded sizes, lower wins)."""
        geo = self.geo
        return {geo.pud_size: 1, geo.pmd_size: 2, geo.page_size: 3}

    def step_flush_tlb_range(self) -> None:
        geo = self.geo
        page = geo.page_size
        last_level = self.rng.random() < 0.5
        r = self.rng.random()
        if r < 0.06:
            # MAX_TLBI_RANGE_PAGES (2^21 pages, or one less) over PMD blocks: the
            # range-op limit (v5.9 `>=`, v6.10 `>`) and NUM = 31 at SCALE 3.
            n = (1 << 21) // geo.ptrs_per_pte
            base = self.slot(n * geo.pmd_size)
            self.maps.append(f"level = 2\naddr = {_hex(base)}\ncount = {n}")
            start = base
            end = base + n * geo.pmd_size - (page if self.rng.random() < 0.3 else 0)
            stride = self.rng.choice([page, geo.pmd_size])
        elif r < 0.3 and geo.pud_blocks:
            # PUD blocks (flush_pud_tlb_range, PUD hugetlb): any stride up to PUD_SIZE.
            n = self.rng.randint(1, 2)
            base = self.slot(n * geo.pud_size)
            self.maps.append(f"level = 1\naddr = {_hex(base)}\ncount = {n}")
            start = base + (self.rng.randrange(1, 4) * page if self.rng.random() < 0.3 else 0)
            end = base + n * geo.pud_size
            if self.rng.random() < 0.3:
                end -= self.rng.randrange(1, 4) * page
            stride = self.rng.choice([page, geo.pmd_size, geo.pud_size, geo.pud_size])
        elif r < 0.6:
            # Pages, page stride.
            n = self.pages(big=True)
            spans = -(-n // geo.ptrs_per_pte) + 1
            base = self.slot(spans * geo.pmd_size)
            off = self.rng.randrange(geo.ptrs_per_pte)
            start = base + off * page
            end = start + n * page
            stride = page
        else:
            # PMD blocks [[map]]ped, page or PMD stride, ends maybe not aligned.
            n = self.rng.randint(1, 6)
            if geo.levels >= 3 and n * geo.pmd_size <= geo.pud_size:
                base = self.slot(geo.pud_size)
            else:
                base = self.slot(n * geo.pmd_size)
            self.maps.append(f"level = 2\naddr = {_hex(base)}\ncount = {n}")
            start = base + (self.rng.randrange(4) * page if self.rng.random() < 0.5 else 0)
            end = base + n * geo.pmd_size
            if self.rng.random() < 0.3:
                end -= self.rng.randrange(1, 4) * page
            if end <= start:
                end = start + page
            stride = self.rng.choice([page, geo.pmd_size])
        text = (f'kind = "flush_tlb_range"\nstart = {_hex(start)}\nend = {_hex(end)}\n'
                f"stride = {_hex(stride)}\nlast_level = {str(last_level).lower()}")
        # The caller's TTL hint: the stride's level, or none (unknown), half each.
        if self.rng.random() < 0.5:
            text += f"\nlevel = {self.levels()[stride]}"
        self.steps.append(text)

    def step_kernel(self) -> None:
        """A vunmap (flush_tlb_kernel_range), sometimes with its PTE table freed."""
        geo = self.geo
        base = self.slot(geo.pmd_size * 2, kernel=True)
        n = min(self.pages(big=True), 2 * geo.ptrs_per_pte)
        free_table = n <= geo.ptrs_per_pte and self.rng.random() < 0.4
        off = 0 if free_table else self.rng.randrange(geo.ptrs_per_pte)
        start = base + off * geo.page_size
        end = start + n * geo.page_size
        self.steps.append(f'kind = "flush_tlb_kernel_range"\nstart = {_hex(start)}\n'
                          f"end = {_hex(end)}")
        if free_table:
            self.steps.append(f'kind = "flush_tlb_kernel_pgtable"\naddr = {_hex(base)}')

    # -- the whole scenario --------------------------------------------------
    def build(self, asid: int, kpti: bool) -> str:
        makers = [self.step_gather] * 5 + [self.step_munmap] * 3 + \
            [self.step_flush_tlb_page, self.step_flush_tlb_range, self.step_flush_tlb_range,
             self.step_flush_tlb_mm]
        if self.geo.va_bits == 48:
            makers += [self.step_kernel] * 2
        for _ in range(self.rng.randint(1, 5)):
            try:
                self.rng.choice(makers)()
            except _NoRoom:
                continue
        if not self.steps:
            self.step_gather()
        head = [f'granule = "{self.geo.granule}"', f"va_bits = {self.geo.va_bits}",
                f"asid = {asid}", f"kpti = {str(kpti).lower()}"]
        if self.features:
            head.append("cpu_features = [" + ", ".join(f'"{f}"' for f in self.features) + "]")
        parts = ["\n".join(head)]
        parts += [f"[[map]]\n{m}" for m in self.maps]
        parts += [f"[[step]]\n{s}" for s in self.steps]
        return "\n\n".join(parts) + "\n"


def _within_limits(sc: Scenario) -> bool:
    """The firmware can hold it (see the module docstring)."""
    low = lower(sc)
    geo = sc.geometry
    if len(low.layout.user) + len(low.layout.kernel) > MAX_MAPS or len(low.steps) > MAX_STEPS:
        return False
    ops = sum(len(ls.step.ops) for ls in low.steps if isinstance(ls.step, GatherStep))
    points = sum(m.count for m in low.layout.user) + sum(k.count for k in low.layout.kernel)
    pages = sum(m.count * geo.block_size(m.level) // geo.page_size for m in low.layout.user)
    return ops <= MAX_OPS and points <= MAX_POINTS and pages < (1 << 22)


def feature_sets(features: bool | Sequence[str] = True) -> list[tuple[str, ...]]:
    """Every combination of the offered CPU features (True: all the language knows)."""
    offered = [f for f in CPU_FEATURES
               if features is True or (features is not False and f in features)]
    return [tuple(f for k, f in enumerate(offered) if mask >> k & 1)
            for mask in range(1 << len(offered))]


def generate_one(seed: int, index: int, *, granules: Sequence[str] | None = None,
                 features: bool | Sequence[str] = True) -> Generated:
    """Scenario ``index`` of the run seeded ``seed`` (independent of the others).

    ``features``: the CPU features to combine (True: ``ttl`` and ``tlbirange``;
    False: none); every combination of them is equally likely.
    """
    rng = random.Random(f"shootdown-fuzz:{seed}:{index}")
    pool = list(granules or ("4k", "16k", "64k"))
    combos = feature_sets(features)
    for attempt in range(50):
        feats = rng.choice(combos)
        lpa2_pool = [g for g in pool if g in LPA2_VA_BITS]
        if "lpa2" in feats and lpa2_pool:  # LPA2 is a 52-bit 4K/16K kernel, nothing else
            granule = rng.choice(lpa2_pool)
            va_bits = LPA2_VA_BITS[granule][0]
        else:
            feats = tuple(f for f in feats if f != "lpa2")
            granule = rng.choice(pool)
            va_bits = rng.choice(GRANULE_VA_BITS[granule][:3 if granule != "64k" else 2])
        asid = rng.choice([1, 2, 42, 255, 256, 0x1234, 0xFFFF, rng.randrange(1, 1 << 16)])
        kpti = rng.random() < 0.4
        if kpti:  # the kernel's ASID is even under KPTI (the user ASID is ASID | 1)
            asid = (asid & ~1) or 2
        text = _Builder(rng, granule, va_bits, feats).build(asid, kpti)
        header = f"# shootdown fuzz: seed {seed}, scenario {index}\n"
        text = header + text
        try:
            sc = load_scenario_text(text, f"<fuzz seed {seed} #{index}>")
            check_contract(sc)
        except ScenarioError as exc:
            # A generator bug, not a finding: say so loudly and draw again.
            log.warning("generated scenario rejected by the loader or the kernel's "
                        "contract (attempt %d): %s", attempt, exc)
            continue
        if _within_limits(sc):
            return Generated(seed, index, text, sc)
    raise ScenarioError(f"<fuzz seed {seed} #{index}>",
                        "no valid scenario in 50 draws (generator bug)")


def generate(seed: int, count: int, *, start: int = 0, granules: Sequence[str] | None = None,
             features: bool | Sequence[str] = True) -> Iterator[Generated]:
    """``count`` scenarios of the run seeded ``seed``, from index ``start``."""
    for i in range(start, start + count):
        yield generate_one(seed, i, granules=granules, features=features)
