"""The example remote guest definitions load, point at the real firmware, and stay unlisted."""

from __future__ import annotations

from pathlib import Path

import pytest

from shootdown.errors import ConfigError
from shootdown.guest.argv import build_argv
from shootdown.guest.definition import list_guest_names, load_definition
from shootdown.remote import check_trace_supported

EXAMPLES = Path(__file__).resolve().parents[2] / "guests" / "examples"


@pytest.mark.parametrize("name, host, accel", [("remote-arm64-kvm", "arm64-kvm", "kvm"),
                                               ("remote-x86-tcg", "x86-tcg-1", "tcg")])
def test_example_definitions(name: str, host: str, accel: str) -> None:
    d = load_definition(EXAMPLES / f"{name}.toml")
    assert (d.name, d.host, d.accel) == (name, host, accel)
    assert Path(d.firmware_path("4k")) == EXAMPLES.parents[1] / "firmware" / "build" / \
        "shootdown-4k.elf"
    argv = build_argv(d, d.firmware_path("4k"))
    assert argv[argv.index("-accel") + 1] == accel
    if accel == "kvm":
        assert argv[argv.index("-cpu") + 1] == "host"
        with pytest.raises(ConfigError, match="--trace"):
            check_trace_supported(d)
    else:
        check_trace_supported(d)
    assert name not in list_guest_names(), "examples are not listed with the shipped guests"
