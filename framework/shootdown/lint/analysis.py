"""The barrier rules, checked on every path of the functions that issue TLBIs.

The analysis is a forward data-flow over each function's instructions (one
node per instruction; functions are small).  Its state is a set of facts,
each carrying the sites that caused it (its *origins*):

==========  ==============================================================
fact        meaning on some path reaching this point
==========  ==============================================================
STORE_NSH   a store no DSB has ordered yet (not even for this CPU's walker)
STORE_ISH   a store not yet ordered for the inner-shareable domain
TLBI_NSH    a local (non-broadcast) TLBI no DSB has completed yet
TLBI_ISH    a broadcast TLBI no DSB ISH/OSH/SY has completed yet
KTLBI_*     the same for an ASID-less (kernel) TLBI, which needs an ISB
ISB_DUE     an ASID-less TLBI completed by a DSB, and no ISB since
==========  ==============================================================

Facts join by union ("on some path"), and every transfer is a gen/kill on
them, so the fixpoint is exact for "there is a path on which ...".

Rules (``docs/lint.md``, spec "The barrier rules"):

1. ``dsb-before-tlbi``: at a TLBI, STORE_ISH (broadcast TLBI) or STORE_NSH
   (local TLBI) must be clear.  Function entry counts as a store: the
   caller may just have written the entry (the kernel's TLBI helpers carry
   their own DSB ISHST since v4.20); ``entry_ordered`` drops that (v4.19).
2. ``dsb-after-tlbi``: at a return, TLBI_* must be clear.
3. ``isb-after-kernel-tlbi``: at a return, ISB_DUE must be clear.

Besides the facts, the state follows a few register values, to prune paths
and to classify stores (see :mod:`shootdown.lint.insn`): ``adrp``/``mov``/
``add`` constants, ``cmp`` with an immediate (so ``b.cond`` on a known value
takes one side only), loads from data objects the configuration *assumes*
(``inject_current = 0``: the firmware's bug injections compiled out, without
building another ELF).  A store through a register derived from a
*bookkeeping* object (the firmware's op log) or through SP/X29 (the stack) is
not a page-table store and does not count for rule 1.

Calls: a ``bl`` to a function of the ELF is analysed in its caller's
context (its *summary*, memoised per entry facts and constant arguments), so
a helper that issues one barrier counts where it is called, and a finding
inside a helper that depends on its caller is reported at the call site.
A call the analysis cannot see into (``blr``, a target outside the ELF, too
deep, recursion) is assumed to store and to issue no barrier: conservative
for rules 1 and 2.  Calls listed as bookkeeping are no-ops.
"""

from __future__ import annotations

import enum
import logging
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from shootdown.elfsyms import ElfImage, Function
from shootdown.lint.insn import CALL_CLOBBERED, SP, ZR, Insn, Kind, disassemble, reg_index
from shootdown.trace.decode import Access, Domain, Dsb, Isb, Tlbi, is_tlbi_word

log = logging.getLogger(__name__)

#: Calls nested deeper than this are opaque (conservative), bounding the work.
MAX_CALL_DEPTH = 8
#: Distinct argument-value summaries kept per callee before arguments are dropped.
MAX_SUMMARIES_PER_FUNCTION = 128
#: Argument values below this are passed into summaries (see :meth:`Analyzer._call`).
SMALL_CONSTANT = 1 << 16


class Fact(enum.IntEnum):
    """The facts of the analysis state (see the module docstring)."""

    STORE_NSH = 0
    STORE_ISH = 1
    TLBI_NSH = 2
    TLBI_ISH = 3
    KTLBI_NSH = 4
    KTLBI_ISH = 5
    ISB_DUE = 6


class Rule(enum.StrEnum):
    """The barrier rules of the spec, as the lint names them."""

    #: Spec rule 1: DSB ISHST (or stronger) between the last store and a TLBI.
    DSB_BEFORE_TLBI = "dsb-before-tlbi"
    #: Spec rule 2: DSB ISH (or SY) after the last TLBI, before returning.
    DSB_AFTER_TLBI = "dsb-after-tlbi"
    #: Spec rule 3: ISB after the DSB that completes a kernel (ASID-less) TLBI.
    ISB_AFTER_KERNEL_TLBI = "isb-after-kernel-tlbi"


