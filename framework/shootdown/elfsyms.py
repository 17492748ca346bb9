"""Functions and code bytes of an aarch64 ELF, for the lint and the trace.

:func:`shootdown.firmware.inspect` answers "is this our firmware, which
build?" and insists on a GNU build-id; the lint must read *any* aarch64 ELF
(a test program, a relocatable object, a kernel image), and both the lint
and the trace need more than a name -> address table: function extents, the
code bytes behind a virtual address, and the ``$x``/``$d`` mapping symbols
that say where a literal pool sits inside code.  Hence this second, code-
oriented reader.  It shares the error convention: anything wrong with the
file is a :class:`~shootdown.errors.FirmwareError` naming the file.

Two ways to find bytes, because the two users need different ones:

* :meth:`ElfImage.function_bytes` reads through the symbol's *section*, so
  it works for relocatable objects too (every section starts at address 0
  there; the offsets inside a function are still right);
* :meth:`ElfImage.read_va` reads through the *program headers* (``PT_LOAD``),
  which is how the loaded image is laid out: the trace maps an executed PC
  (the firmware runs at its linked high virtual address) to the word there.
"""

from __future__ import annotations

import bisect
import logging
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from shootdown.errors import FirmwareError
from shootdown.inputfile import regular_file

log = logging.getLogger(__name__)

#: ``e_machine`` of AArch64 as pyelftools names it.
_AARCH64 = "EM_AARCH64"
#: Section flag: the section holds instructions.
_SHF_EXECINSTR = 0x4


@dataclass(frozen=True)
class Function:
    """One function symbol with the bytes of its body."""

    #: Symbol name.
    name: str
    #: Address of the first instruction (section offset in a relocatable object).
    address: int
    #: Size in bytes (from ``st_size``, or up to the next symbol when 0).
    size: int
    #: Index of the section holding it.
    section: int
    #: Offsets (from ``address``) of the data ranges inside the body, from
    #: ``$d`` .. next ``$x`` mapping symbols: (start, end) pairs, not code.
    data_ranges: tuple[tuple[int, int], ...] = ()

    def contains(self, address: int) -> bool:
        """Whether ``address`` lies inside the body."""
        return self.address <= address < self.address + self.size

    def is_code(self, offset: int) -> bool:
        """Whether the word at ``offset`` is code, not a literal pool."""
        return not any(a <= offset < b for a, b in self.data_ranges)


@dataclass(frozen=True)
class _Segment:
    vaddr: int
    filesz: int
    data: bytes


