"""Stable kernels: backported rules make a stable release's policy differ from its series'."""

from __future__ import annotations

from dataclasses import fields

from shootdown.kernel.info import KernelInfo, kernel_policy
from shootdown.model.policy import POLICIES, get_policy, stable_policy


def test_5_10_223_is_v5_9_with_the_freed_tables_ttl_fix() -> None:
    policy = stable_policy((5, 10, 223))
    assert policy is not None and policy.name == "v5.10.223"
    assert policy.no_ttl_when_freed and not POLICIES["v5.9"].no_ttl_when_freed
    # everything else is v5.9's
    for f in fields(policy):
        if f.name not in ("name", "no_ttl_when_freed"):
            assert getattr(policy, f.name) == getattr(POLICIES["v5.9"], f.name), f.name
    assert get_policy("v5.10.223") == policy and policy.version == (5, 10)
    assert get_policy("v5.10.10").name == "v5.9"  # below it: the series' policy


def test_no_stable_policy_where_nothing_was_backported_or_it_is_already_there() -> None:
    assert stable_policy((5, 10, 10)) is None      # below the first sublevel known to carry it
    assert stable_policy((6, 1, 158)) is None      # v5.14 and later have the rule upstream
    assert stable_policy((5, 4, 300)) is None      # no backport recorded for 5.4


def _info(upstream: str | None, version: tuple[int, int]) -> KernelInfo:
    return KernelInfo(image="Image", config=None, banner="", release="", version=version,
                      upstream=upstream,
                      page_size_kib=4, header_page_size_kib=4, va_bits=48, kpti=True,
                      lpa2=False, tlb_range=True, ttl=True)


def test_a_kernel_is_checked_against_its_stable_policy_and_says_why() -> None:
    name, why = kernel_policy(_info("5.10.223", (5, 10)))
    assert name == "v5.10.223" and "v5.9" in why and "5.10.223" in why
    assert kernel_policy(_info(None, (5, 10)))[0] == "v5.9"
    assert kernel_policy(_info("6.1.158", (6, 1)))[0] == "v5.14"


def test_the_5_10_223_range_flush_after_freeing_a_pmd_table_has_no_ttl() -> None:
    """What Debian's 5.10.223 issued (traced, `kernel run --kernel debian:bullseye thp.toml`
    on -cpu max): the range TLBI after free_pmd_table carries TTL 0; v5.9 gave 1."""
    from shootdown.model import Tlbi, expected_sequence, flatten
    from shootdown.scenario import load_scenario_text

    text = ('granule = "4k"\nasid = 2\ncpu_features = ["ttl", "tlbirange"]\n'
            '[[step]]\nkind = "gather"\nops = [{ op = "remove_pmd", addr = 0x240000000 }, '
            '{ op = "remove_pmd", addr = 0x240200000 }, { op = "flush" }, '
            '{ op = "free_pmd_table", addr = 0x240000000 }]\n')
    sc = load_scenario_text(text)

    def ranged(policy: str) -> list[int]:
        return [i.xt for i in flatten(expected_sequence(sc, policy=policy))
                if isinstance(i, Tlbi) and i.op == "rvae1is" and i.xt is not None]

    def ttl(xt: int) -> int:
        return (xt >> 37) & 3

    assert [ttl(x) for x in ranged("v5.9")] == [1]
    assert [ttl(x) for x in ranged("v5.10.223")] == [0]
    assert ranged("v5.10.223") == [0x0002718000240000]  # the operand the kernel issued
