"""Kernel text symbols: which function an address is in.

Three sources, each giving (address, name) of the text symbols:

* the guest's own ``/proc/kallsyms`` (the workload's ``KALLSYMS`` command),
  read after one boot and cached per Image (keyed by its SHA256): with
  ``nokaslr``, which every boot has, the addresses hold for every boot;
* a ``System.map`` the user passes (``--symbols``).  Debian's packages ship
  a *stub* (one line saying the real one is in the ``-dbg`` package): that
  is refused with a one-line error rather than silently attributing nothing;
* a ``vmlinux`` ELF (``--symbols``), read with pyelftools (``STT_FUNC`` and
  the ``_text``/``_stext``/``_etext`` markers).
"""

from __future__ import annotations

import bisect
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from shootdown.errors import ConfigError
from shootdown.inputfile import regular_file
from shootdown.kernel.apt import cache_root

#: The markers the tracer needs: the Image's first byte and the text's bounds
#: (arch/arm64/kernel/vmlinux.lds.S), and the kernel's entry point, which the
#: Image header's second word branches to (arch/arm64/kernel/head.S:
#: ``b primary_entry``, ``b stext`` before v5.8).  /proc/kallsyms leaves out
#: ``_text`` (the head is not in its text ranges): its address is then the
#: entry's minus the branch's target offset (:func:`text_base`).
MARKERS = ("_text", "_stext", "_etext", "primary_entry", "stext")
#: Parts of the text that never run at their address in the kernel image
#: (arch/arm64/kernel/vmlinux.lds.S): the identity-mapped code (called through
#: its physical address: __cpu_setup, cpu_resume...), KVM's nVHE hypervisor
#: text (EL2, mapped at hyp addresses) and the KPTI trampoline (mapped at
#: TRAMP_VALIAS).  A -dfilter over their sites could never match.
ELSEWHERE = (("__idmap_text_start", "__idmap_text_end"),
             ("__hyp_idmap_text_start", "__hyp_idmap_text_end"),
             ("__hyp_text_start", "__hyp_text_end"),
             ("__entry_tramp_text_start", "__entry_tramp_text_end"))
_SECTION_MARKERS = frozenset(name for pair in ELSEWHERE for name in pair)
ENTRY_NAMES = ("primary_entry", "stext")


@dataclass(frozen=True)
class Symbols:
    """Text symbols sorted by address; ``where`` names their source."""

    #: addresses, ascending
    addresses: tuple[int, ...]
    #: the name at each address (one per address; see :func:`from_pairs`)
    names: tuple[str, ...]
    #: the markers' addresses (_text, _stext, _etext)
    markers: dict[str, int]
    #: "kallsyms (cached ...)", "System.map PATH", "vmlinux PATH"
    where: str

    def function_at(self, address: int) -> tuple[str, int] | None:
        """(name, offset) of the symbol at or below ``address``; None below the first."""
        i = bisect.bisect_right(self.addresses, address) - 1
        if i < 0:
            return None
        return self.names[i], address - self.addresses[i]

    def name_at(self, address: int) -> str:
        """``name`` of the function holding ``address`` ("?" when none)."""
        found = self.function_at(address)
        return found[0] if found is not None else "?"

    def elsewhere(self) -> list[tuple[int, int]]:
        """The [start, end) address ranges of :data:`ELSEWHERE` these symbols know."""
        return [(self.markers[a], self.markers[b]) for a, b in ELSEWHERE
                if a in self.markers and b in self.markers]

    def marker(self, name: str) -> int:
        """The address of ``_text``, ``_stext`` or ``_etext``."""
        try:
            return self.markers[name]
        except KeyError:
            raise ConfigError(f"{self.where}: no symbol {name}") from None


def entry_offset(image_head: bytes) -> int | None:
    """The Image offset the header's ``code1`` branches to (``B imm26``), or None."""
    if len(image_head) < 8:
        return None
    code1 = int.from_bytes(image_head[4:8], "little")
    if code1 >> 26 != 0b000101:  # B <label>
        return None
    imm = code1 & 0x3FF_FFFF
    if imm >> 25:
        imm -= 1 << 26
    return 4 + imm * 4


def text_base(symbols: Symbols, image_head: bytes) -> int:
    """The address of the Image's first byte (``_text``) under these symbols.

    ``_text`` itself when the source has it (vmlinux, System.map); else the
    entry point's address minus its offset in the Image.  ConfigError when
    neither is known, or when ``_stext`` would not lie within the Image's
    first 2 MiB (symbols of another kernel).
    """
    if "_text" in symbols.markers:
        return symbols.markers["_text"]
    target = entry_offset(image_head)
    name = next((n for n in ENTRY_NAMES if n in symbols.markers), None)
    if target is None or name is None:
        raise ConfigError(f"{symbols.where}: no _text, and no entry point "
                          f"({'/'.join(ENTRY_NAMES)}) to place the Image by")
    base = symbols.markers[name] - target
    stext = symbols.marker("_stext")
    if not 0 < stext - base < 2 << 20:
        raise ConfigError(f"{symbols.where}: _stext at {stext:#x} is not in the Image placed at "
                          f"{base:#x} by {name}: are these this kernel's symbols?")
    return base


