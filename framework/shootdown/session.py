"""Running scenarios on a guest and judging them.

Data flows one way: scenario -> golden model (expected), scenario -> guest
-> records (observed), both -> :mod:`shootdown.check` -> results. The guest is
told the calls to make and the mappings to build, never the answer.

Many scenarios share one boot (the firmware resets its address space between
them); scenarios are grouped by granule because each granule has its own
firmware build.

Two ways to hand a boot's scenarios to the guest (docs/protocol.md):

* the console: each scenario's ``SCN`` .. ``GO`` lines over the PL011, one
  scenario per command.  QEMU 7.2's PL011 takes one input byte per main-loop
  turn (~20 us), so a small scenario costs ~8 ms of input alone;
* a batch (the default for more than one job, where the launcher can hand
  QEMU the file): every job's lines, framed exactly as on the console, in
  one file that QEMU's generic loader device puts in the firmware's batch
  region before the CPUs start, then one ``BATCH`` command per slice of
  :data:`BATCH_SLICE` jobs, sent
  from a thread while this one judges the previous slice.  The records are
  the same, without a ``READY`` between scenarios; :func:`split_batch` cuts
  them per job.  The loader works the same under TCG and KVM (no
  semihosting).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from shootdown.check.scenario import ScenarioResult, judge
from shootdown.errors import (
    ConfigError,
    FirmwareError,
    GuestUnsupported,
    InfraError,
    ProtocolError,
    ScenarioError,
    ShootdownError,
)
from shootdown.guest.definition import GuestDefinition
from shootdown.guest.launcher import Launcher, LocalLauncher
from shootdown.guest.machine import GATHER_S as GATHER_S  # tests patch it here
from shootdown.guest.machine import Guest
from shootdown.model.expected import expected_sequence
from shootdown.result import Verdict
from shootdown.scenario.load import load_scenario
from shootdown.scenario.lower import to_protocol_lines as to_protocol_lines  # tests patch it
from shootdown.scenario.types import Scenario
from shootdown.trace.console import Record, crc32_hex, encode_command
from shootdown.trace.qemu_log import MaintOp, expand_report
from shootdown.trace.scenario import read_scenario

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Job:
    """One scenario to run under one policy, with or without an injected bug."""

    scenario: Scenario
    policy: str
    inject: str = "none"


@dataclass
class BootReport:
    """One boot that ran a group of jobs."""

    #: guest definition name and firmware granule
    guest: str
    granule: str
    #: the console log
    log_path: str
    #: CPUs the guest brought up (probes come from each)
    cpus: int = 0
    build_id: str = ""
    qemu_argv: list[str] = field(default_factory=list)
    boot_s: float = 0.0
    total_s: float = 0.0
    results: list[ScenarioResult] = field(default_factory=list)


def iter_scenario_files(paths: Iterable[str | os.PathLike[str]]) -> Iterator[Path]:
    """Scenario files named directly, and every ``*.toml`` below named folders (sorted)."""
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(p.rglob("*.toml"))
            if not found:
                raise ScenarioError(str(p), "folder holds no *.toml scenario files")
            yield from found
        elif p.exists():
            yield p
        else:
            raise ScenarioError(str(p), "no such file or folder")


def load_all(paths: Iterable[str | os.PathLike[str]],
             overrides: Mapping[str, Any] | None = None) -> list[Scenario]:
    """Load and validate every scenario first, so bad input fails before any boot."""
    return [load_scenario(p, overrides) for p in iter_scenario_files(paths)]


def send_scenario(guest: Guest, lines: Sequence[str]) -> list[Record]:
    """Send ``SCN`` .. ``GO`` in one write; the guest's records up to its ``READY``.

    The guest buffers the lines before ``GO`` silently (docs/protocol.md); a
    rejected line comes back as an ``ERR`` record, which the verdict reports.
    """
    *head, last = lines
    return guest.command(last, allow_err=True, before=head)


def expected_steps(job: Job) -> dict[int, tuple[Any, ...]]:
    """The golden model's instructions for ``job``, per step (a fresh dict: callers may keep it)."""
    return dict(_expected(job.scenario, job.policy))


@functools.lru_cache(maxsize=1024)
def _expected(scenario: Scenario, policy: str) -> tuple[tuple[int, tuple[Any, ...]], ...]:
    """The model's answer does not depend on the injection: one run per (scenario, policy)."""
    return tuple((r.index, r.instructions) for r in expected_sequence(scenario, policy))


#: Prefix of the firmware's maintenance stubs (firmware/src/maint.S): the
#: only code that executes a scenario's TLBI, DSB and ISB (called by oplog.c's
#: issue-and-log helpers), hence the trace's address filter.
MAINTENANCE_STUBS = "maint_"


