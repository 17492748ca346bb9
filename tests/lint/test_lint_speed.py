"""The lint on large ELFs: fast (issue 11: 8 MB of text took minutes), and the
fast disassembly (one capstone call per run of code, a cache by instruction
word) gives exactly what decoding each word on its own gives."""

from __future__ import annotations

import random
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import capstone  # type: ignore[import-untyped]
import pytest

from shootdown.elfsyms import ElfImage
from shootdown.lint import insn as insn_mod
from shootdown.lint import lint_elf
from shootdown.lint.insn import Insn, Kind, classify, disassemble

ROOT = Path(__file__).resolve().parents[2]
GCC = "aarch64-linux-gnu-gcc"


def _function(n: int, rng: random.Random) -> list[str]:
    body = [f".globl f{n}", f".type f{n}, %function", f"f{n}:",
            "    stp x29, x30, [sp, #-16]!", "    str x1, [x0]", "    dsb ishst",
            "    lsr x2, x0, #12", "    tlbi vae1is, x2", "    cbz x1, 1f"]
    for _ in range(120):  # prologue-like repetition and some distinct words
        r, a = rng.randrange(19), rng.randrange(19)
        body.append(rng.choice(["    add x4, x4, #1", "    eor x5, x5, x4",
                                f"    add x{r}, x{a}, #{rng.randrange(64)}",
                                f"    ldr x{r}, [x{a}, #{8 * rng.randrange(8)}]"]))
    body += ["    str x3, [x0, #8]", "    dsb ishst", "    tlbi vale1is, x2", "1:",
             "    dsb ish", "    ldp x29, x30, [sp], #16", "    ret", f".size f{n}, .-f{n}"]
    return body


@pytest.fixture(scope="module")
def large_elf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    gcc = shutil.which(GCC)
    if gcc is None:
        pytest.skip(f"{GCC} not found: run scripts/setup (apt-get install gcc-aarch64-linux-gnu)")
    rng = random.Random(11)
    tmp = tmp_path_factory.mktemp("lint-large")
    src = tmp / "large.S"
    src.write_text("\n".join([".text", *(line for n in range(2000) for line in _function(n, rng))])
                   + "\n")
    out = tmp / "large.o"
    subprocess.run([gcc, "-nostdlib", "-c", str(src), "-o", str(out)], check=True)
    return out


def test_lint_of_a_large_elf_decodes_each_distinct_word_once(
        large_elf: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What made 8 MB of text take minutes was decoding every word on its own:
    capstone must see each distinct word (not PC-relative) once, in batches.
    The time itself is a benchmark (benchmarks/lint_speed.py), not a test."""
    getattr(insn_mod, "_BY_WORD", {}).clear()  # no head start from earlier tests
    seen = {"calls": 0, "words": 0}
    real = capstone.Cs.disasm

    def counting(self: Any, code: bytes, address: int, *args: Any) -> Any:
        seen["calls"] += 1
        seen["words"] += len(code) // 4
        return real(self, code, address, *args)

    monkeypatch.setattr(capstone.Cs, "disasm", counting)
    report = lint_elf(large_elf)
    assert len(report.tlbi_functions) == 2000 and not report.active
    image = ElfImage(large_elf)
    text = b"".join(image.function_bytes(fn) for fn in image.functions)
    words = [int.from_bytes(text[i:i + 4], "little") for i in range(0, len(text) & ~3, 4)]
    distinct = len(set(words))
    assert len(words) > 8 * distinct  # the ELF repeats itself, as a kernel does
    # each distinct word once, and each PC-relative one (its meaning depends on
    # where it is) every time it occurs
    pc_relative = sum(1 for w in words if insn_mod._pc_relative(w))
    assert seen["words"] <= (distinct + pc_relative) * 1.01, (seen, distinct, pc_relative)
    assert seen["calls"] <= seen["words"], seen


def _one_by_one(code: bytes, address: int) -> list[Insn]:
    """The reference: every word decoded on its own, nothing cached."""
    md = capstone.Cs(capstone.CS_ARCH_ARM64, capstone.CS_MODE_ARM)
    md.detail = True
    out = []
    for off in range(0, len(code) & ~3, 4):
        got = [classify(i, off) for i in md.disasm(code[off:off + 4], address + off)]
        out += got or [Insn(offset=off, address=address + off,
                            word=int.from_bytes(code[off:off + 4], "little"),
                            text=f".inst {int.from_bytes(code[off:off + 4], 'little'):#010x}",
                            kind=Kind.STOP)]
    return out


@pytest.mark.parametrize("granule", ["4k", "16k", "64k"])
def test_fast_disassembly_equals_word_by_word_decoding(granule: str) -> None:
    elf = ROOT / "firmware" / "build" / f"shootdown-{granule}.elf"
    if not elf.exists():
        pytest.skip(f"{elf} not built: make -C firmware")
    image = ElfImage(elf)
    insn_mod._BY_WORD.clear()
    for warm in (False, True):  # first filling the cache, then served from it
        for fn in image.functions:
            if fn.data_ranges:
                continue  # literal pools: covered by the data-range test below
            code = image.function_bytes(fn)
            assert disassemble(code, fn.address) == _one_by_one(code, fn.address), \
                (fn.name, warm)


def test_undecodable_words_and_data_become_stops_and_decoding_resumes() -> None:
    nop, bad = (0xD503201F).to_bytes(4, "little"), (0xFFFFFFFF).to_bytes(4, "little")
    code = nop + bad + nop + nop + nop
    insns = disassemble(code, 0x1000, data_ranges=((12, 16),))
    assert [i.kind for i in insns] == [Kind.OTHER, Kind.STOP, Kind.OTHER, Kind.STOP, Kind.OTHER]
    assert [i.address for i in insns] == [0x1000, 0x1004, 0x1008, 0x100C, 0x1010]
    assert insns[3].text == ".word (data)"


# -- progress on a terminal, never in --json or on a pipe ---------------------------

def _run_with_tty_stderr(args: list[str]) -> tuple[int, bytes, bytes]:
    """Run ``args`` with stderr on a pseudo-terminal and stdout on a pipe."""
    import os
    import pty

    master, slave = pty.openpty()
    # a terminal that can draw (TERM=dumb, as under env -i or a bare chroot, gets no bar)
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=slave,
                            stdin=subprocess.DEVNULL, env={**os.environ, "TERM": "xterm"})
    os.close(slave)
    err = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        err += chunk
    assert proc.stdout is not None
    out = proc.stdout.read()
    proc.wait(timeout=120)
    os.close(master)
    return proc.returncode, out, err


def test_lint_shows_progress_on_a_terminal_only(large_elf: Path) -> None:
    exe = str(Path(sys.executable).with_name("shootdown"))
    piped = subprocess.run([exe, "lint", str(large_elf)], capture_output=True, check=False)
    assert piped.stderr == b""  # not a terminal: no bar
    rc, out, err = _run_with_tty_stderr([exe, "lint", str(large_elf)])
    assert (rc, out) == (piped.returncode, piped.stdout)  # stdout untouched
    assert b"lint" in err and b"/2000" in err  # the bar, counting the functions
    rc, out, err = _run_with_tty_stderr([exe, "lint", str(large_elf), "--json"])
    assert rc == 0 and err == b"" and out.startswith(b"{")
