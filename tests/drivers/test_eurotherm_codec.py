"""Eurotherm specifics: address maps, the IEEE region, display-resolution integers, the status word.

Register payloads are those of the literal RTU frames in docs/protocols.md 6.3.
"""

from __future__ import annotations

import pytest

from bridge.drivers.common.modbus_codec import Span
from bridge.drivers.eurotherm import codec
from bridge.model import Quality


def test_ieee_region_addresses() -> None:
    # docs/protocols.md 6.3: PV -> 0x8002, OP -> 0x8006, wSP -> 0x800A
    assert codec.ieee_address(codec.PV) == 0x8002
    assert codec.ieee_address(3) == 0x8006
    assert codec.ieee_address(codec.WORKING_SETPOINT) == 0x800A
    assert codec.ieee_address(codec.STATUS_WORD) == 0x8096
    with pytest.raises(ValueError):
        codec.ieee_address(0x4000)


def test_loop_two_of_a_3504_is_loop_one_plus_1024() -> None:
    assert codec.loop_address(codec.PV, 2) == 1025
    assert codec.loop_address(codec.WORKING_SETPOINT, 2) == 1029
    assert codec.loop_address(3, 1) == 3
    assert codec.ieee_address(codec.loop_address(codec.PV, 2)) == 0x8802
    with pytest.raises(ValueError):
        codec.loop_address(1, 3)


def test_family_maps_differ_in_the_output_power_address() -> None:
    assert codec.FAMILIES["2400"].output_power == 3
    assert codec.FAMILIES["3200"].output_power == 4  # its address 3 is MAN.OP (manual output)
    assert codec.FAMILIES["3200"].output_mnemonic == "WRK.OP"
    assert codec.FAMILIES["3500"].output_power == 3
    assert [f.loops for f in codec.FAMILIES.values()] == [1, 1, 2]


def test_value_spans() -> None:
    assert codec.value_span(1, use_ieee=True) == Span("holding", 0x8002, 2)
    assert codec.value_span(1, use_ieee=False) == Span("holding", 1, 1)


def test_pv_frames_of_protocols_md() -> None:
    # read PV (int):   01 03 00 01 00 01 D5 CA -> 01 03 02 09 29 7F CA  (234.5 with 1 dp)
    assert codec.decode_value([0x0929], use_ieee=False, decimals=1) == pytest.approx(234.5)
    # read PV (float): 01 03 80 02 00 02 4C 0B -> 01 03 04 43 6A 80 00 AE 6B  (234.5)
    assert codec.decode_value([0x436A, 0x8000], use_ieee=True) == 234.5
    assert codec.encode_value(234.5, use_ieee=True) == [0x436A, 0x8000]
    assert codec.encode_value(234.5, use_ieee=False, decimals=1) == [0x0929]


def test_integers_are_signed_and_scaled_by_the_display_resolution() -> None:
    assert codec.decode_value([0xFF06], use_ieee=False, decimals=1) == pytest.approx(-25.0)
    assert codec.decode_value([0x0929], use_ieee=False, decimals=2) == pytest.approx(23.45)
    assert codec.decode_value([0x0929], use_ieee=False, decimals=0) == 2345
    assert codec.encode_value(-25.0, use_ieee=False, decimals=1) == [0xFF06]


def test_status_flags_are_named_low_bit_first() -> None:
    assert codec.status_word([0x0421]) == 0x0421
    assert codec.status_flags(0b100001) == ["alarm 1", "sensor break"]
    assert codec.status_flags(1 << 10 | 1 << 6) == ["loop break", "PV out of range"]
    assert codec.status_flags(1 << 11 | 1 << 15) == ["status bit 11", "status bit 15"]
    assert codec.status_flags(0x0421, skip=(5, 10)) == ["alarm 1"]
    assert codec.status_flags(0) == []


def test_pv_with_a_clear_status_word_is_the_value() -> None:
    m = codec.pv_measurement(234.5, 0, "degC", at=5.0)
    assert (m.value, m.quality, m.units, m.detail, m.at) == (234.5, Quality.OK, "degC", "", 5.0)


def test_sensor_break_is_a_sensor_error_without_a_number() -> None:
    m = codec.pv_measurement(234.5, 1 << 5, "degC")
    assert (m.value, m.quality, m.detail) == (None, Quality.SENSOR_ERROR, "sensor break")
    both = codec.pv_measurement(234.5, 1 << 5 | 1 << 10 | 1 << 7, "degC")
    assert (both.quality, both.detail) == (Quality.SENSOR_ERROR, "sensor break; PV out of range; heater fail")


def test_pv_out_of_range_is_invalid_without_a_number() -> None:
    m = codec.pv_measurement(1500.0, 1 << 10, "degC")
    assert (m.value, m.quality, m.detail) == (None, Quality.INVALID, "PV out of range")


def test_other_status_bits_go_into_the_detail_of_a_good_pv() -> None:
    m = codec.pv_measurement(100.0, 1 << 0 | 1 << 13, "degC")
    assert (m.value, m.quality, m.detail) == (100.0, Quality.OK, "alarm 1, timer/ramp running")


def test_nan_pv_is_invalid() -> None:
    m = codec.pv_measurement(float("nan"), 0, "degC")
    assert (m.value, m.quality) == (None, Quality.INVALID)


def test_setpoint_and_power_keep_their_value_and_name_the_status() -> None:
    m = codec.plain_measurement(0.0, 1 << 5, "%", at=1.0)
    assert (m.value, m.quality, m.detail, m.at) == (0.0, Quality.OK, "sensor break", 1.0)
    assert codec.plain_measurement(150.0, None, "degC").detail == ""


def test_identity_and_version_registers_as_the_controller_shows_them() -> None:
    assert codec.identity_text([0x2480]) == "2480"
    assert codec.identity_text([0x3216]) == "3216"
    assert codec.version_text([0x0111]) == "1.11"
    assert codec.version_text([0x020A]) == "2.0A"
    assert (codec.INSTRUMENT_IDENTITY, codec.INSTRUMENT_VERSION,
            codec.SETPOINT_HIGH_LIMIT, codec.SETPOINT_LOW_LIMIT) == (122, 107, 111, 112)
