"""The results file on its own: a torn last line is cut off, records read back, latest wins."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shootdown.errors import ConfigError
from shootdown.matrix.results import ResultsWriter, finished_ids, iter_records, latest


def test_torn_last_line_is_repaired_before_appending(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    path.write_text(json.dumps({"job_id": "a", "ok": True}) + "\n" + '{"job_id": "b", "o')
    assert [r["job_id"] for r in iter_records(path)] == ["a"]  # the torn line is not a record
    with ResultsWriter(path) as w:
        w.append({"job_id": "b", "ok": True})
    assert path.read_text().splitlines() == ['{"job_id": "a", "ok": true}',
                                             '{"job_id": "b", "ok": true}']


def test_final_records_and_latest(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    with ResultsWriter(path) as w:
        w.append({"job_id": "a", "outcome": "crashed", "final": False})
        w.append({"job_id": "b", "outcome": "pass"})
        w.append({"job_id": "a", "outcome": "pass", "final": True})
    assert finished_ids(path) == {"a", "b"}
    assert [(r["job_id"], r["outcome"]) for r in latest(path)] == [("a", "pass"), ("b", "pass")]


def test_corrupt_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    path.write_text('{"job_id": "a"}\nnot json\n')
    with pytest.raises(ConfigError, match=r"results.jsonl: line 2: not JSON"):
        list(iter_records(path))
