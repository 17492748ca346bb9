"""The firmware's own limits, checked on the host before a scenario boots.

The guest buffers a scenario in fixed arrays (``firmware/include/scenario.h``:
SCN_MAX_MAPS mappings, SCN_MAX_STEPS steps, SCN_MAX_OPS gather calls, at most
SCN_MAX_COUNT entries per MAP or remove_pte), reads command lines of up to
LINE_MAX bytes (``firmware/src/main.c``) and builds the page tables from a
page pool inside its RAM window (RAM_MAP_SIZE, ``firmware/include/shootdown.h``).
A scenario over one of them is refused by the guest line by line (``ERR``),
which the host could only report as a failed or unanswered scenario: so every
command that runs the firmware calls :func:`check_firmware_limits` first and
refuses the scenario as bad input, naming the limit, its value and the field.

The values are read from those firmware sources, the very text the firmware
is compiled from (:func:`read_limits`), never copied here.  ``shootdown
model`` has no such limits (its own bound is ``MAX_LOWERED_OPS``) and does not
call this module.
"""

from __future__ import annotations

import ast
import functools
import os
import re
from dataclasses import dataclass
from pathlib import Path

from shootdown.errors import FirmwareError, ScenarioError
from shootdown.scenario.geometry import Geometry
from shootdown.scenario.lower import Lowered, lower
from shootdown.scenario.types import (
    FlushTlbKernelRangeStep,
    FlushTlbRangeStep,
    GatherStep,
    MunmapStep,
    Scenario,
)
from shootdown.trace.console import encode_command

#: (file under the firmware tree, macro) for each limit; the names are the firmware's
SOURCES: dict[str, str] = {
    "SCN_MAX_MAPS": "include/scenario.h",
    "SCN_MAX_STEPS": "include/scenario.h",
    "SCN_MAX_OPS": "include/scenario.h",
    "SCN_MAX_COUNT": "include/scenario.h",
    "LINE_MAX": "src/main.c",
    "RAM_MAP_SIZE": "include/shootdown.h",
    "DATA_POOL_PAGES": "include/uspace.h",
}


@dataclass(frozen=True)
class FirmwareLimits:
    """The firmware's fixed capacities, as its sources define them."""

    #: MAP + KMAP lines per scenario (``scn.maps``)
    max_maps: int
    #: STEP lines per scenario (``scn.steps``)
    max_steps: int
    #: OP lines per scenario, over all its gather steps (``scn.ops``)
    max_ops: int
    #: entries of one MAP/KMAP line, pages of one remove_pte OP
    max_count: int
    #: bytes of one command line buffer, its end included
    line_max: int
    #: bytes of the RAM window the page pool lies in (at most)
    ram_map_size: int
    #: data pages every scenario maps into (taken from the same pool)
    data_pool_pages: int
    #: where the values were read
    source: str


def firmware_tree(elf: str | os.PathLike[str] | None = None) -> Path:
    """The firmware source tree: the one ``elf`` was built in (``<tree>/build/x.elf``),
    else the one beside this package (a checkout)."""
    candidates = []
    if elf is not None:
        candidates.append(Path(os.path.abspath(elf)).parent.parent)
    candidates.append(Path(__file__).resolve().parents[3] / "firmware")
    for tree in candidates:
        if (tree / SOURCES["SCN_MAX_COUNT"]).is_file():
            return tree
    raise FirmwareError(f"{candidates[0] / SOURCES['SCN_MAX_COUNT']}: the firmware sources "
                        "that define its limits are missing (run from a shootdown checkout)")


_DEFINE = re.compile(r"^#define[ \t]+(\w+)[ \t]+(.+?)[ \t]*(?:/\*.*)?$", re.M)
_INT_SUFFIX = re.compile(r"\b(0[xX][0-9a-fA-F]+|\d+)[uUlL]+\b")


def _evaluate(text: str, known: dict[str, int], where: str) -> int:
    """A C integer constant expression of literals, known macros, + - * << >> ( )."""
    expr = _INT_SUFFIX.sub(r"\1", text)
    try:
        tree = ast.parse(expr, mode="eval")
    except SyntaxError:
        raise FirmwareError(f"{where}: cannot read {text!r} as an integer") from None

    def value(node: ast.expr) -> int:
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, ast.Name) and node.id in known:
            return known[node.id]
        if isinstance(node, ast.BinOp):
            a, b = value(node.left), value(node.right)
            ops = {ast.Add: a + b, ast.Sub: a - b, ast.Mult: a * b}
            if isinstance(node.op, ast.LShift):
                return a << b
            if isinstance(node.op, ast.RShift):
                return a >> b
            if type(node.op) in ops:
                return ops[type(node.op)]
        raise FirmwareError(f"{where}: cannot read {text!r} as an integer")

    return value(tree.body)


