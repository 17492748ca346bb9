"""Kernel jobs of a matrix: a set with ``kernels`` boots real kernels.

A kernel job is one boot of one kernel (``debian:SUITE[-16k]`` or a path to an
Image) on one CPU of the kernel table (:data:`shootdown.kernel.table.CPUS`),
with or without ``kpti=1``, running every workload of the set written for the
kernel's page size through ``shootdown kernel run``: each step traced,
compared with the golden model and judged by the model-free checks and the
cross-CPU probe.  Its record is a job record like the firmware's
(:mod:`shootdown.matrix.job`) plus ``kernel`` and ``kpti``; each workload is a
result whose ``kernel_row`` is its row of the kernel table
(:class:`shootdown.kernel.table.Row`: steps, model answers, issued and
modelled instruction counts), which the report shows beside the modelled
releases' costs.

Failures split as for the firmware: a validation outcome is the answer; an
infrastructure failure (the archive unreachable, QEMU would not start, the
guest hung) is retried once; bad input is ``error``.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shootdown.errors import ConfigError, InfraError
from shootdown.matrix.job import MAX_ATTEMPTS, MAX_DETAIL_LINES, watchdog
from shootdown.matrix.spec import (
    AUTO_POLICY,
    KERNEL_EXCLUDE_KEYS,
    KERNEL_SET_KEYS,
    MatrixJob,
    check_excludes,
    digest_file,
    get_key,
    job_id,
    scenario_files,
    set_expect,
    set_header,
    str_list,
)

if TYPE_CHECKING:
    from shootdown.kernel.locate import KernelFiles
    from shootdown.kernel.run import CheckedStep, KernelRun
    from shootdown.scenario.workload import Workload

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------
# expansion (loading the matrix file)

def _kernel_identity(kernel: str, base: Path, where: str) -> tuple[str, str, str]:
    """(the kernel as the job names it, what its id hashes, its granule) for a set's entry.

    A ``debian:`` kernel is named, not read (it may not be fetched yet); its
    granule follows from the flavour.  A path is read now: its bytes go into
    the job id and its page size from its config or Image header.
    """
    from shootdown.kernel.fetch import parse_spec

    if kernel.startswith("debian:"):
        try:
            parse_spec(kernel)
        except ConfigError as exc:
            raise ConfigError(f"{where}: key 'kernels': {exc}") from None
        return kernel, kernel, "16k" if kernel.endswith("-16k") else "4k"
    from shootdown.kernel.info import read_info
    from shootdown.kernel.locate import locate

    path = Path(kernel) if Path(kernel).is_absolute() else base / kernel
    try:
        files = locate(str(path.resolve()))
        info = read_info(files.image, files.config)
    except ConfigError as exc:
        raise ConfigError(f"{where}: key 'kernels': {exc}") from None
    if info.page_size_kib is None:
        raise ConfigError(f"{where}: key 'kernels': {kernel}: page size unknown (no config "
                          "beside the Image and none in its header)")
    return str(path.resolve()), digest_file(str(files.image)), f"{info.page_size_kib}k"


def _kpti_list(table: dict[str, Any], where: str) -> list[bool]:
    value = table.get("kpti", [False])
    if isinstance(value, bool):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, bool) for v in value):
        raise ConfigError(f"{where}: key 'kpti': expected true, false or a list of them")
    return list(dict.fromkeys(value))


def _policies(table: dict[str, Any], where: str) -> list[str]:
    """``auto`` (each kernel's own release, the default), or policies as ``kernel run
    --policy`` takes them: a release resolves to its policy, a stable release with
    backports to its own (``v6.1.176``)."""
    import re

    from shootdown.model.policy import POLICIES, resolve_policy_name, stable_policy

    if "policies" not in table:
        return [AUTO_POLICY]
    out = []
    for p in str_list(table, "policies", where):
        m = re.fullmatch(r"v(\d+)\.(\d+)\.(\d+)", p)
        stable = stable_policy((int(m[1]), int(m[2]), int(m[3]))) if m else None
        if p == AUTO_POLICY or p in POLICIES:
            out.append(p)
        elif stable is not None:
            out.append(stable.name)
        else:
            try:
                out.append(resolve_policy_name(f"v{m[1]}.{m[2]}" if m else p))
            except ConfigError:
                raise ConfigError(f"{where}: key 'policies': unknown policy '{p}' (known: "
                                  f"{AUTO_POLICY}, a release vX.Y[.Z] from v4.19)") from None
    return out


def _injections(table: dict[str, Any], where: str) -> list[str]:
    from shootdown.kernel.inject import KERNEL_BUGS, get_bug

    raw = table.get("inject", ["none"])
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not raw or not all(isinstance(x, str) for x in raw):
        raise ConfigError(f"{where}: key 'inject': expected a list of real-kernel bug names, "
                          "or \"all\"")
    if raw == ["all"]:
        return [b.name for b in KERNEL_BUGS]
    for name in raw:
        if name != "none":
            try:
                get_bug(name)
            except ConfigError as exc:
                raise ConfigError(f"{where}: key 'inject': {exc}") from None
    return list(raw)


def _workloads(patterns: list[str], base: Path, where: str) -> dict[str, list[str]]:
    """The workload files the patterns name, validated, by granule."""
    from shootdown.scenario.workload import load_workload

    by_granule: dict[str, list[str]] = {}
    for path in scenario_files(patterns, "", base, where):
        try:
            workload = load_workload(path)
        except ConfigError as exc:
            raise ConfigError(f"{where}: key 'scenarios': {exc}") from None
        by_granule.setdefault(workload.granule, []).append(path)
    return by_granule


def expand_kernel_set(table: dict[str, Any], n: int, source: str, base: Path,
                      timeout: float) -> list[MatrixJob]:
    """The jobs of a ``[[set]]`` with ``kernels``: every (kernel, CPU, kpti, policy,
    injection) left after ``exclude``; ConfigError naming the file and the key."""
    from shootdown.kernel.table import CPUS, no_granule

    name, where, timeout = set_header(table, n, source, KERNEL_SET_KEYS,
                                      " in a set with 'kernels'", timeout)
    kernels = [_kernel_identity(k, base, where) for k in str_list(table, "kernels", where)]
    guests = str_list(table, "guests", where)
    for g in guests:
        if g not in CPUS:
            raise ConfigError(f"{where}: key 'guests': '{g}' is not a CPU of the kernel table "
                              f"(known: {', '.join(CPUS)})")
    kptis = _kpti_list(table, where)
    policies = _policies(table, where)
    injects = _injections(table, where)
    expect_override = set_expect(table, where)
    excludes = check_excludes(get_key(table, "exclude", list, where, default=[]),
                              KERNEL_EXCLUDE_KEYS, where)
    workloads = _workloads(str_list(table, "scenarios", where), base, where)

    jobs: list[MatrixJob] = []
    for kernel, identity, granule in kernels:
        files = workloads.get(granule, [])
        if not files:
            raise ConfigError(f"{where}: key 'scenarios': no workload for {kernel}'s "
                              f"{granule} pages (workloads of: "
                              f"{', '.join(sorted(workloads)) or 'none'})")
        digests = [(os.path.relpath(p, base), digest_file(p)) for p in files]
        for guest in guests:
            for kpti in kptis:
                for policy in policies:
                    for inject in injects:
                        params = {"kernel": kernel, "guest": guest, "granule": granule,
                                  "kpti": kpti, "policy": policy, "inject": inject}
                        if any(all(params.get(k) == v for k, v in e.items())
                               for e in excludes):
                            continue
                        why = no_granule(guest, int(granule[:-1]))
                        if why is not None:
                            raise ConfigError(
                                f"{where}: {kernel} on {guest}: {why}; exclude it "
                                f"(exclude = [ {{ guest = \"{guest}\", granule = "
                                f"\"{granule}\" }} ])")
                        expect = expect_override or ("pass" if inject == "none" else "caught")
                        ident = job_id({"set": name, **params, "kernel": identity,
                                        "expect": expect, "scenarios": digests})
                        jobs.append(MatrixJob(
                            id=ident, set=name, guest=guest, granule=granule, policy=policy,
                            inject=inject, expect=expect, scenarios=tuple(files),
                            timeout=timeout, kernel=kernel, kpti=kpti))
    if not jobs:
        raise ConfigError(f"{where}: expands to no jobs (everything excluded)")
    return jobs


# --------------------------------------------------------------------------
# running (a worker)

def run_kernel_job(job: MatrixJob, logdir: str, record: dict[str, Any], *,
                   qemu: str | None = None) -> None:
    """Boot ``job``'s kernel and run its workloads (a second time after an infrastructure
    failure); fill ``record`` (outcome, results, timings).  ConfigError goes up."""
    from shootdown.kernel.inject import get_bug
    from shootdown.kernel.locate import locate
    from shootdown.scenario.workload import load_workload

    assert job.kernel is not None
    if job.inject != "none":
        record["inject_description"] = get_bug(job.inject).patches
    workloads = [load_workload(p) for p in job.scenarios]
    record["qemu_version"] = _qemu_version(qemu)
    for attempt in range(1, MAX_ATTEMPTS + 1):
        record["attempts"] = attempt
        tag = job.kernel.replace(":", "-").replace("/", "_")[-48:]
        log_path = os.path.join(logdir, f"{job.id}.{attempt}.{tag}.console.log")
        record["log_path"] = log_path
        t0 = time.monotonic()
        try:
            with watchdog(job.timeout, f"job {job.id}"):
                files = locate(job.kernel)
                run = _run(job, files, workloads, log_path, qemu)
        except InfraError as exc:  # JobHung too
            logger.warning("job %s attempt %d: %s", job.id, attempt, exc)
            record["errors"].append(f"attempt {attempt}: {type(exc).__name__}: {exc}")
            record["outcome"] = "infra"
            record["console_tail"] = [str(line) for line in getattr(exc, "tail", ())]
            continue
        _fill(record, job, run, time.monotonic() - t0)
        break


def _run(job: MatrixJob, files: KernelFiles, workloads: list[Workload], log_path: str,
         qemu: str | None) -> KernelRun:
    from shootdown.kernel.run import run_kernel
    from shootdown.kernel.table import cell_spec

    return run_kernel(files, spec=cell_spec(job.guest, job.kpti), log_path=log_path,
                      qemu=qemu, boot_timeout=min(180.0, job.timeout),
                      inject=None if job.inject == "none" else job.inject,
                      workloads=workloads,
                      policy=None if job.policy == AUTO_POLICY else job.policy)


def _fill(record: dict[str, Any], job: MatrixJob, run: KernelRun, seconds: float) -> None:
    """The record of a finished kernel run: its verdict, one result per workload."""
    from dataclasses import asdict

    from shootdown.kernel.table import cell_rows, steps_by_workload

    assert job.kernel is not None
    by_stem = {Path(p).stem: p for p in job.scenarios}
    by_workload = steps_by_workload(run)
    results = []
    for row in cell_rows(run, job.kernel, job.guest, seconds):
        steps = by_workload.get(row.workload, [])
        results.append({
            "scenario": by_stem.get(row.workload, row.workload), "verdict": row.verdict,
            "reason": row.note or f"{row.steps} traced step(s)",
            "detail": _detail(run, steps),
            "observed_counts": dict(row.issued),
            "region_bytes": None, "kernel_row": asdict(row)})
    record.update(
        outcome=str(run.verdict), release=run.info.release, model_policy=run.policy,
        kpti_booted=run.kpti, lpa2=run.lpa2, cpu_features=list(run.features),
        trace_method=run.trace_method, qemu_argv=list(run.argv),
        boot_s=round(run.boot_s, 4), run_s=round(run.after_boot_s, 4),
        workload_steps=run.workload_steps, results=results)


def _detail(run: KernelRun, steps: list[CheckedStep]) -> list[str]:
    """What went wrong in a workload's steps, cut at :data:`MAX_DETAIL_LINES` (none for a
    clean pass; the console log has the rest)."""
    from shootdown.kernel.table import failure_lines

    lines = failure_lines(run, steps, divergence_lines=6)
    if len(lines) > MAX_DETAIL_LINES:
        lines = [*lines[:MAX_DETAIL_LINES], "... (see the console log)"]
    return lines


def _qemu_version(qemu: str | None) -> str:
    """The first line of ``qemu --version`` (what a firmware job's record says)."""
    from shootdown.guest.argv import default_qemu
    from shootdown.guest.qemu import version_line

    return version_line(qemu or default_qemu())
