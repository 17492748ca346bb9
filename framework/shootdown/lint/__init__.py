"""Static barrier lint: the spec's barrier rules on every path of an aarch64 ELF.

:func:`lint_elf` reads any aarch64 ELF with symbols (the firmware, a test
program, a relocatable object, a kernel image), finds the functions that
hold TLBIs, and checks on every path (:mod:`shootdown.lint.analysis`):

1. ``dsb-before-tlbi``: a DSB ISHST or stronger between the last store (or
   function entry) and each TLBI;
2. ``dsb-after-tlbi``: a DSB ISH or SY after the last TLBI, before returning;
3. ``isb-after-kernel-tlbi``: an ISB after the DSB that completes an
   ASID-less (kernel) TLBI.

Findings are results, not exceptions: :class:`LintReport` lists them, each
with the function, offset, the instructions around it and the rule; the
suppressions file (:mod:`shootdown.lint.config`) accepts known ones with a
reason.  A file that cannot be analysed raises
:class:`~shootdown.errors.FirmwareError`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from shootdown.elfsyms import ElfImage
from shootdown.lint.analysis import Analyzer, LintOptions, Rule, Violation
from shootdown.lint.config import LintConfig

__all__ = ["Finding", "LintConfig", "LintOptions", "LintReport", "Rule", "lint_elf"]

#: Instructions shown before and after the offending one.
CONTEXT = 3


@dataclass(frozen=True)
class Finding:
    """One broken barrier rule."""

    #: Rule name (``dsb-before-tlbi``, ``dsb-after-tlbi``, ``isb-after-kernel-tlbi``).
    rule: str
    #: Function holding the instruction (the call site when it is in a helper).
    function: str
    #: Byte offset of the instruction in the function.
    offset: int
    #: Its address.
    address: int
    #: The instruction.
    instruction: str
    #: One sentence: what is missing, between what and what.
    message: str
    #: The instructions around it, ``>`` marking the offending one.
    context: tuple[str, ...]
    #: Where the path that breaks the rule comes from (stores, entry, TLBIs).
    origins: tuple[str, ...]
    #: When the instruction is a call: the helper's instruction that breaks it.
    via: tuple[str, ...]
    #: The suppression's reason when the finding is accepted, else None.
    suppressed: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


@dataclass(frozen=True)
class LintReport:
    """The result of linting one ELF."""

    #: The ELF file.
    path: str
    #: The functions holding TLBIs that were analysed.
    tlbi_functions: tuple[str, ...]
    #: Every finding, suppressed ones included (``suppressed`` set).
    findings: tuple[Finding, ...]
    #: Suppressions that matched nothing (stale entries).
    unused_suppressions: tuple[str, ...]

    @property
    def active(self) -> tuple[Finding, ...]:
        """The findings not suppressed."""
        return tuple(f for f in self.findings if f.suppressed is None)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"path": self.path, "tlbi_functions": list(self.tlbi_functions),
                "findings": [f.as_dict() for f in self.findings],
                "unused_suppressions": list(self.unused_suppressions)}


_MESSAGES = {
    Rule.DSB_BEFORE_TLBI: "TLBI reachable from {origins} with no DSB ISHST (or stronger) "
                          "in between (rule 1: the page-table store must reach the walkers "
                          "before the invalidation)",
    Rule.DSB_AFTER_TLBI: "return reachable after {origins} with no DSB ISH (or SY) in between "
                         "(rule 2: the invalidation is not complete)",
    Rule.ISB_AFTER_KERNEL_TLBI: "return reachable after the kernel (ASID-less) invalidation "
                                "{origins} with no ISB after its DSB (rule 3)",
}


def _describe(origins: list[str]) -> str:
    shown = origins[:3]
    more = f" and {len(origins) - 3} more" if len(origins) > 3 else ""
    return "; ".join(shown) + more


def _finding(analyzer: Analyzer, v: Violation, config: LintConfig) -> Finding:
    fn = analyzer.image.get_function(v.function)
    insns = analyzer.instructions(fn)
    k = next(i for i, insn in enumerate(insns) if insn.offset == v.offset)
    def show(i: int) -> str:
        insn = insns[i]
        line = f"{'>' if i == k else ' '} +{insn.offset:#06x}  {insn.text}"
        if insn.target is not None:
            line += f"  <{analyzer.image.symbolize(insn.target)}>"
        return line

    context = tuple(show(i) for i in range(max(0, k - CONTEXT), min(len(insns), k + CONTEXT + 1)))
    origins = sorted(f"{o.where}: {o.what}" if not o.where.startswith("entry of") else o.what
                     for o in v.origins)
    message = _MESSAGES[v.rule].format(origins=_describe(origins))
    if v.via:
        message += f", inside {v.via[-1]}" if len(v.via) == 1 else f", inside {' <- '.join(v.via)}"
    sup = config.suppression_for(v.function, v.rule.value, v.offset, v.via)
    return Finding(rule=v.rule.value, function=v.function, offset=v.offset,
                   address=fn.address + v.offset, instruction=v.instruction, message=message,
                   context=context, origins=tuple(origins), via=v.via,
                   suppressed=sup.reason if sup else None)


def lint_elf(path: str | Path, config: LintConfig | None = None,
             entry_ordered: bool = False, *, image: ElfImage | None = None,
             cache: dict[str, Any] | None = None,
             progress: Callable[[int, int], None] | None = None) -> LintReport:
    """Lint one ELF; :class:`~shootdown.errors.FirmwareError` if it cannot be read.

    ``entry_ordered``: treat function entry as ordered (v4.19-era helpers,
    ``--policy-era 4.19``).  ``image`` and ``cache`` (disassembly) may be
    shared between runs on the same file.  ``progress(done, total)`` is
    called as the functions are analysed.
    """
    config = config or LintConfig()
    image = image or ElfImage(path)
    options = config.options
    if entry_ordered:
        options = LintOptions(options.bookkeeping_objects, options.bookkeeping_calls,
                              options.assume, entry_ordered=True)
    analyzer = Analyzer(image, options, cache)
    violations = analyzer.run(progress)
    findings = tuple(_finding(analyzer, v, config) for v in violations)
    unused = tuple(f"{s.function} {s.rule}" for s in config.suppressions
                   if not any(s.matches(f.function, f.rule, f.offset, f.via) for f in findings))
    return LintReport(path=str(path),
                      tlbi_functions=tuple(fn.name for fn in analyzer.tlbi_functions()),
                      findings=findings, unused_suppressions=unused)


def lint_injections(path: str | Path, config: LintConfig | None = None,
                    selector: str = "inject_current", *,
                    progress: Callable[[int, int], None] | None = None,
                    ) -> dict[str, tuple[Finding, ...]]:
    """Per bug injection of a shootdown firmware ELF: the findings it adds.

    The firmware selects its injection at run time (``injected(X)`` compares
    the data object ``selector`` with X's number: its position in the ELF's
    ``.shootdown.bugs`` list, plus one), so every injection is a code path of
    the same ELF.  Each one is linted with ``selector`` assumed to hold its
    number; the findings not present with no injection (``selector`` = 0)
    are what the lint sees of that bug.  Suppressions apply as usual.
    ``progress(done, total)`` is called after each injection.
    """
    from shootdown.bugs import read_bugs

    config = config or LintConfig()
    image = ElfImage(path)
    cache: dict[str, Any] = {}

    def active(value: int) -> tuple[Finding, ...]:
        kept = tuple(a for a in config.options.assume if a[0] != selector)
        opts = LintOptions(config.options.bookkeeping_objects, config.options.bookkeeping_calls,
                           (*kept, (selector, value)), config.options.entry_ordered)
        report = lint_elf(path, LintConfig(config.path, config.suppressions, opts),
                          image=image, cache=cache)
        return report.active

    def key(f: Finding) -> tuple[str, str, int]:
        return (f.function, f.rule, f.offset)

    bugs = read_bugs(path)
    baseline = {key(f) for f in active(0)}
    out: dict[str, tuple[Finding, ...]] = {}
    for number, bug in enumerate(bugs, 1):
        out[bug.name] = tuple(f for f in active(number) if key(f) not in baseline)
        if progress is not None:
            progress(number, len(bugs))
    return out
