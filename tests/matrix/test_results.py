"""The results file on its own: a torn last line is cut off, records read back, latest wins."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shootdown.errors import ConfigError
from shootdown.matrix.results import ResultsWriter, finished_ids, iter_records, latest

#: the fields every job record has (matrix.engine writes them all)
BASE = {"set": "s", "guest": "virt-a57", "granule": "4k", "policy": "v4.19", "inject": "none",
        "outcome": "pass", "ok": True}


def rec(**fields: object) -> dict[str, object]:
    return {**BASE, **fields}


def test_torn_last_line_is_repaired_before_appending(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    a = json.dumps(rec(job_id="a"), sort_keys=True)
    path.write_text(a + "\n" + '{"job_id": "b", "o')
    assert [r["job_id"] for r in iter_records(path)] == ["a"]  # the torn line is not a record
    with ResultsWriter(path) as w:
        w.append(rec(job_id="b"))
    assert path.read_text().splitlines() == [a, json.dumps(rec(job_id="b"), sort_keys=True)]


def test_final_records_and_latest(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    with ResultsWriter(path) as w:
        w.append(rec(job_id="a", outcome="crashed", ok=False, final=False))
        w.append(rec(job_id="b"))
        w.append(rec(job_id="a", final=True))
    assert finished_ids(path) == {"a", "b"}
    assert [(r["job_id"], r["outcome"]) for r in latest(path)] == [("a", "pass"), ("b", "pass")]


def test_corrupt_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    path.write_text(json.dumps(rec(job_id="a")) + "\nnot json\n")
    with pytest.raises(ConfigError, match=r"results.jsonl: line 2: not valid JSON"):
        list(iter_records(path))