@dataclass(frozen=True, order=True)
class Origin:
    """Why a fact holds: the site that set it."""

    #: ``function+0xoff``, or ``entry of function``.
    where: str
    #: What happened there (``store str x1, [x0]``, ``tlbi vale1is, x2``).
    what: str
    #: >= 0: a placeholder for the caller's origins of this fact (summaries).
    entry_fact: int = -1


@dataclass(frozen=True)
class Violation:
    """A rule broken at one instruction, on some path."""

    #: The rule.
    rule: Rule
    #: Function holding the instruction (or the call site, for helpers).
    function: str
    #: Byte offset of the instruction in the function.
    offset: int
    #: The instruction, as disassembled.
    instruction: str
    #: Sites that make the rule fail there.
    origins: frozenset[Origin]
    #: Inner locations when the instruction is a call: the callee's site first.
    via: tuple[str, ...] = ()
    #: A return-time check (rules 2 and 3): a caller may still complete it.
    at_return: bool = False

    @property
    def contextual(self) -> bool:
        """Whether it depends on the caller (entry facts, or pending at return)."""
        return self.at_return or any(o.entry_fact >= 0 for o in self.origins)


@dataclass(frozen=True)
class LintOptions:
    """What the analysis assumes about the program."""

    #: Data objects whose stores are bookkeeping, not page-table updates.
    bookkeeping_objects: frozenset[str] = frozenset()
    #: Functions whose calls are no-ops for the barrier state.
    bookkeeping_calls: frozenset[str] = frozenset()
    #: Data objects read as a fixed value (``inject_current`` -> 0).
    assume: tuple[tuple[str, int], ...] = ()
    #: Function entry counts as ordered (v4.19-era helpers relied on the
    #: DSB ISHST of the set_pmd before them).
    entry_ordered: bool = False


# ---- the abstract state ----------------------------------------------------

Facts = dict[int, frozenset[Origin]]
#: register -> (values, exact?).  Exact: the register holds one of ``values``
#: (a few constants, e.g. the two ops a ``csel`` picks from).  Not exact: a
#: pointer derived from the single address in ``values`` (same data object).
Val = tuple[frozenset[int], bool]
Regs = dict[int, Val]
#: Most constants one register may hold before it counts as unknown.
MAX_VALUES = 8
#: The last ``cmp reg, #imm`` on a known register: (reg, its values, imm, width).
Flags = tuple[int, frozenset[int], int, int]


def _const(value: int) -> Val:
    return (frozenset([value]), True)


def _join_val(a: Val | None, b: Val | None) -> Val | None:
    if a is None or b is None:
        return None
    if a == b:
        return a
    if a[1] and b[1] and len(a[0] | b[0]) <= MAX_VALUES:
        return (a[0] | b[0], True)
    return None


@dataclass
class State:
    """The analysis state before one instruction."""

    facts: Facts = field(default_factory=dict)
    regs: Regs = field(default_factory=dict)
    #: What the last ``cmp`` compared, when the analysis knows (see :data:`Flags`).
    flags: Flags | None = None

    def copy(self) -> State:
        return State(dict(self.facts), dict(self.regs), self.flags)

    def join(self, other: State) -> bool:
        """Merge ``other`` into self; True if self changed."""
        changed = False
        for fact, origins in other.facts.items():
            mine = self.facts.get(fact, frozenset())
            if not origins <= mine:
                self.facts[fact] = mine | origins
                changed = True
        for reg in list(self.regs):
            joined = _join_val(self.regs[reg], other.regs.get(reg))
            if joined != self.regs[reg]:
                if joined is None:
                    del self.regs[reg]
                else:
                    self.regs[reg] = joined
                changed = True
        if self.flags is not None and other.flags != self.flags:
            if other.flags is not None and other.flags[0] == self.flags[0] \
                    and other.flags[2:] == self.flags[2:]:
                merged = self.flags[1] | other.flags[1]
                self.flags = (self.flags[0], merged, self.flags[2], self.flags[3])
            else:
                self.flags = None
            changed = True
        return changed


def _mask(width: int) -> int:
    return (1 << (8 * width)) - 1


def _signed(value: int, width: int) -> int:
    bits = 8 * width
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


