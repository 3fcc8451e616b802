"""Byte-exact rules of the IMPAC UPP protocol (docs/protocols.md section 5.1)."""

from __future__ import annotations

import pytest

from bridge.drivers.impac import codec
from bridge.errors import ProtocolError
from bridge.model import Quality


def test_requests_are_address_two_lowercase_letters_param_cr() -> None:
    assert codec.encode_command(0, "ms") == b"00ms\r"
    assert codec.encode_command(1, "ms") == b"01ms\r"
    assert codec.encode_command(97, "ek") == b"97ek\r"
    assert codec.encode_command(99, "na") == b"99na\r"
    assert codec.encode_command(0, "em", "0853") == b"00em0853\r"
    assert codec.show(b"01ms\r") == "01ms"


@pytest.mark.parametrize(("address", "command", "param"),
                         [(-1, "ms", ""), (100, "ms", ""), (0, "MS", ""), (0, "m", ""), (0, "msx", ""),
                          (0, "em", "08\r3")])
def test_bad_requests_are_refused_before_the_wire(address: int, command: str, param: str) -> None:
    with pytest.raises(ValueError):
        codec.encode_command(address, command, param)


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        (b"02563\r", 256.3),  # the manual's example
        (b"00000\r", 0.0),
        (b"12000\r", 1200.0),
        (b"77769\r", 7776.9),  # the last raw value NICOS still takes for a temperature
        (b"\xff\xfe02563\r", 256.3),  # line noise before the data
        (b"\n02563\r", 256.3),  # a stray LF left in front
    ],
)
def test_temperature_is_tenths_of_a_degree(frame: bytes, expected: float) -> None:
    m = codec.parse_temperature(frame, "degC")
    assert (m.value, m.quality, m.units) == (pytest.approx(expected), Quality.OK, "degC")


@pytest.mark.parametrize(
    ("frame", "quality", "detail"),
    [
        (b"77770\r", Quality.NOT_READY, "varies per model"),
        (b"88880\r", Quality.OVER_RANGE, "above the basic range"),
        (b"80000\r", Quality.AIMING_LIGHT, "aiming laser"),
        (b"75550\r", Quality.SENSOR_ERROR, "head too hot"),
        (b"74440\r", Quality.SENSOR_ERROR, "head too cold"),
        (b"77771\r", Quality.INVALID, "unknown special value"),
        (b"99999\r", Quality.INVALID, "unknown special value"),
    ],
)
def test_special_values_carry_no_number(frame: bytes, quality: Quality, detail: str) -> None:
    m = codec.parse_temperature(frame, "degF")
    assert (m.value, m.quality, m.units) == (None, quality, "degF")
    assert detail in m.detail
    assert frame[:5].decode() in m.detail


@pytest.mark.parametrize("frame", [b"2563\r", b"025630\r", b"0256.3\r", b"-0256\r", b"\r", b"no\r", b"ok\r"])
def test_bad_temperature_frames_are_named(frame: bytes) -> None:
    with pytest.raises(ProtocolError) as info:
        codec.parse_temperature(frame, "degC")
    assert repr(frame) in str(info.value)
    assert "8E1" not in str(info.value)


@pytest.mark.parametrize("frame", [b"\x002\x00\x00\x00\r", b"025\xe363\r", b"\x007777\r"])
def test_noise_inside_a_reply_is_an_error_hinting_at_line_settings(frame: bytes) -> None:
    with pytest.raises(ProtocolError, match="8E1") as info:
        codec.parse_temperature(frame, "degC")
    assert repr(frame) in str(info.value)


@pytest.mark.parametrize("frame", [b"0256302570\r", b"02563 02570\r", b"02563,02570\r"])
def test_ratio_reply_two_fields_with_or_without_separator(frame: bytes) -> None:
    one, ratio = codec.parse_ratio(frame, "degC")
    assert (one.value, ratio.value) == (pytest.approx(256.3), pytest.approx(257.0))
    assert one.units == ratio.units == "degC"


def test_ratio_fields_are_decoded_one_by_one() -> None:
    one, ratio = codec.parse_ratio(b"8000008123\r", "degC")
    assert (one.quality, one.value) == (Quality.AIMING_LIGHT, None)
    assert (ratio.quality, ratio.value) == (Quality.OK, pytest.approx(812.3))


