"""The tables a report shows, computed once from the job records.

* the grid: per (set, guest, granule) and policy, how many jobs went as
  expected;
* the detection table: per injected bug and policy, caught / missed;
* the cost series: per granule, guest and policy, the executed TLBI and
  DSB ISH counts of each clean region-size teardown: the scenarios of the
  sweep (a ``sizes/`` folder, :mod:`shootdown.matrix.sizes`), whose records
  carry ``region_bytes``.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any


def policy_key(name: str) -> tuple[int, ...]:
    """``v4.19`` -> (4, 19), so v4.20 comes after v4.19 and v6.10 after v6.9."""
    try:
        return tuple(int(x) for x in name.lstrip("v").split("."))
    except ValueError:
        return (1 << 30,)


GRANULE_ORDER = {"4k": 0, "16k": 1, "64k": 2}


@dataclass
class Cell:
    """Jobs of one grid cell."""

    total: int = 0
    ok: int = 0
    bad: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class ReportData:
    """Everything the renderings need."""

    source: str
    records: list[dict[str, Any]]
    policies: list[str]
    #: (set, guest, granule) -> policy -> Cell
    grid: dict[tuple[str, str, str], dict[str, Cell]]
    #: bug -> policy -> Cell (ok = caught)
    detection: dict[str, dict[str, Cell]]
    #: bug -> description (from the records)
    bug_descriptions: dict[str, str]
    #: granule -> guest -> policy -> sorted [(region bytes, tlbi, dsb ish)]
    costs: dict[str, dict[str, dict[str, list[tuple[int, int, int]]]]]

    @property
    def unexpected(self) -> list[dict[str, Any]]:
        return [r for r in self.records if not r.get("ok")]

    @property
    def outcome_counts(self) -> dict[str, int]:
        counts: dict[str, int] = defaultdict(int)
        for r in self.records:
            counts[r["outcome"]] += 1
        return dict(sorted(counts.items()))

    @classmethod
    def from_records(cls, records: list[dict[str, Any]], source: str = "") -> ReportData:
        policies = sorted({r["policy"] for r in records}, key=policy_key)
        grid: dict[tuple[str, str, str], dict[str, Cell]] = {}
        detection: dict[str, dict[str, Cell]] = {}
        descriptions: dict[str, str] = {}
        costs: dict[str, dict[str, dict[str, list[tuple[int, int, int]]]]] = {}
        for r in sorted(records, key=lambda r: (r["set"], r["guest"],
                                                 GRANULE_ORDER.get(r["granule"], 9))):
            cell = grid.setdefault((r["set"], r["guest"], r["granule"]), {}) \
                .setdefault(r["policy"], Cell())
            cell.total += 1
            if r.get("ok"):
                cell.ok += 1
            else:
                cell.bad.append(r)
            if r["inject"] != "none":
                d = detection.setdefault(r["inject"], {}).setdefault(r["policy"], Cell())
                d.total += 1
                if r["outcome"] == "caught":
                    d.ok += 1
                else:
                    d.bad.append(r)
                if r.get("inject_description"):
                    descriptions[r["inject"]] = r["inject_description"]
            else:
                for s in r.get("results", []):
                    if not _in_sweep(s.get("scenario", "")):
                        continue
                    size = s.get("region_bytes")
                    counts = s.get("observed_counts") or {}
                    if size and counts and s.get("verdict") == "pass":
                        costs.setdefault(r["granule"], {}).setdefault(r["guest"], {}) \
                            .setdefault(r["policy"], []).append(
                                (int(size), int(counts.get("tlbi", 0)),
                                 int(counts.get("dsb_ish", 0))))
        for by_guest in costs.values():
            for by_policy in by_guest.values():
                for pol, pts in by_policy.items():
                    by_policy[pol] = sorted(set(pts))
        costs = dict(sorted(costs.items(), key=lambda kv: GRANULE_ORDER.get(kv[0], 9)))
        return cls(source=source, records=records, policies=policies, grid=grid,
                   detection=dict(sorted(detection.items())), bug_descriptions=descriptions,
                   costs=costs)


#: the folder name that marks the region-size sweep (guests/sizes/<granule>/)
SWEEP_FOLDER = "sizes"


def _in_sweep(path: str) -> bool:
    """Whether a scenario belongs to the size sweep (other munmaps have other layouts)."""
    from pathlib import PurePath

    return SWEEP_FOLDER in PurePath(path).parts[:-1]


def human_size(size: int) -> str:
    """64K, 1M, 1G."""
    for unit, shift in (("G", 30), ("M", 20), ("K", 10)):
        if size >= 1 << shift and size % (1 << shift) == 0:
            return f"{size >> shift}{unit}"
    return str(size)
