"""``shootdown lint ELF``: the static barrier lint (see ``docs/lint.md``).

Exit codes: 0 no unsuppressed finding, 1 findings, 2 bad input (not an ELF,
not aarch64, no symbols, a bad suppressions file).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shootdown.lint.config import LintConfig

#: ``--policy-era`` values -> whether function entry counts as ordered.
ERAS = {"4.19": True, "current": False}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``shootdown lint``."""
    parser.add_argument("elf", metavar="ELF", help="an aarch64 ELF with symbols")
    parser.add_argument("--suppressions", metavar="FILE",
                        help="TOML file of accepted findings, bookkeeping objects and "
                             "assumed values, each with a reason (docs/lint.md)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--policy-era", choices=sorted(ERAS), default="current",
                        help="4.19: TLBI helpers rely on the caller's DSB ISHST (function "
                             "entry counts as ordered); current (default): they carry their own")
    parser.add_argument("--assume", metavar="OBJECT=VALUE", action="append", default=[],
                        help="read data object OBJECT as VALUE (overrides the file's [[assume]]); "
                             "e.g. inject_current=3 to lint the paths of one bug injection")
    parser.add_argument("--each-injection", action="store_true",
                        help="shootdown firmware: lint the code paths of every bug injection "
                             "(inject_current = its number) and list the findings each adds")
    parser.add_argument("--show-suppressed", action="store_true",
                        help="also print the suppressed findings with their reasons")


def with_assumptions(config: LintConfig, pairs: list[str]) -> LintConfig:
    """``config`` with ``OBJECT=VALUE`` pairs replacing its assumptions of the same objects."""
    from shootdown.errors import ConfigError
    from shootdown.lint.analysis import LintOptions

    given: dict[str, int] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        try:
            given[name.strip()] = int(value, 0)
        except ValueError:
            sep = ""
        if not sep or not name.strip():
            raise ConfigError(f"--assume {pair}: expected OBJECT=VALUE (an integer)")
    opts = config.options
    kept = tuple((n, v) for n, v in opts.assume if n not in given)
    return dataclasses.replace(config, options=LintOptions(
        opts.bookkeeping_objects, opts.bookkeeping_calls, kept + tuple(given.items()),
        opts.entry_ordered))


def _each_injection(args: argparse.Namespace, config: LintConfig) -> int:
    """``--each-injection``: which bug injections the lint sees; 1 if the baseline has findings."""
    from shootdown.lint import lint_elf, lint_injections
    from shootdown.progress import progress, wanted

    show = wanted(machine_output=args.json)
    with progress("lint", 0, show=show) as update:
        baseline = lint_elf(args.elf, config, progress=update).active
    with progress("injections", 0, show=show) as update:
        per_bug = lint_injections(args.elf, config, progress=update)
    if args.json:
        json.dump({"baseline": [f.as_dict() for f in baseline],
                   "injections": {name: [f.as_dict() for f in found]
                                  for name, found in per_bug.items()}}, sys.stdout, indent=2)
        print()
    else:
        print(f"{args.elf}: {len(baseline)} finding(s) with no injection")
        for name, found in per_bug.items():
            rules = sorted({f.rule for f in found})
            where = sorted({f.function for f in found})
            shown = ", ".join(where[:4]) + (f" (+{len(where) - 4})" if len(where) > 4 else "")
            print(f"  {name:<32} {len(found):3d} new  {' '.join(rules) or '-'}"
                  + (f"  in {shown}" if found else ""))
    return 1 if baseline else 0


def main(args: argparse.Namespace) -> int:
    """Lint, print, and return 0 (clean) or 1 (findings)."""
    from shootdown.lint import lint_elf
    from shootdown.lint.config import LintConfig, load

    config = load(args.suppressions) if args.suppressions else LintConfig()
    if args.assume:
        config = with_assumptions(config, args.assume)
    if args.each_injection:
        return _each_injection(args, config)
    from shootdown.progress import progress, wanted

    with progress("lint", 0, show=wanted(machine_output=args.json)) as update:
        report = lint_elf(args.elf, config, entry_ordered=ERAS[args.policy_era],
                          progress=update)
    active = report.active
    if args.json:
        json.dump(report.as_dict(), sys.stdout, indent=2)
        print()
        return 1 if active else 0
    for f in report.findings:
        if f.suppressed is not None and not args.show_suppressed:
            continue
        tag = " (suppressed)" if f.suppressed is not None else ""
        print(f"{report.path}: {f.function}+{f.offset:#x} [{f.rule}]{tag}: {f.message}")
        for line in f.context:
            print(f"    {line}")
        if f.suppressed is not None:
            print(f"    reason: {f.suppressed}")
    for entry in report.unused_suppressions:
        print(f"{report.path}: warning: suppression '{entry}' matched nothing", file=sys.stderr)
    suppressed = len(report.findings) - len(active)
    print(f"{report.path}: {len(active)} finding(s), {suppressed} suppressed, "
          f"{len(report.tlbi_functions)} function(s) with TLBIs checked")
    return 1 if active else 0
