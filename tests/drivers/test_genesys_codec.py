"""Byte-exact rules of the Genesys GEN language (docs/protocols.md section 7.3)."""

from __future__ import annotations

import pytest

from bridge.drivers.genesys import codec
from bridge.drivers.genesys.codec import Kind, Quantity
from bridge.errors import ProtocolError
from bridge.model import Quality

MANUAL_STT = "MV(45.201),PV(45),MC(4.3257),PC(10),SR(30),FR(00)"


# ---------------------------------------------------------------- framing


def test_commands_end_in_cr() -> None:
    assert codec.encode("MV?") == b"MV?\r"
    assert codec.encode("ADR 6") == b"ADR 6\r"
    assert codec.address_command(0) == "ADR 0"
    assert codec.address_command(30) == "ADR 30"


def test_checksum_is_the_low_byte_of_the_sum_as_in_the_manual() -> None:
    assert codec.checksum("STT?") == "3A"
    assert codec.checksum("STAT?") == "7B"
    assert codec.encode("STT?", with_checksum=True) == b"STT?$3A\r"
    assert codec.encode("STAT?", with_checksum=True) == b"STAT?$7B\r"
    assert codec.encode("ADR 6", with_checksum=True) == b"ADR 6$2D\r"  # 65+68+82+32+54 = 301 = 0x12D
    assert codec.checksum("OK") == "9A"


@pytest.mark.parametrize("command", ["", "MV?\r", "PV 1$", "IDN?\x08", "P" * 25, "MV°"])
def test_bad_commands_are_refused_before_the_wire(command: str) -> None:
    with pytest.raises(ValueError):
        codec.encode(command)


@pytest.mark.parametrize("address", [-1, 31])
def test_addresses_are_0_to_30(address: int) -> None:
    with pytest.raises(ValueError):
        codec.address_command(address)


@pytest.mark.parametrize(
    ("frame", "kind", "text", "srq"),
    [
        (b"OK\r", Kind.OK, "OK", b""),
        (b"12.000\r", Kind.VALUE, "12.000", b""),
        (b"\n12.000\r", Kind.VALUE, "12.000", b""),  # LF is ignored by the protocol
        (b"12.\x86000\r", Kind.VALUE, "12.000", b"\x86"),  # supply 6's SRQ inside another's reply
        (b"\x80\x9fON\r", Kind.VALUE, "ON", b"\x80\x9f"),  # SRQ bytes of supplies 0 and 31
        (b"\xff\x00CV\r", Kind.VALUE, "CV", b""),  # noise in front of the reply
        (b"C01\r", Kind.ERROR, "C01", b""),
        (b"E07\r", Kind.ERROR, "E07", b""),
        (b"!06\r", Kind.SRQ, "!06", b""),  # an SRQ message outside multi-drop mode
        (b"I12\r", Kind.SRQ, "I12", b""),  # the same as another manual prints it [U]
        (b"\r", Kind.VALUE, "", b""),
        (b"OK$9A\r", Kind.OK, "OK", b""),  # a checksum is checked even when not asked for
    ],
)
def test_frames_are_cleaned_and_classified(frame: bytes, kind: Kind, text: str, srq: bytes) -> None:
    reply = codec.decode(frame)
    assert (reply.kind, reply.text, reply.srq) == (kind, text, srq)


def test_checksum_mode_checks_and_removes_the_checksum() -> None:
    assert codec.decode(b"OK$9A\r", with_checksum=True).text == "OK"
    reply = codec.decode(f"{MANUAL_STT}${codec.checksum(MANUAL_STT)}\r".encode(), with_checksum=True)
    assert reply.text == MANUAL_STT
    assert codec.decode(b"OK$9a\r", with_checksum=True).kind is Kind.OK  # hex in either case
    assert codec.decode(b"C04\r", with_checksum=True).error_code == "C04"  # an error without one [U]
    with pytest.raises(ProtocolError, match=r"checksum \$9B does not match reply 'OK' \(\$9A expected\)"):
        codec.decode(b"OK$9B\r", with_checksum=True)
    with pytest.raises(ProtocolError, match=r"reply without checksum in checksum mode: b'12.000\\r'"):
        codec.decode(b"12.000\r", with_checksum=True)


@pytest.mark.parametrize("frame", [b"12.\xff000\r", b"1\x002\r", b"C\x0101\r"])
def test_noise_inside_a_reply_is_garbled_not_dropped(frame: bytes) -> None:
    with pytest.raises(ProtocolError, match="garbled reply"):
        codec.decode(frame)


