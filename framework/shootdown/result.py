"""Results: frozen records of what a run did, serialisable as they are.

A validation failure is a result with a failing :class:`Verdict`, never an
exception; exceptions are for the machinery (see :mod:`shootdown.errors`).
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field
from typing import Any

from shootdown.trace.console import Record


class Verdict(enum.StrEnum):
    """The outcome of one check."""

    #: Everything checked agreed with the expectation.
    PASS = "pass"
    #: The guest's behaviour disagreed with the expectation.
    FAIL = "fail"
    #: An injected bug was detected, as it must be.
    CAUGHT = "caught"
    #: An injected bug went unnoticed: the checker is blind, which is a failure.
    MISSED = "missed"
    #: Not applicable on this guest (a CPU feature it lacks); neither pass nor fail.
    SKIP = "skip"
    #: The injected bug's code path does not exist under this release or
    #: scenario (the firmware never took the injected branch), so the run
    #: says nothing about whether the checks would see it; neither caught
    #: nor missed.
    NOT_APPLICABLE = "not-applicable"
    #: Run-level only: every job was skipped, nothing was checked at all.
    NOTHING_RAN = "nothing-ran"
    #: A probe result that a known QEMU defect explains: the emulator, not
    #: the code under test, is wrong; neither pass nor fail.
    EMULATOR_LIMIT = "emulator-limit"

    @property
    def ok(self) -> bool:
        """Whether this verdict lets the run exit 0."""
        return self in (Verdict.PASS, Verdict.CAUGHT, Verdict.SKIP)


def overall(verdicts: list[Verdict]) -> Verdict:
    """The verdict of a run: the first failing one, else PASS (NOTHING_RAN if all skipped).

    Scenario runs, which know about injections, use
    :func:`shootdown.check.scenario.run_verdict`.
    """
    for v in verdicts:
        if not v.ok and v is not Verdict.SKIP:
            return v
    if all(v is Verdict.SKIP for v in verdicts):
        return Verdict.NOTHING_RAN
    return Verdict.PASS


@dataclass(frozen=True)
class Timings:
    """Wall-clock durations in seconds."""

    #: From starting QEMU to the guest's first ``READY``.
    boot_s: float
    #: Running the scenarios (commands sent to the answering ``READY``).
    scenario_s: float
    #: From starting QEMU to its exit (boot, scenarios, power-off).
    total_s: float


@dataclass(frozen=True)
class GuestRun:
    """Which guest ran, exactly how, on what firmware."""

    #: Guest definition name.
    guest: str
    #: QEMU machine and CPU model.
    machine: str
    cpu: str
    #: Number of CPUs.
    smp: int
    #: Where QEMU ran (``local``, ``ssh://host``).
    launcher: str
    #: The exact QEMU command line.
    qemu_argv: tuple[str, ...]
    #: First line of ``qemu --version``.
    qemu_version: str
    #: Firmware ELF and its build-id (the guest reported the same in BEGIN).
    firmware: str
    build_id: str
    #: Translation granule of the firmware.
    granule: str
    #: Firmware version string from BEGIN.
    firmware_version: str
    #: MIDR_EL1 the guest read (from the CPU record), hex.
    midr: str | None
    #: Console log file.
    log_path: str
    #: QEMU's exit status (0 after a clean PSCI SYSTEM_OFF).
    exit_status: int | None


@dataclass(frozen=True)
class CheckResult:
    """The verdict of one scenario (or the built-in smoke test)."""

    #: Scenario name (``smoke`` for the built-in one).
    name: str
    #: Its verdict.
    verdict: Verdict
    #: One line for people: why it passed or failed.
    detail: str
    #: The records the guest printed for it, in order.
    records: tuple[Record, ...] = field(default=())


@dataclass(frozen=True)
class RunResult:
    """Everything one ``shootdown run`` did."""

    #: The guest and how it was run.
    guest: GuestRun
    #: One result per scenario, in the order they ran.
    checks: tuple[CheckResult, ...]
    #: The run's verdict (see :func:`overall`).
    verdict: Verdict
    #: Durations.
    timings: Timings
    #: Every record of the boot, in order.
    records: tuple[Record, ...]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (records as ``{"seq", "tag", "fields", "line"}``)."""
        out = asdict(self)
        out["verdict"] = str(self.verdict)
        for check in out["checks"]:
            check["verdict"] = str(check["verdict"])
        return out