def _condition(cond: str, a: int, b: int, width: int) -> bool | None:
    """Whether ``b.<cond>`` is taken after ``cmp a, #b`` at ``width`` bytes."""
    m = _mask(width)
    ua, ub = a & m, b & m
    sa, sb = _signed(a, width), _signed(b, width)
    result = (ua - ub) & m
    table = {
        "eq": ua == ub, "ne": ua != ub,
        "hs": ua >= ub, "cs": ua >= ub, "lo": ua < ub, "cc": ua < ub,
        "hi": ua > ub, "ls": ua <= ub,
        "ge": sa >= sb, "lt": sa < sb, "gt": sa > sb, "le": sa <= sb,
        "mi": bool(result >> (8 * width - 1)), "pl": not result >> (8 * width - 1),
        "al": True, "nv": True,
    }
    return table.get(cond)


@dataclass
class _Result:
    exit_facts: Facts = field(default_factory=dict)
    violations: dict[tuple[Rule, str, int], Violation] = field(default_factory=dict)

    def add(self, v: Violation) -> None:
        key = (v.rule, v.function, v.offset)  # one per site: the first path's via is shown
        old = self.violations.get(key)
        if old is None:
            self.violations[key] = v
        elif not v.origins <= old.origins:
            self.violations[key] = Violation(v.rule, v.function, v.offset, v.instruction,
                                             old.origins | v.origins, old.via, v.at_return)

    def exit(self, facts: Facts) -> None:
        for fact, origins in facts.items():
            self.exit_facts[fact] = self.exit_facts.get(fact, frozenset()) | origins


#: (callee, entry facts, constant arguments) -> one memoised summary.
SummaryKey = tuple[str, frozenset[int], tuple[tuple[int, frozenset[int]], ...]]


