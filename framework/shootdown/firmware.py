"""Checking the firmware ELF before booting it.

Two readers, for two costs:

* :func:`quick_check` reads the ELF header and the build-id note with
  :mod:`struct` (a few hundred bytes, no imports beyond the standard
  library).  ``shootdown run`` calls it before starting QEMU, so it must be
  cheap: start-up time is a product feature.
* :func:`inspect` uses pyelftools for the full picture (sections, symbols,
  the same checks done a second, independent way).  Tests compare the two,
  and later tools (lint, trace decoding) use the symbols.

Both raise :class:`~shootdown.errors.FirmwareError` for a file that is
missing, is not an ELF, is not a 64-bit little-endian AArch64 executable, or
has no GNU build-id note; the guest reports the same build-id in its
``BEGIN`` record, so a stale or mismatched firmware is caught at boot.
"""

from __future__ import annotations

import os
import struct
from typing import Any, BinaryIO, NamedTuple

from shootdown.errors import FirmwareError

#: ``e_machine`` of AArch64.
EM_AARCH64 = 183
#: ``e_type`` of an executable.
ET_EXEC = 2
#: Note type of a GNU build-id (owner ``GNU``).
NT_GNU_BUILD_ID = 3
#: Program header type of a note segment, and section type of a note section.
PT_NOTE = 4
SHT_NOTE = 7


class FirmwareInfo(NamedTuple):
    """What the host knows about a firmware ELF before it boots it.

    A :class:`~typing.NamedTuple`, not a dataclass: it is built before QEMU
    starts, where the :mod:`dataclasses` import would cost more than the check.
    """

    #: The ELF file.
    path: str
    #: Entry point (where QEMU's ``-kernel`` loader jumps).
    entry: int
    #: GNU build-id, lower-case hex; the guest reports it in ``BEGIN``.
    build_id: str


def _fail(path: str, why: str) -> FirmwareError:
    return FirmwareError(f"{path}: {why}")


