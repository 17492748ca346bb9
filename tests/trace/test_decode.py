"""The TLBI/DSB/ISB decoder against capstone, an independent reading of the architecture."""

from __future__ import annotations

import struct

import capstone  # type: ignore[import-untyped]
import pytest

from shootdown.trace.decode import (
    ISB_WORD,
    Access,
    Domain,
    Dsb,
    Isb,
    Tlbi,
    decode,
    encode_dmb,
    encode_dsb,
    encode_tlbi,
    is_tlbi_word,
)

MD = capstone.Cs(capstone.CS_ARCH_ARM64, capstone.CS_MODE_ARM)


def capstone_text(word: int) -> str:
    found = list(MD.disasm_lite(struct.pack("<I", word), 0))
    assert found, f"capstone cannot decode {word:#010x}"
    _addr, _size, mnemonic, op_str = found[0]
    return f"{mnemonic} {op_str}".strip()


@pytest.mark.parametrize("crm", range(16))
@pytest.mark.parametrize("op2", range(8))
@pytest.mark.parametrize("rt", [0, 7, 30, 31])
def test_el1_tlbi_names_agree_with_capstone(crm: int, op2: int, rt: int) -> None:
    word = encode_tlbi(0, crm, op2, rt)
    assert is_tlbi_word(word)
    ours = decode(word)
    assert isinstance(ours, Tlbi)
    theirs = capstone_text(word)
    if ours.op.startswith("sys_"):
        # Not in our EL1 table: capstone must not name it an EL1 TLBI either.
        assert not (theirs.startswith("tlbi ") and "e1" in theirs.split()[1]), theirs
        return
    assert theirs.startswith("tlbi "), theirs
    name = theirs.split()[1].rstrip(",")
    assert name == ours.op
    if ours.has_operand:
        assert ours.rt == rt
    # vmalle1is and friends: capstone prints no operand for Xt = 31.
    if rt == 31:
        assert theirs == f"tlbi {ours.op}" or theirs == f"tlbi {ours.op}, xzr"


def test_every_capstone_el1_tlbi_is_named() -> None:
    """Each EL1 TLBI capstone knows (op1 = 0) is in our table with the same name."""
    for crm in range(16):
        for op2 in range(8):
            word = encode_tlbi(0, crm, op2, 1)
            theirs = capstone_text(word)
            if theirs.startswith("tlbi ") and "e1" in theirs:
                ours = decode(word)
                assert isinstance(ours, Tlbi) and ours.op == theirs.split()[1].rstrip(",")


def test_el1_properties() -> None:
    vale1is = decode(encode_tlbi(0, 3, 5, 2))
    assert vale1is == Tlbi("vale1is", 2, Domain.ISH, True, False, False, True, 1)
    vmalle1is = decode(encode_tlbi(0, 3, 0, 31))
    assert isinstance(vmalle1is, Tlbi) and not vmalle1is.has_operand and vmalle1is.asid_less
    assert not vmalle1is.last_level
    local = decode(encode_tlbi(0, 7, 0, 31))
    assert isinstance(local, Tlbi) and local.op == "vmalle1" and local.domain is Domain.NSH
    rvaale1is = decode(encode_tlbi(0, 2, 7, 3))
    assert isinstance(rvaale1is, Tlbi) and rvaale1is.is_range and rvaale1is.asid_less
    aside1is = decode(encode_tlbi(0, 3, 2, 4))
    assert isinstance(aside1is, Tlbi) and not aside1is.asid_less


def test_spec_encodings() -> None:
    """The words the spec gives (mmu-gather-policy.md, Encodings)."""
    assert decode(0xD5033FDF) == Isb()
    assert decode(0xD503309F | 0xB << 8) == Dsb("ish", Domain.ISH, Access.ALL)
    assert decode(0xD503309F | 0xA << 8) == Dsb("ishst", Domain.ISH, Access.STORE)
    assert decode(0xD5080000 | 8 << 12 | 3 << 8 | 5 << 5 | 1).op == "vale1is"  # type: ignore[union-attr]


@pytest.mark.parametrize("crm", range(16))
def test_dsb_options_agree_with_capstone(crm: int) -> None:
    word = encode_dsb(crm)
    ours = decode(word)
    theirs = capstone_text(word)
    if ours is None:
        assert not theirs.startswith("dsb ") or "#" in theirs, theirs
    else:
        assert isinstance(ours, Dsb)
        assert theirs == f"dsb {ours.option}"


@pytest.mark.parametrize("crm", range(16))
def test_dmb_is_not_a_dsb(crm: int) -> None:
    assert decode(encode_dmb(crm)) is None
    assert capstone_text(encode_dmb(crm)).startswith("dmb")


def test_isb_and_others() -> None:
    assert decode(ISB_WORD) == Isb()
    assert capstone_text(ISB_WORD) == "isb"
    for word in (0xD503201F, 0xD65F03C0, 0xF9000020, 0xD508751F):  # nop, ret, str, ic iallu
        assert decode(word) is None, hex(word)
        assert not is_tlbi_word(word)
