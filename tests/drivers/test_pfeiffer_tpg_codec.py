"""Byte-exact rules of the Pfeiffer TPG mnemonic protocol (docs/protocols.md section 1)."""

from __future__ import annotations

import pytest

from bridge.drivers.pfeiffer_tpg import codec
from bridge.errors import ProtocolError
from bridge.model import Quality


def test_commands_end_in_cr_only() -> None:
    assert codec.encode_command("PR1") == b"PR1\r"
    assert codec.encode_command("UNI", 1) == b"UNI,1\r"
    assert codec.encode_command("SEN", 0, 2) == b"SEN,0,2\r"


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        (b"0,+1.2300E-07\r\n", 1.23e-7),
        (b"0,-1.0000E+00\r\n", -1.0),
        (b"0, 5.0000E-03\r\n", 5e-3),  # blank sign column (TPG 26x, unconfirmed: tolerated)
        (b"0,7.5000E+02\r\n", 750.0),  # no sign at all
        (b"\xff\xfe0,+1.2300E-07\r\n", 1.23e-7),  # line noise before the data
    ],
)
def test_pressure_values(frame: bytes, expected: float) -> None:
    m = codec.parse_pressure(frame, "mbar")
    assert m.quality is Quality.OK
    assert m.value == pytest.approx(expected)
    assert m.units == "mbar"


@pytest.mark.parametrize(
    ("digit", "quality"),
    [
        (1, Quality.UNDER_RANGE),
        (2, Quality.OVER_RANGE),
        (3, Quality.SENSOR_ERROR),
        (4, Quality.SENSOR_OFF),
        (5, Quality.NO_SENSOR),
        (6, Quality.ID_ERROR),
    ],
)
def test_status_digits_carry_no_number(digit: int, quality: Quality) -> None:
    m = codec.parse_pressure(f"{digit},+2.0000E-02\r\n".encode(), "Torr")
    assert m.quality is quality
    assert m.value is None
    assert m.units == "Torr"


def test_prx_two_and_six_channels() -> None:
    two = codec.parse_all_pressures(b"0,+1.2300E-07,4,+2.0000E-02\r\n", "mbar")
    assert [m.value for m in two] == [pytest.approx(1.23e-7), None]
    assert two[1].quality is Quality.SENSOR_OFF
    six = codec.parse_all_pressures(b",".join([b"0,+1.0000E-03"] * 6) + b"\r\n", "Pa")
    assert len(six) == 6 and all(m.value == pytest.approx(1e-3) for m in six)


@pytest.mark.parametrize(
    "frame",
    [b"7,+1.0000E-03\r\n", b"0,abc\r\n", b"0\r\n", b"0,+1.0E-03,1\r\n", b"x,1\r\n", b"\r\n"],
)
def test_bad_pressure_frames_are_named(frame: bytes) -> None:
    with pytest.raises(ProtocolError) as info:
        codec.parse_pressure(frame, "mbar")
    assert repr(frame)[2:8] in str(info.value) or "frame" in str(info.value)


@pytest.mark.parametrize(("frame", "unit"), [(b"0\r\n", "mbar"), (b"1\r\n", "Torr"), (b"2\r\n", "Pa"),
                                             (b"3\r\n", "mTorr"), (b"4\r\n", "hPa"), (b"5\r\n", "V")])
def test_units(frame: bytes, unit: str) -> None:
    assert codec.parse_unit(frame) == unit


def test_unknown_unit_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="unit"):
        codec.parse_unit(b"9\r\n")


def test_handshake_lines() -> None:
    assert codec.handshake(b"\x06\r\n") == codec.ACK
    assert codec.handshake(b"\x15\r\n") == codec.NAK
    assert codec.handshake(b"\xff\x00\x06\r\n") == codec.ACK  # noise before ACK
    assert codec.handshake(b"E-07,0,+1.2300E-07\x06\r\n") == codec.ACK  # tail of a stream line
    assert codec.handshake(b"0,+1.2300E-07\r\n") is None  # stale stream line
    assert codec.handshake(b"\r\n") is None


def test_error_word() -> None:
    assert codec.decode_error_word(b"0000\r\n") == []
    assert codec.decode_error_word(b"0001\r\n") == ["syntax error"]
    assert codec.decode_error_word(b"1010\r\n") == ["controller error", "inadmissible parameter"]
    assert codec.describe_error_word(b"0100\r\n") == "no hardware"
    assert codec.is_error_word(b"0010\r\n")
    assert not codec.is_error_word(b"0,+1.0000E-03\r\n")
    with pytest.raises(ProtocolError):
        codec.decode_error_word(b"0021\r\n")


def test_ayt_fields_pnr_and_tid() -> None:
    assert codec.parse_ayt(b"TPG362,PTG28290,44990000,010100,010000\r\n") == {
        "model": "TPG362", "part_number": "PTG28290", "serial": "44990000", "firmware": "010100",
        "hardware": "010000"}
    assert codec.parse_ayt(b"TPG361,PTG28280\r\n") == {"model": "TPG361", "part_number": "PTG28280"}
    assert codec.parse_firmware(b"BG5160-A\r\n") == "BG5160-A"
    assert codec.parse_gauge_ids(b"PKR,TPR\r\n") == ["PKR", "TPR"]
    assert codec.parse_gauge_ids(b"IKR9,noSEn,noid,CMR,PKR,TPR\r\n")[1:3] == ["noSEn", "noid"]


@pytest.mark.parametrize(("parse", "frame"), [
    (codec.parse_ayt, b"\r\n"), (codec.parse_ayt, b"a,b,c,d,e,f\r\n"), (codec.parse_firmware, b"\r\n"),
    (codec.parse_gauge_ids, b"PKR,,TPR\r\n")])
def test_bad_identity_frames_are_named(parse: object, frame: bytes) -> None:
    with pytest.raises(ProtocolError, match=repr(frame).replace("\\", "\\\\")):
        parse(frame)  # type: ignore[operator]
