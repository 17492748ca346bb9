"""JUnit XML: one test suite per matrix set, one test case per job.

CI servers read this; each case carries the job's guest, granule, policy,
injection, firmware build-id and QEMU version as properties, and a failure
element (with the first divergence and the console log) when the outcome
was not the expected one.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import defaultdict
from typing import Any

from shootdown.report.data import ReportData, classname

_PROPERTIES = ("guest", "granule", "policy", "inject", "expect", "outcome", "build_id",
               "qemu_version", "log_path", "job_id", "attempts")


def render_junit(data: ReportData) -> bytes:
    """The XML document, UTF-8 encoded."""
    from shootdown.matrix.engine import INFRA_OUTCOMES, describe_record

    by_set: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in data.records:
        by_set[r["set"]].append(r)
    missing_by_set: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for j in data.missing:
        missing_by_set[j["set"]].append(j)
        by_set.setdefault(j["set"], [])
    root = ET.Element("testsuites", name="shootdown matrix")
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for set_name, records in by_set.items():
        suite = ET.SubElement(root, "testsuite", name=set_name)
        counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
        seconds = 0.0
        for r in records:
            counts["tests"] += 1
            seconds += float(r.get("seconds", 0.0))
            case = ET.SubElement(
                suite, "testcase",
                classname=classname(set_name, r),
                name=f"inject={r['inject']}", time=f"{float(r.get('seconds', 0.0)):.3f}")
            props = ET.SubElement(case, "properties")
            for key in _PROPERTIES:
                if r.get(key) is not None:
                    ET.SubElement(props, "property", name=key, value=str(r[key]))
            if not r.get("ok"):
                text = "\n".join(describe_record(r))
                if r["outcome"] in INFRA_OUTCOMES or r["outcome"] == "error":
                    counts["errors"] += 1
                    el = ET.SubElement(case, "error", message=f"{r['outcome']}", type="infra")
                else:
                    counts["failures"] += 1
                    el = ET.SubElement(case, "failure",
                                       message=f"expected {r['expect']}, got {r['outcome']}",
                                       type="validation")
                el.text = text
            elif r["outcome"] == "caught":
                first = next((s for s in r.get("results", []) if s.get("verdict") == "caught"),
                             None)
                out = ET.SubElement(case, "system-out")
                out.text = "expected failure caught" + (
                    f": {first['scenario']}: {first['reason']}" if first else "")
            elif r["outcome"] == "skip":
                counts["skipped"] += 1
                ET.SubElement(case, "skipped", message="skipped by the guest")
        for r in records:  # a scenario the guest skipped was not checked: say so
            for s in r.get("results", []):
                if s.get("verdict") != "skip":
                    continue
                counts["tests"] += 1
                counts["skipped"] += 1
                case = ET.SubElement(
                    suite, "testcase",
                    classname=classname(set_name, r),
                    name=f"inject={r['inject']} scenario={s.get('scenario', '?')}", time="0.000")
                ET.SubElement(case, "skipped", message=str(s.get("reason") or "skipped"))
        for j in missing_by_set.get(set_name, []):
            counts["tests"] += 1
            counts["errors"] += 1
            case = ET.SubElement(
                suite, "testcase",
                classname=classname(set_name, j),
                name=f"inject={j['inject']}", time="0.000")
            ET.SubElement(case, "error", message="not run", type="infra").text = (
                f"job {j['job_id']} has no record in the results file")
        for k, v in counts.items():
            suite.set(k, str(v))
            totals[k] += v
        suite.set("time", f"{seconds:.3f}")
    for k, v in totals.items():
        root.set(k, str(v))
    ET.indent(root)
    body: bytes = ET.tostring(root, encoding="unicode").encode("utf-8")
    return b'<?xml version="1.0" encoding="utf-8"?>\n' + body
