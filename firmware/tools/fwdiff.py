#!/usr/bin/env python3
"""Developer cross-check: the firmware's C policies against the Python golden model.

Until ``shootdown run`` takes scenarios, this throwaway tool runs scenarios
through both sides and compares every step's TLBI/DSB/ISB sequence
instruction by instruction (TLBI runs expanded), and counts PROBEFAIL
records. Scenarios come from TOML files (every policy x feature set x KPTI)
or from a seeded random generator of the scenario language.

    ../.venv/bin/python tools/fwdiff.py files 4k ../docs/examples/*.toml
    ../.venv/bin/python tools/fwdiff.py random 16k 1000 --seed 7
    ../.venv/bin/python tools/fwdiff.py random 4k 200 --inject end_off_by_one
"""

import argparse
import importlib
import os
import random
import re
import select
import subprocess
import sys
import time
import zlib

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "framework"))
from shootdown.errors import ShootdownError
from shootdown.model.expected import expected_sequence
from shootdown.model.instructions import Dsb, Isb
from shootdown.scenario.load import load_scenario, parse_scenario
from shootdown.scenario.types import FlushTlbRangeStep

_low = importlib.import_module("shootdown.scenario.lower")
FIRMWARE = os.path.join(os.path.dirname(__file__), "..", "build")


def to_protocol_lines(scn, scn_id=0, policy=None, inject="none"):
    """The host's lowering, plus the optional level= of flush_tlb_range."""
    lines = _low.to_protocol_lines(scn, scn_id=scn_id, policy=policy, inject=inject)
    steps = {ls.index: ls.step for ls in _low.lower(scn).steps}
    out = []
    for line in lines:
        m = re.match(r"STEP n=(\d+) kind=flush_tlb_range ", line)
        if m:
            st = steps[int(m.group(1))]
            if isinstance(st, FlushTlbRangeStep) and st.level is not None:
                line += f" level={st.level}"
        out.append(line)
    return out


POLS = ["v4.19", "v4.20", "v5.0", "v5.2", "v5.4", "v5.9", "v5.14",
        "v6.8", "v6.9", "v6.10", "v6.13", "v6.19"]


def model_steps(scn, pol, feats, kpti):
    res = expected_sequence(scn, pol, cpu_features=feats, kpti=kpti)
    out = {}
    for r in res:
        seq = []
        for i in r.instructions:
            if isinstance(i, Dsb):
                seq.append(("dsb", i.domain))
            elif isinstance(i, Isb):
                seq.append(("isb",))
            else:
                seq.append(("tlbi", i.op, i.xt))
        out[r.index] = seq
    return out


def run_fw(elf, blocks, timeout=600):
    argv = [
        "qemu-system-aarch64",
        "-M",
        "virt",
        "-cpu",
        "max",
        "-smp",
        "2",
        "-m",
        "1G",
        "-nographic",
        "-monitor",
        "none",
        "-serial",
        "stdio",
        "-kernel",
        elf,
    ]
    p = subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    blocks = [*blocks, ["BYE"]]
    fd = p.stdout.fileno()
    buf = b""
    nb = 0
    recs = []
    t0 = time.time()
    done = False
    while not done and time.time() - t0 < timeout:
        r, _, _ = select.select([fd], [], [], 1)
        if not r:
            continue
        ch = os.read(fd, 1 << 16)
        if not ch:
            break
        buf += ch
        while b"\n" in buf:
            raw, buf = buf.split(b"\n", 1)
            text = raw.decode(errors="replace").rstrip("\r")
            if not text.startswith("SD1 "):
                continue
            body = text.rpartition(" *")[0]
            parts = body.split(" ", 3)
            tag = parts[2]
            pl = parts[3] if len(parts) > 3 else ""
            recs.append((tag, pl))
            if tag == "READY" and nb < len(blocks):
                data = "".join(f"{c} *{zlib.crc32(c.encode()):08x}\n" for c in blocks[nb])
                nb += 1
                p.stdin.write(data.encode())
                p.stdin.flush()
            if tag == "END":
                done = True
    p.kill()
    p.wait()
    return recs, time.time() - t0


def kv(pl):
    return dict(x.split("=", 1) for x in pl.split())


