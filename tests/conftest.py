"""Shared fixtures: real firmware, real QEMU, short-timeout guests, process checks.

Guests really boot in the default test run.  What the tests need from the
machine (QEMU, the cross compiler, the built firmware) is checked once; when
it is missing the test is skipped with the command that fixes it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIRMWARE_DIR = ROOT / "firmware"
#: The QEMU the tests run: SHOOTDOWN_QEMU, as for the product, else the system's.
QEMU = os.environ.get("SHOOTDOWN_QEMU") or "qemu-system-aarch64"
CROSS_GCC = "aarch64-linux-gnu-gcc"
#: The QEMUs the ``each_qemu`` tests run under (``os.pathsep``-separated
#: binaries).  Default: :data:`QEMU` plus the private ones ``scripts/setup-qemu``
#: installed (:func:`shootdown.guest.qemu.private_qemus`).
QEMUS_VARIABLE = "SHOOTDOWN_QEMUS"


def qemus_under_test() -> list[str]:
    """The QEMU binaries the ``each_qemu`` tests run under, without duplicates."""
    from shootdown.guest.qemu import private_qemus

    listed = os.environ.get(QEMUS_VARIABLE)
    chosen = ([q for q in listed.split(os.pathsep) if q] if listed
              else [QEMU, *private_qemus()])
    seen: dict[str, str] = {}
    for q in chosen:
        seen.setdefault(os.path.realpath(shutil.which(q) or q), q)
    return list(seen.values())


def _qemu_id(binary: str) -> str:
    """``qemu-7.2.22``: the test id part of a QEMU (its path if it does not answer)."""
    from shootdown.errors import ShootdownError
    from shootdown.guest.qemu import format_version, version

    try:
        return f"qemu-{format_version(version(binary))}"
    except ShootdownError:
        return binary


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "each_qemu" in metafunc.fixturenames:
        binaries = qemus_under_test()
        metafunc.parametrize("each_qemu", binaries, indirect=True,
                             ids=[_qemu_id(b) for b in binaries])


@pytest.fixture
def each_qemu(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each QEMU under test in turn (see :func:`qemus_under_test`), set as SHOOTDOWN_QEMU.

    Everything the test starts (a :class:`~shootdown.guest.machine.Guest`, the
    ``shootdown`` command) then runs that QEMU.
    """
    binary: str = request.param
    path = require(binary, "run scripts/setup, or fix SHOOTDOWN_QEMUS")
    monkeypatch.setenv("SHOOTDOWN_QEMU", path)
    return path


def pytest_configure(config: pytest.Config) -> None:
    # Registered here too so the markers exist even without pyproject's list.
    config.addinivalue_line("markers", "guest: boots a real QEMU guest")
    config.addinivalue_line("markers", "slow: long runs, excluded by default (-m slow)")


def require(binary: str, fix: str) -> str:
    """The path of ``binary``, or skip the test saying how to get it."""
    path = shutil.which(binary)
    if path is None:
        pytest.skip(f"{binary} not found: {fix}")
    return path


@pytest.fixture(scope="session")
def qemu() -> str:
    """The QEMU binary (skip if missing)."""
    return require(QEMU, "run scripts/setup (apt-get install qemu-system-arm)")


@pytest.fixture(scope="session")
def firmware_elf() -> Path:
    """The 4k firmware ELF, built (or brought up to date) once per session."""
    require(CROSS_GCC, "run scripts/setup (apt-get install gcc-aarch64-linux-gnu)")
    result = subprocess.run(["make", "-s", "-C", str(FIRMWARE_DIR)], capture_output=True,
                            text=True, check=False)
    elf = FIRMWARE_DIR / "build" / "shootdown-4k.elf"
    if result.returncode != 0 or not elf.is_file():
        pytest.fail(f"make -C firmware failed ({result.returncode}):\n{result.stderr[-2000:]}")
    return elf


@pytest.fixture(scope="session")
def minimal_elf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """benchmarks/minimal.S assembled: an AArch64 ELF that prints a line and powers off."""
    gcc = require(CROSS_GCC, "run scripts/setup (apt-get install gcc-aarch64-linux-gnu)")
    out = tmp_path_factory.mktemp("minimal") / "minimal.elf"
    subprocess.run([gcc, "-nostdlib", "-static", "-Wl,--build-id", "-Wl,-Ttext=0x40080000",
                    "-o", str(out), str(ROOT / "benchmarks" / "minimal.S")], check=True)
    return out


@pytest.fixture(scope="session")
def make_guest() -> Callable[..., Path]:
    """:func:`write_guest`, for tests (conftest is not importable as a module)."""
    return write_guest


