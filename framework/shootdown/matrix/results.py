"""The results file: one JSON object per line, one line per finished job.

Written only by the controller process (xdist workers send their records
with their test reports), so lines never interleave.  Each line is written
with one ``write`` and ``fsync`` ed before the next job is counted as done:
a run killed at any moment leaves complete lines plus at most one torn last
line, which :func:`repair` cuts off before a resumed run appends.

A job whose worker died under it gets a record with ``final = false``; the
matrix run retries it once (an infrastructure failure) and writes a second,
final record.  :func:`finished_ids` counts only final records, so
``--resume`` re-runs an unfinished retry, and :func:`latest` keeps the last
record per job for the report.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from shootdown.errors import ConfigError
from shootdown.inputfile import parse_json, read_bytes, read_text


class ResultsWriter:
    """Appends records durably; safe to use from one process only."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        repair(self.path)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def append(self, record: dict[str, Any]) -> None:
        """Write one record as one line and flush it to the disk."""
        data = (json.dumps(record, sort_keys=True) + "\n").encode()
        os.write(self._fd, data)
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> ResultsWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def repair(path: Path) -> None:
    """Cut a torn last line (a run killed mid-write) off the file, if there is one."""
    if not path.exists():
        return
    data = read_bytes(path, "results file")
    if not data or data.endswith(b"\n"):
        return
    keep = data.rfind(b"\n") + 1
    with open(path, "r+b") as f:
        f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())


def iter_records(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Every complete record in the file, in order (a torn last line is ignored)."""
    p = Path(path)
    text = read_text(p, "results file")
    lines = text.split("\n")
    complete = lines[:-1]  # the part after the last newline is empty or torn
    for n, line in enumerate(complete, 1):
        if not line.strip():
            continue
        def bad(reason: str, n: int = n) -> ConfigError:
            return ConfigError(f"{p}: line {n}: {reason}")
        record = parse_json(line, bad)
        check_record(record, bad)
        yield record


#: Fields every record of a job has (matrix.engine writes them all, a crash record too).
RECORD_FIELDS: dict[str, type] = {"job_id": str, "set": str, "guest": str, "granule": str,
                                  "policy": str, "inject": str, "outcome": str, "ok": bool}
#: Fields of a kernel job's record (matrix.kernel_job), where present.
OPTIONAL_FIELDS: dict[str, type] = {"kernel": str, "kpti": bool}
#: Fields of a scenario result inside a record, where present.
RESULT_FIELDS: dict[str, type | tuple[type, ...]] = {
    "scenario": str, "verdict": str, "region_bytes": int, "observed_counts": dict,
    "kernel_row": dict}


def check_record(record: Any, bad: Callable[[str], ConfigError]) -> None:
    """Raise ``bad(reason)`` unless ``record`` has the shape of a job result record."""
    if not isinstance(record, dict):
        raise bad(f"not a job result (a JSON {type(record).__name__}, not an object)")
    for key, kind in RECORD_FIELDS.items():
        if key not in record:
            raise bad(f"field '{key}': missing (not a job result of shootdown matrix)")
        if not isinstance(record[key], kind):
            raise bad(f"field '{key}': must be a {kind.__name__}")
    for key, opt in OPTIONAL_FIELDS.items():
        if key in record and not isinstance(record[key], opt):
            raise bad(f"field '{key}': must be a {opt.__name__}")
    results = record.get("results", [])
    if not isinstance(results, list):
        raise bad("field 'results': must be a list")
    for i, result in enumerate(results):
        if not isinstance(result, dict):
            raise bad(f"field 'results[{i}]': must be an object")
        for key, rkind in RESULT_FIELDS.items():
            value = result.get(key)
            if value is not None and (not isinstance(value, rkind) or isinstance(value, bool)):
                raise bad(f"field 'results[{i}].{key}': wrong type ({type(value).__name__})")
        if result.get("kernel_row") is not None:
            from shootdown.kernel.table import check_row_json

            def bad_row(reason: str, i: int = i) -> ConfigError:
                return bad(f"field 'results[{i}].kernel_row': {reason}")

            check_row_json(result["kernel_row"], bad_row)
        counts = result.get("observed_counts") or {}
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in counts.values()):
            raise bad(f"field 'results[{i}].observed_counts': values must be integers")


def finished_ids(path: str | os.PathLike[str]) -> set[str]:
    """Ids of jobs with a final record (what ``--resume`` skips)."""
    if not Path(path).exists():
        return set()
    return {r["job_id"] for r in iter_records(path) if r.get("final", True)}


def latest(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The last record of each job, in the order jobs first appear."""
    by_id: dict[str, dict[str, Any]] = {}
    for r in iter_records(path):
        by_id[r["job_id"]] = r
    return list(by_id.values())
