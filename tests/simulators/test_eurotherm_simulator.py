"""The Eurotherm simulator: its register map and heating loop on a fake clock, then the literal
RTU frames of docs/protocols.md 6.3 on a real pymodbus server over a pty, byte for byte."""

from __future__ import annotations

import pytest
import serial

from bridge.drivers.common.modbus_codec import decode, encode
from simulators.instruments.eurotherm import EurothermSimulator
from simulators.serving.modbus_server import DeviceServer
from simulators.serving.register_device import ILLEGAL_ADDRESS
from tests.helpers import modbus_server
from tests.helpers.clock import FakeClock


def make(clock: FakeClock, family: str = "2400", setpoint: float = 25.0) -> EurothermSimulator:
    sim = EurothermSimulator(family, seed=1, clock=clock, setpoint=setpoint)
    sim.noise = 0.0
    return sim


def int_value(sim: EurothermSimulator, address: int, decimals: int = 1) -> float:
    reply = sim.serve(3, address, 1)
    assert isinstance(reply, list)
    return int(decode(reply, "int16")) / 10.0**decimals


def float_value(sim: EurothermSimulator, address: int) -> float:
    reply = sim.serve(3, 0x8000 + 2 * address, 2)
    assert isinstance(reply, list)
    return float(decode(reply, "float32"))


def test_pv_approaches_the_setpoint_with_the_output_power(clock: FakeClock) -> None:
    sim = make(clock, setpoint=200.0)
    assert float_value(sim, 1) == 25.0
    seen = []
    for _ in range(8):
        clock.advance(30.0)
        seen.append((float_value(sim, 1), float_value(sim, 3)))
    pvs = [pv for pv, _ in seen]
    assert pvs == sorted(pvs), "heats up monotonically"
    assert pvs[-1] == pytest.approx(200.0, abs=0.5)
    assert seen[0][1] > 50.0, "full power while far below the setpoint"
    # holding 200 degC against 1400 degC at 100 %: about 12.5 % once settled
    assert seen[-1][1] == pytest.approx(100 * 175 / 1400, abs=1.0)
    assert float_value(sim, 5) == 200.0 and float_value(sim, 2) == 200.0


def test_integer_and_ieee_regions_hold_the_same_parameter(clock: FakeClock) -> None:
    sim = make(clock, setpoint=150.0)
    sim.set_pv(234.5)
    assert sim.serve(3, 1, 1) == [0x0929]
    assert sim.serve(3, 0x8002, 2) == [0x436A, 0x8000]
    assert int_value(sim, 5) == 150.0 and int_value(sim, 3) == float_value(sim, 3)
    assert isinstance(sim.serve(3, 0x8002, 10), list)  # parameters 1..5 in one block
    sim.decimals = 2  # the display resolution changed on the front panel
    assert int_value(sim, 1, decimals=2) == 234.5 and sim.serve(3, 1, 1) == [23450]
    assert float_value(sim, 1) == 234.5


def test_noise_only_on_a_live_pv(clock: FakeClock) -> None:
    sim = EurothermSimulator("2400", seed=3, clock=clock)
    values = {float_value(sim, 1) for _ in range(5)}
    assert len(values) > 1
    sim.set_pv(100.0)
    assert {float_value(sim, 1) for _ in range(5)} == {100.0}


def test_identity_and_setpoint_limit_registers_and_their_refusal(clock: FakeClock) -> None:
    e2400, e3200, e3500 = make(clock, "2400"), make(clock, "3200"), make(clock, "3500")
    assert [e.serve(3, 122, 1) for e in (e2400, e3200, e3500)] == [[0x2480], [0x3216], [0x3504]]
    assert e3200.serve(3, 107, 1) == [0x0111] and e2400.serve(3, 107, 1) == ILLEGAL_ADDRESS
    assert (float_value(e2400, 111), float_value(e2400, 112)) == (1200.0, 0.0)
    assert e3500.serve(3, 111 + 1024, 1) == [12000]  # loop 2's, one decimal
    e3200.refuse_identity = True
    assert e3200.refuse_identity
    assert e3200.serve(3, 122, 1) == ILLEGAL_ADDRESS and e3200.serve(3, 107, 1) == ILLEGAL_ADDRESS
    assert e3200.serve(3, 75, 1) != ILLEGAL_ADDRESS
    e3200.refuse_identity = False
    assert e3200.serve(3, 122, 1) == [0x3216]


