"""The TCG-plugin tracing method: ``plugins/maint.c``, built per QEMU version, and its records.

QEMU 9 and later let a plugin read the guest's registers from an
instruction callback (``qemu_plugin_read_register`` under
``QEMU_PLUGIN_CB_R_REGS``), so a plugin can record a TLBI's Xt itself.
``plugins/maint.c`` (the project's own) instruments, at translation time,
only the instructions whose encoding is a TLBI, DSB, ISB or an
``MSR TTBR0_EL1/TTBR1_EL1``, and appends one flushed line per execution to
a file::

    <cpu> <pc> <insn> <xt|->        hexadecimal; '-': no Xt (Rt is XZR, DSB, ISB)

``<cpu>`` is the vCPU that ran the instruction.  It is not the
``vcpu_index`` QEMU hands the instruction callback: under ``-accel
tcg,thread=single`` QEMU 10.0.2 folds the index of the vCPU that
*translated* a block into it as a constant (``accel/tcg/plugin-gen.c``,
``gen_cpu_index``: no ``CF_PARALLEL`` in round-robin mode), and blocks are
shared, so a block cpu0 translated reported cpu0 when cpu1 ran it.  The
plugin names the CPU by the running vCPU's TPIDR_EL1 (the kernel's per-CPU
offset, distinct per CPU), which it pairs with the CPU on a block's first
run (by the vCPU that translated it, so the index is right then) and
whenever the kernel reads MPIDR_EL1 (its Aff0).  A record whose TPIDR_EL1
was never paired (or a QEMU without TPIDR_EL1 in its register list)
carries QEMU's index with a ``?`` after it (``1?``):
:attr:`Record.cpu_from_guest` is False, and :func:`parse_records` refuses the
window (TraceError), since that CPU may be wrong.

Nothing else of the guest gets a callback, and no single-stepping is needed,
so a window costs the callbacks of the maintenance instructions it runs and
nothing between them.  Recording is on only inside windows: the host writes
``on N`` / ``off N`` into a FIFO the plugin reads (``ctl=``), and the plugin
acknowledges each in the record file (``# on N`` / ``# off N``), which is
how :class:`Control` knows where a window's records start and end.

The plugin is compiled with the host's gcc against ``qemu-plugin.h`` of
the very QEMU version that loads it (the plugin API is versioned):
``scripts/setup-qemu`` extracts that header from Debian's ``qemu`` source
package into ``<cache>/qemu/<version>/include/``, and :func:`build` puts the
``.so`` beside it, keyed by a hash of the C source.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from shootdown.errors import ConfigError, InfraError, TraceError
from shootdown.guest.qemu import QemuVersion, cache_dir, format_version

#: The first QEMU whose plugin API reads registers (plugin API version 3).
PLUGIN_SINCE: QemuVersion = (9, 0, 0)
#: Whether the plugin is chosen without ``--trace-method plugin`` (on a QEMU >= 9.0 with
#: its header).  QEMU's vCPU index names the vCPU that translated a block, not the one
#: running it (10.0.2, plugin-gen.c gen_cpu_index, thread=single), so the plugin names
#: the CPU through TPIDR_EL1 (module docstring); a window with a record it could not
#: name is a TraceError, never a stream with guessed CPUs (:func:`parse_records`).
#: 10 consecutive passes of tests/kernel/test_plugin.py; 1.19x against an untraced
#: boot where single-stepping costs 1.88x (benchmarks/kernel_latency.py, 10.0.2).
PLUGIN_BY_DEFAULT = True
#: The tracing methods ``kernel run --trace-method`` accepts.
METHODS = ("plugin", "singlestep")
#: The plugin's C source, in the repository beside the Python package.
SOURCE = Path(__file__).resolve().parents[3] / "plugins" / "maint.c"

_RECORD_RE = re.compile(r"([0-9a-f]+)(\??) ([0-9a-f]+) ([0-9a-f]{8}) ([0-9a-f]+|-)\n")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Record:
    """One executed instruction the plugin recorded."""

    #: the vCPU that ran it (by its TPIDR_EL1; QEMU's callback index if not cpu_from_guest)
    cpu: int
    #: the instruction's virtual address
    pc: int
    #: its encoding
    insn: int
    #: its Xt (TLBI, MSR); None when it has none
    xt: int | None
    #: its line in the record file (file order is execution order: thread=single)
    line: int
    #: False: the plugin could not name the CPU from the guest ('?' in the file),
    #: so ``cpu`` is QEMU's callback index, which may be another vCPU's
    cpu_from_guest: bool = True


def choose_method(version: QemuVersion, requested: str | None,
                  have_header: bool | None = None) -> str:
    """``plugin`` where the QEMU can run it (>= 9.0) and its ``qemu-plugin.h`` is
    here (``have_header``; None: look in :func:`header_dir`), else ``singlestep``;
    ``requested`` wins.

    Asking for ``plugin`` on an older QEMU is bad input (ConfigError); on a
    QEMU without its header, :func:`build` says how to get it (InfraError).
    """
    if requested is None:
        if not PLUGIN_BY_DEFAULT or version < PLUGIN_SINCE:
            return "singlestep"
        if have_header is None:
            have_header = (version_dir(version) / "include" / "qemu-plugin.h").is_file()
        return "plugin" if have_header else "singlestep"
    if requested not in METHODS:
        raise ConfigError(f"--trace-method: {requested!r} is not one of {', '.join(METHODS)}")
    if requested == "plugin" and version < PLUGIN_SINCE:
        raise ConfigError(f"--trace-method: plugin needs QEMU >= {format_version(PLUGIN_SINCE)}"
                          f" (this one is {format_version(version)}); use singlestep")
    return requested


def version_dir(version: QemuVersion) -> Path:
    """``<cache>/qemu/<x.y.z>``: where scripts/setup-qemu unpacks that QEMU and its header."""
    return Path(cache_dir()) / "qemu" / format_version(version)


def header_dir(version: QemuVersion) -> Path:
    """The folder holding that version's ``qemu-plugin.h`` (InfraError with the fix if absent)."""
    folder = version_dir(version) / "include"
    if not (folder / "qemu-plugin.h").is_file():
        raise InfraError(f"{folder}/qemu-plugin.h missing: run scripts/setup-qemu for QEMU "
                         f"{format_version(version)} (it extracts the header from Debian's "
                         "qemu source package)")
    return folder