def _preferred(current: str, new: str) -> str:
    """Of two names at one address, the function's rather than a section marker."""
    def rank(name: str) -> tuple[bool, bool]:
        return (name.startswith("_"), name.endswith(("_start", "_end")))

    return new if rank(new) < rank(current) else current


def from_pairs(pairs: Iterable[tuple[int, str]], where: str) -> Symbols:
    """Symbols from (address, name) pairs; at a shared address the function's name wins."""
    by_address: dict[int, str] = {}
    markers: dict[str, int] = {}
    for address, name in pairs:
        if name in MARKERS or name in _SECTION_MARKERS:
            markers[name] = address
        by_address[address] = (_preferred(by_address[address], name)
                                if address in by_address else name)
    if not by_address:
        raise ConfigError(f"{where}: no text symbols")
    ordered = sorted(by_address.items())
    return Symbols(tuple(a for a, _ in ordered), tuple(n for _, n in ordered), markers, where)


def parse_system_map(text: str, where: str) -> Symbols:
    """A ``System.map`` or ``/proc/kallsyms`` text (``address type name``), text symbols only."""
    pairs: list[tuple[int, str]] = []
    for number, line in enumerate(text.splitlines(), 1):
        words = line.split()
        if len(words) < 3:
            continue
        try:
            address = int(words[0], 16)
        except ValueError:
            raise ConfigError(f"{where}:{number}: address: not hex: {words[0]!r}") from None
        if words[1] in ("t", "T") or words[2] in MARKERS or words[2] in _SECTION_MARKERS:
            pairs.append((address, words[2]))
    if len(pairs) < 100:
        raise ConfigError(f"{where}: symbols: only {len(pairs)} text symbols (a stub System.map? "
                          "Debian's real one is in the -dbg package; use the guest's kallsyms "
                          "by passing no --symbols)")
    return from_pairs(pairs, f"System.map {where}")


def read_vmlinux(path: Path) -> Symbols:
    """The function symbols of a ``vmlinux`` ELF (pyelftools)."""
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile
    from elftools.elf.sections import SymbolTableSection

    pairs: list[tuple[int, str]] = []
    try:
        with open(path, "rb") as f:
            elf = ELFFile(f)
            table = elf.get_section_by_name(".symtab")
            if not isinstance(table, SymbolTableSection):
                raise ConfigError(f"{path}: .symtab: none (a stripped vmlinux?)")
            for sym in table.iter_symbols():
                if (sym["st_info"]["type"] == "STT_FUNC" or sym.name in MARKERS
                        or sym.name in _SECTION_MARKERS):
                    pairs.append((int(sym["st_value"]), sym.name))
    except ELFError as exc:
        raise ConfigError(f"{path}: not an ELF file: {exc}") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    return from_pairs(pairs, f"vmlinux {path}")


def read_symbols(path: Path) -> Symbols:
    """``--symbols PATH``: a vmlinux (ELF) or a System.map."""
    regular_file(path, "vmlinux or System.map",
                 error=lambda reason: ConfigError(f"--symbols: {path}: {reason}"))
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as exc:
        raise ConfigError(f"--symbols: {path}: cannot read: {exc.strerror or exc}") from exc
    if magic == b"\x7fELF":
        return read_vmlinux(path)
    return parse_system_map(path.read_text(errors="replace"), str(path))


def _cache_path(digest: str) -> Path:
    return cache_root() / "kernels" / "kallsyms" / f"{digest}.json"


def cached_kallsyms(digest: str) -> Symbols | None:
    """The guest's kallsyms cached for the Image with SHA256 ``digest``, if any."""
    path = _cache_path(digest)
    try:
        pairs = json.loads(path.read_text())
        return from_pairs(((int(a, 16), n) for a, n in pairs), f"kallsyms (cached {path})")
    except (OSError, ValueError, TypeError, ConfigError):
        return None


def store_kallsyms(digest: str, pairs: list[tuple[int, str]]) -> Symbols:
    """Cache the guest's kallsyms for the Image ``digest``; the symbols."""
    symbols = from_pairs(pairs, "kallsyms (read from the guest)")
    path = _cache_path(digest)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps([[f"{a:x}", n] for a, n in pairs]))
    tmp.replace(path)
    return symbols
