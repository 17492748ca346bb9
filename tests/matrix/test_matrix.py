"""Matrix runs on real guests: expansion, outcomes, retries, crashes, kill and resume."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from shootdown.errors import ConfigError
from shootdown.matrix.engine import describe_record, run_matrix
from shootdown.matrix.results import iter_records, latest
from shootdown.matrix.spec import load_matrix

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(__file__).resolve().parent / "data"
POLICIES = ["v4.19", "v4.20", "v5.0", "v5.2", "v5.4", "v5.9", "v5.14", "v6.8", "v6.9",
            "v6.10", "v6.13", "v6.19"]

pytestmark = pytest.mark.guest


def write_matrix(where: Path, sets: list[str], head: str = "") -> Path:
    """A matrix file over tests/matrix/data's 4K scenarios, with ``sets`` as [[set]] bodies."""
    scen = where / "scen"
    scen.mkdir(parents=True, exist_ok=True)
    for name in ("munmap-2m.toml", "thp-kpti.toml", "gather.toml"):
        (scen / name).write_text((DATA / name).read_text())
    text = f'name = "t"\njob_timeout = 60\n{head}\n'
    for body in sets:
        text += f'\n[[set]]\nscenarios = ["scen"]\ngranules = ["4k"]\n{body}\n'
    path = where / "matrix.toml"
    path.write_text(text)
    return path


# -- the file ----------------------------------------------------------------

def test_expansion_exclude_expect_and_stable_ids(tmp_path: Path, firmware_elf: Path) -> None:
    m = write_matrix(tmp_path, [
        'name = "a"\nguests = ["virt-a57", "virt-max"]\npolicies = ["v4.19", "v6.19"]\n'
        'inject = ["none", "skip_dsb_ish"]\n'
        'exclude = [ { guest = "virt-max", policy = "v4.19", inject = "skip_dsb_ish" } ]'])
    jobs = load_matrix(m).jobs
    assert len(jobs) == 7
    assert {(j.inject, j.expect) for j in jobs} == {("none", "pass"), ("skip_dsb_ish", "caught")}
    assert all(len(j.scenarios) == 3 for j in jobs)
    assert [j.id for j in load_matrix(m).jobs] == [j.id for j in jobs]  # stable
    assert len({j.id for j in jobs}) == 7
    # editing a scenario re-runs exactly the jobs that use it: all of them here
    scen = tmp_path / "scen" / "thp-kpti.toml"
    scen.write_text(scen.read_text() + "\n# edited\n")
    assert not {j.id for j in load_matrix(m).jobs} & {j.id for j in jobs}


def test_a_worker_loads_a_file_once_and_again_after_an_edit(tmp_path: Path) -> None:
    """A worker keeps the scenarios it loaded (it runs them under every policy
    and injection), but an edit between two of its jobs is seen, and a file
    gone since the plan is reported as the scenario error it is."""
    from shootdown.errors import ScenarioError
    from shootdown.matrix.job import _load

    path = tmp_path / "s.toml"
    path.write_text((DATA / "munmap-2m.toml").read_text())
    first = _load(str(path), ())
    assert _load(str(path), ()) is first
    with_kpti = _load(str(path), (("kpti", True),))
    assert with_kpti.kpti and with_kpti is not first
    path.write_text(path.read_text().replace("asid = ", "asid = 1") + "\n# edited\n")
    edited = _load(str(path), ())
    assert edited is not first and edited.asid != first.asid
    path.unlink()
    with pytest.raises(ScenarioError, match="no such scenario file"):
        _load(str(path), ())


@pytest.mark.parametrize(("body", "message"), [
    ('guests = ["virt-a57"]\npolicies = ["v4.19"]\ncolour = "red"', "key 'colour': unknown key"),
    ('guests = ["virt-a57"]\npolicies = ["v4.1"]', "key 'policies': unknown policy 'v4.1'"),
    ('guests = ["virt-zz"]\npolicies = ["v4.19"]', "key 'guests': unknown guest 'virt-zz'"),
    ('guests = ["virt-a57"]\npolicies = ["v4.19"]\ninject = ["no_such_bug"]',
     "key 'inject': --inject: unknown bug 'no_such_bug'"),
    ('guests = ["virt-a57"]\npolicies = ["v4.19"]\nexpect = "maybe"', "key 'expect'"),
])
def test_bad_matrix_names_file_and_field(tmp_path: Path, firmware_elf: Path, body: str,
                                         message: str) -> None:
    m = write_matrix(tmp_path, [body])
    with pytest.raises(ConfigError) as err:
        load_matrix(m)
    assert str(m) in str(err.value) and message in str(err.value)


# -- running -------------------------------------------------------------------