def parse_fw(recs):
    per = {}
    cur = None
    step = None
    for tag, pl in recs:
        if tag == "SCN":
            cur = int(kv(pl)["id"])
            per[cur] = {"steps": {}, "pf": 0}
            step = None
        elif tag == "SKIP":
            per[int(kv(pl)["id"])] = {"skip": kv(pl)["why"]}
        elif tag == "ERR":
            print("ERR", pl)
        elif cur is None:
            continue
        elif tag == "STEP":
            step = int(kv(pl)["n"])
            per[cur]["steps"][step] = []
        elif tag == "DSB":
            per[cur]["steps"][step].append(("dsb", kv(pl)["opt"]))
        elif tag == "ISB":
            per[cur]["steps"][step].append(("isb",))
        elif tag == "TLBI":
            d = kv(pl)
            op = d["op"]
            if "xt" not in d:
                per[cur]["steps"][step].append(("tlbi", op, None))
                continue
            xt = int(d["xt"], 16)
            n = int(d.get("n", 1))
            inc = int(d.get("inc", "0"), 16)
            u = d.get("user") == "1"
            for i in range(n):
                x = (xt + i * inc) & (2**64 - 1)
                per[cur]["steps"][step].append(("tlbi", op, x))
                if u:
                    per[cur]["steps"][step].append(("tlbi", op, x | 1 << 48))
        elif tag == "PROBEFAIL":
            per[cur]["pf"] += 1
        elif tag == "SCNEND":
            cur = None
    return per


def fmt(i):
    return " ".join(str(x) if not isinstance(x, int) else hex(x) for x in i)


def compare(cases, elf, verbose=3, inject="none"):
    blocks = []
    exp = []
    for k, (_name, scn, pol, feats, kpti) in enumerate(cases):
        lines = to_protocol_lines(scn, scn_id=k, policy=pol, inject=inject)
        # override feature/kpti fields in the SCN line
        l0 = re.sub(r"kpti=\d", f"kpti={int(kpti)}", lines[0])
        l0 = re.sub(r"ttl=\d", f"ttl={int('ttl' in feats)}", l0)
        l0 = re.sub(r"tlbirange=\d", f"tlbirange={int('tlbirange' in feats)}", l0)
        blocks.append([l0, *lines[1:]])
        exp.append(model_steps(scn, pol, feats, kpti))
    recs, dt = run_fw(elf, blocks)
    per = parse_fw(recs)
    bad = 0
    skipped = 0
    pf = 0
    shown = 0
    reasons = {}
    for k, (name, _scn, pol, feats, kpti) in enumerate(cases):
        got = per.get(k)
        if got is None:
            print("MISSING", k, name)
            bad += 1
            continue
        if "skip" in got:
            skipped += 1
            reasons[(name, got["skip"])] = reasons.get((name, got["skip"]), 0) + 1
            continue
        pf += got["pf"]
        for idx, seq in exp[k].items():
            g = got["steps"].get(idx, [])
            if g != seq:
                bad += 1
                if shown < verbose:
                    shown += 1
                    j = next(
                        (
                            j
                            for j in range(max(len(g), len(seq)))
                            if j >= len(g) or j >= len(seq) or g[j] != seq[j]
                        ),
                        None,
                    )
                    fw_i = fmt(g[j]) if j < len(g) else "-"
                    model_i = fmt(seq[j]) if j < len(seq) else "-"
                    print(f"DIFF {name} {pol} feats={sorted(feats)} kpti={kpti} step {idx} "
                          f"at {j}: fw={fw_i} model={model_i} (fw {len(g)} model {len(seq)})")
                break
    for k2, v in reasons.items():
        print("SKIP", k2, v)
    print(f"{os.path.basename(elf)}: {len(cases)} cases, {bad} mismatching, {skipped} skipped, "
          f"{pf} probefail records, {dt:.1f}s")
    return bad


