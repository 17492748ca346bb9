"""Running a matrix with pytest and pytest-xdist: the jobs are test items.

``shootdown matrix`` calls :func:`run_matrix`, which runs an in-process
pytest session on the matrix file.  The shootdown plugin collects that file
into one :class:`JobItem` per job still to run (the *plan*, frozen in a file
before any worker starts, so that every worker collects the same items, as
xdist requires) and xdist spreads them over ``--workers`` processes.  There
is no scheduler of our own.

Who does what:

* a worker runs a job (:func:`shootdown.matrix.job.run_job`) and attaches the
  record to its test report (``user_properties``);
* the controller (this process) receives every report, appends the record to
  the results file (:class:`~shootdown.matrix.results.ResultsWriter`) and
  advances the progress bar;
* a worker that dies under a job (xdist reports the item as "crashed" and
  starts a new worker) leaves a non-final ``crashed`` record; once the pass
  is over, those jobs run once more in a second pass (an infrastructure
  failure, retried once), whose records are final.

An interrupted run (Ctrl-C, SIGKILL of anything) keeps every record already
written; :func:`run_matrix` with ``resume`` runs only the jobs without a
final record.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from shootdown.folders import locked_folder, make_folder
from shootdown.matrix.spec import Matrix, MatrixJob, job_label, load_matrix

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

    from shootdown.matrix.results import ResultsWriter

logger = logging.getLogger(__name__)

#: user_properties key that carries a job's record from the worker
RECORD_KEY = "shootdown_record"
#: outcomes that are infrastructure trouble rather than validation answers
INFRA_OUTCOMES = ("infra", "crashed", "not-run")


# --------------------------------------------------------------------------
# collection and execution (workers)

class JobFailed(Exception):
    """A job's outcome was not the expected one (the record says how)."""

    def __init__(self, record: dict[str, Any]) -> None:
        super().__init__(record.get("outcome"))
        self.record = record


class MatrixFile(pytest.File):
    """A matrix file given to pytest together with ``--shootdown-matrix-plan``.

    ``logdir`` gives the console-log folder when a job first needs it: the
    shell that collects the file (the pytest plugin) owns that choice, and
    the engine never reaches into the shell's state for it.
    """

    def __init__(self, *, logdir: Callable[[], str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.logdir = logdir

    def collect(self) -> Iterable[pytest.Item]:
        matrix = load_matrix(self.path)
        plan = read_plan(self.config.getoption("shootdown_matrix_plan"))
        for job in matrix.jobs:
            if plan is None or job.id in plan:
                yield JobItem.from_parent(self, name=item_name(job), job=job, logdir=self.logdir)


class JobItem(pytest.Item):
    """One matrix job as a pytest item."""

    def __init__(self, *, job: MatrixJob, logdir: Callable[[], str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.job = job
        self.logdir = logdir

    def runtest(self) -> None:
        from shootdown.matrix.job import run_job

        logdir = self.config.getoption("shootdown_matrix_logdir") or self.logdir()
        record = run_job(self.job, logdir, qemu=self.config.getoption("shootdown_qemu"),
                         hosts=self.config.getoption("shootdown_matrix_hosts"))
        self.user_properties.append((RECORD_KEY, json.dumps(record)))
        if not record["ok"]:
            raise JobFailed(record)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException],
                     style: Any = None) -> str:
        if isinstance(excinfo.value, JobFailed):
            return "\n".join(describe_record(excinfo.value.record))
        return str(super().repr_failure(excinfo))

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, self.job.label


def item_name(job: MatrixJob) -> str:
    """The item name: readable, and ending in the job id (crash reports carry only the id)."""
    words = job.label.replace(":", "-").replace("/", "_").split()
    return "-".join([*words, job.id])


def job_id_of(nodeid: str) -> str:
    return nodeid.rsplit("-", 1)[-1]


def read_plan(path: str | None) -> set[str] | None:
    """The job ids to run (None: no plan, run them all)."""
    if not path:
        return None
    return set(json.loads(Path(path).read_text()))


def describe_record(record: dict[str, Any]) -> list[str]:
    """Lines for people about a record that went wrong."""
    lines = [f"{job_label(record)}: expected {record.get('expect')}, got "
             f"{record.get('outcome')}"]
    lines += [f"  {e}" for e in record.get("errors", [])]
    for s in record.get("results", []):
        if s["verdict"] in ("fail", "missed") or (record.get("expect") == "pass"
                                                 and s["verdict"] != "pass"):
            lines.append(f"  {s['scenario']}: {s['verdict']}: {s['reason']}")
            lines += [f"    {d}" for d in s.get("detail", [])[:12]]
    tail = record.get("console_tail") if record.get("outcome") != record.get("expect") else None
    if tail:
        lines.append("  last console lines:")
        lines += [f"    | {_escaped(str(t))}" for t in tail]
    if record.get("log_path"):
        lines.append(f"  console log: {record['log_path']}")
    return lines


def _escaped(text: str) -> str:
    """Console text with control characters shown (``\\x1b``), never run by a terminal."""
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)


# --------------------------------------------------------------------------
# the controller

@dataclass
class Tally:
    """What the controller has seen so far."""

    done: int = 0
    unexpected: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)


