"""Loading and validating scenario files (TOML; ``docs/scenarios.md``).

Strict on purpose: an unknown key, op or kind, a misaligned address, an
address outside the configured VA size, ``start >= end`` or an unknown granule
is a :class:`~shootdown.errors.ScenarioError` naming the file, the step (from
1) and the field.  A typo that silently turned into a default would make a test
check something other than what its author wrote.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Mapping as AbcMapping
from pathlib import Path
from typing import Any

from shootdown.errors import ScenarioError
from shootdown.inputfile import parse_toml, read_text
from shootdown.scenario.geometry import (
    GRANULE_SHIFT,
    GRANULE_VA_BITS,
    LPA2_VA_BITS,
    Geometry,
    valid_geometry,
)
from shootdown.scenario.types import (
    CPU_FEATURES,
    GATHER_OPS,
    STEP_KINDS,
    FlushTlbKernelPgtableStep,
    FlushTlbKernelRangeStep,
    FlushTlbMmStep,
    FlushTlbPageStep,
    FlushTlbRangeStep,
    GatherOp,
    GatherStep,
    KernelMapping,
    Mapping,
    MunmapStep,
    Scenario,
    Step,
)

log = logging.getLogger(__name__)

_TOP_KEYS = frozenset({"granule", "va_bits", "asid", "kpti", "cpu_features", "policy",
                       "description", "map", "kmap", "step"})
_STEP_KEYS: dict[str, frozenset[str]] = {
    "gather": frozenset({"kind", "fullmm", "ops"}),
    "munmap": frozenset({"kind", "start", "end", "layout", "floor", "ceiling"}),
    "flush_tlb_mm": frozenset({"kind"}),
    "flush_tlb_page": frozenset({"kind", "addr"}),
    "flush_tlb_range": frozenset({"kind", "start", "end", "stride", "last_level", "level"}),
    "flush_tlb_kernel_range": frozenset({"kind", "start", "end"}),
    "flush_tlb_kernel_pgtable": frozenset({"kind", "addr"}),
}
_OP_KEYS: dict[str, frozenset[str]] = {
    "remove_pte": frozenset({"op", "addr", "count"}),
    "flush": frozenset({"op"}),
}
_MAX_ASID = 0xFFFF

#: Which CLI/scenario fields may be overridden (``load_scenario(overrides=)``).
OVERRIDABLE = ("granule", "va_bits", "asid", "kpti", "cpu_features", "policy")


def load_scenario(path: str | Path, overrides: AbcMapping[str, Any] | None = None) -> Scenario:
    """Read and validate a scenario file.

    ``overrides`` replaces top-level fields before validation (the CLI's
    ``--granule``, ``--kpti``...), so an override that makes the file invalid
    (a 2 MiB-aligned address is fine on 4K but not a PMD on 64K) is reported
    like any other error.
    """
    spath = str(path)
    text = read_text(spath, "scenario file", error=lambda reason: ScenarioError(spath, reason))
    return load_scenario_text(text, spath, overrides)


def load_scenario_text(text: str, path: str = "<scenario>",
                       overrides: AbcMapping[str, Any] | None = None) -> Scenario:
    """Validate scenario TOML given as text (``path`` only names it in errors)."""
    data = parse_toml(text, lambda reason: ScenarioError(path, reason))
    if overrides:
        for key, value in overrides.items():
            if key not in OVERRIDABLE:
                raise ScenarioError(path, f"cannot override {key!r}", field=key)
            if value is not None:
                data[key] = value
    return parse_scenario(data, path)


def parse_scenario(data: AbcMapping[str, Any], path: str = "<scenario>") -> Scenario:
    """Validate an already-parsed scenario table."""
    return _Parser(path).scenario(data)


class _Parser:
    """One validation pass; carries the file name and geometry for messages."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.geo = Geometry("4k", 48)

    # -- helpers ---------------------------------------------------------
    def err(self, message: str, step: int | None = None, fld: str | None = None) -> ScenarioError:
        return ScenarioError(self.path, message, step=step, field=fld)

    def check_keys(self, table: AbcMapping[str, Any], allowed: frozenset[str],
                   step: int | None, prefix: str = "") -> None:
        for key in table:
            if key not in allowed:
                raise self.err(f"unknown key (expected one of: {', '.join(sorted(allowed))})",
                               step, prefix + key)

    def integer(self, value: Any, step: int | None, fld: str) -> int:
        """An integer field; hex strings ("0x...") are accepted too."""
        if isinstance(value, bool):
            raise self.err(f"expected an integer, got {value!r}", step, fld)
        if isinstance(value, int):
            return value
        if isinstance(value, str):
            try:
                return int(value, 0)
            except ValueError:
                pass
        raise self.err(f"expected an integer, got {value!r}", step, fld)

    def boolean(self, value: Any, step: int | None, fld: str) -> bool:
        if not isinstance(value, bool):
            raise self.err(f"expected true or false, got {value!r}", step, fld)
        return value

    def user_range(self, start: int, size: int, align: int, step: int | None, fld: str) -> None:
        """[start, start+size) must be aligned and inside TTBR0's range."""
        if start % align:
            raise self.err(f"address {start:#x} is not aligned to {align:#x}", step, fld)
        if start < 0 or start + size > self.geo.task_size:
            raise self.err(f"address {start:#x} (+{size:#x}) is outside the "
                           f"{self.geo.va_bits}-bit user range", step, fld)

    def kernel_range(self, start: int, size: int, step: int | None, fld: str) -> None:
        if start % self.geo.page_size:
            raise self.err(f"address {start:#x} is not page aligned", step, fld)
        if start < self.geo.kernel_start or start + size > (1 << 64):
            raise self.err(f"address {start:#x} is outside the {self.geo.va_bits}-bit "
                           f"kernel range (from {self.geo.kernel_start:#x})", step, fld)

    # -- top level -------------------------------------------------------
    def scenario(self, data: AbcMapping[str, Any]) -> Scenario:
        self.check_keys(data, _TOP_KEYS, None)
        granule = data.get("granule", "4k")
        if granule not in GRANULE_SHIFT:
            raise self.err(f"unknown granule {granule!r} (4k, 16k or 64k)", fld="granule")
        va_bits = self.integer(data.get("va_bits", 48), None, "va_bits")
        features = data.get("cpu_features", [])
        if isinstance(features, str):
            features = [f for f in features.split(",") if f]
        if not isinstance(features, list):
            raise self.err("expected a list of feature names", fld="cpu_features")
        for feat in features:
            if feat not in CPU_FEATURES:
                raise self.err(f"unknown cpu feature {feat!r} ({', '.join(CPU_FEATURES)})",
                               fld="cpu_features")
        lpa2 = "lpa2" in features
        if lpa2 and not valid_geometry(granule, va_bits, lpa2=True):
            raise self.err("cpu feature lpa2: the kernel runs LPA2 only with va_bits = 52 on "
                           f"a 4k or 16k granule (this is {granule}, {va_bits}-bit)",
                           fld="cpu_features")
        if not lpa2 and va_bits not in GRANULE_VA_BITS[granule]:
            allowed = ", ".join(map(str, GRANULE_VA_BITS[granule]))
            more = (f"; {va_bits}-bit needs LPA2: cpu_features = [\"lpa2\"]"
                    if va_bits in LPA2_VA_BITS.get(granule, ()) else "")
            raise self.err(f"{va_bits} is not a VA size of the {granule} granule "
                           f"({allowed}){more}", fld="va_bits")
        self.geo = Geometry(granule, va_bits)
        asid = self.integer(data.get("asid", 2), None, "asid")
        if not 0 <= asid <= _MAX_ASID:
            raise self.err(f"ASID {asid} out of range 0..{_MAX_ASID}", fld="asid")
        kpti = self.boolean(data.get("kpti", False), None, "kpti")
        if kpti and asid & 1:
            # Under KPTI the kernel uses the even ASID and asid|1 for user space;
            # an odd ASID would make the "user copy" the same TLBI twice.
            raise self.err(f"ASID {asid} is odd: with kpti = true the ASID must be even "
                           "(the user ASID is ASID | 1)", fld="asid")
        policy = data.get("policy")
        if policy is not None and not isinstance(policy, str):
            raise self.err("expected a release name such as \"v6.19\"", fld="policy")
        description = data.get("description", "")
        if not isinstance(description, str):
            raise self.err("expected a string", fld="description")
        maps = tuple(self.mapping(m, None, f"map[{i}].")
                     for i, m in enumerate(self.table_list(data.get("map", []), None, "map")))
        kmaps = tuple(self.kmapping(m, f"kmap[{i}].")
                      for i, m in enumerate(self.table_list(data.get("kmap", []), None, "kmap")))
        raw_steps = self.table_list(data.get("step", []), None, "step")
        if not raw_steps:
            raise self.err("no [[step]]: a scenario needs at least one step", fld="step")
        steps = tuple(self.step(s, i) for i, s in enumerate(raw_steps, start=1))
        return Scenario(path=self.path, granule=granule, va_bits=va_bits, asid=asid, kpti=kpti,
                        cpu_features=frozenset(features), policy=policy, steps=steps,
                        maps=maps, kmaps=kmaps, description=description)

    def table_list(self, value: Any, step: int | None, fld: str) -> list[AbcMapping[str, Any]]:
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise self.err("expected an array of tables", step, fld)
        return value

    def mapping(self, m: AbcMapping[str, Any], step: int | None, prefix: str) -> Mapping:
        self.check_keys(m, frozenset({"level", "addr", "count"}), step, prefix)
        for key in ("level", "addr"):
            if key not in m:
                raise self.err("missing", step, prefix + key)
        level = self.integer(m["level"], step, prefix + "level")
        if level not in (1, 2, 3):
            raise self.err("level must be 3 (pages), 2 (PMD blocks) or 1 (PUD blocks)",
                           step, prefix + "level")
        if level == 1 and not self.geo.pud_blocks:
            raise self.err(f"PUD blocks (level 1) exist only with the 4k granule, "
                           f"not {self.geo.granule}", step, prefix + "level")
        addr = self.integer(m["addr"], step, prefix + "addr")
        count = self.integer(m.get("count", 1), step, prefix + "count")
        if count < 1:
            raise self.err("count must be at least 1", step, prefix + "count")
        size = self.geo.block_size(level)
        self.user_range(addr, count * size, size, step, prefix + "addr")
        return Mapping(level, addr, count)

    def kmapping(self, m: AbcMapping[str, Any], prefix: str) -> KernelMapping:
        self.check_keys(m, frozenset({"addr", "count"}), None, prefix)
        if "addr" not in m:
            raise self.err("missing", None, prefix + "addr")
        addr = self.integer(m["addr"], None, prefix + "addr")
        count = self.integer(m.get("count", 1), None, prefix + "count")
        if count < 1:
            raise self.err("count must be at least 1", None, prefix + "count")
        self.kernel_range(addr, count * self.geo.page_size, None, prefix + "addr")
        return KernelMapping(addr, count)

    # -- steps -----------------------------------------------------------
    def step(self, s: AbcMapping[str, Any], i: int) -> Step:
        kind = s.get("kind")
        if kind is None:
            raise self.err("missing", i, "kind")
        if kind not in STEP_KINDS:
            raise self.err(f"unknown kind {kind!r} (one of: {', '.join(STEP_KINDS)})", i, "kind")
        self.check_keys(s, _STEP_KEYS[kind], i)
        for key in sorted(_STEP_KEYS[kind] - {"kind", "fullmm", "ops", "layout", "floor",
                                              "ceiling", "stride", "last_level", "level"}):
            if key not in s:
                raise self.err("missing", i, key)
        geo = self.geo
        if kind == "gather":
            fullmm = self.boolean(s.get("fullmm", False), i, "fullmm")
            raw_ops = s.get("ops", [])
            ops = tuple(self.op(o, i, j) for j, o in enumerate(self.table_list(raw_ops, i, "ops")))
            return GatherStep(fullmm=fullmm, ops=ops)
        if kind == "munmap":
            start, end = self.user_span(s, i, geo.page_size)
            layout: tuple[Mapping, ...]
            if "layout" in s:
                layout = tuple(self.mapping(m, i, f"layout[{j}].")
                               for j, m in enumerate(self.table_list(s["layout"], i, "layout")))
                for j, m in enumerate(layout):
                    if m.addr < start or m.addr + m.count * geo.block_size(m.level) > end:
                        raise self.err(f"mapping {m.addr:#x} x{m.count} (level {m.level}) is "
                                       f"not inside [start, end)", i, f"layout[{j}].addr")
                self.check_overlap(layout, i)
            else:
                layout = (Mapping(3, start, (end - start) // geo.page_size),)
            floor = self.integer(s.get("floor", start), i, "floor")
            ceiling = self.integer(s.get("ceiling", end), i, "ceiling")
            if not 0 <= floor <= start:
                raise self.err(f"floor {floor:#x} must be between 0 and start", i, "floor")
            if ceiling != 0 and not end <= ceiling <= geo.task_size:
                raise self.err(f"ceiling {ceiling:#x} must be 0 (none) or between end and "
                               "TASK_SIZE", i, "ceiling")
            return MunmapStep(start, end, layout, floor, ceiling)
        if kind == "flush_tlb_mm":
            return FlushTlbMmStep()
        if kind == "flush_tlb_page":
            addr = self.integer(s["addr"], i, "addr")
            self.user_range(addr, geo.page_size, geo.page_size, i, "addr")
            return FlushTlbPageStep(addr)
        if kind == "flush_tlb_range":
            start, end = self.user_span(s, i, geo.page_size)
            stride = self.integer(s.get("stride", geo.page_size), i, "stride")
            if stride < geo.page_size or stride & (stride - 1):
                raise self.err(f"stride {stride:#x} must be a power of two >= PAGE_SIZE",
                               i, "stride")
            last_level = self.boolean(s.get("last_level", False), i, "last_level")
            level = s.get("level")
            if level is not None:
                level = self.integer(level, i, "level")
                if not 0 <= level <= 3:
                    raise self.err("level must be 0..3", i, "level")
            return FlushTlbRangeStep(start, end, stride, last_level, level)
        if kind == "flush_tlb_kernel_range":
            start = self.integer(s["start"], i, "start")
            end = self.integer(s["end"], i, "end")
            if start >= end:
                raise self.err(f"start {start:#x} must be below end {end:#x}", i, "end")
            self.kernel_range(start, 0, i, "start")
            self.kernel_range(end, 0, i, "end")
            return FlushTlbKernelRangeStep(start, end)
        # flush_tlb_kernel_pgtable
        addr = self.integer(s["addr"], i, "addr")
        self.kernel_range(addr, geo.page_size, i, "addr")
        return FlushTlbKernelPgtableStep(addr)

    def user_span(self, s: AbcMapping[str, Any], i: int, align: int) -> tuple[int, int]:
        start = self.integer(s["start"], i, "start")
        end = self.integer(s["end"], i, "end")
        self.user_range(start, 0, align, i, "start")
        self.user_range(end, 0, align, i, "end")
        if start >= end:
            raise self.err(f"start {start:#x} must be below end {end:#x}", i, "end")
        return start, end

    def check_overlap(self, maps: tuple[Mapping, ...], step: int | None) -> None:
        spans = sorted((m.addr, m.addr + m.count * self.geo.block_size(m.level), j)
                       for j, m in enumerate(maps))
        for (_, a_end, _), (b_start, _, j) in itertools.pairwise(spans):
            if b_start < a_end:
                raise self.err("overlaps another mapping", step, f"layout[{j}].addr")

    def op(self, o: AbcMapping[str, Any], i: int, j: int) -> GatherOp:
        prefix = f"ops[{j}]."
        name = o.get("op")
        if name is None:
            raise self.err("missing", i, prefix + "op")
        if name not in GATHER_OPS:
            raise self.err(f"unknown op {name!r} (one of: {', '.join(GATHER_OPS)})",
                           i, prefix + "op")
        self.check_keys(o, _OP_KEYS.get(name, frozenset({"op", "addr"})), i, prefix)
        if name == "flush":
            return GatherOp("flush")
        if "addr" not in o:
            raise self.err("missing", i, prefix + "addr")
        addr = self.integer(o["addr"], i, prefix + "addr")
        geo = self.geo
        count = 1
        if name == "remove_pte":
            count = self.integer(o.get("count", 1), i, prefix + "count")
            if count < 1:
                raise self.err("count must be at least 1", i, prefix + "count")
            self.user_range(addr, count * geo.page_size, geo.page_size, i, prefix + "addr")
        elif name == "remove_pmd":
            self.user_range(addr, geo.block_size(2), geo.block_size(2), i, prefix + "addr")
        elif name == "remove_pud":
            if not geo.pud_blocks:
                raise self.err(f"PUD blocks exist only with the 4k granule, not {geo.granule}",
                               i, prefix + "op")
            self.user_range(addr, geo.block_size(1), geo.block_size(1), i, prefix + "addr")
        else:
            # The kernel passes the start of the span the freed table maps.
            span = {"free_pte_table": geo.pmd_size, "free_pmd_table": geo.pud_size,
                    "free_pud_table": geo.pgdir_size, "free_p4d_table": geo.pgdir_size}[name]
            self.user_range(addr, span, span, i, prefix + "addr")
        return GatherOp(name, addr, count)
