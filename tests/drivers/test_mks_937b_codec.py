"""Byte-exact rules of the MKS 937B ``@aaa...;FF`` protocol (docs/protocols.md section 3)."""

from __future__ import annotations

import pytest

from bridge.drivers.mks_937b import codec
from bridge.drivers.mks_937b.codec import FrameKind, Reply
from bridge.errors import ProtocolError
from bridge.model import Quality


def test_queries_and_sets_end_in_semicolon_ff() -> None:
    assert codec.encode(253, "PR1") == b"@253PR1?;FF"
    assert codec.encode(3, "PRZ") == b"@003PRZ?;FF"
    assert codec.encode(1, "U", "TORR") == b"@001U!TORR;FF"
    assert codec.encode(254, "CP1", "ON") == b"@254CP1!ON;FF"


@pytest.mark.parametrize(("address", "command"), [(0, "PR1"), (256, "PR1"), (253, "pr1"), (253, "PR1?")])
def test_bad_requests_are_refused(address: int, command: str) -> None:
    with pytest.raises(ValueError):
        codec.encode(address, command)


@pytest.mark.parametrize(
    ("frame", "reply"),
    [
        (b"@003ACK7.602E+2;FF", Reply(3, True, "7.602E+2")),  # the manual's example
        (b"@253ACK1.10e-9;FF", Reply(253, True, "1.10e-9")),  # pymeasure's test
        (b"@001ACK19200;FF", Reply(1, True, "19200")),
        (b"@253NAK160;FF", Reply(253, False, "160")),
        (b"@253NAK;FF", Reply(253, False, "")),  # 905 manual: no code
        (b"\xff\x00@253ACKTORR;FF", Reply(253, True, "TORR")),  # noise before the frame
        (b"64;F@253ACKON;FF", Reply(253, True, "ON")),  # stale tail: parse from the last @
        (b"@253ACK7.60E-4 LO<E-04 ATM OFF WAIT NOGAUGE;FF", Reply(253, True, "7.60E-4 LO<E-04 ATM OFF WAIT NOGAUGE")),
    ],
)
def test_replies(frame: bytes, reply: Reply) -> None:
    assert codec.parse_reply(frame) == reply


def test_nak_codes() -> None:
    assert codec.parse_reply(b"@253NAK163;FF").nak_code == 163
    assert codec.parse_reply(b"@253NAK;FF").nak_code is None
    assert codec.parse_reply(b"@253ACK1.0E-5;FF").nak_code is None
    assert codec.nak_reason(160) == "NAK160 UNRECOGNIZED_MSG"
    assert codec.nak_reason(152) == "NAK152 NOT_IONGAUGE"
    assert codec.nak_reason(199) == "NAK199 PRESSURE_TOO_HIGH_FOR_DEGAS"
    assert codec.nak_reason(None) == "NAK without code"
    assert codec.nak_reason(123) == "NAK123 unknown code"


@pytest.mark.parametrize(
    "frame",
    [b"64;FF", b"ACK7.60E-4;FF", b"@25ACK1;FF", b"@253XYZ;FF", b"@253NAKabc;FF", b"@253ACK1.0\xff;FF",
     b"@253ACK1.0E-5", b""],
)
def test_bad_frames_are_named(frame: bytes) -> None:
    with pytest.raises(ProtocolError) as info:
        codec.parse_reply(frame)
    assert repr(frame) in str(info.value)


REQUEST = b"@002PR1?;FF"


@pytest.mark.parametrize(
    ("frame", "address", "kind"),
    [
        (b"@002ACK1.00E-6;FF", 2, FrameKind.REPLY),
        (b"@002NAK163;FF", 2, FrameKind.REPLY),
        (REQUEST, 2, FrameKind.ECHO),  # 2-wire adapter
        (b"\x00" + REQUEST, 2, FrameKind.ECHO),
        (b"@001ACK1.00E-6;FF", 2, FrameKind.FOREIGN),  # another unit on the line
        (b"2ACK1.00E-6;FF", 2, FrameKind.FRAGMENT),  # first characters lost
        (b"E-6;FF", 2, FrameKind.FRAGMENT),
        (b"@0;FF", 2, FrameKind.FRAGMENT),
        (b"@001ACK1.00E-6;FF", 254, FrameKind.REPLY),  # universal address: any unit answers
    ],
)
def test_classify(frame: bytes, address: int, kind: FrameKind) -> None:
    request = codec.encode(address, "PR1")
    assert codec.classify(frame, request, address)[0] is kind