class MatrixController:
    """Plugin object of the controller process: writes records, shows progress."""

    def __init__(self, matrix: Matrix, writer: ResultsWriter, *, final: bool,
                 progress: Progress | None = None, task: TaskID | None = None,
                 log_lines: bool = False) -> None:
        self.matrix = matrix
        self.writer = writer
        self.final = final
        self.progress = progress
        self.task = task
        self.log_lines = log_lines
        self.tally = Tally()
        self._by_id = {j.id: j for j in matrix.jobs}
        self._written: set[str] = set()
        #: the first failure to write a record (the run then stops: exit 3)
        self.write_error: OSError | None = None
        self._session: pytest.Session | None = None

    @pytest.hookimpl
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        record = next((json.loads(str(v)) for k, v in report.user_properties
                       if k == RECORD_KEY), None)
        when = str(report.when)  # xdist reports a crashed item with when "???"
        if record is None:
            # a crashed worker ("???"), or an item that failed without a record
            # (a bug in the runner): recorded all the same, never lost
            if when == "???" or (report.failed and when in ("setup", "call")):
                record = self._crash_record(report)
            else:
                return
        elif when != "call":
            return
        if record["job_id"] in self._written:
            return
        self._written.add(record["job_id"])
        try:
            self.writer.append(record)
        except OSError as exc:  # a full disk: stop, and say so after the session
            if self.write_error is None:
                self.write_error = exc
            if self._session is not None:
                self._session.shouldstop = f"cannot write the results: {exc.strerror or exc}"
            return
        self._count(record)

    @pytest.hookimpl
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        self._session = session

    def _crash_record(self, report: pytest.TestReport) -> dict[str, Any]:
        job = self._by_id[job_id_of(report.nodeid)]
        why = str(report.longrepr).strip().splitlines()
        crashed = str(report.when) == "???"
        node = getattr(report, "node", None)
        worker = getattr(getattr(node, "gateway", None), "id", "main")
        return {**job.params(), "outcome": "crashed" if crashed else "error",
                "ok": False, "final": self.final or not crashed, "attempts": 1,
                "errors": [why[-1] if why else "worker crashed"], "worker": worker,
                "finished": time.time()}

    def _count(self, record: dict[str, Any]) -> None:
        t = self.tally
        t.done += 1
        t.outcomes[record["outcome"]] += 1
        if not record["ok"]:
            t.unexpected += 1
        line = (f"{job_label(record)}: {record['outcome']}"
                + ("" if record["ok"] else f" (expected {record['expect']})"))
        if self.progress is not None and self.task is not None:
            self.progress.update(self.task, advance=1,
                                 description=f"{t.done} done, {t.unexpected} unexpected")
            if not record["ok"]:
                self.progress.console.print(f"[red]unexpected[/red] {line}")
        if self.log_lines:
            print(("ok   " if record["ok"] else "BAD  ") + line, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# the run

@dataclass
class MatrixSummary:
    """The end of a matrix run, read back from the results file."""

    total: int
    finished: int
    unexpected: list[dict[str, Any]]
    missing: list[MatrixJob]
    outcomes: Counter[str]
    results: Path
    wall_s: float

    @property
    def exit_code(self) -> int:
        """0 all as expected; 1 a validation surprise; 2 bad input; 3 infrastructure."""
        kinds = {r["outcome"] for r in self.unexpected}
        if kinds - {"infra", "crashed", "error"}:
            return 1
        if "error" in kinds:
            return 2
        if kinds or self.missing:
            return 3
        return 0


def run_matrix(matrix_path: str | os.PathLike[str], out: str | os.PathLike[str], *,
               workers: int = 2, resume: bool = False, qemu: str | None = None,
               progress: bool | None = None, hosts: str | None = None,
               kernels: bool = True, sets: Sequence[str] = ()) -> MatrixSummary:
    """Run (or resume) a matrix; records go to ``out/results.jsonl``.

    ``sets`` (if any) and ``kernels`` select jobs (:meth:`Matrix.select`); the others are
    neither run nor planned.

    ``hosts``: a host-pool file (shootdown.remote.pool); each job then boots on
    a seat of it, which bounds the guests per host across all workers.
    """
    t0 = time.monotonic()
    matrix = load_matrix(matrix_path).select(sets=sets, kernels=kernels)
    outdir = Path(out)
    with locked_folder(outdir, "the matrix output folder"):  # one run at a time writes there
        return _run_matrix(matrix, outdir, workers=workers, resume=resume, qemu=qemu,
                           progress=progress, hosts=hosts, t0=t0)


def _run_matrix(matrix: Matrix, outdir: Path, *, workers: int, resume: bool, qemu: str | None,
                progress: bool | None, hosts: str | None, t0: float) -> MatrixSummary:
    from shootdown.matrix.results import ResultsWriter, finished_ids, latest

    results = outdir / "results.jsonl"
    if results.exists() and not resume:
        results.unlink()
    logdir = outdir / "logs"
    make_folder(logdir, "the matrix log folder")
    write_job_list(matrix, outdir)  # what shootdown report checks the results against

    with ResultsWriter(results) as writer:  # repairs a torn last line first
        done = finished_ids(results)
        todo = [j for j in matrix.jobs if j.id not in done]
        logger.info("%s: %d jobs, %d already finished, %d to run", matrix.path,
                    len(matrix.jobs), len(matrix.jobs) - len(todo), len(todo))
        if todo:
            _session(matrix, todo, writer, outdir, logdir, workers, qemu, progress,
                     final=False, label="jobs", hosts=hosts)
        # second pass: jobs whose worker died under them, once
        retry_ids = {r["job_id"] for r in latest(results) if not r.get("final", True)}
        retry = [j for j in matrix.jobs if j.id in retry_ids]
        if retry:
            logger.warning("retrying %d job(s) whose worker crashed", len(retry))
            _session(matrix, retry, writer, outdir, logdir, min(workers, len(retry)), qemu,
                     progress, final=True, label="retries", hosts=hosts)

    records = {r["job_id"]: r for r in latest(results)}
    wanted = [j for j in matrix.jobs if j.id in records]
    missing = [j for j in matrix.jobs if j.id not in records]
    unexpected = [records[j.id] for j in wanted if not records[j.id]["ok"]]
    return MatrixSummary(total=len(matrix.jobs), finished=len(wanted), unexpected=unexpected,
                         missing=missing,
                         outcomes=Counter(records[j.id]["outcome"] for j in wanted),
                         results=results, wall_s=time.monotonic() - t0)


#: every job of the matrix (not only those still to run), beside results.jsonl
JOB_LIST = "jobs.json"


def write_job_list(matrix: Matrix, outdir: Path) -> None:
    """Write ``OUT/jobs.json``: the jobs the matrix planned, for ``shootdown report``."""
    jobs = [{k: v for k, v in j.params().items() if k not in ("expect", "scenario_files")}
            for j in matrix.jobs]
    from shootdown.errors import InfraError

    path = outdir / JOB_LIST
    try:
        path.write_text(json.dumps({"matrix": os.fspath(matrix.path), "jobs": jobs}, indent=1),
                        encoding="utf-8")
    except OSError as exc:
        raise InfraError(f"{path}: cannot write the job list: {exc.strerror or exc}") from exc


def _session(matrix: Matrix, jobs: list[MatrixJob], writer: ResultsWriter, outdir: Path,
             logdir: Path, workers: int, qemu: str | None, progress: bool | None, *,
             final: bool, label: str, hosts: str | None = None) -> None:
    """One pytest session over ``jobs``; KeyboardInterrupt goes up after the records."""
    plan = outdir / "plan.json"
    plan.write_text(json.dumps([j.id for j in jobs]))
    ini = outdir / "pytest.ini"
    ini.write_text("[pytest]\n# generated by shootdown matrix: isolates the run from the "
                   "project's pytest settings\n")
    where = Path(matrix.path).resolve()
    args = [os.fspath(where), "-c", os.fspath(ini), "--rootdir", os.fspath(where.parent),
            "-p", "no:cacheprovider", "-p", "no:terminal",
            "--shootdown-matrix-plan", os.fspath(plan),
            "--shootdown-matrix-logdir", os.fspath(logdir.resolve())]
    if qemu:
        args += ["--shootdown-qemu", qemu]
    if hosts:
        args += ["--shootdown-matrix-hosts", os.fspath(Path(hosts).resolve())]
    if workers > 0:
        args += ["-n", str(workers), "--max-worker-restart", str(len(jobs) + workers)]
    show = sys.stderr.isatty() if progress is None else progress
    bar: Progress | None = None
    task = None
    if show:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        bar = Progress(TextColumn(f"[bold]{label}[/bold]"), BarColumn(), MofNCompleteColumn(),
                       TextColumn("{task.description}"), TimeElapsedColumn(),
                       TimeRemainingColumn(), console=Console(stderr=True))
        task = bar.add_task("starting", total=len(jobs))
    controller = MatrixController(matrix, writer, final=final, progress=bar, task=task,
                                  log_lines=not show)
    if bar is not None:
        bar.start()
    try:
        code = pytest.main(args, plugins=[controller])
    finally:
        if bar is not None:
            bar.stop()
    if controller.write_error is not None:
        from shootdown.errors import InfraError

        exc = controller.write_error
        raise InfraError(f"{writer.path}: cannot write the matrix results: "
                         f"{exc.strerror or exc}") from exc
    if code == pytest.ExitCode.INTERRUPTED:  # pytest caught it: Ctrl-C, SIGTERM or SIGHUP
        from shootdown.signals import interrupt

        raise interrupt()
    if code in (pytest.ExitCode.INTERNAL_ERROR, pytest.ExitCode.USAGE_ERROR):
        from shootdown.errors import InfraError

        raise InfraError(f"pytest could not run the matrix (exit code {int(code)})")