def test_family_maps(clock: FakeClock) -> None:
    e2400, e3200 = make(clock, "2400", setpoint=100.0), make(clock, "3200", setpoint=100.0)
    clock.advance(5.0)
    # 2400: OP at 3; 3200: MAN.OP (manual value, 0) at 3 and WRK.OP at 4
    assert float_value(e2400, 3) > 0
    assert float_value(e3200, 3) == 0.0 and float_value(e3200, 4) > 0
    assert e2400.serve(3, 258, 1) == [0]  # Sbr, 2400 only
    assert e3200.serve(3, 258, 1) == ILLEGAL_ADDRESS
    assert e3200.serve(3, 107, 1) == [0x0111]
    assert e2400.serve(3, 107, 1) == ILLEGAL_ADDRESS
    assert e2400.serve(3, 1025, 1) == ILLEGAL_ADDRESS
    assert e2400.serve(3, 7, 1) == ILLEGAL_ADDRESS
    with pytest.raises(ValueError, match="no loop 2"):
        e2400.loop(2)
    with pytest.raises(ValueError, match="unknown family"):
        EurothermSimulator("2200")


def test_3500_loop_two_at_plus_1024(clock: FakeClock) -> None:
    sim = make(clock, "3500", setpoint=100.0)
    sim.set_pv(300.0, loop=2)
    sim.set_setpoint(320.0, loop=2)
    assert sim.loops == 2
    assert int_value(sim, 1025) == 300.0 and float_value(sim, 1029) == 320.0
    assert int_value(sim, 1) == 25.0 and float_value(sim, 5) == 100.0
    assert isinstance(sim.serve(3, 0x8000 + 2 * 1025, 10), list)


def test_sensor_break_sets_bit_5_freezes_pv_and_cuts_the_output(clock: FakeClock) -> None:
    sim = make(clock, setpoint=300.0)
    clock.advance(20.0)
    frozen = float_value(sim, 1)
    sim.sensor_break = True
    assert sim.serve(3, 75, 1) == [1 << 5]
    assert sim.serve(3, 258, 1) == [1]
    clock.advance(60.0)
    assert float_value(sim, 1) == frozen, "PV stays readable, at the last good value"
    assert float_value(sim, 3) == 0.0
    assert sim.output_power() == 0.0
    sim.sensor_break = False
    clock.advance(1.0)
    assert sim.serve(3, 75, 1) == [0]
    assert float_value(sim, 1) != frozen


def test_pv_out_of_range_bit_by_knob_or_by_range(clock: FakeClock) -> None:
    sim = make(clock)
    sim.pv_out_of_range = True
    assert sim.serve(3, 75, 1) == [1 << 10]
    sim.pv_out_of_range = False
    sim.set_pv(1500.0)  # above a type K range
    assert sim.status_word() == 1 << 10
    assert int_value(sim, 1) == 1500.0, "the PV register still holds a number"
    sim.set_pv(100.0)
    sim.status_bits = 1 << 0 | 1 << 7
    assert sim.serve(3, 75, 1) == [0b10000001]
    assert float_value(sim, 75) == 129.0


def test_absent_parameters_answer_02_in_both_regions_and_fail_blocks(clock: FakeClock) -> None:
    sim = make(clock)
    sim.set_absent(3)
    assert sim.serve(3, 3, 1) == ILLEGAL_ADDRESS
    assert sim.serve(3, 0x8006, 2) == ILLEGAL_ADDRESS
    assert sim.serve(3, 0x8002, 10) == ILLEGAL_ADDRESS
    assert isinstance(sim.serve(3, 0x8002, 2), list)
    sim.set_absent(3, absent=False)
    assert isinstance(sim.serve(3, 0x8002, 10), list)


