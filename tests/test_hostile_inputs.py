"""A corpus of hostile inputs, each through the real CLI of every subcommand that reads it.

Every input file kind (scenario, kernel workload, matrix, guest definition,
host pool, lint suppressions, matrix results, ELF, kernel symbols) is given
as: bytes that are not UTF-8, TOML/JSON nested past the parsers' recursion,
another file's bytes, an empty file where one is not valid, a folder, a
FIFO (which would block a plain ``open`` forever), a file over the size
limit; and then field by field: huge, infinite and NaN numbers, wrong JSON
shapes, path-escaping names.  Each must end in exactly one line on stderr
naming the file, exit 2 (bad input), no traceback, and within the bound
(a hang fails the test, it does not hang it).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHOOTDOWN = str(Path(sys.executable).with_name("shootdown"))
BASIC = ROOT / "docs" / "examples" / "basic.toml"
ELF = ROOT / "firmware" / "build" / "shootdown-4k.elf"
#: no case may take longer: they are all refused before any guest boots
BOUND_S = 60

RECORD = ('{"job_id":"a","set":"s","guest":"g","granule":"4k","policy":"v4.19",'
          '"inject":"none","outcome":"pass","ok":true,"results":[]}')


def _matrix(scenario: Path) -> str:
    return (f'name = "m"\njob_timeout = 60\n[[set]]\nname = "s"\nguests = ["virt-a57"]\n'
            f'granules = ["4k"]\npolicies = ["v4.19"]\nscenarios = ["{scenario}"]\n'
            'inject = ["none"]\n')


def _guest() -> str:
    return (ROOT / "guests" / "virt-a57.toml").read_text().replace(
        '"../firmware', f'"{ROOT}/firmware')


HOSTS = '[[host]]\nname = "local"\nmax_guests = 2\n'
WORKLOAD = ('target = "kernel"\n[[step]]\nkind = "mmap"\naddr = 0x100000000\nlen = "16K"\n'
            '[[step]]\nkind = "munmap"\naddr = 0x100000000\nlen = "16K"\n')

#: input kind -> (file name, the command that reads it, whether an empty file is bad)
Argv = Callable[[Path, Path], list[str]]
KINDS: dict[str, tuple[str, Argv, bool]] = {
    "scenario (model)": ("s.toml", lambda p, t: ["model", str(p)], True),
    "scenario (run)": ("s.toml", lambda p, t: ["run", str(p), "--guest", "virt-a57",
                                                "--logdir", str(t / "logs")], True),
    "scenario folder (run)": ("dir/s.toml", lambda p, t: ["run", str(p.parent), "--guest",
                                                          "virt-a57", "--logdir",
                                                          str(t / "logs")], True),
    "kernel workload": ("w.toml", lambda p, t: ["kernel", "run", str(p)], True),
    "matrix": ("m.toml", lambda p, t: ["matrix", str(p), "--list", "--out", str(t / "o")], True),
    "guest definition": ("virt-a57.toml", lambda p, t: ["run", str(BASIC), "--guest", str(p)],
                         True),
    "host pool (hosts)": ("h.toml", lambda p, t: ["hosts", "--hosts-file", str(p)], True),
    "host pool (matrix)": ("h.toml", lambda p, t: [
        "matrix", str(ROOT / "guests" / "nightly.toml"), "--list", "--hosts", str(p),
        "--out", str(t / "o")], True),
    "lint suppressions": ("l.toml", lambda p, t: ["lint", str(ELF), "--suppressions", str(p)],
                          False),  # an empty file suppresses nothing: valid
    "matrix results": ("results.jsonl", lambda p, t: ["report", str(p), "--out", str(t / "r")],
                       False),  # empty: "nothing ran", exit 3 (tested in test_report)
    "ELF (lint)": ("x.elf", lambda p, t: ["lint", str(p)], True),
    "kernel symbols": ("System.map", lambda p, t: ["kernel", "run", "--symbols", str(p),
                                                   "--log", str(t / "k.log")], False),
}

#: content variants: name -> bytes
NESTED_TOML = b"a = " + b"[" * 5000 + b"]" * 5000 + b"\n"
CONTENTS: dict[str, bytes] = {
    "not UTF-8": b'name = "\xff\xfe"\n',
    "nested too deeply": NESTED_TOML,
    "another file's bytes": b"\x7fELF\x02\x01\x01" + bytes(range(256)) * 8,
    "empty": b"",
}
#: for kinds that are not TOML
JSON_CONTENTS: dict[str, bytes] = {
    "not UTF-8": b'{"job_id": "\xff"}\n',
    "nested too deeply": b"[" * 100000 + b"\n",
    "another file's bytes": b"\x7fELF\x02\x01\x01\n" + bytes(range(10, 256)) + b"\n",
}
SPECIAL = ("folder", "FIFO", "over the size limit")


def _cases() -> list[tuple[str, str]]:
    out = []
    for kind, (_, _, empty_is_bad) in KINDS.items():
        if kind == "kernel symbols":
            out += [(kind, s) for s in SPECIAL[:2]]  # any bytes are a (bad) System.map
            continue
        contents = JSON_CONTENTS if kind == "matrix results" else CONTENTS
        out += [(kind, c) for c in contents if c != "empty" or empty_is_bad]
        out += [(kind, s) for s in SPECIAL if not (kind == "ELF (lint)" and s == SPECIAL[2])]
    return out


def run_cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, XDG_CACHE_HOME=os.environ.get("XDG_CACHE_HOME", str(cwd / "cache")))
    try:
        return subprocess.run([SHOOTDOWN, *args], capture_output=True, text=True, cwd=cwd,
                              stdin=subprocess.DEVNULL, timeout=BOUND_S, env=env,
                              errors="backslashreplace", check=False)
    except subprocess.TimeoutExpired:
        pytest.fail(f"shootdown {' '.join(args)}: still running after {BOUND_S} s (a hang)")


def assert_bad_input(done: subprocess.CompletedProcess[str], path: Path) -> str:
    """Exit 2, one line on stderr naming ``path``, no traceback; the line."""
    lines = done.stderr.strip().splitlines()
    assert "Traceback" not in done.stderr and "internal error" not in done.stderr, done.stderr
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    assert len(lines) == 1, lines
    assert path.name in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize(("kind", "variant"), _cases())
def test_hostile_file_is_one_line_and_exit_2(kind: str, variant: str, tmp_path: Path) -> None:
    if not ELF.exists():
        pytest.skip(f"{ELF} not built: make -C firmware")
    name, argv, _ = KINDS[kind]
    path = tmp_path / name
    path.parent.mkdir(exist_ok=True)
    if variant == "folder":
        path.mkdir()
    elif variant == "FIFO":
        os.mkfifo(path)
    elif variant == "over the size limit":
        with open(path, "wb") as f:  # sparse: no 64 MiB written
            f.truncate(65 << 20)
    else:
        contents = JSON_CONTENTS if kind == "matrix results" else CONTENTS
        path.write_bytes(contents[variant])
    line = assert_bad_input(run_cli(argv(path, tmp_path), tmp_path), path)
    if variant == "FIFO":
        assert "FIFO" in line
    if variant == "not UTF-8" and kind != "ELF (lint)":
        assert "not UTF-8" in line


# -- field by field -----------------------------------------------------------------

def _field_cases() -> list[tuple[str, str, str, str]]:
    """(id, kind, text, command) with one hostile value each."""
    basic = BASIC.read_text()
    guest = _guest()
    matrix = _matrix(BASIC)
    rec = RECORD
    cases = [
        ("scenario asid huge", "s.toml", basic.replace("asid = 42", "asid = 9" * 30), "model"),
        ("scenario asid inf", "s.toml", basic.replace("asid = 42", "asid = inf"), "model"),
        ("scenario asid nan", "s.toml", basic.replace("asid = 42", "asid = nan"), "model"),
        ("scenario va_bits 1e400", "s.toml", basic.replace("va_bits = 48", "va_bits = 1e400"),
         "model"),
        ("scenario count huge", "s.toml", basic.replace("count = 512", "count = " + "9" * 25),
         "model"),
        ("scenario addr 2^118", "s.toml",
         basic.replace("addr = 0x400000 }", "addr = 0x4" + "0" * 29 + " }"), "model"),
        ("matrix job_timeout inf", "m.toml", matrix.replace("= 60", "= inf"), "matrix"),
        ("matrix job_timeout nan", "m.toml", matrix.replace("= 60", "= nan"), "matrix"),
        ("matrix job_timeout 1e300", "m.toml", matrix.replace("= 60", "= 1e300"), "matrix"),
        ("matrix job_timeout huge int", "m.toml", matrix.replace("= 60", "= " + "9" * 26),
         "matrix"),
        ("matrix name ../../x", "m.toml", matrix.replace('name = "m"', 'name = "../../x"'),
         "matrix"),
        ("matrix name a/b", "m.toml", matrix.replace('name = "m"', 'name = "a/b"'), "matrix"),
        ("matrix set name ../../x", "m.toml", matrix.replace('name = "s"', 'name = "../../x"'),
         "matrix"),
        ("matrix set name escape", "m.toml",
         matrix.replace('name = "s"', 'name = "\\u001b[2J"'), "matrix"),
        ("guest timeouts.idle inf", "virt-a57.toml", guest.replace("idle = 20", "idle = inf"),
         "guest"),
        ("guest timeouts.idle nan", "virt-a57.toml", guest.replace("idle = 20", "idle = nan"),
         "guest"),
        ("guest timeouts.boot 1e300", "virt-a57.toml",
         guest.replace("boot = 10", "boot = 1e300"), "guest"),
        ("guest timeouts.total huge", "virt-a57.toml",
         guest.replace("total = 900", "total = " + "9" * 26), "guest"),
        ("guest smp huge", "virt-a57.toml", guest.replace("smp = 2", "smp = " + "9" * 23),
         "guest"),
        ("guest memory huge", "virt-a57.toml",
         guest.replace('memory = "128M"', 'memory = "' + "9" * 20 + 'T"'), "guest"),
        ("guest name ../../x", "virt-a57.toml",
         guest.replace('name = "virt-a57"', 'name = "../../x"'), "guest"),
        ("guest cpu escape", "virt-a57.toml",
         guest.replace('cpu = "cortex-a57"', 'cpu = "\\u001b[31mred"'), "guest"),
        ("hosts max_guests huge", "h.toml", HOSTS.replace("= 2", "= " + "9" * 23), "hosts"),
        ("hosts max_guests inf", "h.toml", HOSTS.replace("= 2", "= inf"), "hosts"),
        ("hosts max_guests 0", "h.toml", HOSTS.replace("= 2", "= 0"), "hosts"),
        ("hosts none", "h.toml", "# no [[host]]\n", "hosts"),
        ("suppressions offset inf", "l.toml",
         '[[suppress]]\nfunction = "f"\nrule = "*"\nreason = "r"\noffset = inf\n', "lint"),
        ("workload len huge", "w.toml", WORKLOAD.replace('"16K"', '"' + "9" * 30 + 'T"'),
         "workload"),
        ("workload addr inf", "w.toml", WORKLOAD.replace("0x100000000", "inf", 1), "workload"),
        ("results 1e400", "results.jsonl", rec.replace('"ok":true', '"ok":true,"s":1e400'),
         "report"),
        ("results NaN", "results.jsonl", rec.replace('"ok":true', '"ok":true,"s":NaN'),
         "report"),
        ("results a list", "results.jsonl", "[1, 2]", "report"),
        ("results null", "results.jsonl", "null", "report"),
        ("results a string", "results.jsonl", '"x"', "report"),
        ("results job_id int", "results.jsonl", '{"job_id": 3}', "report"),
        ("results no outcome", "results.jsonl", rec.replace('"outcome":"pass",', ""), "report"),
        ("results ok a string", "results.jsonl", rec.replace('"ok":true', '"ok":"yes"'),
         "report"),
        ("results results[0] int", "results.jsonl", rec.replace('"results":[]', '"results":[1]'),
         "report"),
        ("results region_bytes str", "results.jsonl", rec.replace(
            '"results":[]', '"results":[{"region_bytes":"big","verdict":"pass"}]'), "report"),
        ("results counts str", "results.jsonl", rec.replace(
            '"results":[]', '"results":[{"observed_counts":{"tlbi":"x"}}]'), "report"),
        ("results deep value", "results.jsonl", '{"job_id":"a","x":' + "[" * 100000, "report"),
    ]
    return [(i, k, t if not k.endswith(".jsonl") else t + "\n", c) for i, k, t, c in cases]


FIELD_COMMANDS: dict[str, Argv] = {
    "model": lambda p, t: ["model", str(p)],
    "matrix": lambda p, t: ["matrix", str(p), "--list", "--out", str(t / "o")],
    "guest": lambda p, t: ["run", str(BASIC), "--guest", str(p), "--logdir", str(t / "logs")],
    "hosts": lambda p, t: ["hosts", "--hosts-file", str(p)],
    "lint": lambda p, t: ["lint", str(ELF), "--suppressions", str(p)],
    "workload": lambda p, t: ["kernel", "run", str(p)],
    "report": lambda p, t: ["report", str(p), "--out", str(t / "r")],
}


@pytest.mark.parametrize(("case", "name", "text", "command"), _field_cases(),
                         ids=[c[0] for c in _field_cases()])
def test_hostile_value_is_one_line_and_exit_2(case: str, name: str, text: str, command: str,
                                              tmp_path: Path) -> None:
    path = tmp_path / name
    path.write_text(text)
    line = assert_bad_input(run_cli(FIELD_COMMANDS[command](path, tmp_path), tmp_path), path)
    assert "\x1b" not in line  # a terminal escape is shown escaped, never sent


# -- numbers on the command line -------------------------------------------------------

@pytest.mark.parametrize("args", [
    ["kernel", "run", "--timeout", "inf"],
    ["kernel", "run", "--timeout", "nan"],
    ["kernel", "run", "--timeout", "1e300"],
    ["kernel", "run", "--smp", "9" * 14],
    ["kernel", "boot", "--pages", "9" * 17],
    ["kernel", "boot", "--timeout", "-1"],
    ["matrix", str(ROOT / "guests" / "nightly.toml"), "--list", "--workers", "-3"],
], ids=lambda a: " ".join(a[-2:]))
def test_hostile_number_on_the_command_line_is_a_usage_error(args: list[str],
                                                             tmp_path: Path) -> None:
    done = run_cli(args, tmp_path)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert f"argument {args[-2]}" in last, last  # argparse's line naming the option


# -- a bad file beside good ones -------------------------------------------------------

def test_an_undecodable_toml_beside_the_guests_is_named(tmp_path: Path) -> None:
    """One undecodable .toml in the guests folder a matrix uses: the listing names it,
    and the matrix (which names only good guests) still expands."""
    gdir = tmp_path / "guests"
    gdir.mkdir()
    (gdir / "virt-a57.toml").write_text(_guest())
    bad = gdir / "broken.toml"
    bad.write_bytes(b'name = "\xff"\n')
    done = run_cli(["guests", "--guests-dir", str(gdir)], tmp_path)
    assert_bad_input(done, bad)
    matrix = tmp_path / "m.toml"
    matrix.write_text(_matrix(BASIC).replace("job_timeout", f'guests_dir = "{gdir}"\njob_timeout'))
    listed = run_cli(["matrix", str(matrix), "--list", "--out", str(tmp_path / "o")], tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.strip().endswith("1 jobs")


def test_a_matrix_runs_beside_an_undecodable_toml(tmp_path: Path) -> None:
    """The matrix file's folder holds a .toml that is not UTF-8: the matrix still runs
    its job (it once ran nothing, with no reason given)."""
    if not ELF.exists():
        pytest.skip(f"{ELF} not built: make -C firmware")
    matrix = tmp_path / "m.toml"
    matrix.write_text(_matrix(BASIC))
    (tmp_path / "broken.toml").write_bytes(b'name = "\xff"\n')
    done = run_cli(["matrix", str(matrix), "--out", str(tmp_path / "o"), "--workers", "1",
                    "--no-progress"], tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "1/1 jobs (1 pass)" in done.stdout