def traced(definition: GuestDefinition, granule: str, trace_log: str) -> GuestDefinition:
    """``definition`` with QEMU's execution log of the maintenance helpers switched on.

    Single-threaded TCG when there are several CPUs, so the log lines of two
    vCPUs cannot interleave.
    """
    from shootdown.elfsyms import ElfImage
    from shootdown.trace.qemu_log import dfilter_arg, maintenance_ranges

    if definition.accel.split(",")[0] != "tcg":
        raise ConfigError(f"{definition.source or definition.name}: key 'accel': --trace needs "
                          f"QEMU's TCG execution log, not accel={definition.accel}")
    image = ElfImage(definition.firmware_path(granule))
    stubs = [fn.name for fn in image.functions if fn.name.startswith(MAINTENANCE_STUBS)]
    if not stubs:
        raise FirmwareError(f"{image.path}: no {MAINTENANCE_STUBS}* maintenance stubs to trace "
                            "(built before firmware/src/maint.S?)")
    # No -singlestep and no nochain: each stub is entered through QEMU's block
    # lookup (it sits on a page of its own), which logs it with its registers,
    # while the rest of the guest runs at full speed (firmware/src/maint.S).
    args = ["-d", "exec,cpu", "-D", trace_log,
            "-dfilter", dfilter_arg(maintenance_ranges(image, stubs))]
    accel = "tcg,thread=single" if definition.smp > 1 else definition.accel
    return definition._replace(accel=accel, extra_args=(*definition.extra_args, *args))


#: The firmware's batch region (firmware/include/core.h): the top
#: BATCH_REGION_SIZE bytes of the RAM window that starts at RAM_PA_BASE and
#: ends at the end of RAM or of the firmware's 512 MiB linear map, when that
#: window is at least BATCH_MIN_WINDOW.
RAM_PA_BASE = 0x40000000
RAM_MAP_SIZE = 512 << 20
BATCH_REGION_SIZE = 4 << 20
BATCH_MIN_WINDOW = 64 << 20


def memory_bytes(memory: str) -> int:
    """QEMU's ``-m`` size in bytes: ``128M``, ``1G``, or a bare number of MiB."""
    scale = {"M": 1 << 20, "G": 1 << 30}.get(memory[-1:].upper())
    return int(memory[:-1]) * scale if scale else int(memory) << 20


def batch_region(definition: GuestDefinition) -> tuple[int, int] | None:
    """(PA, size) of ``definition``'s batch region, or None if its RAM is too small."""
    window = min(memory_bytes(definition.memory), RAM_MAP_SIZE)
    if window < BATCH_MIN_WINDOW:
        return None
    return RAM_PA_BASE + window - BATCH_REGION_SIZE, BATCH_REGION_SIZE


class Batch(NamedTuple):
    """One boot's jobs as a loader blob, and how to start them."""

    #: the guest definition with the loader device added to its QEMU arguments
    definition: GuestDefinition
    #: the blob file QEMU loads
    path: str
    #: the ``BATCH`` command line for the whole blob (without its checksum)
    command: str
    #: how many of the jobs, from the first, the blob holds (the rest did not fit)
    held: int
    #: (first job, jobs, ``BATCH`` command) per slice of :data:`BATCH_SLICE` jobs
    slices: tuple[tuple[int, int, str], ...] = ()


def prepare_batch(definition: GuestDefinition, jobs: Sequence[Job], path: str) -> Batch | None:
    """Write the jobs' framed protocol lines to ``path``; None if the guest has no region.

    Scenario ``n`` of the blob gets ``id=n``, as on the console.  Jobs are
    taken in order while they fit the region; the caller sends the rest over
    the console.
    """
    region = batch_region(definition)
    if region is None:
        return None
    pa, size = region
    chunks: list[bytes] = []
    used = 0
    for n, job in enumerate(jobs):
        lines = to_protocol_lines(job.scenario, scn_id=n, policy=job.policy, inject=job.inject)
        chunk = b"".join(encode_command(line) for line in lines)
        if used + len(chunk) > size:
            logger.warning("batch region full (%d bytes) after %d of %d jobs: the rest go "
                           "over the console", size, n, len(jobs))
            break
        chunks.append(chunk)
        used += len(chunk)
    if not chunks:
        return None
    blob = b"".join(chunks)
    try:
        with open(path, "wb") as f:
            f.write(blob)
    except OSError as exc:  # a full disk, a file size limit: infrastructure
        raise InfraError(f"{path}: cannot write the batch blob: {exc.strerror or exc}") from exc
    slices = []
    at = 0
    for first in range(0, len(chunks), BATCH_SLICE):
        group = chunks[first:first + BATCH_SLICE]
        part = b"".join(group)
        slices.append((first, len(group), _batch_command(pa + at, part)))
        at += len(part)
    # QEMU's option syntax doubles a comma inside a value.
    loader = f"loader,file={os.path.abspath(path).replace(',', ',,')},addr={pa:#x},force-raw=on"
    return Batch(definition=definition._replace(extra_args=(
                     *definition.extra_args, "-device", loader)),
                 path=path, command=_batch_command(pa, blob), held=len(chunks),
                 slices=tuple(slices))