def test_writes_change_the_setpoint_and_count_eeprom_wear(clock: FakeClock) -> None:
    sim = make(clock, setpoint=100.0)
    assert sim.serve(6, 2, 1, [2500]) == [2500]  # TgSP = 250.0 (integer region, 1 dp)
    assert float_value(sim, 5) == 250.0 and sim.eeprom_writes == 1
    assert sim.serve(16, 0x8004, 2, encode(260.0, "float32")) == encode(260.0, "float32")  # TgSP as a float
    assert float_value(sim, 2) == 260.0 and sim.eeprom_writes == 2
    sim.serve(6, 26, 1, [1234])  # rmSP: the comms setpoint, not EEPROM
    sim.serve(6, 276, 1, [1])  # remote setpoint enabled
    assert float_value(sim, 5) == pytest.approx(123.4) and sim.eeprom_writes == 2
    # one write of two consecutive floats (SP1 24, SP2 25): two parameters, two EEPROM writes
    assert isinstance(sim.serve(16, 0x8000 + 2 * 24, 4, encode(270.0, "float32") + encode(80.0, "float32")), list)
    assert float_value(sim, 2) == 270.0 and float_value(sim, 25) == 80.0 and sim.eeprom_writes == 4
    assert sim.serve(6, 1, 1, [0]) == ILLEGAL_ADDRESS  # PV is read only
    assert sim.serve(6, 75, 1, [0]) == ILLEGAL_ADDRESS
    assert len(sim.writes) == 5


def test_a_chamber_model_drives_the_pv_and_reads_the_power(clock: FakeClock) -> None:
    sim = make(clock, setpoint=500.0)
    cell = {"t": 450.0}
    sim.set_pv_source(lambda: cell["t"])
    clock.advance(10.0)
    assert float_value(sim, 1) == 450.0
    assert sim.pv() == 450.0
    assert sim.output_power() > 0
    cell["t"] = 600.0  # overshoot: the loop backs off
    clock.advance(30.0)
    assert sim.output_power() == 0.0
    sim.set_pv_source(None)
    assert sim.value("TgSP") == 500.0


# ---------------------------------------------------------------- the frames of docs/protocols.md 6.3


def exchange(port: serial.Serial, request: str, expected: int, wait: float = 2.0) -> str:
    """:func:`tests.helpers.modbus_server.exchange` in the hex notation of docs/protocols.md."""
    return modbus_server.exchange(port, bytes.fromhex(request), expected, wait).hex(" ").upper()


def test_literal_rtu_frames_on_a_shared_line() -> None:
    first = EurothermSimulator("2400", 1, seed=1)
    second = EurothermSimulator("3200", 2, seed=1)
    first.set_pv(234.5)
    second.set_pv(234.5)
    with DeviceServer([first, second], transport="rtu") as server, \
            serial.Serial(server.host_port, 9600, timeout=0.05) as port:
        assert exchange(port, "01 03 00 01 00 01 D5 CA", 7) == "01 03 02 09 29 7F CA"
        assert exchange(port, "01 03 80 02 00 02 4C 0B", 9) == "01 03 04 43 6A 80 00 AE 6B"
        first.set_absent(1)
        assert exchange(port, "01 03 00 01 00 01 D5 CA", 5) == "01 83 02 C0 F1"
        # the second controller answers at its own address; nobody answers at 3
        assert exchange(port, "02 03 00 01 00 01 D5 F9", 7).startswith("02 03 02 09 29")
        assert exchange(port, "03 03 00 01 00 01 D4 28", 7, wait=0.3) == ""
        assert first.writes == [] and second.writes == []