def test_error_codes_are_named() -> None:
    assert codec.error_reason("C01") == "C01 illegal command or query"
    assert codec.error_reason("C04") == "C04 checksum error"
    assert codec.error_reason("E07") == "E07 output ON refused during a fault shutdown"
    assert codec.error_reason("C09") == "C09 unknown error code"
    assert codec.decode(b"C03\r").error_code == "C03"
    assert codec.decode(b"OK\r").error_code == ""


# ---------------------------------------------------------------- values


@pytest.mark.parametrize(
    ("quantity", "text", "value", "units"),
    [
        (Quantity.VOLTAGE, "45.201", 45.201, "V"),
        (Quantity.CURRENT, "4.3257", 4.3257, "A"),
        (Quantity.VOLTAGE_SETPOINT, "012.00", 12.0, "V"),  # the exact text PV was sent with
        (Quantity.CURRENT_SETPOINT, "10", 10.0, "A"),
        (Quantity.OVP, "66.000", 66.0, "V"),
        (Quantity.UVL, "0", 0.0, "V"),
        (Quantity.OUTPUT, "ON", True, "1"),
        (Quantity.OUTPUT, "OFF", False, "1"),
        (Quantity.OUTPUT, "1", True, "1"),  # [U]
        (Quantity.MODE, "CV", "CV", "1"),
        (Quantity.MODE, "CC", "CC", "1"),
        (Quantity.MODE, "OFF", "OFF", "1"),
        (Quantity.STATUS, "30", 0x30, "1"),
        (Quantity.FAULT, "1A", 0x1A, "1"),
        (Quantity.FAULT, "ff", 0xFF, "1"),
    ],
)
def test_each_reply_decodes(quantity: Quantity, text: str, value: object, units: str) -> None:
    m = codec.parse_value(quantity, text)
    assert (m.value, m.quality, m.units) == (value, Quality.OK, units)
    assert type(m.value) is type(value)


@pytest.mark.parametrize(
    ("quantity", "text", "message"),
    [
        (Quantity.VOLTAGE, "OK", r"voltage reply 'OK' is not a number"),
        (Quantity.VOLTAGE, "12,5", r"voltage reply '12,5' is not a number"),
        (Quantity.OUTPUT, "YES", r"not an output state \(ON\|OFF\): 'YES'"),
        (Quantity.MODE, "UR", r"not an operation mode \(CV\|CC\|OFF\): 'UR'"),
        (Quantity.STATUS, "130", r"not a register \(two hex digits\): '130'"),
        (Quantity.FAULT, "0x1", r"not a register"),
    ],
)
def test_replies_that_do_not_fit_are_named(quantity: Quantity, text: str, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        codec.parse_value(quantity, text)


def test_stt_the_manual_example() -> None:
    fields = codec.parse_status(MANUAL_STT)
    assert list(fields) == list(codec.STATUS_FIELDS)
    assert {q.value: m.value for q, m in fields.items()} == {
        "voltage": 45.201, "voltage_setpoint": 45.0, "current": 4.3257, "current_setpoint": 10.0,
        "status": 0x30, "fault": 0}
    assert codec.parse_status("MV(1.5), PV(2), MC(0.1), PC(1), SR(05), FR(10)")[Quantity.FAULT].value == 0x10


@pytest.mark.parametrize("text", ["MV(45.201),PV(45),MC(4.3257),PC(10),SR(30)", "45.201,45,4.3257,10,30,00",
                                  "MV(45.201),PV(45),MC(4.3257),PC(10),SR(3G),FR(00)"])
def test_stt_that_does_not_fit_is_named(text: str) -> None:
    with pytest.raises(ProtocolError):
        codec.parse_status(text)


def test_dvc_six_numbers() -> None:
    fields = codec.parse_display("12.003,12.000,1.2001,2.5000,66.000,0.000")
    assert list(fields) == list(codec.DISPLAY_FIELDS)
    assert [m.value for m in fields.values()] == [12.003, 12.0, 1.2001, 2.5, 66.0, 0.0]
    assert [m.units for m in fields.values()] == ["V", "V", "A", "A", "V", "V"]
    with pytest.raises(ProtocolError, match=r"not a DVC\? reply"):
        codec.parse_display("12.003,12.000,1.2001,2.5000,66.000")


def test_register_bits_are_named_as_in_the_manual() -> None:
    assert codec.STATUS_BITS[0] == "constant voltage (CV)" and codec.STATUS_BITS[7] == "local mode (LCL)"
    assert 6 not in codec.STATUS_BITS  # spare
    assert codec.FAULT_BITS[1] == "AC fail (AC)" and codec.FAULT_BITS[4] == "over voltage (OVP)"
    assert codec.FAULT_BITS[3] == "foldback tripped (FLD)" and 0 not in codec.FAULT_BITS
    assert all("," not in name for name in (*codec.STATUS_BITS.values(), *codec.FAULT_BITS.values()))
