"""Guest definitions: the shipped ones load; bad ones give one-line errors naming file and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from shootdown.errors import ConfigError
from shootdown.guest.definition import (
    DEFAULT_GUEST,
    Timeouts,
    find_guest,
    guests_dir,
    list_guest_names,
    load_definition,
)

GOOD = """\
name = "{name}"
description = "test guest"
machine = "virt"
cpu = "cortex-a57"
smp = 2
memory = "128M"
accel = "tcg"
firmware = "fw/shootdown-{{granule}}.elf"
extra_args = ["-d", "guest_errors"]

[timeouts]
boot = 3
idle = 1.5
total = 20
"""


def write(tmp_path: Path, text: str, name: str = "t1") -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return path


def test_shipped_guests_load() -> None:
    names = list_guest_names()
    assert {"virt-a57", "virt-a72", "virt-max"} <= set(names)
    assert DEFAULT_GUEST in names
    cpus = {find_guest(n).cpu for n in ("virt-a57", "virt-a72", "virt-max")}
    assert cpus == {"cortex-a57", "cortex-a72", "max"}
    for name in names:
        d = find_guest(name)
        assert d.name == name and d.smp >= 1 and d.host is None
        assert d.firmware_path("4k").endswith("firmware/build/shootdown-4k.elf")
        assert (Path(guests_dir()) / ".." / "firmware").resolve() == \
            Path(d.firmware_path()).parents[1]


def test_good_definition(tmp_path: Path) -> None:
    d = load_definition(write(tmp_path, GOOD.format(name="t1")))
    assert d.firmware_path("16k") == str(tmp_path / "fw" / "shootdown-16k.elf")
    assert d.extra_args == ("-d", "guest_errors")
    assert d.timeouts == Timeouts(boot=3.0, idle=1.5, total=20.0)


def test_defaults(tmp_path: Path) -> None:
    d = load_definition(write(tmp_path, 'name = "t1"\nmachine = "virt"\ncpu = "max"\n'
                                        'firmware = "/abs/fw.elf"\n'))
    assert (d.smp, d.memory, d.accel, d.extra_args, d.host) == (2, "128M", "tcg", (), None)
    assert d.timeouts == Timeouts()
    assert d.firmware_path() == "/abs/fw.elf"


@pytest.mark.parametrize(("edit", "message"), [
    (("smp = 2", 'smp = "two"'), "t1.toml: key 'smp': expected an integer, got a string"),
    (("smp = 2", "smp = true"), "key 'smp': expected an integer, got a boolean"),
    (("smp = 2", "smp = 0"), "key 'smp': expected 1 to 8 CPUs"),
    (("smp = 2", "smpp = 2"), "key 'smpp': unknown key"),
    (('memory = "128M"', "memory = 128"), "key 'memory': expected a string like '128M'"),
    (('memory = "128M"', 'memory = "lots"'), "key 'memory': expected a size"),
    (('cpu = "cortex-a57"', 'cpu = "a57 -bios x"'), "key 'cpu': 'a57 -bios x' is not a single"),
    (('cpu = "cortex-a57"\n', ""), "key 'cpu': missing"),
    (('extra_args = ["-d", "guest_errors"]', "extra_args = [1]"),
     "key 'extra_args': item 0: expected a string, got an integer"),
    (('extra_args = ["-d", "guest_errors"]', 'extra_args = "-d"'),
     "key 'extra_args': expected a list of strings"),
    (("idle = 1.5", "idle = -1"),
     "key 'timeouts.idle': expected a number of seconds in (0, 86400]"),
    (("idle = 1.5", 'idle = "1"'), "key 'timeouts.idle': expected a number of seconds"),
    (("idle = 1.5", "idel = 1"), "key 'timeouts.idel': unknown key"),
    (("total = 20", "total = 1"), "key 'timeouts.total': 1.0 s is shorter than timeouts.boot"),
    (('name = "t1"', 'name = "t2"'), "key 'name': 't2' differs from the file name 't1.toml'"),
    (("fw/shootdown-{granule}", "fw/{cpu}"), "key 'firmware': unknown placeholder {cpu}"),
    (('accel = "tcg"', "host = 3"), "key 'host': expected a string"),
    (("smp = 2", "smp = 2\nsmp = 3"), "not valid TOML"),
])
def test_bad_definition(tmp_path: Path, edit: tuple[str, str], message: str) -> None:
    text = GOOD.format(name="t1")
    assert edit[0] in text
    path = write(tmp_path, text.replace(edit[0], edit[1], 1))
    with pytest.raises(ConfigError) as info:
        load_definition(path)
    assert message in str(info.value)
    assert "\n" not in str(info.value)
    assert "t1.toml" in str(info.value)


def test_host_is_reserved_as_a_string(tmp_path: Path) -> None:
    d = load_definition(write(tmp_path, GOOD.format(name="t1") .replace(
        'accel = "tcg"', 'accel = "tcg"\nhost = "arm64-box"')))
    assert d.host == "arm64-box"


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no-such\.toml: no such guest definition file"):
        load_definition(tmp_path / "no-such.toml")


def test_unknown_guest_names_the_known_ones(tmp_path: Path) -> None:
    write(tmp_path, GOOD.format(name="t1"))
    with pytest.raises(ConfigError, match=r"unknown guest 'nope' \(known in .*: t1\)"):
        find_guest("nope", tmp_path)
    with pytest.raises(ConfigError, match="unknown guest 'T1'"):
        find_guest("T1", tmp_path)


def test_a_path_instead_of_a_name(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.format(name="t1"))
    assert find_guest(str(path)).name == "t1"
    with pytest.raises(ConfigError, match="no such guest definition file"):
        find_guest(str(tmp_path / "t2.toml"))


def test_guests_dir_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, GOOD.format(name="t1"))
    monkeypatch.setenv("SHOOTDOWN_GUESTS", str(tmp_path))
    assert list_guest_names() == ["t1"]
    assert find_guest("t1").cpu == "cortex-a57"
    assert guests_dir("/elsewhere") == "/elsewhere"


def test_bad_granule() -> None:
    with pytest.raises(ConfigError, match="granule '8k'"):
        find_guest("virt-a57").firmware_path("8k")


def test_matrix_files_beside_the_guests_are_not_guests(tmp_path: Path) -> None:
    write(tmp_path, GOOD.format(name="t1"))
    write(tmp_path, 'name = "nightly"\n[[set]]\nname = "clean"\n', name="nightly")
    assert list_guest_names(tmp_path) == ["t1"]
    with pytest.raises(ConfigError, match=r"nightly\.toml: a matrix file"):
        find_guest("nightly", tmp_path)


def test_parsed_toml_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from shootdown.guest.definition import read_toml

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    path = write(tmp_path, GOOD.format(name="t1"))
    assert load_definition(path).cpu == "cortex-a57"
    cache = tmp_path / "cache" / "shootdown" / "parsed-toml.marshal"
    assert cache.is_file()
    assert read_toml(str(path))["cpu"] == "cortex-a57"  # from the cache
    # An edit (new size, new mtime) is seen at once ...
    path.write_text(GOOD.format(name="t1").replace("cortex-a57", "cortex-a72"))
    assert load_definition(path).cpu == "cortex-a72"
    # ... an invalid edit too (only good parses are cached) ...
    path.write_text(GOOD.format(name="t1").replace("smp = 2", "smp = = 2"))
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_definition(path)
    # ... and a damaged cache is ignored, then rewritten.
    path.write_text(GOOD.format(name="t1"))
    cache.write_bytes(b"\x00garbage")
    assert load_definition(path).cpu == "cortex-a57"
    assert read_toml(str(path))["name"] == "t1"


def test_unwritable_cache_is_not_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache directory should be")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    assert load_definition(write(tmp_path, GOOD.format(name="t1"))).name == "t1"