def build(version: QemuVersion, source: Path = SOURCE) -> Path:
    """The plugin ``.so`` for QEMU ``version``, compiled on first use; its path."""
    try:
        code = source.read_bytes()
    except OSError as e:
        raise InfraError(f"{source}: cannot read the plugin source: {e.strerror}") from e
    include = header_dir(version)
    key = hashlib.sha256(code + (include / "qemu-plugin.h").read_bytes()).hexdigest()[:16]
    out = version_dir(version) / "plugin" / f"maint-{key}.so"
    if out.is_file():
        return out
    gcc = shutil.which("gcc")
    if gcc is None:
        raise InfraError("gcc not found: the tracing plugin is built with the host's gcc "
                         "(scripts/setup installs it)")
    try:
        glib = subprocess.run(["pkg-config", "--cflags", "glib-2.0"], capture_output=True,
                              text=True, check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError) as e:
        raise InfraError("pkg-config --cflags glib-2.0 failed: qemu-plugin.h needs glib's "
                         "headers (libglib2.0-dev; scripts/setup installs it)") from e
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(f".{os.getpid()}.tmp")
    argv = [gcc, "-O2", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Werror", "-shared",
            "-fPIC", f"-I{include}", *glib, str(source), "-o", str(tmp)]
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise InfraError(f"building {source} failed: {' '.join(argv)}\n{done.stderr.strip()}")
    os.replace(tmp, out)
    return out