class Analyzer:
    """The barrier analysis of one ELF (caches disassembly and summaries)."""

    def __init__(self, image: ElfImage, options: LintOptions,
                 cache: dict[str, list[Insn]] | None = None) -> None:
        self.image = image
        self.options = options
        #: Disassembly per function; shareable between analyses of one image.
        self._insns: dict[str, list[Insn]] = {} if cache is None else cache
        self._summaries: dict[SummaryKey, _Result] = {}
        self._summary_count: dict[str, int] = {}
        self._active: set[SummaryKey] = set()
        self._by_address = {fn.address: fn for fn in image.functions}
        self._clobbers: dict[str, frozenset[int]] = {}
        self._assumed: list[tuple[int, int, int, str]] = []  # (start, size, value, name)
        for name, value in options.assume:
            start, size, _ = image.get_object(name)
            self._assumed.append((start, size, value, name))

    # ---- instructions -------------------------------------------------------

    def instructions(self, fn: Function) -> list[Insn]:
        """The disassembly of ``fn`` (cached)."""
        if fn.name not in self._insns:
            self._insns[fn.name] = disassemble(self.image.function_bytes(fn), fn.address,
                                               fn.data_ranges, where=f"{self.image.path}")
        return self._insns[fn.name]

    # ---- the data-flow ------------------------------------------------------

    def analyse(self, fn: Function, entry: State, root: bool, depth: int = 0) -> _Result:
        """Run the data-flow over ``fn`` from ``entry``.

        ``root``: check rules 2 and 3 at the returns (else they are left in
        the exit facts for the caller).
        """
        insns = self.instructions(fn)
        if not insns:
            return _Result()
        index = {insn.address: k for k, insn in enumerate(insns)}
        leaders = self._leaders(insns, index)
        states: list[State | None] = [None] * len(insns)
        states[0] = entry.copy()
        work: deque[int] = deque([0])
        queued = {0}
        result = _Result()

        def flow(k: int | None, st: State) -> None:
            if k is None or k >= len(insns):
                return  # fell off the end (after a noreturn call): no return to check
            cur = states[k]
            if cur is None:
                states[k] = st
            elif not cur.join(st):
                return
            if k not in queued:
                queued.add(k)
                work.append(k)

        while work:
            k = work.popleft()
            queued.discard(k)
            st = states[k]
            assert st is not None
            insn = insns[k]
            out = st.copy()
            kind = insn.kind
            if kind is Kind.OTHER:  # the common case first, and without a site name
                self._other(insn, out)
                flow(k + 1, out)
                continue
            if kind is Kind.LOAD:
                self._load(insn, out)
                flow(k + 1, out)
                continue
            site = f"{fn.name}+{insn.offset:#x}"
            if kind is Kind.MAINT:
                self._maint(insn, out, site, fn, result)
                flow(k + 1, out)
            elif kind is Kind.STORE:
                self._store(insn, out, site)
                flow(k + 1, out)
            elif kind is Kind.COND:
                taken_state = self._refine(insn, out, True)
                fall_state = self._refine(insn, out, False)
                target = index.get(insn.target) if insn.target is not None else None
                if taken_state is not None:
                    if target is not None:
                        flow(target, taken_state)
                    else:  # conditional tail call
                        self._call(insn, taken_state, site, fn, result, depth)
                        self._return(insn, taken_state, site, fn, result, root)
                if fall_state is not None:
                    flow(k + 1, fall_state)
            elif kind is Kind.BRANCH:
                target = index.get(insn.target) if insn.target is not None else None
                if target is not None:
                    flow(target, out)
                else:  # tail call
                    self._call(insn, out, site, fn, result, depth)
                    self._return(insn, out, site, fn, result, root)
            elif kind in (Kind.CALL, Kind.ICALL):
                self._call(insn, out, site, fn, result, depth)
                flow(k + 1, out)
            elif kind is Kind.IJUMP:
                # A jump table: any block start may follow (documented
                # over-approximation); with none, a tail call through a register.
                targets = [j for j in leaders if j != 0]
                if targets:
                    for j in targets:
                        flow(j, out.copy())
                else:
                    self._call(insn, out, site, fn, result, depth)
                    self._return(insn, out, site, fn, result, root)
            elif kind is Kind.RET:
                self._return(insn, out, site, fn, result, root)
            # Kind.STOP: the path ends.
        return result

    @staticmethod
    def _leaders(insns: list[Insn], index: dict[int, int]) -> list[int]:
        """Indices of block starts: branch targets and instructions after a transfer."""
        leaders = {0}
        for k, insn in enumerate(insns):
            if insn.kind in (Kind.BRANCH, Kind.COND) and insn.target in index:
                leaders.add(index[insn.target])
            if insn.kind in (Kind.BRANCH, Kind.IJUMP, Kind.RET, Kind.STOP) and k + 1 < len(insns):
                leaders.add(k + 1)
        return sorted(leaders)

    # ---- transfer functions -------------------------------------------------

    def _maint(self, insn: Insn, st: State, site: str, fn: Function, result: _Result) -> None:
        m = insn.maint
        facts = st.facts
        if isinstance(m, Tlbi):
            need = Fact.STORE_ISH if m.domain >= Domain.ISH else Fact.STORE_NSH
            if facts.get(need):
                result.add(Violation(Rule.DSB_BEFORE_TLBI, fn.name, insn.offset, insn.text,
                                     facts[need]))
            origin = frozenset([Origin(site, insn.text)])
            broadcast = m.domain >= Domain.ISH
            pending = Fact.TLBI_ISH if broadcast else Fact.TLBI_NSH
            facts[pending] = origin
            if m.asid_less:
                facts[Fact.KTLBI_ISH if broadcast else Fact.KTLBI_NSH] = origin
            # (A repeated TLBI keeps one origin: the latest one is the one to show.)
        elif isinstance(m, Dsb):
            if m.access in (Access.STORE, Access.ALL):
                facts.pop(Fact.STORE_NSH, None)
                if m.domain >= Domain.ISH:
                    facts.pop(Fact.STORE_ISH, None)
            if m.access is Access.ALL:
                completed = [Fact.TLBI_NSH, Fact.KTLBI_NSH]
                if m.domain >= Domain.ISH:
                    completed += [Fact.TLBI_ISH, Fact.KTLBI_ISH]
                for fact in completed:
                    origins = facts.pop(fact, None)
                    if origins and fact in (Fact.KTLBI_NSH, Fact.KTLBI_ISH):
                        facts[Fact.ISB_DUE] = facts.get(Fact.ISB_DUE, frozenset()) | origins
        elif isinstance(m, Isb):
            facts.pop(Fact.ISB_DUE, None)

    def _address(self, st: State, base: int, disp: int) -> int | None:
        known = st.regs.get(base)
        if known is None or len(known[0]) != 1:
            return None
        (value,), exact = known
        return (value + disp) & _mask(8) if exact else value

    def _store(self, insn: Insn, st: State, site: str) -> None:
        assert insn.mem is not None
        base, disp = insn.mem
        target_name = ""
        if base in (SP, 29):
            pass  # the stack (or the frame): never a page table
        else:
            addr = self._address(st, base, disp)
            obj = self.image.object_at(addr) if addr is not None else None
            if obj is not None:
                target_name = obj[2]
            if target_name not in self.options.bookkeeping_objects:
                what = f"store {insn.text}" + (f" (to {target_name})" if target_name else "")
                origin = frozenset([Origin(site, what)])
                st.facts[Fact.STORE_NSH] = origin
                st.facts[Fact.STORE_ISH] = origin
        for reg in insn.writes:
            st.regs.pop(reg, None)

    def _load(self, insn: Insn, st: State) -> None:
        assert insn.mem is not None
        base, disp = insn.mem
        addr = self._address(st, base, disp) if st.regs.get(base, (frozenset(), False))[1] \
            else None
        for reg in insn.writes:
            st.regs.pop(reg, None)
        if addr is None:
            return
        for start, size, value, _name in self._assumed:
            if start <= addr < start + size:
                dest = reg_index(insn.text.split(None, 1)[1].split(",")[0].strip())
                if dest is not None and dest != ZR:
                    st.regs[dest] = _const(value & _mask(insn.width))

    def _other(self, insn: Insn, st: State) -> None:
        effect = insn.effect
        regs = st.regs
        m = _mask(insn.width)

        def get(reg: int) -> Val | None:
            return _const(0) if reg == ZR else (None if reg == SP else regs.get(reg))

        def consts(values: Iterable[int]) -> Val | None:
            out = frozenset(v & m for v in values)
            return (out, True) if len(out) <= MAX_VALUES else None

        new: tuple[int, Val | None] | None = None
        if effect is not None:
            op, rd = effect[0], int(effect[1])
            if op == "set":
                new = (rd, _const(int(effect[2]) & m))
            elif op == "copy":
                src = get(int(effect[2]))
                new = (rd, consts(src[0]) if src is not None and src[1] else src)
            elif op == "addi":
                src = get(int(effect[2]))
                imm = int(effect[3])
                if src is not None and src[1]:
                    src = consts(v + imm for v in src[0])
                new = (rd, src)
            elif op == "derive":
                a, b = get(int(effect[2])), get(int(effect[3]))
                val: Val | None = None
                if a is not None and b is not None and a[1] and b[1]:
                    val = consts(x + y for x in a[0] for y in b[0])
                elif a is not None and len(a[0]) == 1:
                    val = (a[0], False)  # base + unknown offset: same object
                new = (rd, val)
            elif op == "csel":  # csel/csinc rd, rn, rm, cond: one of two values
                a, b = get(int(effect[2])), get(int(effect[3]))
                if effect[4] == "csinc" and b is not None and b[1]:
                    b = consts(v + 1 for v in b[0])
                new = (rd, consts(a[0] | b[0]) if a and b and a[1] and b[1] else None)
            elif op == "cset":
                new = (rd, consts([0, 1]))
            elif op == "cmpi":
                known = get(rd)
                st.flags = ((rd, frozenset(v & m for v in known[0]), int(effect[2]), insn.width)
                            if known is not None and known[1] else None)
        for reg in insn.writes:
            regs.pop(reg, None)
        if new is not None:
            rd, value = new
            if value is None or rd in (SP, ZR):
                regs.pop(rd, None)
            else:
                regs[rd] = value
        if insn.sets_flags:
            st.flags = None

    def _refine(self, insn: Insn, st: State, taken: bool) -> State | None:
        """The state on one side of a conditional branch, or None if that side never runs.

        The compared register keeps only the values that go that way.
        """
        assert insn.cond is not None
        kind = insn.cond[0]
        if kind == "b":
            if st.flags is None:
                return st.copy()
            reg, values, imm, width = st.flags
            keep = frozenset(v for v in values
                             if _condition(str(insn.cond[1]), v, imm, width) in (taken, None))
        else:
            reg = int(insn.cond[1])
            known = _const(0) if reg == ZR else st.regs.get(reg)
            if known is None or not known[1]:
                return st.copy()
            values = known[0]
            if kind in ("cbz", "cbnz"):
                keep = frozenset(v for v in values
                                 if ((v & _mask(insn.width)) == 0) == ((kind == "cbz") == taken))
            else:
                bit = int(insn.cond[2])
                keep = frozenset(v for v in values
                                 if bool(v >> bit & 1) == ((kind == "tbnz") == taken))
        if not keep:
            return None
        out = st.copy()
        if reg not in (ZR, SP) and out.regs.get(reg) == (values, True):
            out.regs[reg] = (keep, True)  # (only if the register still holds what was compared)
        if out.flags is not None and out.flags[0] == reg:
            out.flags = (reg, keep, out.flags[2], out.flags[3])
        return out

    def _opaque_call(self, st: State, site: str, what: str) -> None:
        origin = frozenset([Origin(site, what)])
        st.facts[Fact.STORE_NSH] = st.facts.get(Fact.STORE_NSH, frozenset()) | origin
        st.facts[Fact.STORE_ISH] = st.facts.get(Fact.STORE_ISH, frozenset()) | origin

    def _call(self, insn: Insn, st: State, site: str, fn: Function, result: _Result,
              depth: int) -> None:
        callee = self._by_address.get(insn.target) if insn.target is not None else None
        # Small constants in the argument registers (enum values, flags) steer
        # the callee's branches; large ones (addresses, TLBI operands) rarely
        # do and would make one summary per call site.
        args = tuple((r, st.regs[r][0]) for r in range(8)
                     if r in st.regs and st.regs[r][1] and max(st.regs[r][0]) < SMALL_CONSTANT)
        if callee is not None and callee.name in self.options.bookkeeping_calls:
            for reg in CALL_CLOBBERED:  # not analysed: assume the ABI
                st.regs.pop(reg, None)
            st.flags = None
            return
        # GCC's -fipa-ra keeps values in caller-saved registers across a call
        # to a callee known not to touch them: clobber what the callee writes.
        for reg in (self.clobbers(callee) if callee is not None else CALL_CLOBBERED):
            st.regs.pop(reg, None)
        st.flags = None
        if callee is None:
            self._opaque_call(st, site, f"call {insn.text} (not analysed)")
            return
        if callee.name in self.options.bookkeeping_calls:
            return
        summary = self._summary(callee, st.facts, args, depth + 1)
        if summary is None:
            self._opaque_call(st, site, f"call {callee.name} (not analysed: recursion or depth)")
            return
        caller_facts = st.facts
        st.facts = self._map_facts(summary.exit_facts, caller_facts, site, callee.name)
        for v in summary.violations.values():
            if not v.contextual:
                result.add(v)
                continue
            result.add(Violation(v.rule, fn.name, insn.offset, insn.text,
                                 self._map_origins(v.origins, caller_facts),
                                 via=(f"{v.function}+{v.offset:#x}: {v.instruction}", *v.via)))

    def clobbers(self, fn: Function, depth: int = 0) -> frozenset[int]:
        """Registers ``fn`` (and what it calls) may write, plus the link register."""
        if fn.name in self._clobbers:
            return self._clobbers[fn.name]
        if depth > MAX_CALL_DEPTH:
            return CALL_CLOBBERED
        self._clobbers[fn.name] = CALL_CLOBBERED  # recursion: assume the ABI
        regs: set[int] = {30}
        for insn in self.instructions(fn):
            if insn.kind in (Kind.CALL, Kind.BRANCH, Kind.COND) and insn.target is not None \
                    and not fn.contains(insn.target):
                callee = self._by_address.get(insn.target)
                regs |= self.clobbers(callee, depth + 1) if callee else CALL_CLOBBERED
            elif insn.kind in (Kind.ICALL, Kind.IJUMP):
                regs |= CALL_CLOBBERED
            else:
                regs |= insn.writes
                if insn.effect is not None and insn.effect[0] != "cmpi":
                    regs.add(int(insn.effect[1]))
        # Callee-saved registers (x19..x29) come back as they were (AAPCS64).
        result = frozenset(r for r in regs if r in CALL_CLOBBERED)
        self._clobbers[fn.name] = result
        return result

    @staticmethod
    def _map_origins(origins: Iterable[Origin], caller: Facts) -> frozenset[Origin]:
        out: set[Origin] = set()
        for o in origins:
            if o.entry_fact >= 0:
                out |= caller.get(o.entry_fact, frozenset())
            else:
                out.add(o)
        return frozenset(out)

    def _map_facts(self, exit_facts: Facts, caller: Facts, site: str, callee: str) -> Facts:
        out: Facts = {}
        for fact, origins in exit_facts.items():
            mapped: set[Origin] = set()
            for o in origins:
                if o.entry_fact >= 0:
                    mapped |= caller.get(o.entry_fact, frozenset())
                else:
                    mapped.add(Origin(site, f"call {callee} ({o.where}: {o.what})"))
            if mapped:
                out[fact] = frozenset(mapped)
        return out

    def _summary(self, callee: Function, facts: Facts,
                 args: tuple[tuple[int, frozenset[int]], ...],
                 depth: int) -> _Result | None:
        if depth > MAX_CALL_DEPTH:
            return None
        mask = frozenset(f for f, o in facts.items() if o)
        if self._summary_count.get(callee.name, 0) >= MAX_SUMMARIES_PER_FUNCTION:
            args = ()
        key = (callee.name, mask, args)
        if key in self._summaries:
            return self._summaries[key]
        if key in self._active:
            return None
        self._active.add(key)
        try:
            entry = State(
                facts={f: frozenset([Origin(f"entry of {callee.name}", "caller state", f)])
                       for f in mask},
                regs={r: (v, True) for r, v in args})
            result = self.analyse(callee, entry, root=False, depth=depth)
        finally:
            self._active.discard(key)
        self._summaries[key] = result
        self._summary_count[callee.name] = self._summary_count.get(callee.name, 0) + 1
        return result

    def _return(self, insn: Insn, st: State, site: str, fn: Function, result: _Result,
                root: bool) -> None:
        if not root:
            result.exit(st.facts)
            return
        pending = st.facts.get(Fact.TLBI_ISH, frozenset()) | st.facts.get(Fact.TLBI_NSH,
                                                                           frozenset())
        if pending:
            result.add(Violation(Rule.DSB_AFTER_TLBI, fn.name, insn.offset, insn.text,
                                 pending, at_return=True))
        if st.facts.get(Fact.ISB_DUE):
            result.add(Violation(Rule.ISB_AFTER_KERNEL_TLBI, fn.name, insn.offset, insn.text,
                                 st.facts[Fact.ISB_DUE], at_return=True))

    # ---- the whole ELF ------------------------------------------------------

    def entry_state(self, fn: Function) -> State:
        """The state at the entry of a function checked on its own."""
        if self.options.entry_ordered:
            return State()
        what = "function entry (the caller may just have written a page-table entry)"
        return State(facts={f: frozenset([Origin(f"entry of {fn.name}", what, f)])
                            for f in (Fact.STORE_NSH, Fact.STORE_ISH)})

    def tlbi_functions(self) -> list[Function]:
        """The functions whose body holds a TLBI."""
        return [fn for fn in self.image.functions
                if any(is_tlbi_word(w) for _, w in self.image.iter_words(fn))]

    def callers(self) -> dict[int, set[str]]:
        """Direct callers (``bl``/``b`` from another function) of every address."""
        out: dict[int, set[str]] = {}
        for fn in self.image.functions:
            for offset, word in self.image.iter_words(fn):
                if word & 0x7C000000 != 0x14000000:  # B / BL imm26
                    continue
                imm = word & 0x03FFFFFF
                if imm & 0x02000000:
                    imm -= 1 << 26
                target = fn.address + offset + 4 * imm
                if target in self._by_address and not fn.contains(target):
                    out.setdefault(target, set()).add(fn.name)
        return out

    def run(self, progress: Callable[[int, int], None] | None = None) -> list[Violation]:
        """Every violation, reported where the context is complete.

        A TLBI function is checked on its own; the findings that depend on
        its caller (entry, pending at return) go to its direct callers
        instead, which are then checked in turn, when it has any.
        ``progress(done, total)`` is called as functions are analysed.
        """
        callers = self.callers()
        queue = deque(self.tlbi_functions())
        seen: set[str] = set()
        found: dict[tuple[Rule, str, int], Violation] = {}
        while queue:
            fn = queue.popleft()
            if fn.name in seen:
                continue
            seen.add(fn.name)
            if progress is not None:
                progress(len(seen) - 1, len(seen) + len(queue))
            result = self.analyse(fn, self.entry_state(fn), root=True)
            up = sorted(callers.get(fn.address, set()) - {fn.name})
            deferred = False
            for key, v in result.violations.items():
                if v.contextual and up:
                    deferred = True
                    continue
                old = found.get(key)
                found[key] = v if old is None else Violation(
                    v.rule, v.function, v.offset, v.instruction, old.origins | v.origins,
                    old.via, v.at_return)
            if deferred:
                log.debug("%s: context-dependent findings deferred to %s", fn.name, up)
                queue.extend(self.image.get_function(name) for name in up)
        return sorted(found.values(), key=lambda v: (v.function, v.offset, v.rule))