def gen(r, gran):
    ps = {"4k": 12, "16k": 14, "64k": 16}[gran]
    P = 1 << ps
    bits = ps - 3
    PMD = 1 << (ps + bits)
    PUD = 1 << (ps + 2 * bits)
    va = r.choice({"4k": [39, 48], "16k": [36, 47, 48], "64k": [42, 48]}[gran])
    top = 1 << va
    d = {
        "granule": gran,
        "va_bits": va,
        "asid": r.randrange(0, 256),
        "kpti": r.random() < 0.5,
        "cpu_features": r.choice([[], ["ttl"], ["tlbirange"], ["ttl", "tlbirange"]]),
        "step": [],
    }
    base = (r.randrange(1, max(2, min(top // PUD, 64))) * PUD) if top > 2 * PUD else PMD
    for _ in range(r.randrange(1, 4)):
        k = r.random()
        if k < 0.45:
            npg = r.choice([1, 3, 7, 64, 300, 511, 512, 513, 1024, 2048, 5000])
            start = base + r.randrange(0, 4) * PMD + r.randrange(0, 8) * P
            end = start + npg * P
            layout = []
            if r.random() < 0.3 and end - start >= 2 * PMD:
                b0 = (start + PMD - 1) & ~(PMD - 1)
                if b0 + PMD <= end:
                    layout = (
                        [{"level": 3, "addr": start, "count": (b0 - start) // P}]
                        if b0 > start
                        else []
                    )
                    layout.append({"level": 2, "addr": b0, "count": 1})
                    if end > b0 + PMD:
                        layout.append(
                            {"level": 3, "addr": b0 + PMD, "count": (end - b0 - PMD) // P}
                        )
            st = {"kind": "munmap", "start": start, "end": end}
            if layout:
                st["layout"] = layout
            if r.random() < 0.5:
                st["floor"] = 0
                st["ceiling"] = 0
            d["step"].append(st)
            base += 8 * PUD if top > 16 * PUD else 0
        elif k < 0.65:
            ops = []
            a = base + r.randrange(0, 8) * PMD
            ops.append({"op": "remove_pte", "addr": a, "count": r.randrange(1, 700)})
            if r.random() < 0.5:
                ops.append({"op": "flush"})
            if r.random() < 0.6:
                ops.append({"op": "free_pte_table", "addr": a & ~(PMD - 1)})
            if r.random() < 0.3:
                ops.append({"op": "free_pmd_table", "addr": a & ~(PUD - 1)})
            d["step"].append({"kind": "gather", "fullmm": r.random() < 0.3, "ops": ops})
        elif k < 0.75:
            s0 = base + r.randrange(0, 100) * P
            d["step"].append(
                {
                    "kind": "flush_tlb_range",
                    "start": s0,
                    "end": s0 + r.randrange(1, 3000) * P,
                    "stride": P,
                    "last_level": r.random() < 0.5,
                }
            )
        elif k < 0.85:
            ks = (2**64 - 2**va) + 0x10000000 + r.randrange(0, 64) * PMD
            d["step"].append(
                {"kind": "flush_tlb_kernel_range", "start": ks, "end": ks + r.randrange(1, 600) * P}
            )
        elif k < 0.92:
            d["step"].append({"kind": "flush_tlb_page", "addr": base + r.randrange(0, 512) * P})
        else:
            d["step"].append({"kind": "flush_tlb_mm"})
    return d


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", choices=["files", "random"])
    ap.add_argument("granule", choices=["4k", "16k", "64k"])
    ap.add_argument("args", nargs="*", help="TOML files, or the number of random scenarios")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--inject", default="none")
    a = ap.parse_args()
    cases = []
    if a.mode == "files":
        for f in a.args:
            try:
                base = load_scenario(f, {"granule": a.granule})
            except ShootdownError as exc:
                print(f"skip {f}: {exc}")
                continue
            for pol in POLS:
                for feats in (
                    frozenset(),
                    frozenset({"ttl", "tlbirange"}),
                    frozenset({"ttl"}),
                    frozenset({"tlbirange"}),
                ):
                    for kpti in (False, True):
                        cases.append((os.path.basename(f), base, pol, feats, kpti))
    else:
        r = random.Random(a.seed)
        n = int(a.args[0]) if a.args else 100
        while len(cases) < n:
            d = gen(r, a.granule)
            try:
                scn = parse_scenario(d, f"rnd{len(cases)}")
                to_protocol_lines(scn, policy="v6.19")
            except ShootdownError:
                continue
            cases.append(
                (f"rnd{len(cases)}", scn, r.choice(POLS), frozenset(d["cpu_features"]), d["kpti"])
            )
    bad = compare(cases, os.path.join(FIRMWARE, f"shootdown-{a.granule}.elf"), inject=a.inject)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
