"""The Genesys driver: its dialogue as exact conversation tables, then over a real pty and real TCP
against the simulator in every fault mode, and two supplies on one simulated RS-485 chain."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from bridge.config import InstrumentConfig
from bridge.drivers.genesys import Genesys, GenesysOptions
from bridge.edge.polling.bus import assemble
from bridge.edge.polling.pollers import Backoff, Pollers
from bridge.errors import DeviceError, ProtocolError, TransportDisconnected, TransportTimeout
from bridge.model import Quality, Reading, ValueType
from bridge.transports.memory import MemorySerialTransport
from tests.helpers.cli import example_with, read_json, simulator_command
from tests.helpers.conversation import driver_on, serial_conversation
from tests.helpers.drivers import by_channel, fails_then_recovers, read_and_close, reconnect, unplug_fails
from tests.helpers.genesys import GenesysLink, make_sims, one_line, serve
from tests.helpers.polling import wait_until

CONNECT = ((b"ADR 6\r", b"OK\r"), (b"IDN?\r", b"LAMBDA,GEN60-25\r"))
EACH = (
    (b"MV?\r", b"12.003\r"),
    (b"MC?\r", b"1.2001\r"),
    (b"PV?\r", b"12\r"),
    (b"PC?\r", b"2.5\r"),
    (b"OUT?\r", b"ON\r"),
    (b"MODE?\r", b"CV\r"),
    (b"STAT?\r", b"05\r"),
    (b"FLT?\r", b"00\r"),
)
EXPECTED = {"voltage": 12.003, "current": 1.2001, "voltage_setpoint": 12.0, "current_setpoint": 2.5,
            "output": True, "mode": "CV", "status": 5, "fault": 0}


def values(readings: list[Reading]) -> dict[str, object]:
    return {r.channel: r.value for r in readings}


def genesys_on(line: MemorySerialTransport, options: dict[str, Any] | None = None) -> Genesys:
    """The driver of instrument ``psu`` on ``line``, assembled as ``poll`` assembles it."""
    driver = driver_on(line, "genesys", options)
    assert isinstance(driver, Genesys)
    return driver


# ---------------------------------------------------------------------- conversation tables


def test_conversation_connect_and_polls_query_by_query() -> None:
    with serial_conversation(*CONNECT, *EACH, *EACH, owner="psu") as line:
        driver = genesys_on(line)
        driver.connect()
        first = driver.read()
        second = driver.read()  # still selected: no second ADR
    assert driver.identity == "LAMBDA,GEN60-25"
    assert values(first) == values(second) == EXPECTED
    readings = by_channel(first)
    assert [(r.units, r.type) for r in first] == [
        ("V", ValueType.FLOAT), ("A", ValueType.FLOAT), ("V", ValueType.FLOAT), ("A", ValueType.FLOAT),
        ("1", ValueType.BOOL), ("1", ValueType.ENUM), ("1", ValueType.BITS), ("1", ValueType.BITS)]
    assert readings["status"].detail == "constant voltage (CV), no fault (NFLT)"
    assert readings["fault"].detail == ""


def test_conversation_limits_are_ovp_and_uvl() -> None:
    with serial_conversation(
        *CONNECT, *EACH[:4], (b"OVP?\r", b"66.000\r"), (b"UVL?\r", b"0\r"), *EACH[4:], owner="psu",
    ) as line:
        driver = genesys_on(line, {"limits": True})
        driver.connect()
        readings = by_channel(driver.read())
    assert (readings["ovp"].value, readings["ovp"].units) == (66.0, "V")
    assert (readings["uvl"].value, readings["uvl"].units) == (0.0, "V")


def test_conversation_combined_poll_reads_stt_then_output_and_mode() -> None:
    with serial_conversation(
        *CONNECT,
        (b"STT?\r", b"MV(45.201),PV(45),MC(4.3257),PC(10),SR(1A),FR(10)\r"),  # the manual's numbers
        (b"OUT?\r", b"OFF\r"),
        (b"MODE?\r", b"OFF\r"),
        owner="psu",
    ) as line:
        driver = genesys_on(line, {"poll": "combined"})
        driver.connect()
        readings = driver.read()
    got = by_channel(readings)
    assert values(readings) == {"voltage": 45.201, "current": 4.3257, "voltage_setpoint": 45.0,
                                "current_setpoint": 10.0, "output": False, "mode": "OFF", "status": 0x1A,
                                "fault": 0x10}
    assert got["fault"].detail == "over voltage (OVP)"
    assert got["status"].detail == "constant current (CC), fault (FLT), auto restart (AST)"
    stt = {got[name].timestamp for name in ("voltage", "current", "voltage_setpoint", "current_setpoint",
                                            "status", "fault")}
    assert len(stt) == 1, "one exchange, one instant"
    assert got["output"].timestamp > stt.pop()


def test_conversation_combined_poll_with_limits_reads_dvc_and_the_registers() -> None:
    with serial_conversation(
        *CONNECT,
        (b"DVC?\r", b"12.003,12.000,1.2001,2.5000,66.000,1.000\r"),
        (b"OUT?\r", b"ON\r"),
        (b"MODE?\r", b"CV\r"),
        (b"STAT?\r", b"05\r"),
        (b"FLT?\r", b"00\r"),
        owner="psu",
    ) as line:
        driver = genesys_on(line, {"poll": "combined", "limits": True})
        driver.connect()
        readings = driver.read()
    assert values(readings) == {**EXPECTED, "voltage_setpoint": 12.0, "ovp": 66.0, "uvl": 1.0}
    assert [r.channel for r in readings] == ["voltage", "current", "voltage_setpoint", "current_setpoint",
                                             "ovp", "uvl", "output", "mode", "status", "fault"]


def test_conversation_checksum_mode_on_every_command_and_reply() -> None:
    with serial_conversation(
        (b"ADR 6$2D\r", b"OK$9A\r"),
        (b"IDN?$1A\r", b"LAMBDA,GEN60-25$A1\r"),
        (b"STT?$3A\r", b"MV(12.003),PV(12),MC(1.2001),PC(2.5),SR(05),FR(00)$6E\r"),
        (b"OUT?$37\r", b"ON$9D\r"),
        (b"MODE?$64\r", b"CV$99\r"),
        owner="psu",
    ) as line:
        driver = genesys_on(line, {"poll": "combined", "checksum": True})
        driver.connect()
        assert values(driver.read()) == EXPECTED


def test_conversation_the_echo_of_a_request_with_checksum_is_skipped() -> None:
    with serial_conversation(
        (b"ADR 6$2D\r", b"ADR 6$2D\rOK$9A\r"),
        (b"IDN?$1A\r", b"IDN?$1A\rLAMBDA,GEN60-25$A1\r"),
        owner="psu",
    ) as line:
        driver = genesys_on(line, {"checksum": True})
        driver.connect()
        assert driver.identity == "LAMBDA,GEN60-25"


def test_conversation_two_supplies_on_one_line_adr_only_when_the_supply_changes() -> None:
    """Both drivers share one transport (assembled as the poller does): the line remembers which
    supply the last ADR selected, whichever driver sent it."""
    table = [
        *CONNECT,
        (b"ADR 7\r", b"OK\r"), (b"IDN?\r", b"LAMBDA,GEN30-50\r"),  # connect B
        (b"ADR 6\r", b"OK\r"), *EACH,  # A: selected again
        *EACH,  # A again: no ADR
        (b"ADR 7\r", b"OK\r"), *EACH,  # B
    ]
    with serial_conversation(*table, owner="rs485") as line:
        configs = [InstrumentConfig(name=name, driver="genesys", transport=line.config, options={"address": a})
                   for name, a in (("heater", 6), ("cell", 7))]
        (_, a), (_, b) = assemble(configs, transport=line).drivers
        assert isinstance(a, Genesys) and isinstance(b, Genesys) and a.line is b.line
        a.connect()
        b.connect()
        assert (a.identity, b.identity) == ("LAMBDA,GEN60-25", "LAMBDA,GEN30-50")
        for driver in (a, a, b):
            readings = driver.read()
            assert values(readings) == EXPECTED
            assert {r.instrument for r in readings} == {driver.instrument}


def test_conversation_a_refusal_names_its_code_and_leaves_the_line_in_step() -> None:
    with serial_conversation(
        *CONNECT,
        *EACH[:5], (b"MODE?\r", b"C01\r"),
        *EACH,  # the next poll: no ADR, no resync needed
        owner="psu",
    ) as line:
        driver = genesys_on(line)
        driver.connect()
        with pytest.raises(DeviceError, match=r"^psu: MODE\? refused with C01 illegal command or query "
                                              r"\(address 6\)$") as info:
            driver.read()
        assert info.value.code == "C01"
        assert values(driver.read()) == EXPECTED


def test_conversation_silence_then_the_next_poll_selects_the_supply_again() -> None:
    """A supply that was power-cycled forgot ADR: silence. The driver selects it again next time."""
    with serial_conversation(
        *CONNECT,
        (b"MV?\r", b""),
        (b"ADR 6\r", b"OK\r"), *EACH,
        owner="psu",
    ) as line:
        driver = genesys_on(line)
        driver.connect()
        with pytest.raises(TransportTimeout, match=r"^psu: no reply to MV\? from address 6 within 0.5 s "
                                                   r"\(a wrong address or baud rate, or a supply not selected"):
            driver.read()
        assert values(driver.read()) == EXPECTED


def test_conversation_a_missing_ok_is_a_timeout_naming_adr() -> None:
    with serial_conversation((b"ADR 6\r", b""), owner="psu") as line:
        driver = genesys_on(line)
        with pytest.raises(TransportTimeout, match=r"^psu: no reply to ADR 6 from address 6"):
            driver.connect()


def test_conversation_a_late_ok_is_never_taken_for_a_value() -> None:
    """An OK arriving where a value belongs (a late acknowledgement) would shift every later answer
    by one: the driver drops it, selects the supply again and repeats the query once."""
    with serial_conversation(
        *CONNECT,
        (b"MV?\r", b"OK\r"),
        (b"ADR 6\r", b"OK\r"), *EACH,
        owner="psu",
    ) as line:
        driver = genesys_on(line)
        driver.connect()
        assert values(driver.read()) == EXPECTED


def test_conversation_an_ok_that_persists_is_a_protocol_error() -> None:
    with serial_conversation(*CONNECT, (b"MV?\r", b"OK\r"), owner="psu") as line:
        driver = genesys_on(line, {"retries": 0})
        driver.connect()
        with pytest.raises(ProtocolError, match=r"^psu: 'OK' where MV\? expects a value \(a late acknowledgement"):
            driver.read()


def test_conversation_srq_bytes_srq_messages_and_the_echo_are_skipped() -> None:
    with serial_conversation(
        (b"ADR 6\r", b"\x87ADR 6\rOK\r"),  # supply 7's SRQ byte, then the 2-wire adapter's echo
        (b"IDN?\r", b"!07\rLAMBDA,\x87GEN60-25\r"),  # an SRQ message, and an SRQ byte mid-reply
        *EACH,
        owner="psu",
    ) as line:
        driver = genesys_on(line)
        driver.connect()
        assert driver.identity == "LAMBDA,GEN60-25"
        assert values(driver.read()) == EXPECTED


def test_conversation_too_many_foreign_frames_is_a_protocol_error() -> None:
    with serial_conversation(*CONNECT, (b"MV?\r", b"!07\r!07\r!07\r"), owner="psu") as line:
        driver = genesys_on(line, {"retries": 0, "max_skipped_frames": 2})
        driver.connect()
        with pytest.raises(ProtocolError, match=r"^psu: no reply to MV\? among 3 SRQ messages, echoes or empty "
                                                r"frames \(last b'!07\\r'\)"):
            driver.read()


def test_conversation_a_reply_without_cr_is_garbled_and_repeated() -> None:
    with serial_conversation(
        *CONNECT,
        (b"MV?\r", b"12.0"),  # the CR was lost
        (b"ADR 6\r", b"OK\r"), *EACH,
        owner="psu",
    ) as line:
        driver = genesys_on(line)
        driver.connect()
        assert values(driver.read()) == EXPECTED


def test_conversation_a_garbled_reply_twice_names_it() -> None:
    with serial_conversation(
        *CONNECT, (b"MV?\r", b"1\xff2.0\r"), (b"ADR 6\r", b"OK\r"), (b"MV?\r", b"1\xff2.0\r"), owner="psu",
    ) as line:
        driver = genesys_on(line)
        driver.connect()
        with pytest.raises(ProtocolError, match=r"^psu: garbled reply b'1\\xff2.0\\r'"):
            driver.read()


def test_conversation_a_reply_that_does_not_fit_names_the_query_then_the_line_resynchronises() -> None:
    with serial_conversation(*CONNECT, (b"MV?\r", b"12.003\r"), (b"MC?\r", b"ON\r"),
                             (b"ADR 6\r", b"OK\r"), *EACH, owner="psu") as line:
        driver = genesys_on(line)
        driver.connect()
        with pytest.raises(ProtocolError, match=r"^psu: MC\?: current reply 'ON' is not a number$"):
            driver.read()
        line.feed(b"1.2001\r")  # the reply that was late: dropped, never taken for the next one
        assert values(driver.read()) == EXPECTED


def test_conversation_a_failure_of_one_supply_makes_the_other_resynchronise(
        caplog: pytest.LogCaptureFixture) -> None:
    """Replies carry no address: the late reply of supply 7 would be taken by supply 6's next
    exchange, unless the failure of the one makes the other resynchronise first (let what is in
    flight arrive for ``settle`` and drop it, not only drop what has arrived)."""
    caplog.set_level(logging.DEBUG, "bridge.drivers.genesys")
    with serial_conversation(
        *CONNECT, (b"ADR 7\r", b"OK\r"), (b"IDN?\r", b"LAMBDA,GEN30-50\r"),
        (b"MV?\r", b""),  # supply 7 is slow...
        (b"ADR 6\r", b"OK\r"), *EACH,
        owner="rs485",
    ) as line:
        configs = [InstrumentConfig(name=name, driver="genesys", transport=line.config, options={"address": a})
                   for name, a in (("heater", 6), ("cell", 7))]
        (_, heater), (_, cell) = assemble(configs, transport=line).drivers
        heater.connect()
        cell.connect()
        with pytest.raises(TransportTimeout, match=r"^cell: no reply to MV\?"):
            cell.read()
        line.feed(b"20.000\r")  # ...its reply arrives after the timeout
        caplog.clear()
        assert values(heater.read()) == EXPECTED
    assert "heater: dropped 7 stale bytes at resync: b'20.000\\r'" in caplog.messages


# ---------------------------------------------------------------------- over a real pty and TCP


@pytest.fixture(params=["pty", "tcp"])
def psu(request: pytest.FixtureRequest) -> Iterator[GenesysLink]:
    """One Genesys at address 6 (12 V, 1.2 A into 10 ohm) over a pty and over TCP."""
    with serve(request.param, make_sims()) as link:
        yield link


@pytest.fixture(params=["pty", "tcp"])
def chain(request: pytest.FixtureRequest) -> Iterator[GenesysLink]:
    """Supplies 6 (12 V, CV) and 7 (24 V into 10 ohm with a 2 A limit: CC at 20 V) on one RS-485 chain."""
    with serve(request.param, make_sims([6, 7])) as link:
        yield link


def test_reads_every_channel_with_units_and_types(psu: GenesysLink) -> None:
    inst = psu.instrument()
    try:
        assert isinstance(inst.driver, Genesys) and inst.driver.identity == "LAMBDA,GEN60-25"
        readings = inst.read()
    finally:
        inst.close()
    assert values(readings) == {**EXPECTED, "voltage": 12.0, "current": pytest.approx(1.2), "status": 5}
    assert {r.quality for r in readings} == {Quality.OK}
    assert psu.commands()[:2] == ["ADR 6", "IDN?"]
    assert psu.commands()[2:] == ["MV?", "MC?", "PV?", "PC?", "OUT?", "MODE?", "STAT?", "FLT?"]


@pytest.mark.parametrize("options", [{"poll": "combined"}, {"poll": "combined", "limits": True},
                                     {"checksum": True}, {"poll": "combined", "checksum": True, "limits": True}])
def test_every_poll_mode_reads_the_same(psu: GenesysLink, options: dict[str, Any]) -> None:
    readings = by_channel(read_and_close(psu.instrument(**options)))
    assert readings["voltage"].value == 12.0 and readings["current"].value == pytest.approx(1.2)
    assert (readings["output"].value, readings["mode"].value, readings["fault"].value) == (True, "CV", 0)
    if options.get("limits"):
        assert (readings["ovp"].value, readings["uvl"].value) == (66.0, 0.0)
    if options.get("checksum"):
        assert all("$" in command for command in psu.commands())


def test_cc_mode_and_output_off(psu: GenesysLink) -> None:
    psu.sim.set_load(2.0)  # 12 V would draw 6 A: the 2.5 A limit holds, the voltage sags
    inst = psu.instrument(poll="combined")
    try:
        cc = by_channel(inst.read())
        psu.sim.set_output(False)
        off = by_channel(inst.read())
    finally:
        inst.close()
    assert (cc["mode"].value, cc["voltage"].value, cc["current"].value) == ("CC", 5.0, 2.5)
    assert cc["status"].detail == "constant current (CC), no fault (NFLT)"
    assert (off["mode"].value, off["output"].value, off["voltage"].value, off["status"].value) == ("OFF", False,
                                                                                                    0.0, 4)


def test_ovp_trip_shows_in_fault_status_mode_and_output(psu: GenesysLink) -> None:
    inst = psu.instrument()
    try:
        psu.sim.trip_ovp()
        tripped = by_channel(inst.read())
        psu.sim.set_output(True)  # cleared (OUT ON)
        cleared = by_channel(inst.read())
    finally:
        inst.close()
    assert (tripped["fault"].value, tripped["fault"].detail) == (0x10, "over voltage (OVP)")
    assert (tripped["mode"].value, tripped["output"].value, tripped["voltage"].value) == ("OFF", False, 0.0)
    assert tripped["status"].detail == "fault (FLT)"
    assert (cleared["fault"].value, cleared["mode"].value) == (0, "CV")


def test_ac_fail_and_foldback(psu: GenesysLink) -> None:
    inst = psu.instrument(poll="combined")
    try:
        psu.sim.set_fault("AC", True)
        ac = by_channel(inst.read())
        psu.sim.set_fault("AC", False)
        after = by_channel(inst.read())  # safe start: the output stays off
        psu.sim.foldback = True
        psu.sim.set_load(1.0)
        psu.sim.set_output(True)  # CC with foldback armed: trips at once
        folded = by_channel(inst.read())
    finally:
        inst.close()
    assert (ac["fault"].detail, ac["mode"].value, ac["output"].value) == ("AC fail (AC)", "OFF", False)
    assert (after["fault"].value, after["output"].value) == (0, False)
    assert folded["fault"].detail == "foldback tripped (FLD)"
    assert folded["status"].detail == "fault (FLT), foldback enabled (FDE)"


def test_a_refused_query_is_a_device_error_then_the_next_poll_is_clean(psu: GenesysLink) -> None:
    inst = psu.instrument()
    try:
        after = fails_then_recovers(inst, psu.sim, DeviceError, r"^psu: MODE\? refused with C01 illegal command",
                                    refuse={"MODE?": "C01"})
    finally:
        inst.close()
    assert values(after)["mode"] == "CV"
    assert psu.commands().count("ADR 6") == 1, "a refusal leaves the supply selected"


def test_srq_bytes_inside_every_reply_are_dropped(psu: GenesysLink) -> None:
    psu.sim.srq_in_replies = True
    readings = read_and_close(psu.instrument(poll="combined"))
    assert values(readings)["voltage"] == 12.0 and values(readings)["fault"] == 0


def test_unsolicited_service_requests_are_skipped(psu: GenesysLink) -> None:
    """A front-panel or host-set enable register makes the supply send SRQs by itself: a text
    message, or in multi-drop mode one byte; neither is taken for a reply."""
    psu.sim.fena = 0xFF
    inst = psu.instrument()
    try:
        psu.sim.trip_ovp()  # an SRQ message "!06" goes out now, unasked
        text = by_channel(inst.read())
        psu.sim.set_output(True)
        psu.sim.multidrop = True
        psu.sim.feve = 0  # serviced
        psu.sim.set_fault("OTP", True)  # the SRQ byte 0x86 goes out now
        byte = by_channel(inst.read())
    finally:
        inst.close()
    assert b"!06\r" in psu.sim.sent() and b"\x86" in psu.sim.sent()
    assert text["fault"].detail == "over voltage (OVP)"
    assert byte["fault"].detail == "over temperature (OTP)"


def test_split_replies_are_reassembled(psu: GenesysLink) -> None:
    psu.sim.split_replies = True
    assert values(read_and_close(psu.instrument(poll="combined")))["voltage"] == 12.0


def test_noise_before_a_reply_is_tolerated(psu: GenesysLink) -> None:
    psu.sim.garbage_at_connect = b"\xff\x00\xfe"
    inst = psu.instrument()
    try:
        psu.sim.garbage = b"\xff\xfe"  # in front of the next reply
        assert values(inst.read())["voltage"] == 12.0
    finally:
        inst.close()


def test_a_wrong_address_is_silence(psu: GenesysLink) -> None:
    with pytest.raises(TransportTimeout, match=r"^psu: no reply to ADR 9 from address 9 within 0.5 s"):
        psu.instrument(address=9)


def test_a_missing_ok_fails_the_connect(psu: GenesysLink) -> None:
    psu.sim.missing_ok = True
    with pytest.raises(TransportTimeout, match=r"^psu: no reply to ADR 6 from address 6"):
        psu.instrument()


def test_a_power_cycle_is_recovered_by_selecting_again(psu: GenesysLink) -> None:
    inst = psu.instrument()
    try:
        inst.read()
        psu.sim.power_cycle()  # forgets ADR; the output comes back off (safe start)
        with pytest.raises(TransportTimeout, match=r"^psu: no reply to MV\? from address 6"):
            inst.read()
        after = by_channel(inst.read())
    finally:
        inst.close()
    assert (after["output"].value, after["mode"].value) == (False, "OFF")
    assert psu.commands().count("ADR 6") == 2


def test_a_reply_later_than_the_timeout_is_not_taken_for_the_next(psu: GenesysLink) -> None:
    inst = psu.instrument(timeout=0.3, settle=0.5)
    try:
        psu.sim.reply_delay = 0.45  # arrives 0.15 s after the driver gave up; settle outlasts it
        with pytest.raises(TransportTimeout):
            inst.read()
        psu.sim.reply_delay = 0.0
        readings = inst.read()
    finally:
        inst.close()
    assert values(readings) == {**EXPECTED, "voltage": 12.0, "current": pytest.approx(1.2)}


def test_silence_times_out_naming_the_instrument_then_recovers(psu: GenesysLink) -> None:
    inst = psu.instrument(name="heater_psu")
    try:
        after = fails_then_recovers(inst, psu.sim, TransportTimeout,
                                    r"^heater_psu: no reply to MV\? from address 6 within 0.5 s", silent=True)
    finally:
        inst.close()
    assert values(after)["voltage"] == 12.0


def test_unplugged_link_is_a_disconnect(psu: GenesysLink) -> None:
    inst = psu.instrument()
    try:
        unplug_fails(inst, psu)
        if psu.kind == "tcp":  # a serial device server comes back: reopen, connect (ADR), read
            reconnect(inst)
            assert values(inst.read())["voltage"] == 12.0
    finally:
        inst.close()


def test_unreachable_port_names_it(psu: GenesysLink) -> None:
    psu.server.stop()
    with pytest.raises(TransportDisconnected, match=r"^psu: cannot open"):
        psu.instrument()


# ---------------------------------------------------------------------- two supplies, one RS-485 chain


def _check(readings: list[Reading], name: str, volts: float, amps: float, mode: str) -> None:
    assert {r.instrument for r in readings} == {name}
    got = by_channel(readings)
    assert got["voltage"].value == pytest.approx(volts)
    assert got["current"].value == pytest.approx(amps)
    assert got["mode"].value == mode


def test_two_supplies_on_one_chain_share_one_transport(chain: GenesysLink) -> None:
    heater = chain.config("heater", address=6)
    cell = chain.config("cell", address=7, poll="combined")
    assert heater.transport == cell.transport
    with one_line(heater, cell) as (first, second):
        for _ in range(3):
            _check(first.read(), "heater", 12.0, 1.2, "CV")
            _check(second.read(), "cell", 20.0, 2.0, "CC")
    adr = [c for c in chain.commands() if c.startswith("ADR")]
    # connect 6, connect 7, then one ADR per change of supply: 6, 7, 6, 7, 6, 7
    assert adr == ["ADR 6", "ADR 7"] + ["ADR 6", "ADR 7"] * 3


def test_one_supply_polled_twice_in_a_row_is_not_selected_again(chain: GenesysLink) -> None:
    with one_line(chain.config("heater", address=6), chain.config("cell", address=7)) as (first, _):
        chain.sims[0].log.clear()
        first.read()
        first.read()
        first.read()
    assert [c for c in chain.commands() if c.startswith("ADR")] == ["ADR 6"]


def test_a_silent_neighbour_costs_only_itself(chain: GenesysLink) -> None:
    with one_line(chain.config("heater", address=6), chain.config("cell", address=7)) as (first, second):
        chain.sims[1].silent = True  # supply 7 is the one selected last (its connect)
        with pytest.raises(TransportTimeout, match=r"^cell: no reply to MV\? from address 7"):
            second.read()
        _check(first.read(), "heater", 12.0, 1.2, "CV")
        chain.sims[1].silent = False
        _check(second.read(), "cell", 20.0, 2.0, "CC")
        _check(first.read(), "heater", 12.0, 1.2, "CV")


def test_the_neighbours_srq_during_a_reply_is_dropped(chain: GenesysLink) -> None:
    chain.sims[1].multidrop = True
    chain.sims[1].fena = 0xFF
    with one_line(chain.config("heater", address=6), chain.config("cell", address=7)) as (first, second):
        chain.sims[0].srq_in_replies = True  # collisions inside supply 6's replies
        chain.sims[1].trip_ovp()  # supply 7 asks for service: 0x87, unsolicited
        _check(first.read(), "heater", 12.0, 1.2, "CV")
        assert by_channel(second.read())["fault"].detail == "over voltage (OVP)"
    assert b"\x87" in chain.sims[1].sent()


def test_a_late_reply_of_one_supply_is_not_taken_by_the_other(chain: GenesysLink) -> None:
    heater = chain.config("heater", address=6, timeout=0.8, settle=0.5)
    cell = chain.config("cell", address=7, timeout=0.8, settle=0.5)
    with one_line(heater, cell) as (first, second):
        chain.sims[1].reply_delay = 1.0  # answers after the driver gave up
        with pytest.raises(TransportTimeout):
            second.read()
        chain.sims[1].reply_delay = 0.0
        _check(first.read(), "heater", 12.0, 1.2, "CV")
        _check(second.read(), "cell", 20.0, 2.0, "CC")


def test_the_poller_reads_a_chain_and_recovers_a_power_cycled_supply(chain: GenesysLink) -> None:
    """Production's way: one bus thread for the chain, both supplies on its one transport."""
    batches: dict[str, list[dict[str, Reading]]] = {"heater": [], "cell": []}
    lock = threading.Lock()

    def sink(readings: list[Reading]) -> None:
        with lock:
            batches[readings[0].instrument].append(by_channel(readings))

    def polls(name: str) -> list[dict[str, Reading]]:
        with lock:
            return list(batches[name])

    configs = [chain.config(name, address=address).model_copy(update={"interval": 0.05})
               for name, address in (("heater", 6), ("cell", 7))]
    pollers = Pollers(configs, sink, backoff=Backoff(initial=0.05, maximum=0.2))
    assert len(pollers.buses) == 1
    pollers.start()
    try:
        assert wait_until(lambda: len(polls("heater")) >= 3 and len(polls("cell")) >= 3), pollers.status()
        chain.sims[1].power_cycle()  # forgets it was selected; its output comes back off
        assert wait_until(lambda: polls("cell")[-1]["mode"].value == "OFF"), pollers.status()
        seen = len(polls("heater"))
        assert wait_until(lambda: len(polls("heater")) > seen)
    finally:
        assert pollers.stop()
    assert {(b["voltage"].value, b["mode"].value) for b in polls("heater")} == {(12.0, "CV")}
    assert {(b["voltage"].value, b["mode"].value) for b in polls("cell")} == {(20.0, "CC"), (0.0, "OFF")}


