"""The console protocol, version 1 (``docs/protocol.md``): records in, commands out.

:class:`RecordParser` turns the guest's console bytes into :class:`Record`
objects as they arrive and refuses anything that would let a lost or damaged
record pass unnoticed:

* a line starting with ``SD1 `` whose checksum does not match, whose shape is
  wrong (a line cut short by a lost byte looks like that), or whose sequence
  number is not exactly the next one (a gap: a record was lost; a repeat: a
  line was duplicated) raises :class:`~shootdown.errors.ProtocolError`;
* the first record must be ``BEGIN`` with sequence number 0; ``END``'s
  ``records`` must equal its own sequence number; nothing may follow ``END``;
* a known tag missing a required key, or with a number that does not parse,
  is a protocol error too;
* at end of input a pending partial record is a truncated record.

Lines that do not start with ``SD1 `` are not records: they are kept in
:attr:`RecordParser.other_lines` (for the "last console lines" of a report)
and otherwise ignored.

:func:`encode_command` frames a host-to-guest command with its checksum.
"""

from __future__ import annotations

import re
import zlib
from collections import deque
from dataclasses import dataclass, field
from typing import Any, NoReturn

from shootdown.errors import ProtocolError

#: The record marker and protocol version every record starts with.
MARKER = b"SD1 "
#: The protocol version this parser speaks (BEGIN's ``proto=``).
PROTOCOL_VERSION = 1
#: A record longer than this is refused (the firmware's are far shorter); a
#: longer line that is not a record is kept in part and otherwise skipped, so
#: that an endless line without a newline cannot grow the buffer without bound.
MAX_LINE = 4096

#: Keys a record of a known tag must carry.  Tags not listed are accepted with
#: any payload (scenario records are checked by their own readers).
REQUIRED_KEYS: dict[str, tuple[str, ...]] = {
    "BEGIN": ("proto", "fw", "build_id", "granule", "version"),
    "CPU": ("midr", "smp"),
    "MMU": ("sctlr", "tcr"),
    "READY": ("n",),
    "PONG": (),
    "ERR": ("cmd", "why"),
    "FAULT": ("cpu", "vector", "esr", "elr", "far"),
    "SMOKE": ("status",),
    "END": ("records", "status"),
}

_RECORD_RE = re.compile(
    rb"SD1 (0|[1-9][0-9]*) ([A-Z][A-Z0-9_]*)((?: [a-z_][a-z0-9_]*=[\x21-\x7e]+)*) \*([0-9a-f]{8})"
)
#: Keys whose values must be numbers, checked on arrival.
_NUMERIC_KEYS: dict[str, tuple[str, ...]] = {
    "CPU": ("midr", "smp"),
    "MMU": ("sctlr", "tcr"),
    "READY": ("n",),
    "FAULT": ("cpu", "esr", "elr", "far"),
    "END": ("records",),
}
_NUMBER_RE = re.compile(r"0x[0-9a-f]+|[0-9]+")
_TAIL_LINES = 20


def crc32_hex(data: bytes) -> str:
    """The protocol's checksum: CRC-32 (zlib's) as 8 lower-case hex digits."""
    return f"{zlib.crc32(data) & 0xFFFFFFFF:08x}"


def encode_command(line: str) -> bytes:
    """Frame one host-to-guest command: ``<line> *<crc>\\n``.

    >>> encode_command("PING")
    b'PING *...\\n'  # doctest: +SKIP
    """
    if "\n" in line or "\r" in line or " *" in line or not line.strip():
        raise ValueError(f"not a single command line: {line!r}")
    raw = line.strip().encode("ascii")
    return raw + b" *" + crc32_hex(raw).encode("ascii") + b"\n"


def parse_number(text: str) -> int:
    """Parse a protocol number: decimal or ``0x``-prefixed lower-case hex."""
    if not _NUMBER_RE.fullmatch(text):
        raise ValueError(f"not a protocol number: {text!r}")
    return int(text, 16) if text.startswith("0x") else int(text)


