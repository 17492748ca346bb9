"""--shootdown-kernel: workload files become pytest items run on a real kernel
(one boot for all of them), with the kernel run's verdicts; without the option
they are skipped with the reason."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from shootdown.errors import InfraError
from shootdown.kernel.locate import locate

pytest_plugins = ["pytester"]

LIBRARY = Path(__file__).resolve().parents[2] / "guests" / "kernel"


@pytest.fixture(scope="module")
def bookworm_cached() -> None:
    try:
        locate("debian:bookworm")
    except InfraError as exc:
        pytest.skip(f"Debian's bookworm kernel is not cached and cannot be fetched: {exc}")


def _copy(pytester: pytest.Pytester, *names: str) -> Path:
    folder = pytester.path / "kernel"
    folder.mkdir()
    for name in names:
        shutil.copy(LIBRARY / name, folder / name)
    return folder


@pytest.mark.guest
def test_workloads_run_as_items_on_one_boot(pytester: pytest.Pytester,
                                             bookworm_cached: None) -> None:
    folder = _copy(pytester, "few-pages.toml", "whole-table.toml", "thp-16k.toml")
    result = pytester.runpytest("-p", "no:cacheprovider", "--shootdown-kernel",
                                "debian:bookworm", str(folder), "-rs", "-v")
    result.assert_outcomes(passed=2, skipped=1)
    result.stdout.fnmatch_lines(["*few-pages.toml::debian:bookworm PASSED*",
                                 "*written for the 16k granule*"])
    logs = list((pytester.path).rglob("kernel-debian_bookworm-*.console.log"))
    assert len(logs) <= 1  # one boot for every workload (kept when the log dir is given)


def test_without_a_kernel_workloads_are_skipped_with_the_reason(
        pytester: pytest.Pytester) -> None:
    folder = _copy(pytester, "few-pages.toml")
    result = pytester.runpytest("-p", "no:cacheprovider", str(folder), "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*pass --shootdown-kernel*"])


def test_an_unknown_kernel_is_one_line_not_a_traceback(pytester: pytest.Pytester) -> None:
    folder = _copy(pytester, "few-pages.toml")
    result = pytester.runpytest("-p", "no:cacheprovider", "--shootdown-kernel",
                                "debian:nosuchsuite", str(folder))
    result.assert_outcomes(failed=1)
    assert "Traceback" not in result.stdout.str()
    result.stdout.fnmatch_lines(["*nosuchsuite*"])