class ElfImage:
    """An aarch64 ELF file read once into memory: functions, sections, segments.

    Raises :class:`FirmwareError` (one line, naming the file) when the file is
    missing, not an ELF, not 64-bit little-endian AArch64, or has no function
    symbols.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        from elftools.common.exceptions import ELFError
        from elftools.elf.elffile import ELFFile
        from elftools.elf.sections import SymbolTableSection

        regular_file(path, "ELF file", error=self._fail)
        try:
            with open(path, "rb") as f:
                if f.read(4) != b"\x7fELF":
                    raise self._fail("not an ELF file")
                f.seek(0)
                elf = ELFFile(f)
                machine = str(elf["e_machine"])
                if machine != _AARCH64:
                    raise self._fail(f"e_machine is {machine}, not {_AARCH64}")
                if elf.elfclass != 64 or not elf.little_endian:
                    raise self._fail("not a 64-bit little-endian ELF")
                self.elf_type = str(elf["e_type"])
                self._sections: dict[int, tuple[str, int, bytes, bool]] = {}
                for index, sec in enumerate(elf.iter_sections()):
                    execinstr = bool(sec["sh_flags"] & _SHF_EXECINSTR)
                    data = sec.data() if execinstr and sec["sh_type"] != "SHT_NOBITS" else b""
                    self._sections[index] = (sec.name, int(sec["sh_addr"]), data, execinstr)
                self._segments = [
                    _Segment(int(seg["p_vaddr"]), int(seg["p_filesz"]), seg.data())
                    for seg in elf.iter_segments() if seg["p_type"] == "PT_LOAD"
                ]
                raw: list[tuple[str, int, int, int, str]] = []
                for sec in elf.iter_sections():
                    if isinstance(sec, SymbolTableSection):
                        for sym in sec.iter_symbols():
                            shndx = sym["st_shndx"]
                            if not isinstance(shndx, int):
                                continue  # undefined, absolute, common
                            raw.append((sym.name, int(sym["st_value"]), int(sym["st_size"]),
                                        shndx, sym["st_info"]["type"]))
        except FileNotFoundError:
            raise self._fail("no such file") from None
        except (ELFError, OSError, struct.error, ValueError) as exc:
            raise self._fail(f"not a readable ELF file: {exc}") from exc
        self.functions = self._build_functions(raw)
        #: Data objects (``STT_OBJECT`` with a size): (address, size, name), sorted.
        self.objects = sorted((value, size, name) for name, value, size, _shndx, kind in raw
                              if kind == "STT_OBJECT" and size > 0)
        self._object_starts = [o[0] for o in self.objects]
        if not self.functions:
            raise self._fail("no function symbols (stripped?): nothing to analyse")
        self._by_name = {fn.name: fn for fn in self.functions}
        self._starts = [fn.address for fn in self.functions]
        log.debug("%s: %d functions", self.path, len(self.functions))

    def _fail(self, why: str) -> FirmwareError:
        return FirmwareError(f"{self.path}: {why}")

    def _build_functions(self, raw: list[tuple[str, int, int, int, str]]) -> list[Function]:
        """Function symbols in executable sections, with sizes and data ranges."""
        mapping: dict[int, list[tuple[int, bool]]] = {}  # section -> [(addr, is_data)]
        named: dict[int, list[int]] = {}  # section -> every symbol address (size fallback)
        funcs: dict[tuple[int, int], tuple[str, int]] = {}
        for name, value, size, shndx, kind in raw:
            if shndx not in self._sections or not self._sections[shndx][3]:
                continue
            if name.startswith(("$x", "$d")):
                mapping.setdefault(shndx, []).append((value, name.startswith("$d")))
                continue
            named.setdefault(shndx, []).append(value)
            if kind == "STT_FUNC" and (shndx, value) not in funcs:
                funcs[(shndx, value)] = (name, size)
        result: list[Function] = []
        for (shndx, value), (name, size) in funcs.items():
            _sec_name, sec_addr, data, _ = self._sections[shndx]
            if size == 0:  # hand-written assembly without .size: up to the next symbol
                later = [a for a in named[shndx] if a > value]
                size = (min(later) if later else sec_addr + len(data)) - value
            marks = sorted(m for m in mapping.get(shndx, []) if value <= m[0] < value + size)
            data_ranges: list[tuple[int, int]] = []
            for i, (addr, is_data) in enumerate(marks):
                if is_data:
                    end = marks[i + 1][0] if i + 1 < len(marks) else value + size
                    data_ranges.append((addr - value, end - value))
            result.append(Function(name, value, size, shndx, tuple(data_ranges)))
        result.sort(key=lambda fn: (fn.address, fn.section))
        return result

    # ---- look-ups ----------------------------------------------------------

    def get_function(self, name: str) -> Function:
        """The function called ``name``; a missing one is a firmware error."""
        try:
            return self._by_name[name]
        except KeyError:
            raise self._fail(f"no function '{name}'") from None

    def function_at(self, address: int) -> Function | None:
        """The function whose body holds ``address`` (linked images), or None."""
        i = bisect.bisect_right(self._starts, address) - 1
        for j in range(i, max(i - 8, -1), -1):  # a few aliases may share a start
            if self.functions[j].contains(address):
                return self.functions[j]
        return None

    def object_at(self, address: int) -> tuple[int, int, str] | None:
        """The data object (address, size, name) holding ``address``, or None."""
        i = bisect.bisect_right(self._object_starts, address) - 1
        for j in range(i, max(i - 8, -1), -1):
            start, size, _name = self.objects[j]
            if start <= address < start + size:
                return self.objects[j]
        return None

    def get_object(self, name: str) -> tuple[int, int, str]:
        """The data object called ``name``; a missing one is a firmware error."""
        for obj in self.objects:
            if obj[2] == name:
                return obj
        raise self._fail(f"no data object '{name}'")

    def symbolize(self, address: int) -> str:
        """``name+0xoff`` for an address inside a function, else its hex."""
        fn = self.function_at(address)
        return f"{fn.name}+{address - fn.address:#x}" if fn else f"{address:#x}"

    def function_bytes(self, fn: Function) -> bytes:
        """The body of ``fn``, read through its section."""
        _name, sec_addr, data, _ = self._sections[fn.section]
        start = fn.address - sec_addr
        return data[start:start + fn.size]

    def iter_words(self, fn: Function) -> Iterator[tuple[int, int]]:
        """(offset, word) for every code word of ``fn`` (literal pools skipped)."""
        body = self.function_bytes(fn)
        for offset in range(0, len(body) - 3, 4):
            if fn.is_code(offset):
                yield offset, struct.unpack_from("<I", body, offset)[0]

    def read_va(self, address: int, size: int = 4) -> bytes:
        """``size`` bytes at virtual address ``address`` of the loaded image."""
        for seg in self._segments:
            if seg.vaddr <= address and address + size <= seg.vaddr + seg.filesz:
                return seg.data[address - seg.vaddr:address - seg.vaddr + size]
        raise self._fail(f"address {address:#x} is not in a loaded segment")

    def word_at(self, address: int) -> int:
        """The little-endian instruction word at virtual address ``address``."""
        return int(struct.unpack("<I", self.read_va(address, 4))[0])

    def iter_code_sections(self) -> Iterator[tuple[str, int, bytes]]:
        """(name, address, bytes) of every executable section."""
        for name, addr, data, execinstr in self._sections.values():
            if execinstr and data:
                yield name, addr, data
