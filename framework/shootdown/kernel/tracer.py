"""Tracing a booted kernel's maintenance instructions, one step's window at a time.

QEMU starts with ``-dfilter`` over every maintenance site of the kernel's
text (:mod:`.sites`, addresses from :mod:`.symbols`) and a QMP socket, but
with logging and single-stepping off, so the boot and everything between
steps run at full TCG speed.  Around a step (the workload waits after
BEGIN for GO, :meth:`KernelMachine.step`) the monitor switches on, in this
order::

    logfile <window file>       one log file per window
    one-insn-per-tb on          (``singlestep on`` before QEMU 8.1: guest/qemu.py)
    log exec,nochain,cpu        a Trace line and register dump per executed site

and after END, in reverse, ``log none`` then single-stepping off.  The
window's file is then read with :mod:`shootdown.trace.qemu_log` (which
drops the blocks QEMU logged but never ran: "Stopped execution of TB chain
before ..."), and every executed site becomes an :class:`~.observe.ObservedOp`
with its function.  The log is in execution order across vCPUs because
the machine runs ``-accel tcg,thread=single``.  QEMU's log file is
line-buffered (``util/log.c``, ``setvbuf(..., _IOLBF, ...)``), so what ran
before the workload printed END is in the file when the host sees END; an
entry cut short would not parse and is an error (exit 3), never a quietly
shorter stream.

That is the ``singlestep`` method.  On QEMU 9 and later the default is the
``plugin`` method (:mod:`.plugin`): no ``-dfilter``, no single-stepping and
no logging switched through the monitor; ``plugins/maint.c`` records every
TLBI, DSB, ISB and TTBR write executed while a window is open (switched
through its control FIFO, :class:`.plugin.Control`) to one file, a window
is the file's bytes between the plugin's acknowledgements, and its records
at the traced sites become the same :class:`~.observe.ObservedOp`
stream (records at other addresses count as :attr:`KernelTracer.non_sites`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

from shootdown.errors import InfraError, TraceError
from shootdown.guest.qemu import QemuVersion, hmp_one_insn_per_tb
from shootdown.kernel import plugin
from shootdown.kernel.observe import ObservedOp
from shootdown.kernel.qmp import Qmp
from shootdown.kernel.sites import Site, in_text
from shootdown.kernel.symbols import Symbols
from shootdown.trace.qemu_log import dfilter_arg, parse_text

#: Exec-log flags of a window: nochain makes QEMU log every block it enters,
#: cpu adds the register dump taken before the block runs (the TLBI's Xt).
LOG_FLAGS = "exec,nochain,cpu"
#: Sites at most this many bytes apart share a -dfilter range (measured:
#: docs/kernel.md, "Cost").
MERGE_GAP = 64


class KernelTracer:
    """The tracing windows of one kernel boot."""

    def __init__(self, sites: Sequence[Site], symbols: Symbols, base: int, version: QemuVersion,
                 workdir: str | os.PathLike[str], merge_gap: int = MERGE_GAP,
                 method: str | None = None) -> None:
        """``base``: the address of the Image's first byte (:func:`.symbols.text_base`).

        ``method``: ``plugin`` or ``singlestep``; None chooses by QEMU version
        (:func:`.plugin.choose_method`).  The plugin is built here, before any boot.
        """
        self.version = version
        #: the tracing method: ``plugin`` or ``singlestep``
        self.method = plugin.choose_method(version, method)
        self.symbols = symbols
        self.workdir = Path(workdir)
        start = symbols.marker("_stext") - base
        end = symbols.marker("_etext") - base
        away = symbols.elsewhere()
        #: the sites traced: those in the kernel's text that run at their image address
        self.sites: dict[int, Site] = {
            base + s.offset: s for s in in_text(list(sites), start, end)
            if not any(lo <= base + s.offset < hi for lo, hi in away)}
        #: sites closer than this many bytes share a -dfilter range (see :meth:`ranges`)
        self.merge_gap = merge_gap
        #: instructions the last window logged that are not sites (inside a merged range)
        self.non_sites = 0
        self.qmp_path = str(self.workdir / "qmp.sock")
        self._qmp: Qmp | None = None
        self._windows = 0
        self._open: Path | None = None
        #: seconds spent opening, closing and reading windows
        self.overhead_s = 0.0
        #: the plugin's record file, and the current window's byte range in it
        self.records_path = self.workdir / "maint.records"
        self._span: tuple[int, int | None] = (0, None)
        self._library = plugin.build(version) if self.method == "plugin" else None
        self._control = (plugin.Control(self.records_path, self.workdir / "maint.ctl")
                         if self.method == "plugin" else None)

    def ranges(self) -> list[tuple[int, int]]:
        """The ``-dfilter`` ranges: sites at most :attr:`merge_gap` bytes apart share one.

        QEMU tests every block it runs against the ranges one by one, and
        while a window is open every instruction is a block: the number of
        ranges sets the window's cost.  Merged ranges also log the few
        instructions between their sites; :meth:`read` counts and skips them.
        """
        out: list[tuple[int, int]] = []
        for address in sorted(self.sites):
            if out and address - out[-1][1] <= self.merge_gap:
                out[-1] = (out[-1][0], address + 4)
            else:
                out.append((address, address + 4))
        return out

    def qemu_args(self) -> list[str]:
        """What the traced machine's QEMU command line adds."""
        if self._library is not None:
            return ["-qmp", f"unix:{self.qmp_path},server=on,wait=off",
                    *plugin.qemu_args(self._library, self.records_path,
                                      self.workdir / "maint.ctl")]
        return ["-qmp", f"unix:{self.qmp_path},server=on,wait=off",
                "-dfilter", dfilter_arg(self.ranges())]

    def attach(self) -> None:
        """Connect to QEMU's QMP socket (after launch)."""
        self._qmp = Qmp(self.qmp_path)
        self._qmp.connect()
        if self._control is not None:
            self._control.connect()

    def detach(self) -> None:
        """Close the QMP connection (idempotent)."""
        if self._control is not None:
            self._control.close()
        if self._qmp is not None:
            self._qmp.close()
            self._qmp = None

    def monitor(self, command: str, cpu: int | None = None) -> str:
        """One human-monitor command's output (e.g. ``x /1wx ADDR``: read the guest's text).

        ``cpu``: the vCPU whose translation regime the command uses (QMP's ``cpu-index``).
        """
        if self._qmp is None:
            raise InfraError("kernel tracer: not attached to QEMU")
        arguments: dict[str, object] = {"command-line": command}
        if cpu is not None:
            arguments["cpu-index"] = cpu
        said = self._qmp.execute("human-monitor-command", arguments)
        return said if isinstance(said, str) else ""

    def open(self) -> None:
        """Start a window: log exec on, single-stepping on."""
        if self._qmp is None:
            raise InfraError("kernel tracer: not attached to QEMU")
        t0 = time.monotonic()
        self._windows += 1
        if self._control is not None:
            self._open = self.records_path
            self._span = (self._control.switch(True, self._windows), None)
            self.overhead_s += time.monotonic() - t0
            return
        self._open = self.workdir / f"window-{self._windows}.log"
        self._qmp.hmp(f"logfile {self._open}")
        self._qmp.hmp(hmp_one_insn_per_tb(self.version, True))
        self._qmp.hmp(f"log {LOG_FLAGS}")
        self.overhead_s += time.monotonic() - t0

    def close(self) -> None:
        """End the window: log off, single-stepping off."""
        if self._qmp is None or self._open is None:
            raise InfraError("kernel tracer: no window open")
        t0 = time.monotonic()
        if self._control is not None:
            # Every record is flushed as it is written: what ran before END is there.
            self._span = (self._span[0], self._control.switch(False, self._windows))
            self.overhead_s += time.monotonic() - t0
            return
        self._qmp.hmp("log none")
        self._qmp.hmp(hmp_one_insn_per_tb(self.version, False))
        self.overhead_s += time.monotonic() - t0

    def read(self) -> list[ObservedOp]:
        """The last window's executed sites, in execution order."""
        if self._open is None:
            raise InfraError("kernel tracer: no window was opened")
        if self.method == "plugin":
            return self._read_records()
        t0 = time.monotonic()
        path = self._open
        text = _settled(path)
        wanted = {a for a, s in self.sites.items() if s.kind in ("tlbi", "msr")}
        per_cpu = parse_text(text, str(path), lambda pc: pc in wanted)
        executed = sorted((e for entries in per_cpu.values() for e in entries),
                          key=lambda e: e.line)
        ops: list[ObservedOp] = []
        ranges = self.ranges()
        self.non_sites = 0
        for e in executed:
            site = self.sites.get(e.pc)
            if site is None:
                if not any(lo <= e.pc < hi for lo, hi in ranges):
                    raise TraceError(f"{path}:{e.line}: executed {e.pc:#x}, outside every "
                                     "-dfilter range (the log is not this machine's)")
                self.non_sites += 1
                continue
            xt: int | None = None
            if site.kind in ("tlbi", "msr") and site.rt != 31:
                if e.regs is None:
                    raise TraceError(f"{path}:{e.line}: {site.text} at {e.pc:#x} without a "
                                     "register dump")
                xt = e.regs[site.rt]
            ops.append(ObservedOp(site.kind, site.op, xt, e.cpu, e.pc,
                                  self.symbols.name_at(e.pc), e.line))
        self.overhead_s += time.monotonic() - t0
        return ops

    def _read_records(self) -> list[ObservedOp]:
        """The plugin method's :meth:`read`: the window's records at traced sites.

        An op's ``line`` is its line within the window's slice of the record file.
        """
        start, end = self._span
        if end is None:
            raise InfraError("kernel tracer: the window is still open")
        t0 = time.monotonic()
        with open(self.records_path, "rb") as f:
            f.seek(start)
            data = f.read(end - start)
        where = f"{self.records_path}@{start}"
        ops: list[ObservedOp] = []
        self.non_sites = 0
        for r in plugin.parse_records(data, where):
            site = self.sites.get(r.pc)
            if site is None:
                self.non_sites += 1  # a module's, or a site the tracer leaves out
                continue
            xt = r.xt if site.kind in ("tlbi", "msr") and site.rt != 31 else None
            if site.kind in ("tlbi", "msr") and site.rt != 31 and r.xt is None:
                raise TraceError(f"{where}:{r.line}: {site.text} at {r.pc:#x} without Xt")
            ops.append(ObservedOp(site.kind, site.op, xt, r.cpu, r.pc,
                                  self.symbols.name_at(r.pc), r.line))
        self.overhead_s += time.monotonic() - t0
        return ops


def _settled(path: Path, timeout: float = 2.0) -> str:
    """The window's log once QEMU has stopped writing it (it closes the file after ``log none``)."""
    deadline = time.monotonic() + timeout
    size = -1
    while True:
        try:
            now = path.stat().st_size
        except FileNotFoundError:
            now = 0
        if now == size or time.monotonic() > deadline:
            break
        size = now
        time.sleep(0.005)
    try:
        return path.read_text(encoding="ascii", errors="replace")
    except FileNotFoundError:
        return ""  # nothing executed in the window's ranges: QEMU never opened the file
