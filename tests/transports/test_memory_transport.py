"""The in-memory transports and the conversation-table helper: exact, instant, and strict about
what the table did not foresee."""

from __future__ import annotations

import time

import pytest

from bridge.errors import DeviceError, ProtocolError, TransportDisconnected, TransportTimeout
from bridge.transports.memory import MemorySerialTransport, ModbusRequest, Refusal
from tests.helpers.conversation import modbus_conversation, serial_conversation, visa_conversation


def test_replies_are_framed_by_the_real_serial_transport() -> None:
    with serial_conversation((b"A?\r", b"1\r2"), (b"B?\r", b"\r")) as line:
        line.write(b"A?\r")
        assert line.read_until(b"\r") == b"1\r"
        line.write(b"B?\r")
        assert line.read_until(b"\r") == b"2\r"  # the rest of a reply waits for the next read


def test_silence_times_out_at_once() -> None:
    with serial_conversation((b"A?\r", b""), timeout=5.0) as line:
        line.write(b"A?\r")
        started = time.monotonic()
        with pytest.raises(TransportTimeout, match=r"^inst: no reply ending in b'\\r' from memory://"):
            line.read_until(b"\r")
        assert time.monotonic() - started < 1.0


def test_an_unexpected_byte_fails_naming_the_row() -> None:
    with (
        pytest.raises(AssertionError, match=r"row 1: expected b'A\?\\r', the driver sent b'A!\\r'"),
        serial_conversation((b"A?\r", b"1\r")) as line,
    ):
        line.write(b"A!\r")


def test_a_request_after_the_last_row_fails() -> None:
    with (
        pytest.raises(AssertionError, match=r"unexpected request after the table's 1 rows: b'A\?\\r'"),
        serial_conversation((b"A?\r", b"1\r")) as line,
    ):
        line.write(b"A?\r")
        line.read_until(b"\r")
        line.write(b"A?\r")


def test_an_unused_row_fails() -> None:
    with (
        pytest.raises(AssertionError, match=r"1 row\(s\) never reached, from row 2"),
        serial_conversation((b"A?\r", b"1\r"), (b"B?\r", b"2\r")) as line,
    ):
        line.write(b"A?\r")
        line.read_until(b"\r")


def test_an_unread_reply_fails_but_a_dropped_one_does_not() -> None:
    with (
        pytest.raises(AssertionError, match=r"replies the driver never read: b'1\\r'"),
        serial_conversation((b"A?\r", b"1\r")) as line,
    ):
        line.write(b"A?\r")
    with serial_conversation((b"A?\r", b"1\r")) as line:
        line.write(b"A?\r")
        assert line.flush_input() == b"1\r"


def test_unsolicited_bytes_are_fed_and_drained() -> None:
    line = MemorySerialTransport(lambda data: b"", "dev")
    line.open()
    line.feed(b"stream\r\nstream\r\n")
    assert line.drain(10.0) == b"stream\r\nstream\r\n"
    line.close()
    with pytest.raises(TransportDisconnected, match=r"^dev: memory:// is not open"):
        line.write(b"x")


def test_modbus_requests_refusals_and_silence_go_through_the_real_transport() -> None:
    rows = (
        (ModbusRequest("holding", 0, 2, 1), [0x436A, 0x8000]),
        (ModbusRequest("input", 7, 1, 3), Refusal(0x02)),
        (ModbusRequest("coils", 0, 3, 1), [True, False, True]),
        (ModbusRequest("holding", 4, 2, 1), [1]),
        (ModbusRequest("holding", 9, 1, 1), None),
    )
    with modbus_conversation(*rows) as link:
        assert link.read_registers("holding", 0, 2) == [0x436A, 0x8000]
        with pytest.raises(DeviceError, match=r"^inst: read input registers 7 \(count 1, unit 3\) "
                                              r"refused: illegal data address \(0x02\)") as refused:
            link.read_registers("input", 7, 1, unit=3)
        assert refused.value.code == 0x02
        assert link.read_bits("coils", 0, 3) == [True, False, True]
        with pytest.raises(ProtocolError, match=r"returned 1 registers"):
            link.read_registers("holding", 4, 2)
        with pytest.raises(TransportTimeout, match=r"^inst: no reply from memory:502"):
            link.read_registers("holding", 9, 1)


def test_visa_messages_are_stripped_and_silence_is_a_timeout() -> None:
    with visa_conversation(("*IDN?", "ACME,1\r"), ("MEAS?", ["1.5", "late"]), ("X?", [])) as resource:
        assert resource.query("*IDN?") == "ACME,1"
        assert resource.query("MEAS?") == "1.5"
        assert resource.read() == "late"
        with pytest.raises(TransportTimeout, match=r"^inst: no reply to 'X\?' from MEMORY::INSTR"):
            resource.query("X?")
