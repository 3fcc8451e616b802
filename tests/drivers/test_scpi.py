"""The generic ``scpi`` query-table driver through real pyvisa-py (TCPIP SOCKET, ASRL on a pty)
against the PSU simulator and a text device, every fault mode, and through pyvisa-sim."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge.drivers.scpi import ScpiText
from bridge.errors import ProtocolError, TransportDisconnected, TransportTimeout
from bridge.model import Quality
from simulators.instruments.serial_ascii import TextDevice
from tests.helpers.cli import example_with, read_json, simulator_command
from tests.helpers.conversation import driver_on, visa_conversation
from tests.helpers.drivers import fails_then_recovers, read_and_close, reconnect, values
from tests.helpers.text_query import Served, psu_sim, read_after_late_replies, serve, sim_instrument, sim_of

KEYSIGHT_TABLE: list[dict[str, Any]] = [
    {"name": "voltage", "command": "MEAS:VOLT? (@1)", "units": "V"},
    {"name": "current_ma", "command": "MEAS:CURR? (@1)", "scale": 1000, "units": "mA"},
    {"name": "output", "command": "OUTP? (@1)"},
]
RIGOL_TABLE: list[dict[str, Any]] = [
    {"name": "voltage", "command": ":MEAS:VOLT? CH1", "units": "V"},
    {"name": "current_ma", "command": ":MEAS:CURR? CH1", "scale": 1000, "units": "mA"},
    {"name": "power", "command": ":MEAS:ALL? CH1", "parse": "regex", "regex": r"^[^,]*,[^,]*,\s*(\S+)$",
     "units": "W"},
]


@pytest.fixture
def rigol() -> Iterator[Served]:
    with serve(psu_sim("rigol"), "tcp") as served:
        yield served


def test_reads_a_query_table(rigol: Served) -> None:
    inst = rigol.visa("scpi", name="cell_supply", queries=RIGOL_TABLE)
    try:
        readings = inst.read()
        assert isinstance(inst.driver, ScpiText)
        assert inst.driver.identity == sim_of(rigol).model.idn
    finally:
        inst.close()
    assert [(r.channel, r.units, r.quality) for r in readings] == [
        ("voltage", "V", Quality.OK), ("current_ma", "mA", Quality.OK), ("power", "W", Quality.OK)]
    assert values(readings) == {"voltage": pytest.approx(5.0), "current_ma": pytest.approx(500.0),
                                "power": pytest.approx(2.5)}


def test_reads_through_asrl_on_a_pty() -> None:
    with serve(psu_sim("keysight"), "pty") as served:
        got = values(read_and_close(served.visa("scpi", queries=KEYSIGHT_TABLE)))
    assert got == {"voltage": pytest.approx(5.0), "current_ma": pytest.approx(500.0), "output": 1.0}


def test_pyvisa_sim_dialogue() -> None:
    got = values(read_and_close(sim_instrument("TCPIP::127.0.0.1::5025::SOCKET", "scpi", queries=KEYSIGHT_TABLE)))
    assert got == {"voltage": pytest.approx(4.9991), "current_ma": pytest.approx(123.4), "output": 1.0}


def test_reply_that_is_not_a_number_is_a_protocol_error_quoting_it(rigol: Served) -> None:
    inst = rigol.visa("scpi", name="cell_supply", queries=[{"name": "ident", "command": "*IDN?"}])
    try:
        with pytest.raises(ProtocolError, match=r"^cell_supply: ident \('\*IDN\?'\): reply 'RIGOL TECHNOLOGIES,"
                                                r"DP832,[^']*' is not a number$"):
            inst.read()
    finally:
        inst.close()


def test_regex_that_does_not_match_quotes_the_reply(rigol: Served) -> None:
    table = [{"name": "state", "command": ":OUTP? CH1", "parse": "regex", "regex": r"(\d+)"}]
    inst = rigol.visa("scpi", name="cell_supply", queries=table)
    try:
        with pytest.raises(ProtocolError, match=r"^cell_supply: state \(':OUTP\? CH1'\): reply 'ON' does not match"):
            inst.read()
    finally:
        inst.close()


def test_silence_is_a_timeout_then_recovers(rigol: Served) -> None:
    inst = rigol.visa("scpi", name="cell_supply", timeout=0.3, queries=RIGOL_TABLE)
    try:
        after = fails_then_recovers(inst, sim_of(rigol), TransportTimeout,
                                    r"^cell_supply: no reply to ':MEAS:VOLT\? CH1'", silent=True)
        assert values(after)["voltage"] == pytest.approx(5.0)
    finally:
        inst.close()


def test_late_replies_are_not_taken_for_later_ones(rigol: Served) -> None:
    inst = rigol.visa("scpi", timeout=0.3, queries=RIGOL_TABLE)
    try:
        got = values(read_after_late_replies(inst, sim_of(rigol)))
    finally:
        inst.close()
    assert got == {"voltage": pytest.approx(5.0), "current_ma": pytest.approx(500.0), "power": pytest.approx(2.5)}


def test_slow_first_reply_after_connect(rigol: Served) -> None:
    sim_of(rigol).first_reply_delay = 1.0
    inst = rigol.visa("scpi", timeout=0.3, first_reply_timeout=20, queries=RIGOL_TABLE)
    try:
        assert values(inst.read())["voltage"] == pytest.approx(5.0)
    finally:
        inst.close()


def test_without_sync_command_nothing_else_is_sent(rigol: Served) -> None:
    sim = sim_of(rigol)
    inst = rigol.visa("scpi", sync_command=None, queries=RIGOL_TABLE[:1])
    try:
        assert values(inst.read())["voltage"] == pytest.approx(5.0)
        assert isinstance(inst.driver, ScpiText) and inst.driver.identity is None
    finally:
        inst.close()
    assert sim.received_commands() == [":MEAS:VOLT? CH1"]


def test_split_replies_are_reassembled(rigol: Served) -> None:
    sim_of(rigol).split_replies = True
    assert values(read_and_close(rigol.visa("scpi", queries=RIGOL_TABLE)))["power"] == pytest.approx(2.5)


def test_connection_dropped_then_reconnect(rigol: Served) -> None:
    sim = sim_of(rigol)
    inst = rigol.visa("scpi", timeout=0.5, queries=RIGOL_TABLE[:1])
    try:
        sim.drop_next = True
        with pytest.raises(TransportDisconnected, match="closed the connection"):
            inst.read()
        reconnect(inst)
        assert values(inst.read())["voltage"] == pytest.approx(5.0)
    finally:
        inst.close()


def test_scpi_overload_codes_from_a_meter() -> None:
    meter = TextDevice({"*IDN?": "ACME,DMM1,0,1.0", "MEAS?": "{V:+.8E}", "NAN?": "9.91E+37"}, {"V": 9.9e37},
                       terminator=b"\n")
    table = [{"name": "v", "command": "MEAS?", "units": "V"}, {"name": "nan", "command": "NAN?"}]
    with serve(meter, "tcp") as served:
        inst = served.visa("scpi", name="dmm", queries=table)
        try:
            over, nan = inst.read()
            meter.set_value("V", -1.25)
            ok, _ = inst.read()
        finally:
            inst.close()
    assert (over.value, over.quality, over.units) == (None, Quality.OVER_RANGE, "V")
    assert (nan.value, nan.quality) == (None, Quality.INVALID)
    assert (ok.value, ok.quality) == (pytest.approx(-1.25), Quality.OK)


def test_unreachable_instrument_names_it(rigol: Served) -> None:
    rigol.server.stop()
    with pytest.raises(TransportDisconnected, match=r"^psu: cannot open TCPIP::"):
        rigol.visa("scpi", queries=RIGOL_TABLE)


def test_example_config_reads_the_cli_simulator(tmp_path: Path) -> None:
    with simulator_command("scpi_psu", "--dialect", "rigol", "--tcp", "127.0.0.1:0", "--set", "1=5,0.5,on",
                           "--load", "1=20") as cli:
        port = cli.where.rsplit(":", 1)[1]
        config = example_with("scpi.yaml", tmp_path, resource=f"TCPIP::127.0.0.1::{port}::SOCKET")
        readings = read_json(config)
    got = {r["channel"]: (r["value"], r["units"]) for r in readings}
    assert got["voltage"] == (pytest.approx(5.0, rel=1e-2), "V")
    assert got["current_ma"] == (pytest.approx(250.0, rel=1e-2), "mA")
    assert got["power"] == (pytest.approx(1.25, rel=1e-2), "W")
    typed = {r["channel"]: (r["value"], r.get("type")) for r in readings if r["channel"] in ("output", "mode")}
    assert typed == {"output": (True, "bool"), "mode": ("CV", "enum")}


IDN = "RIGOL TECHNOLOGIES,DP832,DP8A0000001,00.01.16"
TABLE = {"queries": [
    {"name": "voltage", "command": ":MEAS:VOLT? CH1", "units": "V"},
    {"name": "power", "command": ":MEAS:ALL? CH1", "parse": "regex", "regex": r"^[^,]*,[^,]*,\s*(\S+)$", "units": "W"},
]}


def test_conversation_connect_and_one_poll_message_for_message() -> None:
    with visa_conversation(
        ("*IDN?", IDN),                       # connect: the first reply, waited for ...
        ("*IDN?", IDN),                       # ... then asked again and kept as the sync marker
        (":MEAS:VOLT? CH1", "5.0010"),
        (":MEAS:ALL? CH1", "5.0010,0.5000,2.5005"),
        owner="cell_supply",
    ) as resource:
        driver = driver_on(resource, "scpi", TABLE)
        driver.connect()
        voltage, power = driver.read()
    assert (voltage.value, voltage.units, power.value, power.units) == (5.001, "V", 2.5005, "W")


def test_conversation_after_a_timeout_the_late_reply_is_skipped_up_to_the_marker() -> None:
    with visa_conversation(
        ("*IDN?", IDN), ("*IDN?", IDN),
        (":MEAS:VOLT? CH1", []),              # silence: the reply comes late ...
        ("*IDN?", ["5.0010", IDN]),           # ... and is skipped while resynchronising
        (":MEAS:VOLT? CH1", "5.0020"),
        (":MEAS:ALL? CH1", "5.0020,0.5000,2.5010"),
        owner="cell_supply",
    ) as resource:
        driver = driver_on(resource, "scpi", TABLE)
        driver.connect()
        with pytest.raises(TransportTimeout, match=r"no reply to ':MEAS:VOLT\? CH1'"):
            driver.read()
        voltage, _power = driver.read()
    assert voltage.value == 5.002


def test_conversation_baseline_is_the_idn_answer_and_nothing_without_it() -> None:
    with visa_conversation(("*IDN?", IDN), ("*IDN?", IDN), ("*IDN?", IDN), owner="cell_supply") as resource:
        driver = driver_on(resource, "scpi", TABLE)
        driver.connect()
        baseline = driver.baseline()
    assert baseline.identity == dict(zip(("vendor", "model", "serial", "firmware"), IDN.split(","), strict=True))
    with visa_conversation(owner="meter") as resource:
        driver = driver_on(resource, "scpi", {**TABLE, "sync_command": None})
        driver.connect()
        assert driver.baseline().identity == {}


def test_baseline_over_the_wire(rigol: Served) -> None:
    inst = rigol.visa("scpi", name="cell_supply", queries=RIGOL_TABLE)
    try:
        baseline = inst.driver.baseline()
    finally:
        inst.close()
    assert baseline.identity["vendor"] == "RIGOL TECHNOLOGIES" and baseline.identity["model"] == "DP832"


# ---------------------------------------------------------------- typed channels

RIGOL_TYPED: list[dict[str, Any]] = [
    {"name": "output", "command": ":OUTP? CH1", "type": "bool", "map": {"ON": True, "OFF": False}},
    {"name": "mode", "command": ":OUTP:CVCC? CH1", "type": "enum", "choices": ["CV", "CC", "UR"]},
    {"name": "output_2", "command": ":OUTP? CH2", "type": "bool"},   # ON|OFF read without a map
]


def test_typed_queries_against_a_supply_over_real_tcp(rigol: Served) -> None:
    """The Rigol simulator's output states and CV/CC mode as a bool and an enum, through pyvisa-py."""
    sim = sim_of(rigol)
    inst = rigol.visa("scpi", name="cell_supply", queries=RIGOL_TYPED)
    try:
        first = {r.channel: r for r in inst.read()}
        sim.set_output(1, False)
        sim.set_current(2, 5.0)  # channel 2 leaves current limit: constant voltage
        second = {r.channel: r for r in inst.read()}
    finally:
        inst.close()
    assert {name: (r.type.value, r.value, r.quality) for name, r in first.items()} == {
        "output": ("bool", True, Quality.OK), "mode": ("enum", "CV", Quality.OK),
        "output_2": ("bool", True, Quality.OK)}
    assert first["output"].value is True and second["output"].value is False
    assert second["mode"].value == "CV"  # the DP800 answers CV while an output is off


