"""--gdb support: the breakpoint symbol comes from the ELF, and QEMU's gdbstub answers."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import pytest

from shootdown.debug import elf_functions, plan_gdb, step_symbol
from shootdown.guest.argv import build_argv
from shootdown.guest.definition import find_guest


def test_step_symbols_follow_the_policy(firmware_elf: Path) -> None:
    fns = elf_functions(firmware_elf)
    assert step_symbol(fns, "flush_tlb_range", "v4.19") == "flush_range_v4_19"
    assert step_symbol(fns, "flush_tlb_range", "v5.4") == "flush_range_v5_2"
    assert step_symbol(fns, "flush_tlb_range", "v6.19") == "flush_range_v6_10"
    assert step_symbol(fns, "flush_tlb_kernel_range", "v6.19") == "kernel_range_v6_13"
    assert step_symbol(fns, "munmap", "v6.19") == "tlb_finish_mmu"


def test_plan_skips_earlier_steps_of_the_same_kind(firmware_elf: Path) -> None:
    plan = plan_gdb(firmware_elf, step_kinds=["gather", "flush_tlb_range", "gather"],
                    failing_step=3, policy="v6.19", port=1234)
    assert plan.qemu_args == ("-S", "-gdb", "tcp:127.0.0.1:1234")
    assert (plan.breakpoint, plan.ignore) == ("tlb_finish_mmu", 1)
    assert plan.gdb_command == (
        f"gdb-multiarch -q {firmware_elf.resolve()} -ex 'set pagination off' "
        "-ex 'target remote 127.0.0.1:1234' -ex 'break tlb_finish_mmu' -ex 'ignore 1 1' "
        "-ex continue")


@pytest.mark.guest
def test_qemu_waits_halted_with_its_gdbstub(firmware_elf: Path, qemu: str,
                                            no_leftover_qemu: None) -> None:
    plan = plan_gdb(firmware_elf)
    argv = build_argv(find_guest("virt-a57"), firmware_elf, qemu=qemu) + list(plan.qemu_args)
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                conn = socket.create_connection(("127.0.0.1", plan.port), timeout=5)
                break
            except OSError:
                assert time.monotonic() < deadline, "gdbstub did not listen"
                time.sleep(0.05)
        with conn:
            conn.sendall(b"$?#3f")  # why did the target stop?
            reply = b""
            while b"#" not in reply.lstrip(b"+"):
                reply += conn.recv(256)
        assert reply.lstrip(b"+").startswith(b"$T05") or reply.lstrip(b"+").startswith(b"$S05")
    finally:
        proc.kill()
        proc.wait()
    assert b"SD1" not in (proc.stdout.read() if proc.stdout else b"")  # halted: no boot
