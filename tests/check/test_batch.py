"""The ``BATCH`` path: a boot's scenarios in one loader blob instead of over the UART.

Differential: the same jobs run both ways on the real firmware must give the
same verdicts, reasons and sequence checks.  Deliberately damaged input
(a flipped byte in the blob, a range outside the batch region, a blob cut
inside a scenario, one line with a bad checksum) must be refused the way the
protocol says, and a refused batch must never come out as a pass.
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest

from shootdown.check.scenario import ScenarioResult
from shootdown.errors import InfraError, ProtocolError
from shootdown.guest.definition import GuestDefinition, find_guest, load_definition
from shootdown.guest.machine import Guest
from shootdown.result import Verdict
from shootdown.scenario.load import load_scenario
from shootdown.session import (
    BATCH_REGION_SIZE,
    BATCH_SLICE,
    Batch,
    Job,
    batch_region,
    memory_bytes,
    prepare_batch,
    run_boot,
    split_batch,
)
from shootdown.trace.console import Record, RecordParser, crc32_hex

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ROOT / "guests" / "scenarios" / "4k"
FIRMWARE = ROOT / "firmware" / "build" / "shootdown-{granule}.elf"


# -- pure: region arithmetic and splitting ---------------------------------

def records(*payloads: str) -> list[Record]:
    """Records parsed from ``TAG payload`` strings, as the guest would print them."""
    parser = RecordParser()
    lines = ["BEGIN proto=1 fw=shootdown build_id=00 granule=4k version=0"]
    lines += list(payloads)
    data = b""
    for seq, text in enumerate(lines):
        body = f"SD1 {seq} {text}".encode()
        data += body + b" *" + crc32_hex(body).encode() + b"\n"
    return parser.feed(data)[1:]


def test_memory_sizes_and_region() -> None:
    assert memory_bytes("128M") == 128 << 20
    assert memory_bytes("1G") == 1 << 30
    assert memory_bytes("256") == 256 << 20  # QEMU: a bare number is MiB
    guest = find_guest("virt-max")
    assert batch_region(guest._replace(memory="128M")) == (0x48000000 - BATCH_REGION_SIZE,
                                                           BATCH_REGION_SIZE)
    # the firmware's linear map (and pool) ends at 512 MiB whatever the RAM
    assert batch_region(guest._replace(memory="2G")) == (0x60000000 - BATCH_REGION_SIZE,
                                                         BATCH_REGION_SIZE)
    assert batch_region(guest._replace(memory="32M")) is None


def test_split_by_scenario_id_with_a_rejected_scenario() -> None:
    recs = records("SCN id=0 status=start", "STEP n=1", "ISB", "SCNEND id=0 tlbi=0 dsb=0 isb=1 "
                   "probefail=0", "ERR cmd=MAP why=crc", "SKIP id=2 why=tlbirange",
                   "SCN id=3 status=start", "SCNEND id=3 tlbi=0 dsb=0 isb=0 probefail=0")
    groups = split_batch(recs, 4)
    assert [[r.tag for r in g] for g in groups] == [
        ["SCN", "STEP", "ISB", "SCNEND"], ["ERR"], ["SKIP"], ["SCN", "SCNEND"]]


@pytest.mark.parametrize("payloads", [
    ("SCN id=1 status=start", "SCN id=0 status=start"),          # backwards
    ("SCN id=0 status=start", "SCNEND id=1 tlbi=0 dsb=0 isb=0 probefail=0"),
    ("SCN id=5 status=start",),                                  # beyond the batch
    ("SKIP id=0 why=x", "SKIP id=1 why=x", "PONG"),              # after the last one
    ("ERR cmd=BATCH why=crc",),
])
def test_split_refuses_what_is_out_of_order(payloads: tuple[str, ...]) -> None:
    with pytest.raises(ProtocolError):
        split_batch(records(*payloads), 2)


# -- on the real firmware ----------------------------------------------------

def jobs() -> list[Job]:
    """Every 4K scenario under two releases, and one injected bug (caught or not)."""
    out: list[Job] = []
    for path in sorted(SCENARIOS.glob("*.toml")):
        scenario = load_scenario(path)
        out += [Job(scenario, "v4.19"), Job(scenario, "v6.19"),
                Job(scenario, "v6.19", "end_off_by_one")]
    return out


@pytest.fixture
def guest(tmp_path: Path, make_guest: Callable[..., Path], qemu: str,
          firmware_elf: Path) -> GuestDefinition:
    """cortex-a57 (no range TLBIs, so some scenarios are skipped), 2 CPUs, 128M."""
    return load_definition(str(make_guest(tmp_path / "guests", "batch", str(FIRMWARE),
                                     idle=5, total=120)))


def comparable(result: ScenarioResult) -> ScenarioResult:
    """What must not depend on the delivery path.

    Timing does; so does *which* stale addresses a missed invalidation leaves
    readable (QEMU's softmmu TLB evicts entries as other accesses collide, and
    the two vCPUs run in parallel), hence the probe details of a caught
    injection. Its verdict and sequence check must still be equal.
    """
    probes = None if result.verdict is Verdict.CAUGHT else result.probes
    return dataclasses.replace(result, seconds=0.0, probes=probes)


@pytest.mark.guest
def test_batch_gives_the_same_results_as_the_uart(guest: GuestDefinition,
                                                  tmp_path: Path) -> None:
    work = jobs()
    uart = run_boot(guest, "4k", work, log_path=str(tmp_path / "uart.log"), batch=False)
    batch = run_boot(guest, "4k", work, log_path=str(tmp_path / "batch.log"), batch=True)
    assert any("loader," in a for a in batch.qemu_argv)
    assert not any("loader," in a for a in uart.qemu_argv)
    verdicts = {r.verdict.name for r in uart.results}
    assert {"PASS", "SKIP"} <= verdicts and verdicts - {"PASS", "SKIP"}  # a mix
    assert [comparable(r) for r in batch.results] == [comparable(r) for r in uart.results]
    # one READY at boot and one per BATCH slice: none between the scenarios
    log = (tmp_path / "batch.log").read_text()
    assert log.count(" READY ") == 1 + -(-len(work) // BATCH_SLICE)
    assert log.count(" SCNEND ") > BATCH_SLICE


@pytest.mark.guest
@pytest.mark.parametrize("where", ["one slice", "last slice"])
def test_a_corrupted_blob_is_an_infra_error_not_a_pass(
        guest: GuestDefinition, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        where: str) -> None:
    import shootdown.session as session

    real = session.prepare_batch
    plans: list[Batch] = []

    def flip_a_byte(*args: object, **kwargs: object) -> Batch | None:
        plan = real(*args, **kwargs)  # type: ignore[arg-type]
        assert plan is not None
        plans.append(plan)
        data = bytearray(Path(plan.path).read_bytes())
        at = len(data) // 2 if where == "one slice" else len(data) - 5
        data[at] ^= 0x01  # after the CRCs were computed: as a bad disk or copy would
        Path(plan.path).write_bytes(bytes(data))
        return plan

    monkeypatch.setattr(session, "prepare_batch", flip_a_byte)
    work = jobs()[:6] if where == "one slice" else jobs()
    seen: list[object] = []
    with pytest.raises(InfraError, match="why=crc"):
        run_boot(guest, "4k", work, log_path=str(tmp_path / "bad.log"), on_result=seen.append)
    # the slices before the damaged one were intact and are judged; nothing after
    assert len(seen) == plans[0].slices[-1][0]
    assert (len(seen) > 0) == (where == "last slice")


def started(guest_def: GuestDefinition, tmp_path: Path, plan: Batch | None) -> Guest:
    definition = plan.definition if plan is not None else guest_def
    return Guest(definition, log_path=str(tmp_path / "direct.log"), granule="4k")


@pytest.mark.guest
def test_out_of_range_batches_are_refused(guest: GuestDefinition, tmp_path: Path) -> None:
    work = jobs()[:3]
    plan = prepare_batch(guest, work, str(tmp_path / "blob"))
    assert plan is not None
    base, size = batch_region(guest)  # type: ignore[misc]
    blob = Path(plan.path).read_bytes()
    crc = f"0x{zlib.crc32(blob):08x}"
    with started(guest, tmp_path, plan) as g:
        for addr, length in [(0x40200000, 64),               # the firmware's image
                             (base - 0x1000, 0x2000),         # straddles the start
                             (base + size - 16, 32),          # runs past the end
                             (base + size, 1),                # just after it
                             (base, 0),                       # empty
                             (base, 0xffffffffffffffff)]:          # wraps around
            answer = g.command(f"BATCH addr={addr:#x} len={length:#x} crc={crc}",
                               allow_err=True)
            assert [(r.tag, r.get("why")) for r in answer] == [("ERR", "range")], addr
        answer = g.command(f"BATCH addr={base:#x} len={len(blob)}", allow_err=True)
        assert [(r.tag, r.get("why")) for r in answer] == [("ERR", "arg")]
        # the guest is still fine, and the real batch runs (twice: the blob is only read)
        for _ in range(2):
            groups = split_batch(g.command(plan.command, allow_err=True), plan.held)
            assert [g0[-1].tag for g0 in groups] == ["SCNEND"] * 3


@pytest.mark.guest
def test_bad_line_and_truncated_blob(guest: GuestDefinition, tmp_path: Path) -> None:
    work = jobs()[:3]
    plan = prepare_batch(guest, work, str(tmp_path / "blob"))
    assert plan is not None
    lines = Path(plan.path).read_bytes().split(b"\n")
    # scenario 1: damage the checksum of its second line; the blob's own CRC is right
    second = next(i for i, ln in enumerate(lines) if ln.startswith(b"SCN id=1 ")) + 1
    lines[second] = lines[second][:-1] + (b"0" if lines[second][-1:] != b"0" else b"1")
    bad_line = b"\n".join(lines)
    # and a blob cut before scenario 2's GO
    cut = bad_line[:bad_line.rindex(b"\nGO *") + 1]
    base, _ = batch_region(guest)  # type: ignore[misc]
    Path(plan.path).write_bytes(bad_line)
    with started(guest, tmp_path, plan) as g:
        answer = g.command(f"BATCH addr={base:#x} len={len(bad_line)} "
                           f"crc=0x{zlib.crc32(bad_line):08x}", allow_err=True)
        groups = split_batch(answer, 3)
        assert [r.tag for r in groups[1]] == ["ERR"] and groups[1][0].get("why") == "crc"
        assert groups[0][-1].tag == groups[2][-1].tag == "SCNEND"
        answer = g.command(f"BATCH addr={base:#x} len={len(cut)} "
                           f"crc=0x{zlib.crc32(cut):08x}", allow_err=True)
        assert (answer[-1].tag, answer[-1].get("why")) == ("ERR", "truncated")
        assert [r.tag for r in answer if r.tag == "SCNEND"] == ["SCNEND"]
        assert [r.tag for r in g.command("PING")] == ["PONG"]  # scenario.c is idle again
        ok = g.command(f"BATCH addr={base:#x} len={len(cut)} crc=0x{zlib.crc32(cut):08x}",
                       allow_err=True)
        assert [r.tag for r in ok] == [r.tag for r in answer]


@pytest.mark.guest
def test_small_guest_falls_back_to_the_uart(guest: GuestDefinition, tmp_path: Path) -> None:
    small = guest._replace(memory="32M")
    report = run_boot(small, "4k", jobs()[:4], log_path=str(tmp_path / "small.log"))
    assert not any("loader," in a for a in report.qemu_argv)
    assert [r.verdict.name for r in report.results][:2] == ["PASS", "PASS"]


@pytest.mark.guest
def test_gathered_reads_give_the_same_results_in_fewer_reads(
        guest: GuestDefinition, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch answer streams a few bytes at a time; pausing between reads
    (``command(gather=)``) must only make the reads larger, never change a record."""
    import shootdown.session as session
    from shootdown.guest.launcher import FifoConsole

    reads: list[int] = []
    original = FifoConsole.read_nonblocking

    def counted(self: FifoConsole, size: int = 1, timeout: float | None = -1) -> bytes:
        data = original(self, size, timeout)
        reads.append(len(data))
        return data

    monkeypatch.setattr(FifoConsole, "read_nonblocking", counted)
    work = jobs()
    runs = {}
    for gather in (0.0, session.GATHER_S):
        monkeypatch.setattr(session, "GATHER_S", gather)
        reads.clear()
        report = run_boot(guest, "4k", work, log_path=str(tmp_path / f"g{gather}.log"),
                          batch=True)
        runs[gather] = (report, list(reads))
    (plain, plain_reads), (gathered, gathered_reads) = runs.values()
    assert [comparable(r) for r in gathered.results] == [comparable(r) for r in plain.results]
    assert sum(gathered_reads) == pytest.approx(sum(plain_reads), rel=0.05)  # same output

    # Fewer reads: counted in ONE boot, each slice answered with and without
    # the pause in turn (the order swapped every round), so both sides share
    # whatever load the machine is under.  Two separate boots compared this
    # under a load that changed between them, and failed (275*3 < 721) when
    # the machine was busy: a loaded host reads less often without pausing.
    plan = prepare_batch(guest, work, str(tmp_path / "interleaved.batch"))
    assert plan is not None and len(plan.slices) >= 3
    count = {0.0: 0, session.GATHER_S: 0}
    size = {0.0: 0, session.GATHER_S: 0}
    with Guest(plan.definition, log_path=tmp_path / "interleaved.log") as g:
        for round_ in range(3):
            for _, _, command in plan.slices:
                order = (0.0, session.GATHER_S) if round_ % 2 == 0 else (session.GATHER_S, 0.0)
                for gather in order:
                    reads.clear()
                    answer = g.command(command, allow_err=True, gather=gather)
                    assert answer and answer[-1].tag in ("SCNEND", "SKIP"), answer[-1:]
                    count[gather] += len(reads)
                    size[gather] += sum(reads)
    assert size[session.GATHER_S] == pytest.approx(size[0.0], rel=0.05)  # same answers
    assert count[session.GATHER_S] * 3 < count[0.0], count