def test_run_outcomes_and_validation_failures_not_retried(
        tmp_path: Path, firmware_elf: Path, qemu: str, no_leftover_qemu: None) -> None:
    m = write_matrix(tmp_path, [
        'name = "clean"\nguests = ["virt-a57"]\npolicies = ["v4.19", "v6.19"]',
        'name = "bugs"\nguests = ["virt-a57"]\npolicies = ["v6.19"]\n'
        'inject = ["skip_dsb_ishst", "wrong_asid"]',
        # a bug that is caught where the set (wrongly) expects a pass: a validation
        # surprise, reported and never retried
        'name = "wrong"\nguests = ["virt-a57"]\npolicies = ["v4.20"]\n'
        'inject = ["skip_dsb_ish"]\nexpect = "pass"'])
    summary = run_matrix(m, tmp_path / "out", workers=2, progress=False)
    records = list(iter_records(summary.results))
    assert len(records) == summary.total == 5
    by_set = Counter((r["set"], r["outcome"], r["ok"]) for r in records)
    assert by_set == {("clean", "pass", True): 2, ("bugs", "caught", True): 2,
                      ("wrong", "caught", False): 1}
    assert all(r["attempts"] == 1 and r["errors"] == [] for r in records)
    wrong = next(r for r in records if r["set"] == "wrong")
    assert "sequence differs from the model" in wrong["results"][0]["reason"]
    assert wrong["results"][0]["detail"] and Path(wrong["log_path"]).is_file()
    assert summary.exit_code == 1


def test_hang_and_crash_are_retried_once_and_the_rest_go_on(
        tmp_path: Path, firmware_elf: Path, qemu: str, no_leftover_qemu: None,
        make_guest: Callable[..., Path]) -> None:
    gdir = tmp_path / "guests"
    make_guest(gdir, "quick", str(ROOT / "firmware" / "build" / "shootdown-{granule}.elf"),
               idle=1, boot=5, total=20)
    m = write_matrix(tmp_path, [
        'name = "hang"\nguests = ["quick"]\npolicies = ["v6.19"]\ndebug = "hang"',
        'name = "crash"\nguests = ["quick"]\npolicies = ["v6.19"]\ndebug = "crash"',
        'name = "clean"\nguests = ["quick"]\npolicies = ["v4.19", "v4.20", "v6.19"]'],
        head='guests_dir = "guests"')
    summary = run_matrix(m, tmp_path / "out", workers=2, progress=False)
    records = {r["set"] + r["policy"]: r for r in iter_records(summary.results)}
    assert len(records) == 5
    hang, crash = records["hangv6.19"], records["crashv6.19"]
    assert hang["outcome"] == crash["outcome"] == "infra"
    assert hang["attempts"] == crash["attempts"] == 2
    assert all("GuestTimeout" in e for e in hang["errors"]) and len(hang["errors"]) == 2
    # a hang is reported with the last console lines and the log's path
    assert any("READY" in line for line in hang["console_tail"])
    described = describe_record(hang)
    assert "  last console lines:" in described
    assert f"  console log: {hang['log_path']}" in described and Path(hang["log_path"]).is_file()
    assert all("GuestCrash" in e for e in crash["errors"])
    assert [records[f"clean{p}"]["outcome"] for p in ("v4.19", "v4.20", "v6.19")] == ["pass"] * 3
    assert summary.exit_code == 3


def test_a_dead_worker_is_recorded_retried_once_and_the_rest_go_on(
        tmp_path: Path, firmware_elf: Path, qemu: str, no_leftover_qemu: None) -> None:
    m = write_matrix(tmp_path, [
        'name = "die"\nguests = ["virt-a57"]\npolicies = ["v6.19"]\ndebug = "kill-worker"',
        'name = "clean"\nguests = ["virt-a57"]\npolicies = ["v4.19", "v4.20", "v5.4", "v6.19"]'])
    summary = run_matrix(m, tmp_path / "out", workers=2, progress=False)
    lines = list(iter_records(summary.results))
    die = [r for r in lines if r["set"] == "die"]
    assert [(r["outcome"], r["final"]) for r in die] == [("crashed", False), ("crashed", True)]
    assert "crashed" in die[0]["errors"][0]
    final = latest(summary.results)
    assert len(final) == 5 and sum(r["outcome"] == "pass" for r in final) == 4
    assert summary.exit_code == 3


def test_host_pool_seats_bound_the_guests_across_workers(
        tmp_path: Path, firmware_elf: Path, qemu: str, no_leftover_qemu: None,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """With a pool of one local seat, two workers never boot two guests at once."""
    monkeypatch.setenv("SHOOTDOWN_SEATS_DIR", str(tmp_path / "seats"))
    pool = tmp_path / "hosts.toml"
    pool.write_text('[[host]]\nname = "local"\nmax_guests = 1\n')
    m = write_matrix(tmp_path, [
        'name = "a"\nguests = ["virt-a57"]\npolicies = ["v4.19", "v4.20", "v5.4", "v6.19"]'])
    summary = run_matrix(m, tmp_path / "out", workers=2, progress=False, hosts=str(pool))
    records = latest(summary.results)
    assert summary.exit_code == 0 and len(records) == 4
    assert {r["host"] for r in records} == {"local#0"}
    spans = sorted((r["seat_taken"], r["seat_released"]) for r in records)
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans))


