"""Booting a real kernel with the workload as ``/init``, and driving its steps.

:class:`KernelMachine` has the lifecycle of :class:`shootdown.guest.machine.Guest`
(launch to READY, talk, shut down; safe to shut down twice and after a
failed launch; a machine that failed once re-raises the first error) and
starts QEMU through the same :class:`~shootdown.guest.launcher.Launcher`,
so the console is the same FIFO pair and every byte goes to the log file.
It does not reuse ``Guest`` itself, whose records are the firmware's
protocol (BEGIN with a build-id, CPU, RESULT ...): the workload speaks the
line protocol of ``workload/init.c``::

    with KernelMachine(kernel, log_path=...) as vm:     # boot to READY
        vm.step("MMAP", 0x100000000, 0x4000, "populate")
        vm.step("MUNMAP", 0x100000000, 0x4000)
        probe = vm.step("PROBE", 0x100000000, 0x4000)   # probe.fields["segv"]
    # POWEROFF, BYE, the kernel powers the machine off, QEMU exits

Failures, converted here into the package's exceptions (exit 3):
no READY within ``boot_timeout`` or no step answer within ``step_timeout``
-> :class:`~shootdown.errors.GuestTimeout` (QEMU killed); QEMU ending
before any output -> :class:`~shootdown.errors.LaunchError`; QEMU ending
later, a ``Kernel panic`` line or the workload's ``FATAL`` ->
:class:`~shootdown.errors.GuestCrash`; an ``ERR`` answer ->
:class:`~shootdown.errors.ProtocolError`.  Each carries the log's tail.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Protocol

from shootdown.errors import (
    GuestCrash,
    GuestTimeout,
    InfraError,
    LaunchError,
    ProtocolError,
    ShootdownError,
)
from shootdown.guest.argv import default_qemu
from shootdown.guest.launcher import ConsoleProcess, Launcher, LocalLauncher
from shootdown.kernel.locate import KernelFiles

#: The kernel command line every boot has, and why:
#: the console on the first PL011; no KASLR, so that addresses are stable
#: and /proc/kallsyms attributes them; a panic reboots at once, which
#: -no-reboot turns into QEMU's exit; /init from the initramfs.
BASE_APPEND = ("console=ttyAMA0", "nokaslr", "panic=-1", "rdinit=/init")

#: Lines of the workload's protocol (workload/init.c); anything else is the kernel's.
_PROTOCOL = re.compile(
    r"(READY|STEP \d+ (?:BEGIN|END)|PONG|BYE|OK|KALLSYMS END|MAPS END|THP|ERR|FATAL)\b.*")
_SYM = re.compile(r"SYM ([0-9a-f]+) ([a-zA-Z]) (\S+)")
_MAP = re.compile(r"MAP ([0-9a-f]+)-([0-9a-f]+) (.*)")
_PANIC = re.compile(r"Kernel panic - not syncing.*")
#: Lines kept for an error's tail.
TAIL_LINES = 25


@dataclass(frozen=True)
class MachineSpec:
    """The virtual machine a kernel boots on."""

    #: QEMU machine type
    machine: str = "virt"
    #: -cpu; pauth-impdef=on: QEMU's own pointer-authentication hash instead of
    #: QARMA, which makes a pauth-using kernel boot several times faster under TCG
    cpu: str = "max,pauth-impdef=on"
    #: vCPUs: the probe thread needs a second CPU
    smp: int = 2
    #: guest RAM; Debian's kernels want more than the firmware's 128M
    memory: str = "512M"
    #: one host thread for all vCPUs, like the firmware guests (a matrix worker is one core)
    accel: str = "tcg,thread=single"
    #: kernel command line words after BASE_APPEND (e.g. kpti=1)
    append: tuple[str, ...] = ()
    #: more QEMU options, last on the command line (the tracer's -qmp and -dfilter)
    extra: tuple[str, ...] = ()


def kernel_argv(qemu: str, spec: MachineSpec, image: str | os.PathLike[str],
                initrd: str | os.PathLike[str]) -> list[str]:
    """The QEMU command line that boots ``image`` with ``initrd`` (a pure function).

    The fixed options are those of :func:`shootdown.guest.argv.build_argv`
    (no display, no default devices, no user config, no reboot, the console
    on stdio, which the local launcher moves onto a FIFO pair).
    """
    return [
        qemu,
        "-M", spec.machine,
        "-cpu", spec.cpu,
        "-smp", str(spec.smp),
        "-m", spec.memory,
        "-accel", spec.accel,
        "-nographic",
        "-nodefaults",
        "-no-user-config",
        "-no-reboot",
        "-serial", "stdio",
        "-kernel", os.fspath(image),
        "-initrd", os.fspath(initrd),
        "-append", " ".join((*BASE_APPEND, *spec.append)),
        *spec.extra,
    ]


class WindowHooks(Protocol):
    """What opens and closes a tracing window around one step (see :meth:`KernelMachine.step`)."""

    def open(self) -> None: ...

    def close(self) -> None: ...


def _fields(text: str) -> dict[str, str]:
    return dict(word.split("=", 1) for word in text.split() if "=" in word)


@dataclass(frozen=True)
class StepResult:
    """One step's answer from the workload."""

    #: the step's number (counted by the machine from 1)
    number: int
    #: MMAP, MUNMAP, DONTNEED, MPROTECT, EXIT-CHILD, PROBE
    op: str
    #: the system call's return value (0 or -errno; wait4's pid for EXIT-CHILD)
    rc: int
    #: guest time from BEGIN to END, nanoseconds (CLOCK_MONOTONIC)
    ns: int
    #: every key=value of the END line (addr, segv, efault, cpu, ...)
    fields: dict[str, str]
    #: other console lines between BEGIN and END (kernel messages)
    between: tuple[str, ...] = field(default=())

    def number_field(self, key: str) -> int:
        """An integer field of the END line (hex with 0x or decimal)."""
        return int(self.fields[key], 0)