def quick_check(path: str | os.PathLike[str]) -> FirmwareInfo:
    """Check ``path`` is an AArch64 ELF executable and read its build-id, cheaply."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read(64)
            if len(data) < 64 or data[:4] != b"\x7fELF":
                raise _fail(path, "not an ELF file")
            if data[4] != 2 or data[5] != 1:
                raise _fail(path, "not a 64-bit little-endian ELF (not aarch64 firmware)")
            (e_type, e_machine, _, e_entry, e_phoff, e_shoff, _, _, e_phentsize, e_phnum,
             e_shentsize, e_shnum, _) = struct.unpack_from("<HHIQQQIHHHHHH", data, 16)
            if e_machine != EM_AARCH64:
                raise _fail(path, f"e_machine is {e_machine}, not AArch64 ({EM_AARCH64})")
            if e_type != ET_EXEC:
                raise _fail(path, f"e_type is {e_type}, not an executable ({ET_EXEC})")
            # Elf64_Phdr: p_type @0, p_offset @8, p_filesz @32.
            build_id = _find_build_id(f, e_phoff, e_phentsize, e_phnum, PT_NOTE, 0, 8, 32)
            if build_id is None:  # no PT_NOTE segment: look at the note sections
                # Elf64_Shdr: sh_type @4, sh_offset @24, sh_size @32.
                build_id = _find_build_id(f, e_shoff, e_shentsize, e_shnum, SHT_NOTE, 4, 24, 32)
    except FileNotFoundError:
        raise _fail(path, "no such file (build it: make -C firmware)") from None
    except (OSError, struct.error) as exc:
        raise _fail(path, f"cannot read: {exc}") from exc
    if build_id is None:
        raise _fail(path, "no GNU build-id note (link with --build-id)")
    return FirmwareInfo(path=path, entry=e_entry, build_id=build_id)


def _find_build_id(f: BinaryIO, table: int, entsize: int, count: int, want: int,
                   type_off: int, offset_off: int, size_off: int) -> str | None:
    """Scan a program- or section-header table for a note holding a GNU build-id.

    ``want`` is the entry type of a note; ``type_off``, ``offset_off`` and
    ``size_off`` locate the type, the file offset and the size in one entry.
    """
    if table == 0 or count == 0 or entsize < size_off + 8:
        return None
    f.seek(table)
    headers = f.read(entsize * count)
    for base in range(0, min(count * entsize, len(headers) - entsize + 1), entsize):
        (kind,) = struct.unpack_from("<I", headers, base + type_off)
        if kind != want:
            continue
        (offset,) = struct.unpack_from("<Q", headers, base + offset_off)
        (size,) = struct.unpack_from("<Q", headers, base + size_off)
        f.seek(offset)
        found = _scan_notes(f.read(min(size, 1 << 16)))
        if found is not None:
            return found
    return None


def _scan_notes(notes: bytes) -> str | None:
    """Find the GNU build-id in a run of ELF notes (4-byte aligned)."""
    pos = 0
    while pos + 12 <= len(notes):
        namesz, descsz, kind = struct.unpack_from("<III", notes, pos)
        name_start = pos + 12
        desc_start = name_start + ((namesz + 3) & ~3)
        end = desc_start + ((descsz + 3) & ~3)
        if end > len(notes):
            return None
        if kind == NT_GNU_BUILD_ID and notes[name_start:name_start + namesz] == b"GNU\0":
            return notes[desc_start:desc_start + descsz].hex()
        pos = end
    return None


class ElfDetails(NamedTuple):
    """The full inspection of a firmware ELF, by pyelftools."""

    #: The ELF file.
    path: str
    #: ``e_machine`` as pyelftools names it (``EM_AARCH64``).
    machine: str
    #: Entry point.
    entry: int
    #: GNU build-id, lower-case hex.
    build_id: str
    #: Section names, in file order.
    sections: tuple[str, ...]
    #: Defined symbols (mapping symbols ``$x``/``$d`` left out): name -> address.
    symbols: dict[str, int]

    def symbol(self, name: str) -> int:
        """The address of a symbol; a missing one is a firmware error."""
        try:
            return self.symbols[name]
        except KeyError:
            raise FirmwareError(f"{self.path}: no symbol '{name}'") from None


def _wanted_symbol(sym: Any) -> bool:
    """A defined, named symbol that is not an ARM mapping symbol (``$x``, ``$d``)."""
    return (bool(sym.name) and not sym.name.startswith("$")
            and sym["st_info"]["type"] in ("STT_FUNC", "STT_OBJECT", "STT_NOTYPE")
            and sym["st_shndx"] != "SHN_UNDEF")


def inspect(path: str | os.PathLike[str]) -> ElfDetails:
    """Read ``path`` with pyelftools: machine, entry, build-id, sections, symbols.

    pyelftools' own exceptions become :class:`FirmwareError`.
    """
    path = os.fspath(path)
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile
    from elftools.elf.sections import NoteSection, SymbolTableSection

    try:
        with open(path, "rb") as f:
            elf = ELFFile(f)
            machine = str(elf["e_machine"])
            if machine != "EM_AARCH64":
                raise _fail(path, f"e_machine is {machine}, not EM_AARCH64")
            if elf.elfclass != 64 or not elf.little_endian:
                raise _fail(path, "not a 64-bit little-endian ELF")
            build_id: str | None = None
            symbols: dict[str, int] = {}
            sections: list[str] = []
            for section in elf.iter_sections():
                sections.append(section.name)
                if isinstance(section, NoteSection) and build_id is None:
                    for note in section.iter_notes():
                        if note["n_type"] == "NT_GNU_BUILD_ID":
                            build_id = str(note["n_desc"])
                elif isinstance(section, SymbolTableSection):
                    for sym in section.iter_symbols():
                        if _wanted_symbol(sym):
                            symbols.setdefault(sym.name, int(sym["st_value"]))
            entry = int(elf["e_entry"])
    except FileNotFoundError:
        raise _fail(path, "no such file (build it: make -C firmware)") from None
    except (ELFError, OSError) as exc:
        raise _fail(path, f"not a readable ELF file: {exc}") from exc
    if build_id is None:
        raise _fail(path, "no GNU build-id note (link with --build-id)")
    return ElfDetails(path=path, machine=machine, entry=entry, build_id=build_id,
                      sections=tuple(sections), symbols=symbols)
