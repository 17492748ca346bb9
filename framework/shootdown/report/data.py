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

import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def policy_key(name: str) -> tuple[int, ...]:
    """``v4.19`` -> (4, 19), so v4.20 comes after v4.19 and v6.10 after v6.9."""
    try:
        return tuple(int(x) for x in name.lstrip("v").split("."))
    except ValueError:
        return (1 << 30,)


GRANULE_ORDER = {"4k": 0, "16k": 1, "64k": 2}


def grid_guest(record: dict[str, Any]) -> str:
    """What the grid's guest column says of a job: its guest, or for a real-kernel job
    (``shootdown.matrix.kernel_job``) the kernel on that CPU, and ``kpti=1`` if on."""
    if not record.get("kernel"):
        return str(record["guest"])
    return f"{record['kernel']} on {record['guest']}" + (" kpti=1" if record.get("kpti") else "")


def classname(set_name: str, record: dict[str, Any]) -> str:
    """A job's JUnit class name: set.guest.granule.policy (the grid's row and column)."""
    guest = grid_guest(record).replace(" ", "_").replace(".", "_")
    return f"{set_name}.{guest}.{record['granule']}.{record['policy']}"


@dataclass
class Cell:
    """Jobs of one grid cell."""

    total: int = 0
    ok: int = 0
    bad: list[dict[str, Any]] = field(default_factory=list)
    #: scenarios the guest skipped, summed over the cell's jobs (a job that
    #: passed while skipping some checked less than its count says)
    skipped: int = 0
    #: planned jobs with no record in the results file
    missing: int = 0

    def label(self) -> str:
        """``ok/total``, then the skipped scenarios and missing jobs, if any."""
        text = f"{self.ok}/{self.total}"
        if self.skipped:
            text += f" (+{self.skipped} skip)"
        if self.missing:
            text += f" ({self.missing} not run)"
        return text

    @property
    def good(self) -> bool:
        """Every job ran and went as expected."""
        return self.ok == self.total and not self.missing


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
    #: jobs the matrix planned (``jobs.json`` beside the results) with no record
    missing: list[dict[str, Any]] = field(default_factory=list)
    #: whether the matrix's job list was found (else missing jobs cannot be known)
    planned: bool = False
    #: the real kernels' rows: the clean kernel jobs' (``kernel_row`` of their results,
    #: :mod:`shootdown.matrix.kernel_job`), then ``kernel-table.json`` beside the results
    #: (``shootdown kernel table --json``): each workload's issued and modelled counts
    kernels: list[dict[str, Any]] = field(default_factory=list)

    @property
    def auto_note(self) -> str:
        """:data:`AUTO_NOTE` when the grid has kernel jobs' ``auto`` column, else ""."""
        from shootdown.matrix.spec import AUTO_POLICY

        return AUTO_NOTE if AUTO_POLICY in self.policies else ""

    @property
    def skipped_scenarios(self) -> int:
        return sum(1 for r in self.records for s in r.get("results", [])
                   if s.get("verdict") == "skip")

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
    def from_records(cls, records: list[dict[str, Any]], source: str = "",
                     plan: list[dict[str, Any]] | None = None) -> ReportData:
        """The tables of ``records``; ``plan`` (the matrix's job list) adds the missing jobs."""
        seen = {r.get("job_id") for r in records}
        missing = [j for j in plan or [] if j["job_id"] not in seen]
        policies = sorted({r["policy"] for r in [*records, *missing]}, key=policy_key)
        grid: dict[tuple[str, str, str], dict[str, Cell]] = {}
        detection: dict[str, dict[str, Cell]] = {}
        descriptions: dict[str, str] = {}
        costs: dict[str, dict[str, dict[str, list[tuple[int, int, int]]]]] = {}
        kernels: list[dict[str, Any]] = []
        for r in sorted(records, key=lambda r: (r["set"], grid_guest(r),
                                                 GRANULE_ORDER.get(r["granule"], 9))):
            cell = grid.setdefault((r["set"], grid_guest(r), r["granule"]), {}) \
                .setdefault(r["policy"], Cell())
            cell.total += 1
            cell.skipped += sum(1 for s in r.get("results", []) if s.get("verdict") == "skip")
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
                kernels += [s["kernel_row"] for s in r.get("results", []) if s.get("kernel_row")]
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
        for j in missing:
            grid.setdefault((j["set"], grid_guest(j), j["granule"]), {}) \
                .setdefault(j["policy"], Cell()).missing += 1
        grid = dict(sorted(grid.items(), key=lambda kv: (kv[0][0], kv[0][1],
                                                         GRANULE_ORDER.get(kv[0][2], 9))))
        for by_guest in costs.values():
            for by_policy in by_guest.values():
                for pol, pts in by_policy.items():
                    by_policy[pol] = sorted(set(pts))
        costs = dict(sorted(costs.items(), key=lambda kv: GRANULE_ORDER.get(kv[0], 9)))
        return cls(source=source, records=records, policies=policies, grid=grid,
                   detection=dict(sorted(detection.items())), bug_descriptions=descriptions,
                   costs=costs, missing=missing, planned=plan is not None, kernels=kernels)


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


#: What the grid says under a kernel job's policy column ``auto`` (matrix.spec.AUTO_POLICY).
AUTO_NOTE = ("auto: a real kernel checked against the model of its own release "
             "(each record's model_policy)")


#: the matrix's job list, written beside results.jsonl (shootdown.matrix.engine.JOB_LIST)
JOB_LIST = "jobs.json"


def load_job_list(results: str | os.PathLike[str]) -> list[dict[str, Any]] | None:
    """The jobs the matrix planned, from ``jobs.json`` beside ``results`` (None: no list).

    A list that cannot be read is bad input (one line naming it).
    """
    from shootdown.errors import ConfigError
    from shootdown.inputfile import parse_json, read_text

    path = Path(results).resolve().parent / JOB_LIST
    if not path.exists():
        return None
    def bad(reason: str) -> ConfigError:
        return ConfigError(f"{path}: not a job list of shootdown matrix ({reason})")

    data = parse_json(read_text(path, "job list", error=bad), bad)
    try:
        jobs = data["jobs"]
        for j in jobs:
            for key in ("job_id", "set", "guest", "granule", "policy", "inject"):
                if not isinstance(j[key], str):
                    raise TypeError(key)
    except (KeyError, TypeError) as exc:
        raise ConfigError(f"{path}: not a job list of shootdown matrix ({exc})") from exc
    return list(jobs)


#: the real-kernel table beside the results (``shootdown kernel table --json``)
KERNEL_TABLE = "kernel-table.json"


def load_kernel_table(results: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The rows of ``kernel-table.json`` beside ``results`` ([] when there is none).

    A file that is there but not such a table is bad input (one line naming it).
    """
    from shootdown.errors import ConfigError
    from shootdown.inputfile import parse_json, read_text
    from shootdown.kernel.table import check_row_json

    path = Path(results).resolve().parent / KERNEL_TABLE
    if not path.exists():
        return []

    def bad(reason: str) -> ConfigError:
        return ConfigError(f"{path}: not a table of shootdown kernel table --json ({reason})")

    rows = parse_json(read_text(path, "kernel table", error=bad), bad)
    if not isinstance(rows, list):
        raise bad("expected a list of rows")
    for i, row in enumerate(rows):
        def bad_row(reason: str, i: int = i) -> ConfigError:
            return bad(f"row {i}: {reason}")

        check_row_json(row, bad_row)
        for key in ("issued", "modelled"):  # tables before the counts' one spelling
            row[key] = {k.replace(" ", "_"): v for k, v in row.get(key, {}).items()}
    return rows
