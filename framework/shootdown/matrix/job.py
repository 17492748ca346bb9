"""Running one matrix job into a result record.

A job boots once and runs its scenarios (:func:`shootdown.session.run_boot`).
What can go wrong splits in three, and only one of them is retried:

* a validation outcome (FAIL, MISSED, or an unwanted CAUGHT) is the answer,
  never retried;
* an infrastructure failure (:class:`~shootdown.errors.InfraError`: QEMU
  would not start, the guest hung or crashed, the console broke, or the job
  ran past its ``job_timeout``) is retried once with a fresh boot, and the
  record keeps the first error;
* bad input (:class:`~shootdown.errors.ConfigError`,
  :class:`~shootdown.errors.FirmwareError`: a stale firmware, say) is
  recorded as ``error`` and not retried: it would fail the same way.

The record is plain JSON (``docs/matrix.md`` lists its fields); the
controller appends it to the results file.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from shootdown.errors import ConfigError, FirmwareError, GuestTimeout, InfraError
from shootdown.matrix.spec import MatrixJob

logger = logging.getLogger(__name__)

#: attempts for a job whose failures are infrastructure failures
MAX_ATTEMPTS = 2
#: detail lines kept per scenario in a record (the console log has the rest)
MAX_DETAIL_LINES = 40


class JobHung(GuestTimeout):
    """The whole job ran past its ``job_timeout`` (a hang the guest's own limits missed)."""


@contextmanager
def watchdog(seconds: float, what: str) -> Iterator[None]:
    """Raise :class:`JobHung` in this thread if the block runs longer than ``seconds``.

    SIGALRM works only in the main thread, which is where pytest (and xdist's
    workers) run tests; elsewhere the guest's own idle/total limits remain.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum: int, frame: Any) -> None:
        raise JobHung(f"{what}: still running after the job timeout of {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def region_bytes(scenario: Any) -> int | None:
    """Bytes torn down by a scenario made only of munmap steps (the x axis of the plots)."""
    from shootdown.scenario.types import MunmapStep

    if not scenario.steps or not all(isinstance(s, MunmapStep) for s in scenario.steps):
        return None
    return int(sum(s.end - s.start for s in scenario.steps))


#: scenarios this worker has loaded: (path, mtime, size, overrides) -> Scenario
_LOADED: dict[tuple[str, int, int, str], Any] = {}


def _load(path: str, overrides: tuple[tuple[str, Any], ...]) -> Any:
    """``load_scenario``, once per worker for a file that has not changed.

    A worker runs the same scenario sets under every policy and injection;
    the file's size and modification time make an edit between jobs count.
    """
    from shootdown.scenario.load import load_scenario

    try:
        st = os.stat(path)
    except OSError:  # gone since the plan was made: load_scenario says so properly
        return load_scenario(path, dict(overrides) or None)
    key = (path, st.st_mtime_ns, st.st_size, repr(overrides))  # values may be lists
    if key not in _LOADED:
        _LOADED[key] = load_scenario(path, dict(overrides) or None)
    return _LOADED[key]


@functools.cache
def _pool(path: str) -> Any:
    from shootdown.remote.pool import HostPool

    return HostPool.load(path)


@contextmanager
def _placed(definition: Any, hosts: str | None, record: dict[str, Any]) -> Iterator[Any]:
    """The definition and launcher to use: on a seat of the host pool ``hosts`` if given.

    A seat is an flock shared by every worker (shootdown.remote.pool), held for
    the job's boot; without a pool the guest runs here, one per worker.
    """
    if not hosts:
        from shootdown.remote import launcher_for

        record["host"] = definition.host or "local"
        yield definition, launcher_for(definition)
        return
    t0 = time.monotonic()
    with _pool(hosts).seat_for(definition,
                               prefer=os.environ.get("PYTEST_XDIST_WORKER")) as seat:
        record["host"] = f"{seat.host.name}#{seat.slot}"
        record["seat_wait_s"] = round(time.monotonic() - t0, 4)
        record["seat_taken"] = time.time()
        try:
            yield seat.place(definition), seat.launcher()
        finally:
            record["seat_released"] = time.time()  # just before the flock goes


def run_job(job: MatrixJob, logdir: str, *, qemu: str | None = None,
            hosts: str | None = None) -> dict[str, Any]:
    """Run ``job`` (retrying an infrastructure failure once); its result record.

    ``hosts`` is a host-pool file (shootdown.remote.pool): the job then waits
    for a seat on one of its hosts and boots the guest there.
    """
    record: dict[str, Any] = job.params()
    record.update(started=time.time(), worker=os.environ.get("PYTEST_XDIST_WORKER", "main"),
                  attempts=0, errors=[], outcome="error", ok=False)
    t0 = time.monotonic()
    try:
        if job.kernel is not None:
            from shootdown.matrix.kernel_job import run_kernel_job

            run_kernel_job(job, logdir, record, qemu=qemu)
        else:
            _firmware_job(job, logdir, qemu, hosts, record)
    except (ConfigError, FirmwareError) as exc:
        record["errors"].append(f"{type(exc).__name__}: {exc}")
        record["outcome"] = "error"
    except InfraError as exc:  # before any boot: no seat, remote host unreachable
        record["errors"].append(f"{type(exc).__name__}: {exc}")
        record["outcome"] = "infra"
    record["ok"] = record["outcome"] == record["expect"]
    record["seconds"] = round(time.monotonic() - t0, 4)
    record["finished"] = time.time()
    return record


def _firmware_job(job: MatrixJob, logdir: str, qemu: str | None, hosts: str | None,
                  record: dict[str, Any]) -> None:
    """Boot the firmware (on a seat of ``hosts`` if given) and run the job's scenarios."""
    from shootdown.guest.definition import find_guest
    from shootdown.session import Job

    definition = find_guest(job.guest, job.guests_dir)
    scenarios = [_load(p, job.overrides) for p in job.scenarios]
    sizes = {s.path: region_bytes(s) for s in scenarios}
    jobs = [Job(s, job.policy, job.inject) for s in scenarios]
    if job.inject != "none":
        record["inject_description"] = bug_description(
            definition.firmware_path(job.granule), job.inject)
    with _placed(definition, hosts, record) as (definition, launcher):
        _attempts(job, definition, launcher, jobs, sizes, logdir, qemu, record)


def _attempts(job: MatrixJob, definition: Any, launcher: Any, jobs: list[Any],
              sizes: dict[str, int | None], logdir: str, qemu: str | None,
              record: dict[str, Any]) -> None:
    """Boot and run, a second time after an infrastructure failure; fill ``record``."""
    from shootdown.check.scenario import run_verdict
    from shootdown.session import run_boot

    record["qemu_version"] = launcher.qemu_version(qemu or _default_qemu())
    for attempt in range(1, MAX_ATTEMPTS + 1):
        record["attempts"] = attempt
        log_path = os.path.join(logdir, f"{job.id}.{attempt}.console.log")
        record["log_path"] = log_path
        try:
            with watchdog(job.timeout, f"job {job.id}"):
                _debug_hook(job, definition, log_path, qemu)
                trace_log = log_path.replace(".console.log", ".exec.log") \
                    if job.trace else None
                report = run_boot(definition, job.granule, jobs, log_path=log_path,
                                  qemu=qemu, launcher=launcher, trace_log=trace_log)
        except InfraError as exc:
            logger.warning("job %s attempt %d: %s", job.id, attempt, exc)
            record["errors"].append(f"attempt {attempt}: {type(exc).__name__}: {exc}")
            record["outcome"] = "infra"
            record["console_tail"] = [str(line) for line in exc.tail]  # a hang's last words
            continue
        verdict = run_verdict(report.results, job.inject)
        record.update(
            outcome=str(verdict), build_id=report.build_id, cpus=report.cpus,
            boot_s=round(report.boot_s, 4), run_s=round(report.total_s, 4),
            qemu_argv=report.qemu_argv,
            results=[_scenario_dict(r, sizes.get(r.scenario)) for r in report.results])
        break


def _scenario_dict(result: Any, size: int | None) -> dict[str, Any]:
    d: dict[str, Any] = result.to_dict()
    if len(d["detail"]) > MAX_DETAIL_LINES:
        d["detail"] = [*d["detail"][:MAX_DETAIL_LINES], "... (see the console log)"]
    d["region_bytes"] = size
    return d


def _debug_hook(job: MatrixJob, definition: Any, log_path: str, qemu: str | None) -> None:
    """The ``debug`` test hook of a set: hang or crash the guest, or kill this worker."""
    if job.debug is None:
        return
    if job.debug == "kill-worker":
        logger.warning("job %s: debug hook kills this worker (pid %d)", job.id, os.getpid())
        os.kill(os.getpid(), signal.SIGKILL)
    from shootdown.guest.machine import Guest

    with Guest(definition, log_path=log_path, granule=job.granule, qemu=qemu) as guest:
        guest.command(f"DEBUG {job.debug}")


@functools.cache
def _bugs(elf: str) -> dict[str, str]:
    from shootdown.bugs import read_bugs

    return {b.name: b.description for b in read_bugs(elf)}


def bug_description(elf: str, name: str) -> str:
    """What the injection ``name`` breaks, as the firmware ELF describes it."""
    return _bugs(elf).get(name, "")


def _default_qemu() -> str:
    from shootdown.guest.argv import default_qemu

    return default_qemu()
