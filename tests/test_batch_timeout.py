"""A matrix job's ``job_timeout`` holds when its scenarios go as a batch (issue 11).

The batch is run by a feeder thread that waits on the guest's console; the
job timeout fires in the main thread.  A real guest really hangs in the
middle of a batch (the blob carries ``DEBUG hang``, which the firmware runs
like any console command, docs/protocol.md): the job must end at its
timeout as a hang with the console tail and log path, and QEMU must be gone,
not wait for the guest's idle limit (60 s here).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import shootdown.session as session
from shootdown.guest.definition import find_guest
from shootdown.matrix.job import JobHung, watchdog
from shootdown.scenario.load import load_scenario
from shootdown.session import Job, run_boot

pytestmark = [pytest.mark.guest, pytest.mark.usefixtures("no_leftover_qemu")]

DATA = Path(__file__).resolve().parent / "matrix" / "data"


def test_job_timeout_ends_a_batch_that_hangs(make_guest: Callable[..., Path],
                                             firmware_elf: Path, tmp_path: Path, qemu: str,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    make_guest(tmp_path / "g", "patient", firmware_elf, idle=60, total=120)
    definition = find_guest("patient", str(tmp_path / "g"))
    scenario = load_scenario(DATA / "munmap-2m.toml")
    jobs = [Job(scenario, "v6.19") for _ in range(3)]
    real = session.to_protocol_lines

    def hang_in_second(scn: Any, *, scn_id: int, **kw: Any) -> list[str]:
        return ["DEBUG hang"] if scn_id == 1 else list(real(scn, scn_id=scn_id, **kw))

    monkeypatch.setattr(session, "to_protocol_lines", hang_in_second)
    log = tmp_path / "job.console.log"
    t0 = time.monotonic()
    with pytest.raises(JobHung) as caught, watchdog(3.0, "job x"):
        run_boot(definition, "4k", jobs, log_path=str(log), qemu=qemu, batch=True)
    took = time.monotonic() - t0
    assert took < 10, f"the job ended after {took:.1f} s, not at its 3 s timeout"
    assert "job timeout of 3 s" in str(caught.value)
    assert caught.value.log_path == str(log) and log.is_file()
    assert caught.value.tail, "a hang names the last console lines"
    assert "SCNEND id=0" in log.read_text()  # the first scenario ran: the hang is mid-batch
    # no_leftover_qemu checks that QEMU is gone.