def _batch_command(pa: int, data: bytes) -> str:
    return f"BATCH addr={pa:#x} len={len(data)} crc=0x{crc32_hex(data)}"


def split_batch(records: Sequence[Record], count: int, first: int = 0) -> list[list[Record]]:
    """Cut the records of a ``BATCH`` into its ``count`` scenarios (ids ``first``.. on).

    A scenario's records run from its ``SCN``/``SKIP`` (or, for one the guest
    rejected, its ``ERR``) to its ``SCNEND``/``SKIP``; ids come in order, so
    records before ``SCN id=k`` that no earlier scenario claimed (``ERR``
    rejections of a line) belong to the first unfinished scenario.  Anything
    out of order is a protocol error.  A rejection of the batch itself
    (``ERR cmd=BATCH``: bad blob checksum, range) raises too.
    """
    out: list[list[Record]] = [[] for _ in range(count)]
    cur = 0
    for rec in records:
        if rec.tag == "ERR" and rec.get("cmd") == "BATCH":
            raise ProtocolError(f"guest rejected the batch: {rec.line}")
        if rec.tag in ("SCN", "SKIP", "SCNEND"):
            k = rec.number("id") - first
            if not cur <= k < count or (rec.tag == "SCNEND" and k != cur):
                raise ProtocolError(f"batch record out of order (expected scenario "
                                    f"{first + cur}): {rec.line}")
            cur = k
        elif cur >= count:
            raise ProtocolError(f"batch record after its last scenario: {rec.line}")
        out[cur].append(rec)
        if rec.tag in ("SKIP", "SCNEND"):
            cur += 1
    return out


#: Jobs per ``BATCH`` command.  The blob is sent in slices so that the host
#: judges one slice while the guest runs the next (:func:`_feed_batch` runs
#: the guest in a thread): the host's Python and QEMU then use both cores.
BATCH_SLICE = 32


class _Fed(NamedTuple):
    """One slice's answer from :func:`_feed_batch`."""

    first: int
    jobs: int
    records: list[Record]
    seconds: float


def _feed_batch(guest: Guest, plan: Batch, out: queue.Queue[_Fed | BaseException | None],
                stop: threading.Event) -> None:
    """Send the plan's slices one after the other; answers (or the error) to ``out``.

    Stops after a slice the guest refused as a whole (``ERR cmd=BATCH``), or
    when ``stop`` is set; ``None`` marks the end.  Only this thread talks to
    the guest until it has ended.
    """
    try:
        for first, count, command in plan.slices:
            if stop.is_set():
                break
            t = time.monotonic()
            records = guest.command(command, allow_err=True, gather=GATHER_S)
            out.put(_Fed(first, count, records, time.monotonic() - t))
            if any(r.tag == "ERR" and r.get("cmd") == "BATCH" for r in records):
                break
    except BaseException as exc:  # handed to the main thread, which raises it
        out.put(exc)
    out.put(None)


def _use_batch(batch: bool | None, jobs: Sequence[Job], launcher: Launcher | None) -> bool:
    """Batch by default for several jobs when the blob reaches QEMU.

    A local QEMU reads it where it is; another launcher must say it ships
    ``-device loader,file=`` files to its host (``ships_loader_files``, as
    the SSH launcher does).
    """
    if batch is None:
        ships = (launcher is None or isinstance(launcher, LocalLauncher)
                 or bool(getattr(launcher, "ships_loader_files", False)))
        return len(jobs) > 1 and ships
    return batch


def _missing_cpu(definition: GuestDefinition, qemu: str | None,
                 launcher: Launcher | None) -> str | None:
    """Why the local QEMU cannot run ``definition``'s CPU model (guest/qemu.py), or None.

    Only for a local QEMU; a QEMU that cannot be asked fails at launch as before.
    """
    if launcher is not None and not isinstance(launcher, LocalLauncher):
        return None
    from shootdown.guest.argv import default_qemu
    from shootdown.guest.qemu import missing_cpu, which

    binary = qemu or default_qemu()
    if which(binary) is None:
        return None
    try:
        return missing_cpu(binary, definition.cpu)
    except ShootdownError:
        return None


