"""``shootdown model`` on the documented examples, in every format and policy."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from shootdown import cli
from shootdown.model import POLICIES

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "docs" / "examples").glob("*.toml"))
XT = re.compile(r"0x[0-9a-f]{16}")


def model(capsys: pytest.CaptureFixture[str], *argv: str) -> list[str]:
    assert cli.main(["model", *argv]) == 0
    return capsys.readouterr().out.splitlines()


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
@pytest.mark.parametrize("policy", list(POLICIES))
def test_jsonl_has_exactly_the_documented_keys(path: Path, policy: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    lines = model(capsys, str(path), "--policy", policy, "--format", "jsonl",
                  "--cpu-features", "ttl,tlbirange", "--kpti")
    assert lines
    for line in lines:
        obj = json.loads(line)
        assert line == json.dumps(obj)
        if obj["op"] == "tlbi":
            assert set(obj) in ({"op", "arg", "xt"}, {"op", "arg"})
            assert "xt" not in obj or XT.fullmatch(obj["xt"])
        elif obj["op"] == "dsb":
            assert set(obj) == {"op", "arg"} and obj["arg"] in ("ishst", "ish")
        else:
            assert obj == {"op": "isb"}


@pytest.mark.parametrize("granule", ["4k", "16k", "64k"])
@pytest.mark.parametrize("fmt", ["text", "summary", "protocol"])
def test_other_formats_run_on_every_granule(granule: str, fmt: str,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    out = model(capsys, str(ROOT / "docs" / "examples" / "munmap-1g.toml"), "--granule",
                granule, "--format", fmt, "--policy", "v4.19,v4.20,v6.19" if fmt == "summary"
                else "v6.19")
    assert out
    if fmt == "protocol":
        assert out[0].startswith(f"SCN id=0 policy=v6.19 granule={granule} ") and out[-1] == "GO"


def test_jsonl_of_flush_tlb_page_is_exact(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    sc = tmp_path / "page.toml"
    sc.write_text('asid = 42\n[[step]]\nkind = "flush_tlb_page"\naddr = 0x400000\n')
    assert model(capsys, str(sc), "--format", "jsonl") == [
        '{"op": "dsb", "arg": "ishst"}',
        '{"op": "tlbi", "arg": "vale1is", "xt": "0x002a000000000400"}',
        '{"op": "dsb", "arg": "ish"}',
    ]


def test_the_table_in_docs_scenarios_is_what_the_tool_prints(
        capsys: pytest.CaptureFixture[str]) -> None:
    out = model(capsys, str(ROOT / "docs" / "examples" / "munmap-1g.toml"), "--format",
                "summary", "--policy", "v4.19,v4.20")
    doc = (ROOT / "docs" / "scenarios.md").read_text()
    assert "\n".join(out) in doc


def test_a_list_of_policies_needs_summary_or_text(capsys: pytest.CaptureFixture[str]) -> None:
    path = str(ROOT / "docs" / "examples" / "basic.toml")
    assert cli.main(["model", path, "--policy", "v4.19,v4.20", "--format", "jsonl"]) == 2
    assert "needs --format summary or text" in capsys.readouterr().err
    assert cli.main(["model", path, "--policy", "v4.19,v4.20"]) == 0
    out = capsys.readouterr().out
    assert "policy v4.19," in out and "policy v4.20," in out


def test_policy_all_models_every_release(capsys: pytest.CaptureFixture[str]) -> None:
    path = str(ROOT / "docs" / "examples" / "basic.toml")
    assert cli.main(["model", path, "--policy", "all", "--format", "summary"]) == 0
    out = capsys.readouterr().out
    assert all(f"| `{name}` |" in out for name in POLICIES)
