"""The generic serial text device as a pure state machine: bytes in, exact bytes out."""

from __future__ import annotations

import pytest

from simulators.instruments.serial_ascii import TextDevice, template_fields
from tests.helpers.memory_link import attach, talk


def test_default_is_a_thermometer() -> None:
    dev = TextDevice()
    link = attach(dev)
    assert talk(dev, link, b"T?\r") == b"T=23.51C\r"
    assert talk(dev, link, b"ID?\r") == b"TT-100 thermometer\r"
    assert dev.commands == ["T?", "ID?"]


def test_commands_cut_anywhere_and_crlf_from_the_host() -> None:
    dev = TextDevice()
    link = attach(dev)
    assert talk(dev, link, b"T") == b""
    assert talk(dev, link, b"?\r\nT?\r\n") == b"T=23.51C\rT=23.51C\r"


def test_values_sources_and_templates() -> None:
    dev = TextDevice({"F?": "FLOW {F:.1f} sccm", "P?": "{P:+.3E}"}, {"F": 12.34, "P": 1.5e-7})
    link = attach(dev)
    assert talk(dev, link, b"F?\rP?\r") == b"FLOW 12.3 sccm\r+1.500E-07\r"
    dev.set_source("F", lambda: 99.0)
    assert talk(dev, link, b"F?\r") == b"FLOW 99.0 sccm\r"
    dev.set_value("F", 1.0)  # pins again
    assert talk(dev, link, b"F?\r") == b"FLOW 1.0 sccm\r"
    dev.set_reply("F?", "FLOW ---- sccm")  # a reading the driver cannot parse
    assert talk(dev, link, b"F?\r") == b"FLOW ---- sccm\r"
    dev.set_reply("F?", None)
    assert talk(dev, link, b"F?\r") == b""


def test_terminators() -> None:
    dev = TextDevice({"R": "{x}"}, {"x": 7}, terminator=b"\n", reply_terminator=b"\r\n")
    link = attach(dev)
    assert talk(dev, link, b"R\n") == b"7\r\n"


def test_unknown_commands_silence_or_error_word() -> None:
    dev = TextDevice()
    link = attach(dev)
    assert talk(dev, link, b"X?\r") == b""
    dev.unknown_reply = "ERR"
    assert talk(dev, link, b"X?\r") == b"ERR\r"


def test_template_naming_an_unset_value_stays_silent() -> None:
    dev = TextDevice({"A?": "{missing}"}, {})
    link = attach(dev)
    assert talk(dev, link, b"A?\r") == b""


def test_bad_template_is_refused_at_once() -> None:
    with pytest.raises(ValueError, match="bad reply template"):
        TextDevice({"A?": "{oops"})
    assert template_fields("T={T:.2f}C H={H}") == {"T", "H"}


def test_faults() -> None:
    dev = TextDevice()
    link = attach(dev)
    dev.echo = True
    assert talk(dev, link, b"T?\r") == b"T?\rT=23.51C\r"
    dev.echo = False
    dev.garbage = b"\xff\x00"
    assert talk(dev, link, b"T?\rT?\r") == b"\xff\x00T=23.51C\rT=23.51C\r"
    dev.silent = True
    assert talk(dev, link, b"T?\r") == b""
    dev.silent = False
    assert talk(dev, link, b"T?\r") == b"T=23.51C\r"


def test_split_replies_on_a_fake_clock() -> None:
    now = [0.0]
    dev = TextDevice()
    link = attach(dev, lambda: now[0])
    dev.split_replies = True
    dev.received(b"T?\r")
    now[0] = 1.0
    link.pump()
    assert link.output == b"T=23.51C\r" and len(link.writes) > 1


def test_delayed_reply_on_a_fake_clock() -> None:
    now = [0.0]
    dev = TextDevice()
    link = attach(dev, lambda: now[0])
    dev.reply_delay = 0.5
    assert talk(dev, link, b"T?\r") == b""
    now[0] = 0.5
    link.pump()
    assert link.take() == b"T=23.51C\r"


def test_overlong_garbage_without_terminator_is_bounded() -> None:
    dev = TextDevice()
    link = attach(dev)
    dev.received(b"x" * 5000)
    assert talk(dev, link, b"\rT?\r") == b"T=23.51C\r"
    assert dev.log[0] == ("rx", b"x" * 5000)
