"""The lint's suppressions file: findings to accept and assumptions, each with a reason.

Format (TOML, documented in ``docs/lint.md``)::

    [[suppress]]
    function = "kernel_pgtable_v4_19"   # fnmatch pattern on the reported function
    rule = "dsb-before-tlbi"            # a rule name, or "*"
    reason = "v4.19 issued no DSB ISHST here: reproduced on purpose"

    [[bookkeeping]]
    objects = ["oplog", "oplog_len"]    # stores into these are not page-table stores
    calls = ["oplog_report"]            # calls to these are no-ops for the barriers
    reason = "the op log is the guest's report, never a page table"

    [[assume]]
    object = "inject_current"           # loads from this object read as value
    value = 0
    reason = "no bug injection selected: the injected paths are not the product"

Every entry needs a non-empty ``reason``: an unexplained exception is how
a real bug gets waved through.  Errors name the file and the field.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shootdown.errors import ConfigError
from shootdown.inputfile import read_toml
from shootdown.lint.analysis import LintOptions, Rule

_RULES = {r.value for r in Rule}


@dataclass(frozen=True)
class Suppression:
    """One accepted finding pattern."""

    #: fnmatch pattern on the finding's function.
    function: str
    #: Rule name, or ``*`` for every rule.
    rule: str
    #: Why it is accepted (printed with the suppressed finding).
    reason: str
    #: Optional byte offset in the function, to accept one site only.
    offset: int | None = None

    def matches(self, function: str, rule: str, offset: int, via: tuple[str, ...] = ()) -> bool:
        """Whether this entry covers a finding.

        ``function`` matches the reported function or any helper the finding
        lies in (``via``: ``name+0xoff: insn``), so a helper's known exception
        is written once, not at each call site; ``offset`` applies to the
        reported function only.
        """
        if self.rule not in ("*", rule):
            return False
        if fnmatch.fnmatchcase(function, self.function):
            return self.offset is None or self.offset == offset
        return self.offset is None and any(
            fnmatch.fnmatchcase(v.split("+", 1)[0], self.function) for v in via)


@dataclass(frozen=True)
class LintConfig:
    """The parsed suppressions file."""

    #: The file it came from ("" for the built-in empty configuration).
    path: str = ""
    #: Accepted findings.
    suppressions: tuple[Suppression, ...] = ()
    #: Bookkeeping objects and calls, and assumed values, for the analysis.
    options: LintOptions = field(default_factory=LintOptions)

    def suppression_for(self, function: str, rule: str, offset: int,
                        via: tuple[str, ...] = ()) -> Suppression | None:
        """The first suppression covering a finding, or None."""
        for s in self.suppressions:
            if s.matches(function, rule, offset, via):
                return s
        return None


def _str(path: str, where: str, table: dict[str, Any], key: str) -> str:
    value = table.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{path}: {where}.{key}: required, a non-empty string")
    return value


def _names(path: str, where: str, table: dict[str, Any], key: str) -> list[str]:
    value = table.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{path}: {where}.{key}: must be a list of names")
    return list(value)


def load(path: str | Path) -> LintConfig:
    """Read and check a suppressions file; :class:`ConfigError` on any fault."""
    path = str(path)
    data = read_toml(path, "suppressions file")
    unknown = set(data) - {"suppress", "bookkeeping", "assume"}
    if unknown:
        raise ConfigError(f"{path}: {sorted(unknown)[0]}: unknown table "
                          "(expected suppress, bookkeeping, assume)")
    suppressions: list[Suppression] = []
    for i, entry in enumerate(data.get("suppress", [])):
        where = f"suppress[{i}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{path}: {where}: must be a table")
        rule = _str(path, where, entry, "rule")
        if rule != "*" and rule not in _RULES:
            raise ConfigError(f"{path}: {where}.rule: '{rule}' is not one of "
                              f"{', '.join(sorted(_RULES))} or *")
        offset = entry.get("offset")
        if offset is not None and (not isinstance(offset, int) or offset < 0):
            raise ConfigError(f"{path}: {where}.offset: must be a byte offset (integer >= 0)")
        extra = set(entry) - {"function", "rule", "reason", "offset"}
        if extra:
            raise ConfigError(f"{path}: {where}.{sorted(extra)[0]}: unknown key")
        suppressions.append(Suppression(_str(path, where, entry, "function"), rule,
                                        _str(path, where, entry, "reason"), offset))
    objects: set[str] = set()
    calls: set[str] = set()
    for i, entry in enumerate(data.get("bookkeeping", [])):
        where = f"bookkeeping[{i}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{path}: {where}: must be a table")
        _str(path, where, entry, "reason")
        objects.update(_names(path, where, entry, "objects"))
        calls.update(_names(path, where, entry, "calls"))
    assume: list[tuple[str, int]] = []
    for i, entry in enumerate(data.get("assume", [])):
        where = f"assume[{i}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{path}: {where}: must be a table")
        _str(path, where, entry, "reason")
        value = entry.get("value")
        if not isinstance(value, int):
            raise ConfigError(f"{path}: {where}.value: required, an integer")
        assume.append((_str(path, where, entry, "object"), value))
    return LintConfig(path, tuple(suppressions),
                      LintOptions(frozenset(objects), frozenset(calls), tuple(assume)))