def run_boot(definition: GuestDefinition, granule: str, jobs: Sequence[Job], *,
             log_path: str, qemu: str | None = None, launcher: Launcher | None = None,
             on_result: Callable[[ScenarioResult], None] | None = None,
             trace_log: str | None = None, batch: bool | None = None) -> BootReport:
    """Boot ``definition`` with the ``granule`` firmware and run ``jobs`` on it.

    ``batch`` (default: when there are several jobs and the launcher can hand
    QEMU the blob: local, or ``ships_loader_files``)
    hands the jobs over in one loader blob, ``<log_path>.batch``, and
    ``BATCH`` commands instead of line by line over the console; the verdicts
    are the same.  Jobs that do not fit the batch region follow over the
    console.  A guest whose RAM is too small for the region runs all of them
    over the console.

    With ``trace_log``, QEMU logs what the CPU executed in the firmware's
    maintenance helpers; after the boot the trace must equal the guest's
    report, or the scenario where they part fails as "firmware misreports".
    Results then reach ``on_result`` after the boot, once the trace is read.
    """
    report = BootReport(guest=definition.name, granule=granule, log_path=log_path)
    t0 = time.monotonic()

    def skip_all(these: Sequence[Job], why: str) -> None:
        for job in these:
            report.results.append(skipped(job, granule, why))
            if on_result is not None:
                on_result(report.results[-1])

    # decided here, without a boot: the firmware cannot build LPA2 tables
    lpa2 = [job for job in jobs if "lpa2" in job.scenario.cpu_features]
    if lpa2:
        skip_all(lpa2, NO_LPA2)
        jobs = [job for job in jobs if "lpa2" not in job.scenario.cpu_features]
        if not jobs:
            return report
    lacking = _missing_cpu(definition, qemu, launcher)
    if lacking is not None:  # e.g. neoverse-n2 on QEMU 7.2: skip, naming the QEMU
        skip_all(jobs, lacking)
        return report
    if trace_log is not None:
        definition = traced(definition, granule, trace_log)
    reported: list[list[MaintOp]] = []
    deliver = on_result if trace_log is None else None
    plan = (prepare_batch(definition, jobs, f"{log_path}.batch")
            if _use_batch(batch, jobs, launcher) else None)
    if plan is not None:
        definition = plan.definition
    guest = Guest(definition, log_path=log_path, granule=granule, qemu=qemu, launcher=launcher)
    from shootdown.guest.qemu import tcg_version  # the known QEMU defects depend on it

    def finish(job: Job, records: Sequence[Record], seconds: float) -> None:
        observed = read_scenario(records)
        if trace_log is not None:
            reported.append(expand_report((r.tag, r.fields) for r in records))
        result = judge(scenario=job.scenario.path, policy=job.policy, granule=granule,
                       inject=job.inject, expected=expected_steps(job),
                       observed=observed, cpus=report.cpus, seconds=seconds,
                       emulator=tcg_version(definition.accel, guest.qemu_version()))
        logger.info("%s %s %s: %s", job.scenario.path, job.policy, job.inject, result.verdict)
        report.results.append(result)
        if deliver is not None:
            deliver(result)

    try:
        with guest:  # launches; shuts down (or kills) on the way out
            report.boot_s = time.monotonic() - t0
            report.qemu_argv = list(guest.argv)
            report.cpus = guest.cpu.number("smp") if guest.cpu is not None else 1
            report.build_id = guest.begin.text("build_id") if guest.begin is not None else ""
            first = 0
            if plan is not None:
                first = _run_batch(guest, plan, jobs, finish)
            for n in range(first, len(jobs)):
                job = jobs[n]
                lines = to_protocol_lines(job.scenario, scn_id=n, policy=job.policy,
                                          inject=job.inject)
                t1 = time.monotonic()
                records = send_scenario(guest, lines)
                finish(job, records, time.monotonic() - t1)
    except GuestUnsupported as exc:
        # The firmware read the CPU's ID registers at boot and refused (a
        # granule the CPU lacks): every job of this firmware is skipped.
        skip_all(jobs, f"{definition.cpu} lacks the {granule} granule "
                       f"(ID_AA64MMFR0; firmware: {exc.why})")
        report.total_s = time.monotonic() - t0
        return report
    if trace_log is not None:
        report.results = _check_trace(report.results, reported, jobs, definition, granule,
                                      trace_log)
        if on_result is not None:
            for result in report.results:
                on_result(result)
    report.total_s = time.monotonic() - t0
    return report