@pytest.mark.parametrize("frame", [b"02563\r", b"025630257\r", b"02563  02570\r", b"02563x02570x\r"])
def test_bad_ratio_frames_are_named(frame: bytes) -> None:
    with pytest.raises(ProtocolError, match="two 5-digit"):
        codec.parse_ratio(frame, "degC")


@pytest.mark.parametrize(("frame", "value"), [(b"0970\r", 0.97), (b"1000\r", 1.0), (b"0050\r", 0.05)])
def test_emissivity_is_per_mille(frame: bytes, value: float) -> None:
    m = codec.parse_emissivity(frame)
    assert (m.value, m.quality, m.units) == (pytest.approx(value), Quality.OK, "1")


@pytest.mark.parametrize("frame", [b"970\r", b"1001\r", b"09700\r", b"0.97\r"])
def test_bad_emissivity_frames_are_named(frame: bytes) -> None:
    with pytest.raises(ProtocolError, match="emissivity"):
        codec.parse_emissivity(frame)


def test_emissivity_parameter() -> None:
    assert codec.encode_emissivity(0.853) == "0853"
    assert codec.encode_emissivity(1.0) == "1000"
    for bad in (0.0, 1.2, -0.5):
        with pytest.raises(ValueError):
            codec.encode_emissivity(bad)


def test_exposure_code_and_table() -> None:
    assert codec.parse_exposure_code(b"3\r") == 3
    m = codec.exposure_time(3, codec.DEFAULT_EXPOSURE_TIMES)
    assert (m.value, m.quality, m.units) == (0.25, Quality.OK, "s")
    intrinsic = codec.exposure_time(0, codec.DEFAULT_EXPOSURE_TIMES)
    assert (intrinsic.value, intrinsic.quality) == (None, Quality.INVALID)
    assert "intrinsic" in intrinsic.detail and "differs per model" in intrinsic.detail
    assert codec.exposure_time(0, {0: 0.002}).value == 0.002
    assert codec.exposure_time(7, {}).quality is Quality.INVALID
    with pytest.raises(ProtocolError, match="exposure"):
        codec.parse_exposure_code(b"x\r")


@pytest.mark.parametrize(("frame", "unit"),
                         [(b"0\r", "degC"), (b"1\r", "degF"), (b"C\r", "degC"), (b"F\r", "degF"), (b"f\r", "degF")])
def test_unit_codes(frame: bytes, unit: str) -> None:
    assert codec.parse_unit(frame) == unit


def test_unknown_unit_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match=r"unit code in IMPAC reply b'2\\r'"):
        codec.parse_unit(b"2\r")


def test_refusal_ok_and_echo() -> None:
    assert codec.is_refusal(b"no\r")
    assert codec.is_refusal(b"\xffno\r")
    assert not codec.is_refusal(b"02563\r")
    assert codec.is_echo(b"01ms\r", b"01ms\r")
    assert not codec.is_echo(b"02563\r", b"01ms\r")
    assert codec.setting_accepted(b"ok\r", b"00em0853\r")
    assert codec.setting_accepted(b"00em0853\r", b"00em0853\r")  # the echo form [U]
    assert not codec.setting_accepted(b"00em0850\r", b"00em0853\r")
    assert not codec.setting_accepted(b"no\r", b"00em0853\r")


def test_reply_text_keeps_identity_strings() -> None:
    assert codec.reply_text(b"IGA 12\r") == "IGA 12"
    assert codec.reply_text(b"\x80IGA 12\r") == "IGA 12"


def test_basic_range_and_identity_texts() -> None:
    assert codec.parse_range(b"00FA09C4\r") == (250, 2500)
    assert codec.parse_range(b"0096044c\r") == (150, 1100)
    assert codec.parse_identity_text(b"IGA12 V2.04\r") == "IGA12 V2.04"
    for frame in (b"00FA09C\r", b"00FA09C4X\r", b"\r"):
        with pytest.raises(ProtocolError, match="IMPAC reply"):
            codec.parse_range(frame)
    with pytest.raises(ProtocolError, match="empty reply"):
        codec.parse_identity_text(b" \r")