@functools.lru_cache(maxsize=8)
def _read(tree: Path) -> FirmwareLimits:
    values: dict[str, int] = {}
    for name, rel in SOURCES.items():
        path = tree / rel
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise FirmwareError(f"{path}: cannot read: {exc.strerror or exc}") from exc
        defines = dict(_DEFINE.findall(text))
        if name not in defines:
            raise FirmwareError(f"{path}: no #define {name} (the firmware limit the host checks)")
        values[name] = _evaluate(defines[name], values, f"{path}: {name}")
    return FirmwareLimits(
        max_maps=values["SCN_MAX_MAPS"], max_steps=values["SCN_MAX_STEPS"],
        max_ops=values["SCN_MAX_OPS"], max_count=values["SCN_MAX_COUNT"],
        line_max=values["LINE_MAX"], ram_map_size=values["RAM_MAP_SIZE"],
        data_pool_pages=values["DATA_POOL_PAGES"], source=str(tree))


def read_limits(elf: str | os.PathLike[str] | None = None) -> FirmwareLimits:
    """The limits of the firmware built as ``elf`` (see :func:`firmware_tree`)."""
    return _read(firmware_tree(elf))


# --------------------------------------------------------------------------
# the checks

def _refuse(sc: Scenario, limit: str, value: int, what: str, step: int | None,
            fld: str) -> ScenarioError:
    return ScenarioError(sc.path, f"{what}: over the firmware's limit {limit} = {value:#x} "
                         f"({value}); shootdown model can still model it", step=step, field=fld)


def _count_field(sc: Scenario, start: int, end: int, kernel: bool) -> tuple[int | None, str]:
    """The scenario field that puts mappings into [start, end): the place to fix."""
    geo = sc.geometry
    if kernel:
        for i, k in enumerate(sc.kmaps):
            if k.addr < end and start < k.addr + k.count * geo.page_size:
                return None, f"kmap[{i}].count"
    else:
        for i, m in enumerate(sc.maps):
            if m.addr < end and start < m.addr + m.count * geo.block_size(m.level):
                return None, f"map[{i}].count"
    for i, step in enumerate(sc.steps, start=1):
        if kernel and isinstance(step, FlushTlbKernelRangeStep) and \
                step.start < end and start < step.end:
            return i, "end"
        if kernel:
            continue
        if isinstance(step, MunmapStep | FlushTlbRangeStep) and \
                step.start < end and start < step.end:
            return i, "end"
        if isinstance(step, GatherStep):
            for j, op in enumerate(step.ops):
                if op.op == "remove_pte" and op.addr < end and \
                        start < op.addr + op.count * geo.page_size:
                    return i, f"ops[{j}].count"
    return None, "kmap" if kernel else "map"


def _tables(spans: list[tuple[int, int, int]], geo: Geometry) -> int:
    """Page tables the firmware allocates to map ``spans`` (start, end, level),
    root excluded: one per distinct entry that points at a table."""
    # (shift of the entries that point at a table of this kind, deepest leaf under it)
    kinds = [(geo.pmd_shift, 3)]                     # PTE tables
    if geo.levels >= 3:
        kinds.append((geo.pud_shift, 2))             # PMD tables
    if geo.levels >= 4:
        kinds.append((geo.p4d_shift, 1))             # PUD tables
    if geo.levels == 5:
        kinds.append((geo.pgdir_shift, 1))           # P4D tables
    total = 0
    for shift, deepest in kinds:
        last = -1
        for a, b in sorted((s >> shift, ((e - 1) >> shift) + 1) for s, e, lvl in spans
                           if lvl >= deepest):
            a = max(a, last)
            if b > a:
                total += b - a
                last = b
    return total


