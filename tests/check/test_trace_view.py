"""The trace's own view of the barrier bugs: what the CPU executed differs from the model.

Barrier bugs are invisible to probes under QEMU (its memory is strongly
ordered), so they must be caught without trusting the firmware's report:
by the static lint (tests/lint/test_firmware_lint.py) and by the execution
trace compared with the golden model (here). A clean run's trace matches.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from shootdown.guest.definition import find_guest
from shootdown.result import Verdict
from shootdown.scenario.load import load_scenario
from shootdown.session import Job, run_boot

pytestmark = pytest.mark.guest

LIBRARY = Path(__file__).resolve().parents[2] / "guests" / "scenarios" / "4k"
#: barrier bug -> (scenario that exercises it, a release where its code exists)
BARRIER_BUGS = {
    "skip_dsb_ishst": ("gather-small.toml", "v6.19"),
    "skip_dsb_ish": ("gather-small.toml", "v6.19"),
    "no_isb_kernel_pgtable": ("kernel-pgtable.toml", "v5.4"),
    "sync_per_table": ("munmap-2m-free-pte-table.toml", "v6.19"),
}


def test_barrier_bugs_show_in_the_executed_sequence(qemu: str, firmware_elf: Path,
                                                    tmp_path: Path) -> None:
    jobs = [Job(load_scenario(LIBRARY / f), policy, inject)
            for inject, (f, policy) in BARRIER_BUGS.items()]
    jobs += [Job(load_scenario(LIBRARY / f), policy) for f, policy in BARRIER_BUGS.values()]
    boot = run_boot(find_guest("virt-a72"), "4k", jobs, log_path=str(tmp_path / "c.log"),
                    trace_log=str(tmp_path / "exec.log"))
    for job, result in zip(jobs, boot.results, strict=True):
        if job.inject == "none":
            assert (result.verdict, result.trace_view) == (Verdict.PASS, "matches"), result
        else:
            assert (result.verdict, result.trace_view) == (Verdict.CAUGHT, "differs"), result