def test_conversation_typed_queries_message_for_message() -> None:
    table = {"sync_command": None, "queries": [
        {"name": "output", "command": "OUTP?", "type": "bool", "map": {"ON": True, "OFF": False}},
        {"name": "mode", "command": "MODE?", "type": "enum", "map": {"1": "constant voltage", "2": "constant current"}},
        {"name": "faults", "command": "STAT:QUES?", "type": "bits", "bits": {0: "OVP", 3: "AC fail"}},
        {"name": "count", "command": "COUN?", "type": "int"},
        {"name": "recipe", "command": "PROG:NAME?", "type": "string", "max_length": 8},
        {"name": "remote", "command": "SYST:REM?", "type": "bool"},
        {"name": "mode_word", "command": "MODE?", "type": "enum", "choices": ["1", "2"]},
    ]}
    with visa_conversation(
        ("OUTP?", "ON"), ("MODE?", "2"), ("STAT:QUES?", "9"), ("COUN?", "+1024"), ("PROG:NAME?", "GaN-buffer-2"),
        ("SYST:REM?", "0"), ("MODE?", "1"),
        owner="supply",
    ) as resource:
        driver = driver_on(resource, "scpi", table)
        readings = {r.channel: r for r in driver.read()}
    assert {name: (r.type.value, r.value, r.detail) for name, r in readings.items()} == {
        "output": ("bool", True, ""), "mode": ("enum", "constant current", ""), "faults": ("bits", 9, "OVP, AC fail"),
        "count": ("int", 1024, ""), "recipe": ("string", "GaN-buff", "cut to 8 of its 12 characters"),
        "remote": ("bool", False, ""), "mode_word": ("enum", "1", "")}