# -- kill and resume -------------------------------------------------------------

def _start(matrix: Path, out: Path, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "shootdown.cli", "matrix", str(matrix), "--workers", "2",
         "--out", str(out), "--no-progress", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)


def _wait_lines(path: Path, n: int, proc: subprocess.Popen[bytes], limit: float = 60) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if path.exists() and path.read_bytes().count(b"\n") >= n:
            return
        assert proc.poll() is None, "the run ended before it could be interrupted"
        time.sleep(0.05)
    raise AssertionError(f"{path}: fewer than {n} records after {limit} s")


def _group_gone(pgid: int, limit: float = 20) -> bool:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_interrupted_run_resumes_without_loss_or_duplicates(
        tmp_path: Path, firmware_elf: Path, qemu: str, no_leftover_qemu: None,
        sig: signal.Signals) -> None:
    # Enough jobs that the signal lands long before the end: a boot's results
    # arrive in a burst, and with few jobs a run could finish first.
    m = write_matrix(tmp_path, [
        f'name = "all"\nguests = ["virt-a57"]\npolicies = {json.dumps(POLICIES)}\n'
        'inject = ["none", "skip_dsb_ish", "wrong_asid"]'])
    total = len(load_matrix(m).jobs)
    out = tmp_path / "out"
    results = out / "results.jsonl"
    proc = _start(m, out)
    _wait_lines(results, total // 6, proc)
    proc.send_signal(sig)  # the controller only; its workers and QEMUs must follow
    proc.wait(timeout=60)
    assert _group_gone(proc.pid), "workers or QEMU outlived the killed run"
    if sig != signal.SIGKILL:  # a shell reports a death by the signal the same way
        assert proc.returncode == 128 + sig
    before = results.read_bytes()
    kept = before[:before.rfind(b"\n") + 1]
    done_before = {r["job_id"] for r in iter_records(results)}
    assert 0 < len(done_before) < total

    again = _start(m, out, "--resume")
    output = again.communicate(timeout=120)[0].decode()
    assert again.returncode == 0, output
    after = results.read_bytes()
    assert after.startswith(kept)  # nothing already written was lost or rewritten
    ids = [r["job_id"] for r in iter_records(results)]
    assert len(ids) == len(set(ids)) == total  # each job exactly once
    assert {j.id for j in load_matrix(m).jobs} == set(ids)
    # the resumed run ran only what was missing
    assert sum(1 for line in output.splitlines() if line.startswith("ok ")) \
        == total - len(done_before)


def test_engine_does_not_reach_into_the_pytest_plugin() -> None:
    """The engine gets its log folder from the shell; it imports nothing of the plugin."""
    import ast

    import shootdown.matrix.engine as engine

    tree = ast.parse(Path(engine.__file__).read_text(encoding="utf-8"))
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert "shootdown.pytest_plugin" not in imported


def test_a_matrix_file_as_plain_tests_logs_in_the_plugins_folder(
        tmp_path: Path, firmware_elf: Path, qemu: str, no_leftover_qemu: None) -> None:
    """``pytest matrix.toml``: the plugin hands the engine its log folder."""
    m = write_matrix(tmp_path, ['name = "one"\nguests = ["virt-a57"]\npolicies = ["v6.19"]'])
    logs = tmp_path / "logs"
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:xdist",
                           "-p", "no:cacheprovider", str(m), f"--shootdown-logdir={logs}"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 passed" in proc.stdout
    assert list(logs.glob("*.console.log"))


def test_a_full_disk_stops_the_matrix_with_one_line_exit_3(
        tmp_path: Path, firmware_elf: Path, qemu: str, no_leftover_qemu: None) -> None:
    """Records that cannot be written: one line naming the results file, exit 3, never
    "not run" or a pytest INTERNALERROR.  RLIMIT_FSIZE in the child stands in for a
    full disk (EFBIG where ENOSPC would be; the same OSError path; no mount rights needed)."""
    import resource

    m = write_matrix(tmp_path, ['name = "one"\nguests = ["virt-a57"]\n'
                                'policies = ["v4.19", "v6.19"]'])

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))

    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "shootdown.cli", "matrix", str(m), "--out",
                           str(out), "-n", "1", "--no-progress"], capture_output=True,
                          text=True, timeout=300, preexec_fn=limit)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "INTERNALERROR" not in proc.stderr and "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("shootdown: error")]
    assert errors == [f"shootdown: error: {out / 'results.jsonl'}: cannot write "
                      "the matrix results: File too large"], proc.stderr