def test_classify_returns_the_reply() -> None:
    kind, reply = codec.classify(b"@001ACK5.0E-7;FF", codec.encode(2, "PR1"), 2)
    assert kind is FrameKind.FOREIGN and reply == Reply(1, True, "5.0E-7")


@pytest.mark.parametrize(
    ("text", "value"),
    [("1.10E-9", 1.1e-9), ("1.10e-9", 1.1e-9), ("7.602E+2", 760.2), ("7.60E-08", 7.6e-8), ("1.23", 1.23),
     ("2.00E+0", 2.0), (" 5.0E-5 ", 5e-5), ("-1.5E-3", -1.5e-3)],
)
def test_pressure_numbers(text: str, value: float) -> None:
    m = codec.parse_pressure(text, "Torr")
    assert (m.value, m.quality, m.units, m.detail) == (pytest.approx(value), Quality.OK, "Torr", "")


@pytest.mark.parametrize(
    ("text", "quality"),
    [
        ("LO<E-11", Quality.UNDER_RANGE),
        ("LO<E-04", Quality.UNDER_RANGE),
        ("LO<E-03", Quality.UNDER_RANGE),
        ("LO<E-10", Quality.UNDER_RANGE),  # any LO<...
        ("ATM", Quality.OVER_RANGE),
        (">", Quality.OVER_RANGE),
        (">1.00E+3", Quality.OVER_RANGE),
        ("OFF", Quality.SENSOR_OFF),
        ("RP_OFF", Quality.SENSOR_OFF),
        ("CTRL_OFF", Quality.SENSOR_OFF),
        ("PROT_OFF", Quality.SENSOR_OFF),
        ("WAIT", Quality.NOT_READY),
        ("MISCONN", Quality.SENSOR_ERROR),
        ("NOGAUGE", Quality.NO_SENSOR),
        ("NO_GAUGE", Quality.NO_SENSOR),
    ],
)
def test_status_strings_carry_no_number_and_keep_the_string(text: str, quality: Quality) -> None:
    m = codec.parse_pressure(text, "mbar")
    assert (m.value, m.quality, m.units, m.detail) == (None, quality, "mbar", text)


def test_unknown_status_word_is_invalid_without_number() -> None:
    m = codec.parse_pressure("HV_FAIL", "Torr")
    assert (m.value, m.quality, m.detail) == (None, Quality.INVALID, "unknown status HV_FAIL")


@pytest.mark.parametrize("text", ["", "1.2.3", "\x00\x01", "9E", "1.0E-5;"])
def test_non_pressures_are_protocol_errors(text: str) -> None:
    with pytest.raises(ProtocolError, match="not a pressure"):
        codec.parse_pressure(text, "Torr")


def test_prz_fields() -> None:
    six = codec.parse_all_pressures("7.60E-4 LO<E-04 1.10E-9 PROT_OFF 7.602E+2 NOGAUGE", "Torr")
    assert [m.value for m in six] == [pytest.approx(7.6e-4), None, pytest.approx(1.1e-9), None,
                                      pytest.approx(760.2), None]
    assert [m.quality for m in six] == [Quality.OK, Quality.UNDER_RANGE, Quality.OK, Quality.SENSOR_OFF,
                                        Quality.OK, Quality.NO_SENSOR]
    commas = codec.parse_all_pressures("1.0E-5,2.0E-5, OFF", "Pa")  # [U] separator variant
    assert [m.quality for m in commas] == [Quality.OK, Quality.OK, Quality.SENSOR_OFF]
    with pytest.raises(ProtocolError):
        codec.parse_all_pressures("  ", "Torr")


@pytest.mark.parametrize(
    ("text", "unit"),
    [("TORR", "Torr"), ("MBAR", "mbar"), ("mBAR", "mbar"), ("PASCAL", "Pa"), ("PA", "Pa"), ("MICRON", "mTorr")],
)
def test_units(text: str, unit: str) -> None:
    assert codec.parse_unit(text) == unit


def test_unknown_unit_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="unknown MKS unit 'INCH'"):
        codec.parse_unit("INCH")


def test_text_answers() -> None:
    assert codec.parse_text("937B12345") == "937B12345"
    assert codec.parse_text(" CC,PR,CM ") == "CC,PR,CM"
    with pytest.raises(ProtocolError, match="expected a printable text answer"):
        codec.parse_text("  ")