def check_firmware_limits(scenario: Scenario, limits: FirmwareLimits,
                          memory: int | None = None) -> None:
    """Raise :class:`ScenarioError` if the firmware could not buffer or build ``scenario``.

    ``memory`` (bytes of guest RAM) adds the page-pool check: the page tables
    and data pages the layout needs against the most the pool can hold.
    """
    sc = scenario
    if len(sc.steps) > limits.max_steps:
        raise _refuse(sc, "SCN_MAX_STEPS", limits.max_steps, f"{len(sc.steps)} steps",
                      limits.max_steps + 1, "step")
    low: Lowered = lower(sc)
    geo = sc.geometry
    for m in low.layout.user:
        if m.count > limits.max_count:
            size = geo.block_size(m.level)
            step, fld = _count_field(sc, m.addr, m.addr + m.count * size, kernel=False)
            raise _refuse(sc, "SCN_MAX_COUNT", limits.max_count,
                          f"{m.count:#x} level-{m.level} entries mapped from {m.addr:#x} "
                          "in one run", step, fld)
    for k in low.layout.kernel:
        if k.count > limits.max_count:
            step, fld = _count_field(sc, k.addr, k.addr + k.count * geo.page_size, kernel=True)
            raise _refuse(sc, "SCN_MAX_COUNT", limits.max_count,
                          f"{k.count:#x} kernel pages mapped from {k.addr:#x} in one run",
                          step, fld)
    nmaps = len(low.layout.user) + len(low.layout.kernel)
    if nmaps > limits.max_maps:
        raise _refuse(sc, "SCN_MAX_MAPS", limits.max_maps,
                      f"{nmaps} separate mappings to build ([[map]], [[kmap]], munmap "
                      "layouts and the pages the steps touch)", None, "map")
    ops = 0
    for ls in low.steps:
        if not isinstance(ls.step, GatherStep):
            continue
        fld = "end" if ls.source_kind == "munmap" else "ops"
        for j, op in enumerate(ls.step.ops):
            if op.count > limits.max_count:
                raise _refuse(sc, "SCN_MAX_COUNT", limits.max_count,
                              f"remove_pte of {op.count:#x} pages", ls.index,
                              fld if fld == "end" else f"ops[{j}].count")
        ops += len(ls.step.ops)
        if ops > limits.max_ops:
            raise _refuse(sc, "SCN_MAX_OPS", limits.max_ops,
                          f"{ops} gather calls up to this step", ls.index, fld)
    for line in _protocol_lines(sc):
        framed = len(encode_command(line))  # the end of line is the buffer's NUL
        if framed > limits.line_max:
            raise _refuse(sc, "LINE_MAX", limits.line_max,
                          f"a {framed}-byte command line", None, "step")
    if memory is not None:
        _check_pool(sc, low, limits, memory)


def _protocol_lines(sc: Scenario) -> list[str]:
    from shootdown.scenario.lower import to_protocol_lines

    return to_protocol_lines(sc, policy=sc.policy or "v0.0", inject="x" * 40)


def _check_pool(sc: Scenario, low: Lowered, limits: FirmwareLimits, memory: int) -> None:
    geo = sc.geometry
    pool = min(memory, limits.ram_map_size) // geo.page_size  # an upper bound: image excluded
    user = _tables([(m.addr, m.addr + m.count * geo.block_size(m.level), m.level)
                    for m in low.layout.user], geo)
    kgeo = Geometry(sc.granule, 48)  # TTBR1 is walked with T1SZ = 16
    kernel = _tables([(k.addr, k.addr + k.count * kgeo.page_size, 3)
                      for k in low.layout.kernel], kgeo)
    need = 1 + user + kernel + limits.data_pool_pages
    if need > pool:
        raise _refuse(sc, "RAM_MAP_SIZE", limits.ram_map_size,
                      f"{need} page-table and data pages, more than the {pool} pages of the "
                      f"guest's page pool ({memory >> 20} MiB of RAM)", None, "map")


def check_before_boot(scenario: Scenario, elf: str | os.PathLike[str] | None,
                      memory: int | None = None) -> None:
    """Everything a command that runs the firmware checks before booting it: the
    kernel's calling contract (:mod:`shootdown.scenario.contract`) and the limits
    of the firmware built as ``elf`` on a guest with ``memory`` bytes of RAM."""
    from shootdown.scenario.contract import check_contract

    check_contract(scenario)
    check_firmware_limits(scenario, read_limits(elf), memory)