def test_two_supplies_read_one_after_the_other(chain: GenesysLink) -> None:
    # What `chamber-bridge read` does: open the port, read one instrument, close, next.
    _check(read_and_close(chain.instrument("heater", address=6)), "heater", 12.0, 1.2, "CV")
    _check(read_and_close(chain.instrument("cell", address=7)), "cell", 20.0, 2.0, "CC")


# ---------------------------------------------------------------------- options and the example


@pytest.mark.parametrize(
    "options",
    [{"address": -1}, {"address": 31}, {"poll": "fast"}, {"retries": 9}, {"checksum": "sometimes"},
     {"channels": [1]}, {"settle": -1}],
)
def test_bad_options_are_refused(options: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        GenesysOptions.model_validate(options)


def test_channel_table_with_and_without_limits() -> None:
    plain = Genesys.channel_table(GenesysOptions())
    assert [(c.name, c.units, c.type.kind.value) for c in plain] == [
        ("voltage", "V", "float"), ("current", "A", "float"), ("voltage_setpoint", "V", "float"),
        ("current_setpoint", "A", "float"), ("output", "1", "bool"), ("mode", "1", "enum"),
        ("status", "1", "bits"), ("fault", "1", "bits")]
    assert plain[5].type.choices == ("CV", "CC", "OFF")
    assert dict(plain[7].type.bits)[4] == "over voltage (OVP)"
    limited = [c.name for c in Genesys.channel_table(GenesysOptions(limits=True))]
    assert limited[4:6] == ["ovp", "uvl"]


def test_the_example_config_reads_two_supplies_from_the_simulator(tmp_path: Path) -> None:
    with simulator_command("genesys", "--tcp", "127.0.0.1:0", "--address", "6", "--address", "7",
                           "--set", "12,2.5,on", "--seed", "1", timeout=10) as sim:
        readings = read_json(example_with("genesys.yaml", tmp_path, port=sim.where))
    by = {(r["instrument"], r["channel"]): r for r in readings}
    assert {r["instrument"] for r in readings} == {"substrate_heater", "cell_heater"}
    assert by[("substrate_heater", "voltage")]["value"] == pytest.approx(12.0, rel=1e-3)
    assert by[("substrate_heater", "output")]["value"] is True
    assert by[("cell_heater", "mode")]["value"] == "CV"
    assert by[("cell_heater", "fault")]["value"] == 0


def test_memory_transport_keeps_one_line_per_transport() -> None:
    """Two transports are two lines: selecting on one says nothing about the other."""
    first, second = MemorySerialTransport(lambda _: b"OK\r"), MemorySerialTransport(lambda _: b"OK\r")
    a = Genesys(first, GenesysOptions(), "a")
    b = Genesys(second, GenesysOptions(), "b")
    again = Genesys(first, GenesysOptions(address=7), "again")
    assert a.line is again.line and a.line is not b.line


def test_conversation_baseline_reads_identity_and_protections_and_records_a_refusal() -> None:
    with serial_conversation(*CONNECT,
                             (b"IDN?\r", b"LAMBDA,GEN60-25\r"), (b"REV?\r", b"REV:1U:4.3\r"),
                             (b"SN?\r", b"C01\r"),  # a supply without the query refuses it
                             (b"OVP?\r", b"66.0\r"), (b"UVL?\r", b"0.0\r"), (b"FLD?\r", b"OFF\r"),
                             (b"AST?\r", b"ON\r"), owner="psu") as line:
        driver = genesys_on(line)
        driver.connect()
        baseline = driver.baseline()
    assert dict(baseline.identity) == {"vendor": "LAMBDA", "model": "GEN60-25", "firmware": "REV:1U:4.3"}
    assert dict(baseline.configuration) == {"ovp": "66.0", "uvl": "0.0", "fld": "OFF", "ast": "ON"}
    assert list(baseline.errors) == ["SN?"] and "C01" in baseline.errors["SN?"]
