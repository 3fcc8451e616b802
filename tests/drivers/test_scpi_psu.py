"""The scpi_psu driver through real pyvisa-py (TCPIP SOCKET, ASRL on a pty) against the simulator,
in both dialects and every fault mode, and through pyvisa-sim with simulators/instruments/pyvisa_sim_psu.yaml."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.drivers.scpi_psu import ScpiPsu
from bridge.drivers.scpi_psu.codec import Dialect, ScpiError
from bridge.edge.instrument import Instrument
from bridge.errors import DeviceError, ProtocolError, TransportDisconnected, TransportTimeout
from bridge.model import Quality, ValueType
from tests.helpers.cli import example_with, read_json, simulator_command
from tests.helpers.conversation import driver_on, visa_conversation
from tests.helpers.drivers import fails_then_recovers, read_and_close, reconnect, unplug_fails, values
from tests.helpers.text_query import Served, psu_sim, read_after_late_replies, serve, sim_instrument, sim_of

QUANTITIES = ("voltage", "current", "voltage_setpoint", "current_setpoint", "output")


@pytest.fixture(params=["keysight", "rigol"])
def psu(request: pytest.FixtureRequest) -> Iterator[Served]:
    """A three-channel supply of either dialect on a raw SCPI TCP socket."""
    with serve(psu_sim(request.param), "tcp") as served:
        yield served


@pytest.fixture
def keysight() -> Iterator[Served]:
    with serve(psu_sim("keysight"), "tcp") as served:
        yield served


def driver_of(inst: Instrument) -> ScpiPsu:
    assert isinstance(inst.driver, ScpiPsu)
    return inst.driver


# ------------------------------------------------------------------ normal readings


def test_reads_every_quantity_of_every_channel(psu: Served) -> None:
    sim = sim_of(psu)
    inst = psu.visa("scpi_psu", channels=[1, 2, 3])
    try:
        readings = inst.read()
        driver = driver_of(inst)
    finally:
        inst.close()
    assert driver.dialect.value == sim.dialect, "auto dialect from *IDN?"
    assert driver.identity == sim.model.idn
    assert [r.channel for r in readings] == [f"{q}_{n}" for n in (1, 2, 3) for q in QUANTITIES]
    assert all(r.quality is Quality.OK and r.instrument == "psu" for r in readings)
    got = values(readings)
    assert got == {
        "voltage_1": pytest.approx(5.0), "current_1": pytest.approx(0.5),
        "voltage_setpoint_1": pytest.approx(5.0), "current_setpoint_1": pytest.approx(1.0), "output_1": True,
        "voltage_2": pytest.approx(2.0), "current_2": pytest.approx(0.2),
        "voltage_setpoint_2": pytest.approx(12.0), "current_setpoint_2": pytest.approx(0.2), "output_2": True,
        "voltage_3": 0.0, "current_3": 0.0,
        "voltage_setpoint_3": pytest.approx(3.3), "current_setpoint_3": pytest.approx(sim.model.ratings[2].amps),
        "output_3": False,
    }
    # the output state is a bool, on the wire and in every reading; the rest are floats
    assert {r.channel: (type(r.value), r.type) for r in readings if r.channel.startswith("output")} == {
        f"output_{n}": (bool, ValueType.BOOL) for n in (1, 2, 3)}
    assert {type(r.value) for r in readings if not r.channel.startswith("output")} == {float}
    units = {r.channel: r.units for r in readings}
    assert [units[c] for c in ("voltage_1", "current_1", "voltage_setpoint_1", "output_1")] == ["V", "A", "V", "1"]


def test_channel_in_constant_current_mode(psu: Served) -> None:
    sim = sim_of(psu)
    sim.set_load(2, 5.0)  # 12 V would drive 2.4 A: the 0.2 A limit holds, the voltage sags to 1 V
    got = values(read_and_close(psu.visa("scpi_psu", channels=[2])))
    assert sim.mode(2) == "CC"
    assert got["current_2"] == pytest.approx(got["current_setpoint_2"])
    assert got["voltage_2"] == pytest.approx(1.0)
    assert got["voltage_setpoint_2"] == pytest.approx(12.0), "the voltage sags below the setpoint"


def test_settings_changed_on_the_front_panel_are_followed(psu: Served) -> None:
    sim = sim_of(psu)
    inst = psu.visa("scpi_psu", channels=[1])
    try:
        assert values(inst.read())["output_1"] == 1.0
        sim.set_output(1, False)
        sim.set_voltage(1, 2.5)
        got = values(inst.read())
    finally:
        inst.close()
    assert (got["output_1"], got["voltage_1"], got["voltage_setpoint_1"]) == (0.0, 0.0, pytest.approx(2.5))


def test_only_queries_go_out_each_ending_in_one_lf(psu: Served) -> None:
    sim = sim_of(psu)
    read_and_close(psu.visa("scpi_psu", channels=[1, 2]))
    commands = sim.received_commands()
    assert commands, "the supply was spoken to"
    assert all(c.endswith("?") or "? " in c for c in commands), f"a command without reply went out: {commands}"
    sent = b"".join(data for direction, data in sim.log if direction == "rx")
    assert b"\r" not in sent and sent.endswith(b"SYST:ERR?\n")
    if sim.dialect == "keysight":
        assert "MEAS:VOLT? (@2)" in commands and "OUTP? (@1)" in commands
    else:
        assert ":MEAS:VOLT? CH2" in commands and ":SOUR1:VOLT?" in commands and ":OUTP? CH1" in commands


def test_explicit_dialect_is_used(keysight: Served) -> None:
    inst = keysight.visa("scpi_psu", dialect="keysight", channels=[1])
    try:
        assert driver_of(inst).dialect is Dialect.KEYSIGHT
        assert values(inst.read())["voltage_1"] == pytest.approx(5.0)
    finally:
        inst.close()


def test_reads_through_asrl_on_a_pty() -> None:
    with serve(psu_sim("rigol"), "pty") as served:
        got = values(read_and_close(served.visa("scpi_psu", channels=[1, 2])))
    assert (got["voltage_1"], got["current_2"], got["output_2"]) == (pytest.approx(5.0), pytest.approx(0.2), 1.0)


# ------------------------------------------------------------------ error queue


def test_error_queue_is_drained_after_each_poll_and_logged_once(
        psu: Served, caplog: pytest.LogCaptureFixture) -> None:
    sim = sim_of(psu)
    inst = psu.visa("scpi_psu", name="heater_psu", channels=[1])
    try:
        driver = driver_of(inst)
        assert driver.last_errors == ()
        caplog.set_level(logging.DEBUG, logger="bridge.drivers.scpi_psu")
        for _ in range(2):  # the same fault twice in a row: one warning
            sim.push_error(-222, "Data out of range")
            inst.read()
            assert driver.last_errors == (ScpiError(-222, "Data out of range"),)
            assert sim.errors == []
        inst.read()
        assert driver.last_errors == ()
    finally:
        inst.close()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ['heater_psu: instrument error -222,"Data out of range"']


def test_queue_overflow_is_reported(keysight: Served) -> None:
    sim = sim_of(keysight)
    inst = keysight.visa("scpi_psu", channels=[1])
    try:
        for n in range(25):  # nobody read the queue for a while: it holds 20 and overflowed
            sim.push_error(-222, f"Data out of range {n}")
        inst.read()
        errors = driver_of(inst).last_errors
    finally:
        inst.close()
    assert len(errors) == 20
    assert errors[0] == ScpiError(-222, "Data out of range 0")
    assert errors[-1] == ScpiError(-350, "Queue overflow")


def test_errors_from_before_the_connect_are_drained_at_connect(keysight: Served) -> None:
    sim_of(keysight).push_error(-113, "Undefined header")
    inst = keysight.visa("scpi_psu", channels=[1])
    try:
        assert driver_of(inst).last_errors == (ScpiError(-113, "Undefined header"),)
        inst.read()
        assert driver_of(inst).last_errors == ()
    finally:
        inst.close()


@pytest.mark.parametrize(("actual", "configured"), [("keysight", "rigol"), ("rigol", "keysight")])
def test_wrong_dialect_is_a_device_error_with_the_instruments_code(actual: str, configured: str) -> None:
    with serve(psu_sim(actual), "tcp") as served:
        inst = served.visa("scpi_psu", name="heater_psu", timeout=0.3, dialect=configured, channels=[1])
        try:
            with pytest.raises(DeviceError, match=r"^heater_psu: no reply to .*; the instrument reports -1\d\d,"
                               ) as err:
                inst.read()
        finally:
            inst.close()
    assert err.value.code in (-104, -113)


def test_channel_the_supply_lacks_is_a_device_error(keysight: Served) -> None:
    inst = keysight.visa("scpi_psu", timeout=0.3, channels=[4])
    try:
        with pytest.raises(DeviceError, match=r'-222,"Data out of range"') as err:
            inst.read()
    finally:
        inst.close()
    assert err.value.code == -222


# ------------------------------------------------------------------ faults


def test_slow_first_reply_after_connect(keysight: Served) -> None:
    sim = sim_of(keysight)
    sim.first_reply_delay = 1.0  # three transport timeouts long
    got = values(read_and_close(keysight.visa("scpi_psu", timeout=0.3, first_reply_timeout=20, channels=[1])))
    assert got["voltage_1"] == pytest.approx(5.0)


def test_first_reply_later_than_allowed_is_a_timeout(keysight: Served) -> None:
    sim_of(keysight).first_reply_delay = 3.0
    with pytest.raises(TransportTimeout, match=r"^psu: no reply to '\*IDN\?' within 0.5 s after connecting"):
        keysight.visa("scpi_psu", timeout=0.3, first_reply_timeout=0.5)


def test_silence_is_a_timeout_then_recovers(psu: Served) -> None:
    inst = psu.visa("scpi_psu", name="heater_psu", timeout=0.3, channels=[1])
    try:
        got = values(fails_then_recovers(inst, sim_of(psu), TransportTimeout, r"^heater_psu: no reply to ",
                                         silent=True))
    finally:
        inst.close()
    assert got["voltage_1"] == pytest.approx(5.0)


def test_late_replies_are_not_taken_for_later_ones(psu: Served) -> None:
    inst = psu.visa("scpi_psu", timeout=0.3, channels=[1, 2])
    try:
        got = values(read_after_late_replies(inst, sim_of(psu)))
    finally:
        inst.close()
    assert got["voltage_1"] == pytest.approx(5.0)
    assert got["current_1"] == pytest.approx(0.5)
    assert got["current_2"] == pytest.approx(0.2)


def test_split_replies_are_reassembled(psu: Served) -> None:
    sim = sim_of(psu)
    sim.split_replies = True
    got = values(read_and_close(psu.visa("scpi_psu", channels=[1])))
    assert got["voltage_setpoint_1"] == pytest.approx(5.0)


def test_query_delay_paces_a_supply_that_loses_quick_commands(keysight: Served) -> None:
    sim = sim_of(keysight)
    sim.min_command_gap = 0.05
    got = values(read_and_close(keysight.visa("scpi_psu", query_delay=0.15, channels=[1])))
    assert got["current_1"] == pytest.approx(0.5)


def test_noise_in_a_reply_is_a_protocol_error_quoting_it(keysight: Served) -> None:
    sim = sim_of(keysight)
    inst = keysight.visa("scpi_psu", name="heater_psu", channels=[1])
    try:
        sim.garbage = b"#?"
        with pytest.raises(ProtocolError, match=r"^heater_psu: channel 1: voltage reply '#\?\+5\.0+E\+00' is not"):
            inst.read()
        assert values(inst.read())["voltage_1"] == pytest.approx(5.0)
    finally:
        inst.close()


def test_connection_dropped_by_the_supply_then_reconnect(psu: Served) -> None:
    sim = sim_of(psu)
    inst = psu.visa("scpi_psu", timeout=0.5, channels=[1])
    try:
        inst.read()
        sim.drop_next = True
        with pytest.raises(TransportDisconnected, match=r"^psu: .* closed the connection"):
            inst.read()
        reconnect(inst)
        assert values(inst.read())["voltage_1"] == pytest.approx(5.0)
    finally:
        inst.close()


def test_network_drop_is_a_disconnect(psu: Served) -> None:
    inst = psu.visa("scpi_psu", timeout=0.5, channels=[1])
    try:
        unplug_fails(inst, psu, attempts=1)
    finally:
        inst.close()


def test_unreachable_supply_names_it(keysight: Served) -> None:
    keysight.server.stop()
    with pytest.raises(TransportDisconnected, match=r"^psu: cannot open TCPIP::127\.0\.0\.1::\d+::SOCKET"):
        keysight.visa("scpi_psu")


# ------------------------------------------------------------------ pyvisa-sim and the CLI


@pytest.mark.parametrize(
    ("resource", "expected"),
    [
        ("TCPIP::127.0.0.1::5025::SOCKET", {"voltage_2": 4.9991, "current_2": 0.1234, "voltage_setpoint_2": 5.0,
                                            "current_setpoint_2": 1.0, "output_2": 1.0}),
        ("TCPIP::127.0.0.1::5555::SOCKET", {"voltage_2": 11.998, "current_2": 0.25, "voltage_setpoint_2": 12.0,
                                            "current_setpoint_2": 1.5, "output_2": 0.0}),
    ],
)
def test_pyvisa_sim_dialogue(resource: str, expected: dict[str, float]) -> None:
    inst = sim_instrument(resource, "scpi_psu", channels=[2])
    try:
        got = values(inst.read())
        assert driver_of(inst).last_errors == ()
    finally:
        inst.close()
    assert got == pytest.approx(expected)


def test_example_config_reads_the_cli_simulator(tmp_path: Path) -> None:
    with simulator_command("scpi_psu", "--tcp", "127.0.0.1:0", "--set", "1=5,0.5,on",
                           "--load", "2=open") as cli:
        assert cli.where.startswith("socket://127.0.0.1:")
        port = cli.where.rsplit(":", 1)[1]
        config = example_with("scpi_psu.yaml", tmp_path, resource=f"TCPIP::127.0.0.1::{port}::SOCKET")
        readings = read_json(config)
    got = {r["channel"]: r["value"] for r in readings}
    assert got["voltage_setpoint_1"] == pytest.approx(5.0)
    assert got["current_1"] == pytest.approx(0.5, rel=1e-2)
    assert (got["output_1"], got["output_2"]) == (1.0, 0.0)
    assert cli.process.wait(timeout=10) == 0


KEYSIGHT_IDN = "Keysight Technologies,E36312A,MY00000001,1.0.4"


def test_conversation_connect_poll_and_error_queue_message_for_message() -> None:
    with visa_conversation(
        ("*IDN?", KEYSIGHT_IDN), ("*IDN?", KEYSIGHT_IDN),   # first reply, then the sync marker
        ("SYST:ERR?", '-113,"Undefined header"'),           # what piled up before we came ...
        ("SYST:ERR?", '+0,"No error"'),                     # ... drained at connect
        ("MEAS:VOLT? (@2)", "+5.00100000E+00"),
        ("MEAS:CURR? (@2)", "+9.9E37"),                     # overload: no value
        ("VOLT? (@2)", "+5.00000000E+00"),
        ("CURR? (@2)", "+1.00000000E+00"),
        ("OUTP? (@2)", "1"),
        ("SYST:ERR?", '+0,"No error"'),                     # the queue, after every poll
        owner="psu",
    ) as resource:
        driver = driver_on(resource, "scpi_psu", {"channels": [2]})
        driver.connect()
        assert driver.dialect is Dialect.KEYSIGHT
        readings = {r.channel: r for r in driver.read()}
    assert [(r.value, r.quality) for r in readings.values()] == [
        (5.001, Quality.OK), (None, Quality.OVER_RANGE), (5.0, Quality.OK), (1.0, Quality.OK), (True, Quality.OK)]
    assert readings["output_2"].value is True and readings["output_2"].type is ValueType.BOOL
    assert list(readings) == ["voltage_2", "current_2", "voltage_setpoint_2", "current_setpoint_2", "output_2"]


def test_conversation_a_rigol_output_off_is_false_message_for_message() -> None:
    idn = "RIGOL TECHNOLOGIES,DP832,DP8A1,00.01.16"
    with visa_conversation(
        ("*IDN?", idn), ("*IDN?", idn), ("SYST:ERR?", '0,"No error"'),
        (":MEAS:VOLT? CH1", "0.000"), (":MEAS:CURR? CH1", "0.000"),
        (":SOUR1:VOLT?", "12.000"), (":SOUR1:CURR?", "1.0000"),
        (":OUTP? CH1", "OFF"),
        ("SYST:ERR?", '0,"No error"'),
        owner="psu",
    ) as resource:
        driver = driver_on(resource, "scpi_psu", {"channels": [1]})
        driver.connect()
        output = driver.read()[-1]
    assert (output.channel, output.value, output.type, output.quality) == ("output_1", False, ValueType.BOOL,
                                                                           Quality.OK)
    assert output.value is False


def test_conversation_a_silent_query_is_explained_by_the_error_queue() -> None:
    with visa_conversation(
        ("*IDN?", "RIGOL TECHNOLOGIES,DP832,DP8A1,00.01.16"), ("*IDN?", "RIGOL TECHNOLOGIES,DP832,DP8A1,00.01.16"),
        ("SYST:ERR?", '0,"No error"'),
        (":MEAS:VOLT? CH1", []),                            # SCPI gives a refused query no reply ...
        ("*IDN?", "RIGOL TECHNOLOGIES,DP832,DP8A1,00.01.16"),  # (resync before the next exchange)
        ("SYST:ERR?", ['-113,"Undefined header"']),         # ... the queue says why
        ("SYST:ERR?", '0,"No error"'),
        owner="psu",
    ) as resource:
        driver = driver_on(resource, "scpi_psu", {"channels": [1]})
        driver.connect()
        with pytest.raises(DeviceError, match=r'^psu: no reply to .*; the instrument reports -113,"Undefined header"'):
            driver.read()


# ------------------------------------------------------------------ identity and configuration


def test_conversation_baseline_asks_idn_again() -> None:
    with visa_conversation(
        ("*IDN?", KEYSIGHT_IDN), ("*IDN?", KEYSIGHT_IDN), ("SYST:ERR?", '+0,"No error"'),   # connect
        ("*IDN?", KEYSIGHT_IDN),                                                          # the baseline
        owner="psu",
    ) as resource:
        driver = driver_on(resource, "scpi_psu", {"channels": [1, 2]})
        driver.connect()
        baseline = driver.baseline()
    assert baseline.identity == {"vendor": "Keysight Technologies", "model": "E36312A", "serial": "MY00000001",
                                 "firmware": "1.0.4"}
    assert baseline.configuration == {"dialect": "keysight", "channels": "1,2"} and baseline.errors == {}


def test_baseline_over_the_wire(psu: Served) -> None:
    inst = psu.visa("scpi_psu", channels=[1])
    try:
        baseline = inst.driver.baseline()
        readings = inst.read()
    finally:
        inst.close()
    maker, model, serial, firmware = sim_of(psu).model.idn.split(",")
    assert baseline.identity == {"vendor": maker, "model": model, "serial": serial, "firmware": firmware}
    assert baseline.configuration["dialect"] == sim_of(psu).dialect
    assert len(readings) == len(QUANTITIES)
