"""The console record parser: good input parses, damaged input is refused.

Every damage the protocol promises to detect (a flipped byte, a lost line, a
repeated line, a line cut short, a record after END, a wrong END count) is
fed to the parser and must raise ProtocolError; none may be silently dropped.
"""

from __future__ import annotations

import zlib

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from shootdown.errors import ProtocolError
from shootdown.trace.console import (
    RecordParser,
    crc32_hex,
    encode_command,
    parse_console,
    parse_number,
    parse_record,
)


def rec(seq: int, tag: str, payload: str = "") -> bytes:
    """One well-formed record line, with its checksum and newline."""
    body = f"SD1 {seq} {tag}" + (f" {payload}" if payload else "")
    return f"{body} *{zlib.crc32(body.encode()) & 0xFFFFFFFF:08x}\n".encode()


BOOT = [
    rec(0, "BEGIN", "proto=1 fw=shootdown build_id=6e1f00aa granule=4k version=0.1.0"),
    rec(1, "CPU", "midr=0x411fd070 mmfr0=0x1124 mmfr2=0x0 isar0=0x11120 smp=2"),
    rec(2, "MMU", "sctlr=0x30d0199d tcr=0x25b5193519 ttbr1=0x40081000"),
    rec(3, "READY", "n=0"),
    rec(4, "SMOKE", "status=pass pages=4 faulted=1 intact=3"),
    rec(5, "READY", "n=1"),
    rec(6, "END", "records=6 status=ok"),
]


def test_good_boot_parses_with_noise_and_crlf() -> None:
    data = b"stray debug print\r\n" + b"".join(BOOT[:3]) + b"another line\n" \
        + b"".join(line.replace(b"\n", b"\r\n") for line in BOOT[3:])
    parser = RecordParser()
    records = parser.feed(data)
    parser.finish()
    assert [r.tag for r in records] == ["BEGIN", "CPU", "MMU", "READY", "SMOKE", "READY", "END"]
    assert records[0].text("build_id") == "6e1f00aa"
    assert records[1].number("midr") == 0x411FD070
    assert records[1].number("smp") == 2
    assert parser.ended
    assert list(parser.other_lines) == ["stray debug print", "another line"]


def test_bytes_arriving_one_at_a_time() -> None:
    parser = RecordParser()
    got = []
    for byte in b"".join(BOOT):
        got += parser.feed(bytes([byte]))
    parser.finish()
    assert [r.seq for r in got] == list(range(7))


def test_matches_the_protocol_doc_crc() -> None:
    assert crc32_hex(b"SD1 3 READY n=0") == f"{zlib.crc32(b'SD1 3 READY n=0'):08x}"
    assert encode_command("SMOKE") == b"SMOKE *" + crc32_hex(b"SMOKE").encode() + b"\n"
    assert encode_command("DEBUG hang").startswith(b"DEBUG hang *")
    with pytest.raises(ValueError):
        encode_command("PING\nBYE")


def test_empty_payload_record() -> None:
    record = parse_record(rec(7, "PONG").rstrip(b"\n"))
    assert record.tag == "PONG" and record.fields == {}


def flip(line: bytes, index: int) -> bytes:
    return line[:index] + bytes([line[index] ^ 0x01]) + line[index + 1:]


@pytest.mark.parametrize("index", [0, 4, 6, 12, 30, -3])
def test_flipped_byte_is_refused(index: int) -> None:
    damaged = flip(BOOT[1], index if index >= 0 else len(BOOT[1]) - 1 + index)
    with pytest.raises(ProtocolError):
        parse_console(BOOT[0] + damaged + b"".join(BOOT[2:]))


def test_missing_line_is_a_gap() -> None:
    with pytest.raises(ProtocolError, match="missing record"):
        parse_console(b"".join(BOOT[:2] + BOOT[3:]))


def test_duplicate_line_is_a_repeat() -> None:
    with pytest.raises(ProtocolError, match="repeated record"):
        parse_console(b"".join(BOOT[:3] + BOOT[2:]))


def test_line_cut_short_then_next_line() -> None:
    cut = BOOT[3][:12] + b"\n"  # 'SD1 3 READY ' then the line ends
    with pytest.raises(ProtocolError, match=r"malformed or truncated|checksum"):
        parse_console(b"".join(BOOT[:3]) + cut + b"".join(BOOT[4:]))


def test_line_cut_short_at_end_of_output() -> None:
    with pytest.raises(ProtocolError, match="truncated record at end"):
        parse_console(b"".join(BOOT[:6]) + BOOT[6][:20])


