"""The model's instructions: the project's one vocabulary, :mod:`shootdown.insn`."""

from shootdown.insn import (
    DSB_DOMAINS,
    ISB_WORD,
    NO_OPERAND,
    TLBI_OPS,
    USER_ASID_FLAG,
    Dsb,
    GatherSnapshot,
    Instruction,
    Isb,
    Tlbi,
    Why,
    decode_operand,
)

__all__ = ["DSB_DOMAINS", "ISB_WORD", "NO_OPERAND", "TLBI_OPS", "USER_ASID_FLAG", "Dsb",
           "GatherSnapshot", "Instruction", "Isb", "Tlbi", "Why", "decode_operand"]