def qemu_args(library: Path, out: Path, ctl: Path | None = None) -> list[str]:
    """What the traced machine's QEMU command line adds to load the plugin.

    Without ``ctl`` the plugin records from the first instruction on.
    """
    extra = f",ctl={ctl}" if ctl is not None else ""
    return ["-plugin", f"{library},out={out}{extra}"]


class Control:
    """The host's end of the plugin's control FIFO: windows as byte ranges of the record file."""

    #: seconds to wait for the plugin to open its FIFO, and to acknowledge a switch
    TIMEOUT_S = 10.0

    def __init__(self, records: Path, fifo: Path) -> None:
        self.records = records
        self.fifo = fifo
        os.mkfifo(fifo)
        self._fd: int | None = None
        self._size = 0

    def connect(self) -> None:
        """Open the FIFO for writing once the plugin reads it (after QEMU's launch)."""
        deadline = time.monotonic() + self.TIMEOUT_S
        while self._fd is None:
            try:
                self._fd = os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as e:
                if e.errno != errno.ENXIO or time.monotonic() > deadline:
                    raise InfraError(f"{self.fifo}: the tracing plugin never opened its "
                                     f"control FIFO ({e.strerror})") from e
                time.sleep(0.005)
        os.set_blocking(self._fd, True)

    def close(self) -> None:
        """Close the FIFO (idempotent); the plugin's thread then ends."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def switch(self, on: bool, window: int) -> int:
        """Recording on (or off) for ``window``; the offset where its records start (or end)."""
        if self._fd is None:
            raise InfraError("tracing plugin: control FIFO not connected")
        command = f"{'on' if on else 'off'} {window}\n"
        os.write(self._fd, command.encode())
        marker = f"# {command}".encode()
        deadline = time.monotonic() + self.TIMEOUT_S
        start = self._size
        while True:
            with open(self.records, "rb") as f:
                f.seek(start)
                data = f.read()
            at = data.find(marker)
            if at >= 0 and (at == 0 or data[at - 1:at] == b"\n"):
                self._size = start + at + len(marker)
                return self._size if on else start + at
            if time.monotonic() > deadline:
                raise InfraError(f"{self.records}: the tracing plugin did not acknowledge "
                                 f"{command.strip()!r} within {self.TIMEOUT_S:.0f} s")
            time.sleep(0.001)


def parse_records(data: bytes, path: str, first_line: int = 1) -> list[Record]:
    """The records of a slice of the plugin's file (whole lines only).

    A line that does not parse means the file is not the plugin's or was cut:
    TraceError naming the file and line, never a shorter stream.  Records whose
    CPU the plugin took from QEMU's index (``1?``) are a TraceError: their CPU may be
    wrong, and the separation rule works by CPU.
    """
    text = data.decode("ascii", errors="replace")
    records: list[Record] = []
    line = first_line
    pos = 0
    while pos < len(text):
        m = _RECORD_RE.match(text, pos)
        if m is None:
            end = text.find("\n", pos)
            bad = text[pos:] if end < 0 else text[pos:end]
            raise TraceError(f"{path}:{line}: not a plugin record: {bad[:60]!r}")
        xt = None if m.group(5) == "-" else int(m.group(5), 16)
        records.append(Record(int(m.group(1), 16), int(m.group(3), 16),
                              int(m.group(4), 16), xt, line, cpu_from_guest=not m.group(2)))
        pos = m.end()
        line += 1
    unnamed = [r for r in records if not r.cpu_from_guest]
    if unnamed:
        raise TraceError(f"{path}:{unnamed[0].line}: {len(unnamed)} of {len(records)} plugin "
                         "records carry QEMU's vcpu_index, not the guest's CPU (their "
                         "TPIDR_EL1 was never paired with one CPU: a kernel without per-CPU "
                         "offsets in TPIDR_EL1?): use --trace-method singlestep")
    return records