def test_conversation_a_reply_not_in_the_map_is_a_protocol_error_then_resync() -> None:
    table = {"queries": [{"name": "output", "command": "OUTP?", "type": "bool", "map": {"ON": True, "OFF": False}}]}
    with visa_conversation(
        ("*IDN?", IDN), ("*IDN?", IDN),
        ("OUTP?", "STANDBY"),                 # not in the map: the reply is quoted ...
        ("*IDN?", IDN),                       # ... and the dialogue resynchronised before the next query
        ("OUTP?", "OFF"),
        owner="supply",
    ) as resource:
        driver = driver_on(resource, "scpi", table)
        driver.connect()
        with pytest.raises(ProtocolError, match=r"^supply: output \('OUTP\?'\): reply 'STANDBY': 'STANDBY' is not "
                                                r"in the map \(ON, OFF\)"):
            driver.read()
        (reading,) = driver.read()
    assert reading.value is False


@pytest.mark.parametrize(("query", "path", "message"), [
    ({"type": "bool", "map": {"ON": "yes"}}, "", "map: 'ON' -> 'yes' is not a bool value"),
    ({"type": "enum"}, "", "an enum channel needs either a map (reply -> word) or its choices"),
    ({"type": "int", "scale": 2}, "", "scale and offset apply to float channels, not to type int"),
    ({"choices": ["a"]}, "", "choices are the values of an enum channel"),
    ({"bits": {0: "a"}}, "", "bits name the bits of a bits channel"),
    ({"type": "bits", "bits": {60: "a"}}, ".bits", "key 60: Input should be less than or equal to 52"),
    ({"type": "colour"}, ".type", "Input should be"),
    ({"type": "string", "max_length": 1000}, ".max_length", "less than or equal to 256"),
])
def test_typed_query_problems_are_named_by_key_path(query: dict[str, Any], path: str, message: str) -> None:
    from bridge.config import parse_config
    from bridge.errors import ConfigError

    raw = {"site": "s", "bridge": {"instruments": [
        {"name": "supply", "driver": "scpi", "transport": {"kind": "visa", "resource": "TCPIP::h::5025::SOCKET"},
         "options": {"queries": [{"name": "x", "command": "X?", **query}]}}]}}
    with pytest.raises(ConfigError) as caught:
        parse_config(raw)
    problems = {p.path: p.message for p in caught.value.problems}
    key = f"bridge.instruments[0].options.queries[0]{path}"
    assert key in problems, problems
    assert message in problems[key]