class KernelMachine:
    """One boot of a real kernel with the workload as /init."""

    def __init__(self, kernel: KernelFiles, *, log_path: str | os.PathLike[str],
                 spec: MachineSpec | None = None, qemu: str | None = None,
                 launcher: Launcher | None = None, workload: Path | None = None,
                 boot_timeout: float = 120.0, step_timeout: float = 60.0) -> None:
        self.kernel = kernel
        self.spec = spec or MachineSpec()
        self.log_path = os.fspath(log_path)
        self.qemu = qemu or default_qemu()
        self.launcher: Launcher = launcher or LocalLauncher()
        self.workload = workload
        self.boot_timeout = boot_timeout
        self.step_timeout = step_timeout
        #: the QEMU command line (set at launch)
        self.argv: list[str] = []
        #: every console line so far (\r stripped)
        self.lines: list[str] = []
        #: the READY line's fields (pagesize, cpu, probe_cpu)
        self.ready: dict[str, str] = {}
        #: monotonic() times: QEMU started, READY seen
        self.t_launch: float | None = None
        self.t_ready: float | None = None
        self._proc: ConsoleProcess | None = None
        self._buffer = b""
        self._tmp: str | None = None
        self._error: ShootdownError | None = None
        self._shut_down = False
        self._steps = 0
        #: whether steps wait for GO after BEGIN (:meth:`set_handshake`)
        self.handshake = False

    # -- lifecycle ---------------------------------------------------------

    def __enter__(self) -> KernelMachine:
        self.launch()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.shutdown(clean=exc is None)

    @property
    def process(self) -> ConsoleProcess | None:
        """The QEMU process once launched (kept after shutdown, for its exit status)."""
        return self._proc

    @property
    def boot_seconds(self) -> float | None:
        """QEMU start to the workload's READY, seconds."""
        if self.t_launch is None or self.t_ready is None:
            return None
        return self.t_ready - self.t_launch

    def launch(self) -> None:
        """Write the initramfs, start QEMU, wait for READY."""
        if self._proc is not None or self._shut_down:
            raise InfraError("KernelMachine.launch: already launched")
        try:
            initrd = self._pre_launch()
            self.argv = kernel_argv(self.qemu, self.spec, self.kernel.image, initrd)
            self.t_launch = time.monotonic()
            self._proc = self.launcher.spawn(self.argv, self.log_path)
            line = self._expect(re.compile(r"READY\b.*"), self.boot_timeout, "READY")
            self.t_ready = time.monotonic()
            self.ready = _fields(line)
        except ShootdownError as exc:
            self._fail(exc)
            self.shutdown(clean=False)
            raise
        except BaseException:
            self.shutdown(clean=False)
            raise

    def _pre_launch(self) -> Path:
        from shootdown.kernel import workload
        from shootdown.kernel.initramfs import workload_initramfs

        elf = self.workload or workload.build()
        self._tmp = tempfile.mkdtemp(prefix="shootdown-kernel-")
        initrd = Path(self._tmp) / "initramfs.cpio"
        initrd.write_bytes(workload_initramfs(elf.read_bytes()))
        return initrd

    def shutdown(self, *, clean: bool = True) -> None:
        """Power the guest off (if it is healthy and ``clean``), else kill QEMU. Idempotent."""
        if self._shut_down:
            return
        self._shut_down = True
        try:
            if clean and self._error is None and self._proc is not None and self.ready:
                try:
                    self._send("POWEROFF")
                    self._expect(re.compile(r"BYE\b.*"), 10.0, "BYE")
                    if self._proc.wait(15.0) is None:
                        raise GuestTimeout("the kernel did not power the machine off within 15 s",
                                           log_path=self.log_path, tail=self.tail())
                except ShootdownError as exc:
                    self._fail(exc)
                    raise
        finally:
            if self._proc is not None:
                self._proc.kill()
            if self._tmp is not None:
                shutil.rmtree(self._tmp, ignore_errors=True)

    # -- talking -----------------------------------------------------------

    def step(self, op: str, *args: int | str,
             window: WindowHooks | None = None) -> StepResult:
        """Run one step; its END line, parsed. ``rc`` is reported, not judged.

        With the handshake on, ``window.open()`` runs after BEGIN, before the
        guest is told GO, and ``window.close()`` after END.
        """
        self._check()
        self._steps += 1
        n = self._steps
        words = [f"0x{a:x}" if isinstance(a, int) else a for a in args]
        self._send(" ".join(["STEP", str(n), op, *words]))
        self._expect(re.compile(rf"STEP {n} BEGIN {re.escape(op)}\b.*"), self.step_timeout,
                     f"STEP {n} BEGIN")
        mark = len(self.lines)
        if self.handshake:
            if window is not None:
                window.open()
            self._send("GO")
        end = self._expect(re.compile(rf"STEP {n} END {re.escape(op)}\b.*"), self.step_timeout,
                           f"STEP {n} END")
        if self.handshake and window is not None:
            window.close()
        between = tuple(line for line in self.lines[mark:-1])
        fields = _fields(end)
        try:
            return StepResult(n, op, int(fields["rc"]), int(fields["ns"]), fields, between)
        except (KeyError, ValueError):
            raise self._fail(ProtocolError(f"malformed step answer: {end!r}",
                                           log_path=self.log_path, tail=self.tail())) from None

    @property
    def steps_run(self) -> int:
        """Steps sent to the workload so far in this boot."""
        return self._steps

    def kallsyms(self) -> list[tuple[int, str]]:
        """The guest's text symbols from /proc/kallsyms: (address, name), in the guest's order.

        With ``nokaslr`` (always on the command line) they hold for every boot
        of the same Image.
        """
        self._check()
        mark = len(self.lines)
        self._send("KALLSYMS")
        end = self._expect(re.compile(r"KALLSYMS END n=\d+"), max(self.step_timeout, 120.0),
                           "KALLSYMS END")
        symbols = []
        for line in self.lines[mark:-1]:
            m = _SYM.search(line)
            if m is not None:
                symbols.append((int(m.group(1), 16), m.group(3)))
        if len(symbols) != int(end.split("=")[1]) or not symbols:
            raise self._fail(ProtocolError(
                f"KALLSYMS: {len(symbols)} symbol lines read, the guest said {end!r}",
                log_path=self.log_path, tail=self.tail()))
        return symbols

    def maps(self) -> list[tuple[int, int, str]]:
        """The workload's VMAs from /proc/self/maps: (start, end, the rest of the line)."""
        self._check()
        mark = len(self.lines)
        self._send("MAPS")
        end = self._expect(re.compile(r"MAPS END n=\d+"), self.step_timeout, "MAPS END")
        vmas = []
        for line in self.lines[mark:-1]:
            m = _MAP.search(line)
            if m is not None:
                vmas.append((int(m.group(1), 16), int(m.group(2), 16), m.group(3).strip()))
        if len(vmas) != int(end.split("=")[1]) or not vmas:
            raise self._fail(ProtocolError(
                f"MAPS: {len(vmas)} mapping lines read, the guest said {end!r}",
                log_path=self.log_path, tail=self.tail()))
        return vmas

    def thp_mode(self) -> str:
        """The kernel's transparent hugepage mode: ``always``, ``madvise``, ``never``
        (the bracketed word of /sys/kernel/mm/transparent_hugepage/enabled), or
        ``none`` without THP support."""
        self._check()
        self._send("THP")
        line = self._expect(re.compile(r"THP .*"), self.step_timeout, "THP")
        m = re.search(r"\[(\w+)\]", line)
        if line.strip() == "THP none":
            return "none"
        if m is None:
            raise self._fail(ProtocolError(f"THP: no mode in {line!r}",
                                           log_path=self.log_path, tail=self.tail()))
        return m.group(1)

    def set_handshake(self, on: bool) -> None:
        """With ``on``, every step waits after its BEGIN for :meth:`go` (a tracing window)."""
        self._check()
        self._send(f"HANDSHAKE {int(on)}")
        self._expect(re.compile(rf"OK handshake={int(on)}"), self.step_timeout, "OK handshake")
        self.handshake = on

    def ping(self) -> None:
        """PING, PONG: the workload is alive and reading."""
        self._check()
        self._send("PING")
        self._expect(re.compile(r"PONG\b"), self.step_timeout, "PONG")

    def tail(self) -> list[str]:
        """The last console lines, for error messages."""
        return self.lines[-TAIL_LINES:]

    # -- internals ---------------------------------------------------------

    def _fail(self, exc: ShootdownError) -> ShootdownError:
        if self._error is None:
            self._error = exc
        return exc

    def _check(self) -> None:
        if self._error is not None:
            raise self._error
        if self._proc is None or not self.ready or self._shut_down:
            raise InfraError("the kernel guest is not running")

    def _send(self, line: str) -> None:
        assert self._proc is not None
        self._proc.console.send(line.encode() + b"\n")

    def _expect(self, pattern: re.Pattern[str], timeout: float, what: str) -> str:
        """Read lines until one of the workload's lines matches ``pattern``."""
        deadline = time.monotonic() + timeout
        while True:
            line = self._next_line(deadline, what)
            panic = _PANIC.search(line)
            if panic is not None:
                raise self._fail(GuestCrash(f"kernel panic: {panic.group(0)}",
                                            log_path=self.log_path, tail=self.tail()))
            if _SYM.match(line):  # a symbol's name may hold "ERR" (rust_helper_IS_ERR)
                continue
            found = _PROTOCOL.search(line)
            if found is None:
                continue
            said = found.group(0)
            if pattern.fullmatch(said):
                return said
            if said.startswith("FATAL"):
                raise self._fail(GuestCrash(f"workload: {said}", log_path=self.log_path,
                                            tail=self.tail()))
            if said.startswith("ERR"):
                raise self._fail(ProtocolError(f"workload refused a command: {said}",
                                               log_path=self.log_path, tail=self.tail()))

    def _next_line(self, deadline: float, what: str) -> str:
        import pexpect

        assert self._proc is not None
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise self._fail(GuestTimeout(
                    f"no {what} from the kernel guest within the timeout "
                    f"({self.kernel.label}); QEMU killed", log_path=self.log_path,
                    tail=self.tail()))
            try:
                self._buffer += self._proc.console.read_nonblocking(65536, min(left, 1.0))
            except pexpect.TIMEOUT:
                continue
            except pexpect.EOF:
                if self._buffer:
                    self._buffer += b"\n"
                    break
                status = self._proc.wait(2.0)
                said = os.path.basename(self.qemu) + ":"
                refusal = next((ln for ln in self.lines if ln.startswith(said)), None)
                if refusal is not None and not self.ready:
                    raise self._fail(LaunchError(refusal, log_path=self.log_path,
                                                 tail=self.tail())) from None
                if not self.lines:
                    raise self._fail(LaunchError(
                        f"{self.qemu} exited (status {status}) before printing anything; "
                        f"command line: {' '.join(self.argv)}", log_path=self.log_path)) from None
                raise self._fail(GuestCrash(
                    f"QEMU exited (status {status}) while waiting for {what}",
                    log_path=self.log_path, tail=self.tail())) from None
        raw, self._buffer = self._buffer.split(b"\n", 1)
        line = raw.decode("utf-8", "replace").rstrip("\r")
        self.lines.append(line)
        return line