def write_guest(directory: Path, name: str, firmware: Path | str, *, cpu: str = "cortex-a57",
                boot: float = 10, idle: float = 2, total: float = 30,
                extra: str = "") -> Path:
    """Write a guest definition with short timeouts; return its path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.toml"
    path.write_text(
        f'name = "{name}"\nmachine = "virt"\ncpu = "{cpu}"\nsmp = 2\n'
        f'firmware = "{firmware}"\n{extra}\n'
        f"[timeouts]\nboot = {boot}\nidle = {idle}\ntotal = {total}\n")
    return path


def patched_elf(elf: Path, out: Path, function: str, kind: str, option: str,
                word: int) -> Path:
    """A copy of ``elf`` with the first ``kind`` ("tlbi"/"dsb") instruction named
    ``option`` in ``function`` replaced by the instruction ``word``: a firmware
    that misreports (its log says one thing, the CPU executes another)."""
    import struct

    from shootdown.elfsyms import ElfImage
    from shootdown.trace.decode import Dsb, Tlbi, decode

    want = {"tlbi": Tlbi, "dsb": Dsb}[kind]
    image = ElfImage(elf)
    fn = image.get_function(function)
    for offset, w in image.iter_words(fn):
        m = decode(w)
        if isinstance(m, want) and option in (getattr(m, "op", ""), getattr(m, "option", "")):
            address = fn.address + offset
            break
    else:
        raise AssertionError(f"no {kind} {option} in {function}")
    data = bytearray(elf.read_bytes())
    original = image.read_va(address - 8, 16)  # unique enough in context
    at = data.find(original)
    assert at >= 0 and data.find(original, at + 1) < 0
    data[at + 8:at + 12] = struct.pack("<I", word)
    out.write_bytes(bytes(data))
    return out


@pytest.fixture(scope="session")
def patch_elf() -> Callable[..., Path]:
    """:func:`patched_elf`, for tests."""
    return patched_elf


@pytest.fixture
def guests_dir(tmp_path: Path, firmware_elf: Path, qemu: str) -> Path:
    """A guests directory with ``quick``: the real firmware, a 2 s idle timeout."""
    where = tmp_path / "guests"
    write_guest(where, "quick", str(FIRMWARE_DIR / "build" / "shootdown-{granule}.elf"))
    return where


def process_group_members(pgid: int) -> list[int]:
    """Pids of live (non-zombie) processes in process group ``pgid``, from /proc."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # Fields after the command name (which may hold spaces) close with ')'.
        fields = stat[stat.rindex(")") + 2:].split()
        state, pgrp = fields[0], int(fields[2])
        if pgrp == pgid and state != "Z":
            members.append(int(entry))
    return members


def assert_gone(pid: int) -> None:
    """QEMU ``pid`` and its whole process group are gone (reaped, not zombies)."""
    assert not Path(f"/proc/{pid}").exists(), f"process {pid} still exists"
    assert process_group_members(pid) == [], f"process group {pid} still has members"


@pytest.fixture(scope="session")
def check_gone() -> Callable[[int], None]:
    """:func:`assert_gone`, for tests."""
    return assert_gone


@pytest.fixture
def own_qemus(monkeypatch: pytest.MonkeyPatch) -> Callable[[], list[int]]:
    """A function listing the live QEMUs this test started (directly or not).

    Other QEMUs may run on the machine at the same time, so the test's own
    are recognised by a unique environment variable they inherit.
    """
    mark = f"{os.getpid()}-{uuid.uuid4().hex}"
    monkeypatch.setenv(MARK_VARIABLE, mark)
    return lambda: marked_qemu_pids(mark)


@pytest.fixture
def no_leftover_qemu(own_qemus: Callable[[], list[int]]) -> Iterator[None]:
    """Fail the test if a QEMU it started (directly or through a subprocess) still runs."""
    yield
    left = own_qemus()
    assert not left, f"QEMU processes left behind: {left}"


#: Environment variable that tags the QEMU processes a test started.
MARK_VARIABLE = "SHOOTDOWN_TEST_MARK"


def marked_qemu_pids(mark: str) -> list[int]:
    """Live QEMU processes whose environment carries ``MARK_VARIABLE=mark``."""
    needle = f"{MARK_VARIABLE}={mark}".encode()
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            comm = Path(f"/proc/{entry}/comm").read_text().strip()
            if not comm.startswith("qemu-system"):
                continue
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
            environ = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
        except (OSError, IndexError):
            continue
        if state != "Z" and needle in environ:
            pids.append(int(entry))
    return sorted(pids)


CHATTY_S = """\
	.section .text.boot, "ax"
	.global _start
_start:
	ldr	x1, =0x09000000		/* PL011 data register on -M virt */
0:	adr	x2, msg
1:	ldrb	w3, [x2], #1
	cbz	w3, 0b			/* the whole line again, for ever */
	strb	w3, [x1]
	b	1b
msg:	.asciz	"chatter chatter chatter chatter chatter chatter chatter chatter\\n"
"""


@pytest.fixture(scope="session")
def chatty_elf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An AArch64 payload that prints the same line on the PL011 for ever."""
    where = tmp_path_factory.mktemp("chatty")
    (where / "chatty.S").write_text(CHATTY_S)
    out = where / "chatty.elf"
    subprocess.run(["aarch64-linux-gnu-gcc", "-nostdlib", "-static", "-Wl,--build-id",
                    "-Wl,-Ttext=0x40080000", "-o", str(out), str(where / "chatty.S")],
                   check=True)
    return out
