"""The kernel's maintenance sites: every TLBI, DSB and ISB in its Image, found by disassembly.

A raw arm64 Image is loaded so that its first byte is the symbol ``_text``
(``arch/arm64/kernel/vmlinux.lds.S``: ``_text = .`` at ``KIMAGE_VADDR``; the
Image header's ``text_offset`` is 0 since v5.8), so an offset into the file
is an address once ``_text`` is known (from the guest's ``/proc/kallsyms``
with ``nokaslr``, or from ``vmlinux``/``System.map``: :mod:`.symbols`).
No address is written down here.

Finding them is two passes:

1. a byte-pattern scan of the whole file at 4-byte alignment for the
   encodings of ISB, DSB, ``SYS #op1, C8, Cm, #op2, Xt`` (TLBI) and ``MSR
   TTBR0_EL1/TTBR1_EL1, Xt`` (the ASID switch; see :mod:`.observe`), a
   regular expression in C over 30-50 MB instead of a Python loop;
2. each candidate decoded by capstone, an independent disassembler, and by
   the project's own decoder (:mod:`shootdown.trace.decode`), which names
   operations as the rest of shootdown does.  The two must agree on what
   the word is; a candidate neither calls a maintenance instruction (data
   that happens to match) is dropped.  Candidates outside the kernel's text
   (``_stext`` .. ``_etext``) are dropped later, once symbols are known
   (:func:`in_text`).

Not seen: instructions that the kernel's alternatives framework patches in
at boot (``.altinstr_replacement``: e.g. the REPEAT_TLBI erratum's extra
TLBI on affected CPUs) sit at their replacement's address, not at the
patched site.  The CPUs shootdown boots (``max``, ``cortex-a57``) need none
in the unmap path; docs/kernel.md lists this as a limit.

The list is cached per Image, keyed by its SHA256, under
``$XDG_CACHE_HOME/shootdown/kernels/sites/``.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from shootdown.errors import ConfigError
from shootdown.kernel.apt import cache_root, sha256_of
from shootdown.trace.decode import Dsb, Isb, Tlbi, decode

#: Bump when the cached records change shape or meaning.
CACHE_FORMAT = 1

#: Candidate encodings, little-endian bytes (Arm ARM C6.2):
#: ISB = d5033fdf; DSB = d503309f | CRm << 8; TLBI = SYS with L=0, CRn=8:
#: d508xxxx-d50fxxxx with bits 15:12 = 8; MSR TTBRn_EL1 = d51820[0-3]x
#: (op0=3, op1=0, CRn=2, CRm=0, op2=0/1).
_CANDIDATE = re.compile(
    rb"\xdf\x3f\x03\xd5"
    rb"|\x9f[\x30-\x3f]\x03\xd5"
    rb"|[\x00-\xff][\x80-\x8f][\x08-\x0f]\xd5"
    rb"|[\x00-\x3f]\x20\x18\xd5",
    re.S)

_MSR_TTBR = {0xD5182000: "ttbr0_el1", 0xD5182020: "ttbr1_el1"}


@dataclass(frozen=True)
class Site:
    """One maintenance instruction in the Image."""

    #: byte offset in the Image (address = _text + offset)
    offset: int
    #: the instruction word
    word: int
    #: ``tlbi``, ``dsb``, ``isb`` or ``msr`` (a TTBR write)
    kind: str
    #: TLBI operation (``vale1is``), DSB option (``ish``), TTBR name, "" for ISB
    op: str
    #: the operand register (TLBI Xt, MSR Xt); 31 = XZR / none
    rt: int
    #: capstone's text of the instruction, for people
    text: str


def _decoder() -> object:
    import capstone  # type: ignore[import-untyped]

    cs = capstone.Cs(capstone.CS_ARCH_ARM64, capstone.CS_MODE_ARM)
    cs.detail = False
    return cs


def find_sites(image: bytes) -> list[Site]:
    """Every TLBI, DSB, ISB and TTBR write in ``image``, in address order (pure)."""
    cs = _decoder()
    sites: list[Site] = []
    for m in _CANDIDATE.finditer(image):
        offset = m.start()
        if offset % 4:
            continue
        word = int.from_bytes(image[offset:offset + 4], "little")
        insns = list(cs.disasm(image[offset:offset + 4], offset, 1))  # type: ignore[attr-defined]
        if not insns:
            continue
        mnemonic = insns[0].mnemonic
        text = f"{mnemonic} {insns[0].op_str}".strip()
        ttbr = _MSR_TTBR.get(word & ~31)
        if ttbr is not None:
            if mnemonic != "msr":
                raise ConfigError(f"capstone reads {word:#010x} as {text!r}, not an MSR to a TTBR")
            sites.append(Site(offset, word, "msr", ttbr, word & 31, text))
            continue
        found = decode(word)
        if found is None:
            continue  # SSBB/PSSBB, reserved DSB options: not maintenance
        expected = {Tlbi: ("tlbi", "sys"), Dsb: ("dsb",), Isb: ("isb",)}[type(found)]
        if mnemonic not in expected:
            raise ConfigError(f"decoders disagree at Image offset {offset:#x}: {word:#010x} is "
                              f"{text!r} to capstone, {found} to shootdown.trace.decode")
        if isinstance(found, Tlbi):
            sites.append(Site(offset, word, "tlbi", found.op, found.rt, text))
        elif isinstance(found, Dsb):
            sites.append(Site(offset, word, "dsb", found.option, 31, text))
        else:
            sites.append(Site(offset, word, "isb", "", 31, text))
    return sites


def in_text(sites: list[Site], text_start: int, text_end: int) -> list[Site]:
    """The sites whose offsets lie in [text_start, text_end) (offsets from ``_text``)."""
    return [s for s in sites if text_start <= s.offset < text_end]


def cached_sites(image_path: Path) -> tuple[str, list[Site]]:
    """(the Image's SHA256, its sites), computed once per Image and cached."""
    digest = sha256_of(image_path)
    cache = cache_root() / "kernels" / "sites" / f"{digest}.json"
    try:
        loaded = json.loads(cache.read_text())
        if loaded.get("format") == CACHE_FORMAT:
            return digest, [Site(**record) for record in loaded["sites"]]
    except (OSError, ValueError, TypeError, KeyError):
        pass
    try:
        image = image_path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{image_path}: cannot read: {exc.strerror or exc}") from exc
    sites = find_sites(image)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"format": CACHE_FORMAT, "image": str(image_path),
                               "sites": [asdict(s) for s in sites]}))
    tmp.replace(cache)
    return digest, sites
