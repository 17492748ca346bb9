"""Small builders shared by the model tests."""

from __future__ import annotations

from shootdown.model import Dsb, Instruction, Isb, Tlbi, expected_sequence, flatten
from shootdown.model.policy import Policy
from shootdown.scenario import load_scenario_text

ISHST = Dsb("ishst")
ISH = Dsb("ish")
ISB = Isb()


def T(op: str, xt: int | None = None) -> Tlbi:
    return Tlbi(op, xt)


def va(addr: int, asid: int) -> int:
    """__TLBI_VADDR, written out by hand for the tests."""
    return (addr >> 12) | asid << 48


def run(toml: str, policy: str | Policy, **kw: object) -> list[Instruction]:
    """All instructions of a scenario given as TOML text."""
    return flatten(expected_sequence(load_scenario_text(toml), policy, **kw))  # type: ignore[arg-type]


def gather(ops: str, *, granule: str = "4k", va_bits: int = 48, asid: int = 42,
           kpti: bool = False, fullmm: bool = False, features: str = "") -> str:
    """A one-gather scenario; ``ops`` is the TOML inline array body."""
    feats = ", ".join(f'"{f}"' for f in features.split(",") if f)
    return (f'granule = "{granule}"\nva_bits = {va_bits}\nasid = {asid}\n'
            f"kpti = {str(kpti).lower()}\ncpu_features = [{feats}]\n"
            f'[[step]]\nkind = "gather"\nfullmm = {str(fullmm).lower()}\nops = [{ops}]\n')


def raw(kind: str, fields: str, *, granule: str = "4k", va_bits: int = 48, asid: int = 42,
        kpti: bool = False, features: str = "") -> str:
    """A one-step scenario with a raw flush step."""
    feats = ", ".join(f'"{f}"' for f in features.split(",") if f)
    return (f'granule = "{granule}"\nva_bits = {va_bits}\nasid = {asid}\n'
            f"kpti = {str(kpti).lower()}\ncpu_features = [{feats}]\n"
            f'[[step]]\nkind = "{kind}"\n{fields}\n')