def _run_batch(guest: Guest, plan: Batch, jobs: Sequence[Job],
               finish: Callable[[Job, Sequence[Record], float], None]) -> int:
    """Run the plan's slices, judging each while the guest runs the next.

    Returns how many jobs ran (0 when the firmware refused the region: the
    caller then sends them over the console).  The guest is driven from a
    thread; this one judges, so ``on_result`` is called here, in order.  On
    an error the feeder is stopped and waited for (it ends within one slice,
    or by the guest's own time limits) before the guest is shut down.
    """
    fed: queue.Queue[_Fed | BaseException | None] = queue.Queue()
    stop = threading.Event()
    feeder = threading.Thread(target=_feed_batch, args=(guest, plan, fed, stop),
                              name="shootdown-batch", daemon=True)
    feeder.start()
    done = 0
    try:
        while (item := fed.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            if done == 0 and [(r.tag, r.get("cmd"), r.get("why")) for r in item.records] == [
                    ("ERR", "BATCH", "range")]:
                # The firmware sees another RAM size than the guest
                # definition says (an -m in extra_args?): no harm done.
                logger.warning("%s: the firmware refused the batch region (%s); running the "
                               "jobs over the console", guest.definition.name, plan.command)
                break
            groups = split_batch(item.records, item.jobs, item.first)
            share = item.seconds / item.jobs  # no per-scenario clock
            for job, records in zip(jobs[item.first:item.first + item.jobs], groups,
                                    strict=True):
                finish(job, records, share)
            done = item.first + item.jobs
    except BaseException as exc:
        # A limit enforced here (the matrix's job_timeout raises in this
        # thread), an interrupt, or a judging error: the feeder may be
        # waiting on a hung guest for as long as its idle limit, so end the
        # guest now rather than join a thread that cannot stop.
        if feeder.is_alive():
            guest.abort(exc if isinstance(exc, ShootdownError)
                        else InfraError(f"{guest.definition.name}: interrupted"))
        raise
    finally:
        stop.set()
        feeder.join()
    return done


def _check_trace(results: list[ScenarioResult], reported: list[list[MaintOp]],
                 jobs: Sequence[Job], definition: GuestDefinition, granule: str,
                 trace_log: str) -> list[ScenarioResult]:
    """Record what the trace says of each scenario.

    Where report and trace part, that scenario fails ("firmware misreports").
    Where they agree, each scenario's slice of the executed sequence is also
    compared with the golden model on its own (the trace's view: a barrier
    bug shows as executed instructions that differ from the model, without
    trusting the firmware's report).
    """
    from shootdown.check.trace import check_trace, trace_matches
    from shootdown.elfsyms import ElfImage
    from shootdown.trace.qemu_log import trace_ops

    image = ElfImage(definition.firmware_path(granule))
    executed = trace_ops(image, trace_log)
    trace = check_trace(reported, executed, image.symbolize)
    logger.info("trace: %d reported, %d executed: %s", trace.reported, trace.executed,
                trace.reason or "equal")
    out = list(results)
    if not trace.ok:
        at = trace.scenario if trace.scenario is not None else len(results) - 1
        out[at] = dataclasses.replace(out[at], verdict=Verdict.FAIL, reason=trace.reason,
                                      trace_log=trace_log, trace_view="misreports")
        return out
    ran = iter(executed.get(0, ()))
    for n, (job, ops) in enumerate(zip(jobs, reported, strict=True)):
        mine = [next(ran) for _ in ops]
        if out[n].verdict is Verdict.SKIP:
            continue
        view = "matches" if trace_matches(expected_steps(job), mine) else "differs"
        out[n] = dataclasses.replace(out[n], trace_view=view)
    return out


#: why a scenario with the ``lpa2`` CPU feature never reaches the firmware
NO_LPA2 = ("the firmware has no LPA2 translation regime (52-bit VA on 4K/16K, TCR_EL1.DS): "
           "the model still checks it (shootdown model), a real kernel runs it "
           "(shootdown kernel run)")


def skipped(job: Job, granule: str, why: str) -> ScenarioResult:
    """A SKIP result for a job the guest cannot run."""
    return ScenarioResult(scenario=job.scenario.path, policy=job.policy, granule=granule,
                          inject=job.inject, verdict=Verdict.SKIP, reason=why,
                          sequence=None, probes=None)


def group_by_granule(jobs: Iterable[Job]) -> dict[str, list[Job]]:
    """Jobs per firmware granule, in first-seen order."""
    groups: dict[str, list[Job]] = {}
    for job in jobs:
        groups.setdefault(job.scenario.granule, []).append(job)
    return groups