def test_checksum_cut_short() -> None:
    with pytest.raises(ProtocolError):
        parse_console(BOOT[0] + BOOT[1][:-3] + b"\n")


def test_first_record_must_be_begin_at_zero() -> None:
    with pytest.raises(ProtocolError, match="first record is not BEGIN"):
        parse_console(rec(0, "READY", "n=0"))
    with pytest.raises(ProtocolError, match="missing record"):
        parse_console(BOOT[1])


def test_end_count_must_match() -> None:
    with pytest.raises(ProtocolError, match="END counts"):
        parse_console(b"".join(BOOT[:6]) + rec(6, "END", "records=5 status=ok"))


def test_record_after_end() -> None:
    with pytest.raises(ProtocolError, match="after END"):
        parse_console(b"".join(BOOT) + rec(7, "READY", "n=2"))


def test_missing_required_key_and_bad_number() -> None:
    with pytest.raises(ProtocolError, match="missing 'esr'"):
        parse_console(BOOT[0] + rec(1, "FAULT", "cpu=0 vector=sync elr=0x1 far=0x2"))
    with pytest.raises(ProtocolError, match="not a number"):
        parse_console(BOOT[0] + rec(1, "READY", "n=zero"))


def test_other_protocol_version_is_refused() -> None:
    with pytest.raises(ProtocolError, match="protocol 2"):
        parse_console(rec(0, "BEGIN", "proto=2 fw=shootdown build_id=00 granule=4k version=9"))


def test_parser_stays_broken_with_the_first_error() -> None:
    parser = RecordParser()
    with pytest.raises(ProtocolError) as first:
        parser.feed(BOOT[0] + BOOT[2])
    with pytest.raises(ProtocolError) as again:
        parser.feed(BOOT[3])
    assert again.value is first.value


def test_endless_record_is_refused() -> None:
    with pytest.raises(ProtocolError, match="longer than"):
        RecordParser().feed(b"SD1 0 BEGIN " + b"x" * 10000)


def test_long_noise_line_is_skipped_not_fatal() -> None:
    parser = RecordParser()
    records = parser.feed(BOOT[0] + b"y" * 5000)
    records += parser.feed(b"y" * 5000 + b"SD1 looks like a record but is mid-line\n" + BOOT[1])
    parser.finish()
    assert [r.seq for r in records] == [0, 1]
    assert parser.other_lines[0].startswith("yyy") and parser.other_lines[0].endswith("...")


def test_error_carries_the_last_console_lines() -> None:
    with pytest.raises(ProtocolError) as info:
        parse_console(b"hello\n" + b"".join(BOOT[:2] + BOOT[3:]))
    assert "hello" in info.value.tail


def test_numbers() -> None:
    assert parse_number("0x1f") == 31
    assert parse_number("17") == 17
    for bad in ("0X1F", "-1", "0x", "1e3", "0x1F"):
        with pytest.raises(ValueError):
            parse_number(bad)


STREAM = b"".join(BOOT)


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_any_damaged_byte_is_detected(data: st.DataObject) -> None:
    """Change any one byte of a boot: the parser refuses it, or END is lost (which the
    running guest reports, as it waits for END)."""
    pos = data.draw(st.integers(0, len(STREAM) - 1))
    assume(STREAM[pos] not in b"\r\n")
    value = data.draw(st.integers(0, 255).filter(lambda v: v != STREAM[pos] and v not in
                                                 b"\r\n"))
    damaged = STREAM[:pos] + bytes([value]) + STREAM[pos + 1:]
    try:
        records = parse_console(damaged)
    except ProtocolError:
        return
    assert STREAM.rfind(b"\n", 0, pos) == STREAM.rfind(b"\n", 0, len(STREAM) - 1)  # last line
    assert not records or records[-1].tag != "END"


@given(st.integers(0, len(STREAM)))
def test_any_truncation_is_detected_or_a_clean_prefix(cut: int) -> None:
    """Cut the console anywhere: a partial record is an error; otherwise the records are
    exactly the complete lines before the cut, and END is there only if it was sent."""
    try:
        records = parse_console(STREAM[:cut])
    except ProtocolError:
        assert not STREAM[:cut].endswith(b"\n")
        return
    complete = STREAM[:cut].count(b"\n")
    assert [r.seq for r in records] == list(range(complete))
    assert (records[-1].tag == "END") == (cut == len(STREAM)) if records else cut < 10