@dataclass(frozen=True)
class Record:
    """One validated record from the guest."""

    #: Sequence number: 0 for BEGIN, then +1 per record.
    seq: int
    #: Record type, upper case (``BEGIN``, ``READY``, ``FAULT``, ...).
    tag: str
    #: The payload's ``key=value`` tokens, in the order printed.
    fields: dict[str, str] = field(hash=False)
    #: The line as received, without its line ending.
    line: str

    def get(self, key: str, default: str | None = None) -> str | None:
        """A payload value as text, or ``default``."""
        return self.fields.get(key, default)

    def text(self, key: str) -> str:
        """A payload value as text; a missing key is a protocol error."""
        try:
            return self.fields[key]
        except KeyError:
            raise ProtocolError(f"record {self.seq} {self.tag}: no '{key}' in {self.line!r}") \
                from None

    def number(self, key: str) -> int:
        """A payload value as an integer (decimal or ``0x`` hex)."""
        value = self.text(key)
        try:
            return parse_number(value)
        except ValueError:
            raise ProtocolError(f"record {self.seq} {self.tag}: '{key}={value}' is not "
                                f"a number") from None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form: ``{"seq", "tag", "fields", "line"}``."""
        return {"seq": self.seq, "tag": self.tag, "fields": dict(self.fields), "line": self.line}


def parse_record(line: bytes) -> Record:
    """Check one complete ``SD1`` line (no line ending) and return its record.

    Checks shape and checksum only; sequence numbers need the previous
    records and are checked by :class:`RecordParser`.
    """
    shown = line.decode("ascii", "backslashreplace")
    m = _RECORD_RE.fullmatch(line)
    if m is None:
        star = line.rfind(b" *")
        if star > 0 and crc32_hex(line[:star]).encode() != line[star + 2:]:
            raise ProtocolError(f"bad checksum (or truncated record): {shown!r}")
        raise ProtocolError(f"malformed or truncated record: {shown!r}")
    star = line.rfind(b" *")
    expected = crc32_hex(line[:star])
    if expected.encode() != m.group(4):
        raise ProtocolError(f"bad checksum: {shown!r} (computed {expected})")
    seq = int(m.group(1))
    tag = m.group(2).decode()
    fields: dict[str, str] = {}
    for token in m.group(3).decode().split():
        key, _, value = token.partition("=")
        if key in fields:
            raise ProtocolError(f"record {seq} {tag}: key '{key}' repeated: {shown!r}")
        fields[key] = value
    for key in REQUIRED_KEYS.get(tag, ()):
        if key not in fields:
            raise ProtocolError(f"record {seq} {tag}: missing '{key}': {shown!r}")
    return Record(seq=seq, tag=tag, fields=fields, line=shown)


class RecordParser:
    """Incremental parser: feed console bytes, get validated records.

    One parser reads one boot.  After a :class:`ProtocolError` the parser is
    broken and re-raises the first error on every further call, so a caller
    that catches and continues cannot lose the cause.
    """

    def __init__(self) -> None:
        self._buf = b""
        self._next_seq = 0
        self._ended = False
        self._skipping = False
        self._error: ProtocolError | None = None
        #: Every record accepted so far, in order.
        self.records: list[Record] = []
        #: The last console lines that were not records (for reports).
        self.other_lines: deque[str] = deque(maxlen=_TAIL_LINES)
        #: The last console lines of any kind, records included.
        self.tail: deque[str] = deque(maxlen=_TAIL_LINES)

    @property
    def ended(self) -> bool:
        """Whether the ``END`` record has been seen."""
        return self._ended

    def feed(self, data: bytes) -> list[Record]:
        """Add console bytes; return the records completed by them."""
        if self._error is not None:
            raise self._error
        self._buf += data
        out: list[Record] = []
        while True:
            nl = self._buf.find(b"\n")
            if nl < 0:
                break
            line, self._buf = self._buf[:nl], self._buf[nl + 1:]
            if self._skipping:  # the end of an over-long line that is not a record
                self._skipping = False
                continue
            record = self._line(line.removesuffix(b"\r"))
            if record is not None:
                out.append(record)
        if len(self._buf) > MAX_LINE:
            if self._buf.startswith(MARKER):
                partial = self._buf[:60].decode("ascii", "backslashreplace")
                self._fail(f"record longer than {MAX_LINE} bytes: {partial!r}...")
            if not self._skipping:  # keep its start for the report, drop the rest
                self._keep(self._buf[:200] + b"...")
                self._skipping = True
            self._buf = b""
        return out

    def finish(self) -> None:
        """Declare the end of input: a pending partial record is a truncated one."""
        if self._error is not None:
            raise self._error
        partial, self._buf = self._buf.removesuffix(b"\r"), b""
        if self._skipping:
            return
        if partial.startswith(MARKER) or (partial and MARKER.startswith(partial)):
            shown = partial.decode("ascii", "backslashreplace")
            self._fail(f"truncated record at end of console output: {shown!r}")
        if partial:
            self._keep(partial)

    def _keep(self, line: bytes) -> None:
        text = line.decode("utf-8", "backslashreplace")
        self.other_lines.append(text)
        self.tail.append(text)

    def _fail(self, message: str) -> NoReturn:
        self._error = ProtocolError(message, tail=list(self.tail))
        raise self._error

    def _line(self, line: bytes) -> Record | None:
        if not line.startswith(MARKER):
            self._keep(line)
            return None
        try:
            record = parse_record(line)
            self._check_values(record)
        except ProtocolError as exc:
            self._fail(str(exc))
        self.tail.append(record.line)
        if self._ended:
            self._fail(f"record after END: {record.line!r}")
        if record.seq != self._next_seq:
            kind = "repeated" if record.seq < self._next_seq else "missing"
            self._fail(f"sequence error ({kind} record): expected {self._next_seq}, "
                       f"got {record.line!r}")
        if record.seq == 0 and record.tag != "BEGIN":
            self._fail(f"first record is not BEGIN: {record.line!r}")
        if record.tag == "BEGIN" and record.seq != 0:
            self._fail(f"BEGIN in the middle of a boot: {record.line!r}")
        self._next_seq += 1
        self.records.append(record)
        if record.tag == "END":
            self._ended = True
        return record

    @staticmethod
    def _check_values(record: Record) -> None:
        """Checks of one record on its own: numbers parse, versions match."""
        if record.tag == "BEGIN":
            proto = record.number("proto")
            if proto != PROTOCOL_VERSION:
                raise ProtocolError(f"guest speaks console protocol {proto}, this host "
                                    f"speaks {PROTOCOL_VERSION}: {record.line!r}")
        for key in _NUMERIC_KEYS.get(record.tag, ()):
            record.number(key)
        if record.tag == "END" and record.number("records") != record.seq:
            raise ProtocolError(f"END counts {record.number('records')} records but is "
                                f"record {record.seq}: {record.line!r}")


def parse_console(data: bytes) -> list[Record]:
    """Parse a whole console capture (a log file's bytes) in one go."""
    parser = RecordParser()
    records = parser.feed(data)
    parser.finish()
    return records
