"""The QEMU command line is a pure function of the definition: golden argv lists."""

from __future__ import annotations

import pytest

from shootdown.guest.argv import DEFAULT_QEMU, build_argv, default_qemu, with_console
from shootdown.guest.definition import find_guest

FW = "/fw/shootdown-4k.elf"
FIXED = ["-nographic", "-nodefaults", "-no-user-config", "-no-reboot", "-serial", "stdio",
         "-kernel", FW]


@pytest.mark.parametrize(("guest", "cpu"), [
    ("virt-a57", "cortex-a57"), ("virt-a72", "cortex-a72"), ("virt-max", "max"),
])
def test_golden_argv(guest: str, cpu: str) -> None:
    assert build_argv(find_guest(guest), FW) == [
        "qemu-system-aarch64", "-M", "virt", "-cpu", cpu, "-smp", "2", "-m", "128M",
        "-accel", "tcg,thread=single", *FIXED,
    ]


def test_extra_args_come_last_and_qemu_is_overridable() -> None:
    d = find_guest("virt-a57")._replace(smp=4, memory="1G",
                                       extra_args=("-d", "int,guest_errors"))
    assert build_argv(d, FW, qemu="/opt/qemu/bin/qemu-system-aarch64") == [
        "/opt/qemu/bin/qemu-system-aarch64", "-M", "virt", "-cpu", "cortex-a57", "-smp", "4",
        "-m", "1G", "-accel", "tcg,thread=single", *FIXED, "-d", "int,guest_errors",
    ]


def test_pure() -> None:
    d = find_guest("virt-max")
    assert build_argv(d, FW) == build_argv(d, FW)


def test_default_qemu_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SHOOTDOWN_QEMU", raising=False)
    assert default_qemu() == DEFAULT_QEMU
    monkeypatch.setenv("SHOOTDOWN_QEMU", "/x/qemu")
    assert default_qemu() == "/x/qemu"


def test_with_console_moves_the_first_serial_port_only() -> None:
    d = find_guest("virt-a57")._replace(extra_args=("-serial", "stdio"))
    argv = build_argv(d, FW)
    moved = with_console(argv, "pipe:/tmp/x/console")
    assert moved == [
        "qemu-system-aarch64", "-M", "virt", "-cpu", "cortex-a57", "-smp", "2", "-m", "128M",
        "-accel", "tcg,thread=single", "-nographic", "-nodefaults", "-no-user-config",
        "-no-reboot", "-serial", "pipe:/tmp/x/console", "-kernel", FW, "-serial", "stdio",
    ]
    assert argv == build_argv(d, FW)  # the input is left alone


@pytest.mark.parametrize("argv", [
    ["qemu-system-aarch64", "-serial", "none", "-serial", "stdio"],  # console elsewhere
    ["qemu-system-aarch64", "-M", "virt"],  # no -serial at all
    ["qemu-system-aarch64", "-serial"],  # dangling option
    [],
])
def test_with_console_leaves_other_consoles_alone(argv: list[str]) -> None:
    assert with_console(argv, "pipe:/tmp/x/console") is None
