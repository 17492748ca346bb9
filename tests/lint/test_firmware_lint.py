"""`shootdown lint` on the real firmware: clean with its configuration, and every
barrier injection seen as a code path of the same ELF."""

from __future__ import annotations

from pathlib import Path

import pytest

from shootdown.lint import Finding, lint_elf, lint_injections
from shootdown.lint.config import load

CONFIG = Path(__file__).resolve().parents[2] / "firmware" / "lint.toml"

#: The barrier bugs of the catalogue and the rule that must catch each.
BARRIER_BUGS = {
    "skip_dsb_ishst": "dsb-before-tlbi",
    "skip_dsb_ish": "dsb-after-tlbi",
    "no_isb_kernel_pgtable": "isb-after-kernel-tlbi",
}
#: Not filed as a barrier bug, but one: v4.19's synchronous per-table TLBI
#: relied on set_pmd's DSB ISHST, which v4.20's set_pmd no longer issues for
#: a cleared entry, so in a later release the TLBI has no DSB ISHST before it.
ALSO_BARRIER = {"sync_per_table": "dsb-before-tlbi"}


@pytest.mark.parametrize("granule", ["4k", "16k", "64k"])
def test_firmware_is_clean_with_its_configuration(firmware_elf: Path, granule: str) -> None:
    elf = firmware_elf.with_name(f"shootdown-{granule}.elf")  # `make` built all three
    report = lint_elf(elf, load(CONFIG))
    assert report.active == (), "\n".join(f"{f.function}+{f.offset:#x} {f.rule}: {f.message}"
                                          for f in report.active)
    # Every suppression is still needed, and the engine was looked at.
    assert report.unused_suppressions == ()
    assert "maint_tlbi_vale1is" in report.tlbi_functions  # the engine's stubs (maint.S)


@pytest.fixture(scope="module")
def per_bug(firmware_elf: Path) -> dict[str, tuple[Finding, ...]]:
    return lint_injections(firmware_elf, load(CONFIG))


def test_every_barrier_injection_is_caught(per_bug: dict[str, tuple[Finding, ...]]) -> None:
    assert set(BARRIER_BUGS) <= set(per_bug), "bug list changed: update BARRIER_BUGS"
    for name, found in per_bug.items():
        rules = {f.rule for f in found}
        expected = BARRIER_BUGS.get(name) or ALSO_BARRIER.get(name)
        if expected is None:
            assert not found, f"{name}: unexpected findings {sorted(rules)}"
        else:
            assert found and rules == {expected}, f"{name}: {sorted(rules)}"


@pytest.mark.parametrize("bug", sorted(BARRIER_BUGS))
def test_injection_findings_name_the_policy_functions(
        per_bug: dict[str, tuple[Finding, ...]], bug: str) -> None:
    found = per_bug[bug]
    assert all(f.suppressed is None for f in found)
    assert any("v5_4" in f.function or "flush" in f.function or "kernel" in f.function
               for f in found)
