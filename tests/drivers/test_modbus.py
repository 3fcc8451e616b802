"""The generic modbus driver over real Modbus TCP and RTU (pty, 9600 baud) against the simulator,
in every fault mode: refused registers, refused blocks, device failure, silence, unknown unit,
slow replies, disconnects."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge.config import load_config, parse_config
from bridge.drivers.common.modbus_codec import RegisterSpec
from bridge.drivers.modbus import ModbusOptions, ModbusRegisters
from bridge.errors import ConfigError, DeviceError, TransportDisconnected, TransportTimeout
from bridge.model import Quality, Reading, ValueType
from bridge.transports.base import reopen
from bridge.transports.memory import ModbusRequest, Refusal
from simulators.instruments.modbus import DEMO_CHANNELS, DEMO_OPTIONS, DEMO_VALUES, MappedDevice, demo_device
from simulators.serving.modbus_server import Request
from tests.helpers.cli import EXAMPLES, example_with, read_json, simulator_command
from tests.helpers.conversation import driver_on, modbus_conversation
from tests.helpers.drivers import by_channel, read_and_close
from tests.helpers.modbus_server import SHORT, ModbusLink, serve

EXAMPLE = EXAMPLES / "modbus.yaml"
#: what the driver reads from the demo map: the numbers, and the typed channels as their types
EXPECTED: dict[str, Any] = {**DEMO_VALUES, "rotation_count": 123456, "pump_mode": "running", "alarms": 2,
                            "shutter_open": False, "interlock_ok": True}


def same(value: Any, expected: Any) -> bool:
    """Floats to within rounding; anything else exactly, type included (True is not 1.0 here)."""
    if type(expected) is float:
        return bool(value == pytest.approx(expected))
    return type(value) is type(expected) and value == expected


@pytest.fixture(params=["tcp", "rtu"])
def link(request: pytest.FixtureRequest) -> Iterator[ModbusLink]:
    """The demo register map (every type and order) over Modbus TCP and over RTU on a pty."""
    with serve(demo_device(), request.param) as link:
        yield link


def device(link: ModbusLink) -> MappedDevice:
    sim = link.server.devices[0]
    assert isinstance(sim, MappedDevice)
    return sim


def poll(link: ModbusLink, options: dict[str, Any] | None = None, **kwargs: Any) -> dict[str, Reading]:
    return by_channel(read_and_close(link.instrument("modbus", options or DEMO_OPTIONS, **kwargs)))


def requests(link: ModbusLink) -> list[tuple[int, int, int]]:
    return [(r.function, r.address, r.count) for r in link.server.requests]


def test_reads_every_type_word_and_byte_order_scale_and_offset(link: ModbusLink) -> None:
    before = time.time()
    readings = poll(link)
    after = time.time()
    assert list(readings) == [c["name"] for c in DEMO_CHANNELS]
    for name, value in EXPECTED.items():
        r = readings[name]
        assert (r.quality, r.detail) == (Quality.OK, "" if name != "alarms" else "door open"), name
        assert same(r.value, value), name
        assert before <= r.timestamp <= after
    assert readings["chamber_pressure"].value == 2.5e-7  # float32 given as its shortest decimal
    assert readings["rotation_count"].value == 123456
    # the typed channels: an integer, a word from the map, named bits, truth values
    assert {name: (r.type, r.value) for name, r in readings.items() if r.type is not ValueType.FLOAT} == {
        "rotation_count": (ValueType.INT, 123456), "pump_mode": (ValueType.ENUM, "running"),
        "alarms": (ValueType.BITS, 0b010), "shutter_open": (ValueType.BOOL, False),
        "interlock_ok": (ValueType.BOOL, True)}
    assert type(readings["rotation_count"].value) is int and readings["interlock_ok"].value is True
    assert (readings["chamber_pressure"].units, readings["cooling_flow"].units) == ("mbar", "l/min")
    # one read answers both input registers: one instant
    assert readings["chamber_pressure"].timestamp == readings["water_temperature"].timestamp


def test_registers_are_fetched_in_as_few_reads_as_possible(link: ModbusLink) -> None:
    link.server.requests.clear()
    poll(link)  # max_gap 8: holding 10..29 is one read across the unused 12..19 and 23
    assert requests(link) == [(1, 0, 1), (2, 0, 1), (3, 10, 22), (4, 0, 4)]
    link.server.requests.clear()
    poll(link, {"channels": DEMO_CHANNELS})  # max_gap 0: only adjacent registers merge
    assert requests(link) == [(1, 0, 1), (2, 0, 1), (3, 10, 2), (3, 20, 3), (3, 24, 8), (4, 0, 4)]


@pytest.mark.parametrize("kind", ["tcp", "rtu"])
def test_reads_stay_within_125_registers(kind: str) -> None:
    points = [(f"r{a}", RegisterSpec("input", a, "uint16"), float(a)) for a in range(200)]
    channels = [{"name": f"r{a}", "table": "input", "address": a} for a in range(200)]
    with serve(MappedDevice(points), kind) as link:
        readings = poll(link, {"channels": channels})
        assert requests(link) == [(4, 0, 125), (4, 125, 75)]
        link.server.requests.clear()
        poll(link, {"channels": channels, "max_registers": 60})
        assert requests(link) == [(4, 0, 60), (4, 60, 60), (4, 120, 60), (4, 180, 20)]
    assert [readings[f"r{a}"].value for a in range(200)] == list(range(200))


def test_a_refused_register_fails_only_its_channel(link: ModbusLink) -> None:
    spec = device(link).spec("valve_position")
    device(link).refuse(spec.table, spec.address)
    inst = link.instrument("modbus", DEMO_OPTIONS)
    try:
        link.server.requests.clear()
        first = by_channel(inst.read())
        # the block was refused, then each of its channels read alone
        holding = [r for r in requests(link) if r[0] == 3]
        assert holding == [(3, 10, 22), (3, 10, 2), (3, 20, 2), (3, 22, 1), (3, 24, 4), (3, 28, 2), (3, 30, 1),
                           (3, 31, 1)]
        link.server.requests.clear()
        second = by_channel(inst.read())
        assert [r for r in requests(link) if r[0] == 3] == holding[1:], "no refused block every poll"
        device(link).refuse(spec.table, spec.address, refused=False)
        third = by_channel(inst.read())
    finally:
        inst.close()
    for readings in (first, second):
        valve = readings["valve_position"]
        assert (valve.value, valve.quality) == (None, Quality.INVALID)
        assert valve.detail == "refused: illegal data address (0x02)"
        assert valve.units == "%"
        for name in DEMO_VALUES.keys() - {"valve_position"}:
            assert readings[name].quality is Quality.OK, name
            assert same(readings[name].value, EXPECTED[name]), name
    assert third["valve_position"].value == pytest.approx(42.5)


@pytest.mark.parametrize("kind", ["tcp", "rtu"])
def test_a_refused_hole_between_channels_costs_no_channel(kind: str) -> None:
    points = [("low", RegisterSpec("holding", 22, "int16", scale=0.01), 42.5),
              ("high", RegisterSpec("holding", 24, "float64"), 20.5)]
    options = {"channels": [{"name": "low", "table": "holding", "address": 22, "type": "int16", "scale": 0.01},
                            {"name": "high", "table": "holding", "address": 24, "type": "float64"}],
               "max_gap": 1}
    with serve(MappedDevice(points), kind) as link:  # nothing at 23: the bridged read is refused
        inst = link.instrument("modbus", options)
        try:
            first = by_channel(inst.read())
            assert requests(link) == [(3, 22, 6), (3, 22, 1), (3, 24, 4)]
            link.server.requests.clear()
            second = by_channel(inst.read())
            assert requests(link) == [(3, 22, 1), (3, 24, 4)]
        finally:
            inst.close()
    for readings in (first, second):
        assert (readings["low"].value, readings["high"].value) == (pytest.approx(42.5), pytest.approx(20.5))
        assert all(r.quality is Quality.OK for r in readings.values())


@pytest.mark.parametrize(("code", "name"), [(4, "server device failure (0x04)"), (6, "server device busy (0x06)")])
def test_device_failure_or_busy_fails_the_whole_instrument(link: ModbusLink, code: int, name: str) -> None:
    inst = link.instrument("modbus", DEMO_OPTIONS)
    try:
        device(link).exception_code = code
        with pytest.raises(DeviceError) as caught:
            inst.read()
        assert caught.value.code == code
        assert str(caught.value).startswith("dev: ") and name in str(caught.value)
        device(link).exception_code = None
        assert all(r.quality is Quality.OK for r in inst.read())
    finally:
        inst.close()


def test_a_silent_device_is_a_timeout(link: ModbusLink) -> None:
    inst = link.instrument("modbus", DEMO_OPTIONS, timeout=SHORT)
    try:
        device(link).silent = True
        with pytest.raises(TransportTimeout, match=r"^dev: no reply"):
            inst.read()
        device(link).silent = False
        assert by_channel(inst.read())["gas_flow"].value == pytest.approx(20.5)
    finally:
        inst.close()


def test_an_unknown_unit_id_gets_silence(link: ModbusLink) -> None:
    inst = link.instrument("modbus", DEMO_OPTIONS, unit=7, timeout=SHORT)
    try:
        with pytest.raises(TransportTimeout, match=r"unit 7"):
            inst.read()
    finally:
        inst.close()
    assert any(r.unit == 7 for r in link.server.requests)


def test_slow_replies_within_and_beyond_the_timeout(link: ModbusLink) -> None:
    inst = link.instrument("modbus", DEMO_OPTIONS)
    try:
        device(link).reply_delay = 0.1
        assert by_channel(inst.read())["cooling_flow"].value == pytest.approx(12.3)
        device(link).reply_delay = 1.5  # beyond the 1 s timeout: late, not lost
        with pytest.raises(TransportTimeout):
            inst.read()
        device(link).reply_delay = 0.0
        link.settle()  # the late reply has arrived; it must not be taken for the next answer
        readings = by_channel(inst.read())
    finally:
        inst.close()
    assert all(same(readings[n].value, v) for n, v in EXPECTED.items())


def test_not_a_number_is_invalid(link: ModbusLink) -> None:
    device(link).set_value("chamber_pressure", float("nan"))
    readings = poll(link)
    assert (readings["chamber_pressure"].value, readings["chamber_pressure"].quality) == (None, Quality.INVALID)
    assert readings["cooling_flow"].quality is Quality.OK


def test_values_follow_the_device(link: ModbusLink) -> None:
    inst = link.instrument("modbus", DEMO_OPTIONS)
    try:
        device(link).set_source("heater_setpoint", lambda: 700.25)
        device(link).set_value("shutter_open", 1)
        readings = by_channel(inst.read())
    finally:
        inst.close()
    assert readings["heater_setpoint"].value == 700.25
    assert readings["shutter_open"].value == 1.0


def test_disconnect_fails_the_instrument_and_reopen_recovers_on_tcp(link: ModbusLink) -> None:
    inst = link.instrument("modbus", DEMO_OPTIONS)
    try:
        inst.read()
        link.server.unplug()
        with pytest.raises((TransportDisconnected, TransportTimeout)) as caught:
            inst.read()
        assert str(caught.value).startswith("dev: ")
        if link.kind == "tcp":
            reopen(inst.transport)
            assert by_channel(inst.read())["interlock_ok"].value == 1.0
        else:  # the adapter is gone: the port cannot be opened again
            with pytest.raises(TransportDisconnected, match="cannot open"):
                reopen(inst.transport)
    finally:
        inst.close()


def test_two_devices_share_one_line_with_one_transport(link: ModbusLink) -> None:
    # the same map at unit 1, read through a transport shared with a driver for unit 1
    transport = link.transport(timeout=SHORT)
    try:
        options = ModbusOptions.model_validate(DEMO_OPTIONS)
        here = ModbusRegisters(transport, options, "plc_a")
        elsewhere = ModbusRegisters(transport, options, "plc_b", unit=9)
        assert by_channel(here.read())["gas_flow"].value == pytest.approx(20.5)
        with pytest.raises(TransportTimeout, match=r"^plc_b: .*unit 9"):
            elsewhere.read()
        assert by_channel(here.read())["gas_flow"].value == pytest.approx(20.5)
    finally:
        transport.close()


# ---------------------------------------------------------------- config


def test_options_problems_are_named_by_key_path() -> None:
    channels = [
        {"name": "a", "table": "holding", "address": 0, "type": "bool"},
        {"name": "b", "table": "coil", "address": 0, "type": "int16"},
        {"name": "c", "table": "holding", "address": 65534, "type": "float64"},
        {"name": "d", "table": "holding", "address": 0, "scale": 0},
        {"name": "e", "table": "coil", "address": 1, "scale": 2},
        {"name": "f", "table": "memory", "address": 0},
        {"name": "g", "table": "input", "address": -1},
        {"name": "h", "table": "input", "address": 0, "colour": "red"},
    ]
    raw = {"site": "s", "bridge": {"instruments": [
        {"name": "plc", "driver": "modbus", "transport": {"kind": "modbus_tcp", "host": "h"},
         "options": {"channels": channels, "max_gap": 200}},
        {"name": "dup", "driver": "modbus", "transport": {"kind": "modbus_rtu", "port": "/dev/x"},
         "options": {"channels": [{"name": "x", "table": "input", "address": 0}] * 2}},
        {"name": "none", "driver": "modbus", "transport": {"kind": "serial", "port": "/dev/x"},
         "options": {"channels": []}},
    ]}}
    with pytest.raises(ConfigError) as caught:
        parse_config(raw)
    problems = {p.path: p.message for p in caught.value.problems}
    at = "bridge.instruments[0].options"
    assert "bits are read from coil or discrete" in problems[f"{at}.channels[0].type"]
    assert "type must be bool" in problems[f"{at}.channels[1].type"]
    assert "runs past the last address 65535" in problems[f"{at}.channels[2].address"]
    assert "scale 0" in problems[f"{at}.channels[3].scale"]
    assert "scale apply to registers" in problems[f"{at}.channels[4]"]
    assert f"{at}.channels[5].table" in problems
    assert f"{at}.channels[6].address" in problems
    assert problems[f"{at}.channels[7].colour"] == "unknown key"
    assert f"{at}.max_gap" in problems
    assert "'x' is used twice" in problems["bridge.instruments[1].options.channels"]
    assert "does not work over 'serial'" in problems["bridge.instruments[2].transport.kind"]
    assert "bridge.instruments[2].options.channels" in problems


def test_defaults_raw_registers_and_bits() -> None:
    options = ModbusOptions.model_validate({"channels": [{"name": "r", "table": "input", "address": 5},
                                                         {"name": "b", "table": "discrete", "address": 5}]})
    assert [c.type for c in options.channels] == ["uint16", "bool"]
    assert [c.description for c in ModbusRegisters.channel_table(options)] == [
        "input 5 uint16", "discrete 5 bool"]


def test_example_config_is_the_simulators_map() -> None:
    config = load_config(EXAMPLE)
    (plc,) = config.bridge.instruments
    assert ModbusOptions.model_validate(plc.options) == ModbusOptions.model_validate(DEMO_OPTIONS)


def test_simulate_command_and_read_of_the_example_config(tmp_path: Path) -> None:
    with simulator_command("modbus", "--tcp", "127.0.0.1:0", "--wander", "0", "--absent", "gas_flow") as cli:
        host, port = cli.where.rsplit(":", 1)
        config = example_with("modbus.yaml", tmp_path, host=host, port=int(port))
        readings = {r["channel"]: r for r in read_json(config)}
    assert readings["heater_setpoint"]["value"] == 650.0 and readings["heater_setpoint"]["quality"] == "ok"
    assert readings["gas_flow"] == {**readings["gas_flow"], "value": None, "quality": "invalid",
                                    "detail": "refused: illegal data address (0x02)"}
    assert len(readings) == len(DEMO_CHANNELS)


def test_simulate_command_serves_a_configs_map_on_a_pty(tmp_path: Path) -> None:
    with simulator_command("modbus", "--config", str(EXAMPLE), "--set", "cooling_flow=4.5",
                           "--wander", "0") as cli:
        assert cli.where.startswith("/dev/")
        raw = yaml.safe_load(EXAMPLE.read_text())
        raw["bridge"]["instruments"][0]["transport"] = {"kind": "modbus_rtu", "port": cli.where, "timeout": 1.0}
        config = tmp_path / "modbus.yaml"
        config.write_text(yaml.safe_dump(raw))
        readings = {r["channel"]: r for r in read_json(config)}
    assert readings["cooling_flow"]["value"] == 4.5
    assert all(r["quality"] == "ok" for r in readings.values())


def test_requests_are_logged_with_their_unit(link: ModbusLink) -> None:
    poll(link)
    assert Request(1, 4, 0, 4) in link.server.requests


def test_conversation_blocks_merged_and_a_refused_block_split_register_for_register() -> None:
    options = {"channels": [
        {"name": "pressure", "table": "input", "address": 0, "type": "float32", "units": "mbar"},
        {"name": "flow", "table": "input", "address": 2, "scale": 0.1, "units": "l/min"},
        {"name": "setpoint", "table": "holding", "address": 20, "type": "float32", "word_order": "little"},
        {"name": "missing", "table": "holding", "address": 22},
        {"name": "shutter", "table": "coil", "address": 0},
    ]}
    with modbus_conversation(
        (ModbusRequest("coils", 0, 1, 7), [True]),                   # tables in order: coil, holding, input
        (ModbusRequest("holding", 20, 3, 7), Refusal(0x02)),         # one read for both holding channels: refused
        (ModbusRequest("holding", 20, 2, 7), [0x0000, 0x4170]),      # so each is read on its own
        (ModbusRequest("holding", 22, 1, 7), Refusal(0x02)),
        (ModbusRequest("input", 0, 3, 7), [0x3A83, 0x126F, 152]),    # adjacent: merged
        (ModbusRequest("coils", 0, 1, 7), [False]),
        (ModbusRequest("holding", 20, 2, 7), [0x0000, 0x4170]),      # the next poll: the split is kept
        (ModbusRequest("holding", 22, 1, 7), Refusal(0x02)),
        (ModbusRequest("input", 0, 3, 7), [0x3A83, 0x126F, 153]),
        owner="plc", unit=7,
    ) as link:
        driver = driver_on(link, "modbus", options)
        first = {r.channel: r for r in driver.read()}
        second = {r.channel: r for r in driver.read()}
    assert (first["pressure"].value, first["flow"].value, first["setpoint"].value) == (0.001, 15.2, 15.0)
    missing = first["missing"]
    assert (missing.quality, missing.detail) == (Quality.INVALID, "refused: illegal data address (0x02)")
    assert (first["shutter"].value, second["shutter"].value, second["flow"].value) == (True, False, 15.3)
    assert first["shutter"].value is True and first["shutter"].type is ValueType.BOOL


def test_conversation_typed_channels_register_for_register() -> None:
    """A coil and a discrete input as bools, a mode register through a map, named alarm bits, a counter as
    an integer, a register read as bool: one request per table, each value of its type."""
    options = {"channels": [
        {"name": "shutter", "table": "coil", "address": 4},
        {"name": "door", "table": "discrete", "address": 0, "map": {0: "closed", 1: "open"}},
        {"name": "mode", "table": "holding", "address": 100, "map": {0: "off", 1: "standby", 2: "running"}},
        {"name": "alarms", "table": "holding", "address": 101, "bits": {0: "overtemperature", 3: "door open"}},
        {"name": "count", "table": "holding", "address": 102, "type": "uint32", "channel_type": "int"},
        {"name": "pump_on", "table": "holding", "address": 104, "channel_type": "bool"},
        {"name": "valves", "table": "holding", "address": 105, "map": {0: False, 7: True}},
    ]}
    with modbus_conversation(
        (ModbusRequest("coils", 4, 1, 1), [True]),
        (ModbusRequest("discrete", 0, 1, 1), [True]),
        (ModbusRequest("holding", 100, 6, 1), [2, 0b1001, 0x0001, 0x86A0, 3, 7]),
        (ModbusRequest("coils", 4, 1, 1), [False]),
        (ModbusRequest("discrete", 0, 1, 1), [False]),
        (ModbusRequest("holding", 100, 6, 1), [5, 0, 0, 1, 0, 4]),    # 5 and 4 are in no map
        owner="plc",
    ) as link:
        driver = driver_on(link, "modbus", options)
        assert [(c.name, c.type.describe()) for c in driver.channels] == [
            ("shutter", "bool"), ("door", "enum (closed, open)"), ("mode", "enum (off, standby, running)"),
            ("alarms", "bits (0 overtemperature, 3 door open)"), ("count", "int"), ("pump_on", "bool"),
            ("valves", "bool")]
        first = {r.channel: r for r in driver.read()}
        second = {r.channel: r for r in driver.read()}
    assert {name: (r.type.value, r.value, r.detail) for name, r in first.items()} == {
        "shutter": ("bool", True, ""), "door": ("enum", "open", ""), "mode": ("enum", "running", ""),
        "alarms": ("bits", 9, "overtemperature, door open"), "count": ("int", 100_000, ""),
        "pump_on": ("bool", True, ""), "valves": ("bool", True, "")}
    assert type(first["count"].value) is int and first["shutter"].value is True
    assert (second["door"].value, second["alarms"].value, second["count"].value, second["pump_on"].value) == (
        "closed", 0, 1, False)
    for name, raw in (("mode", 5), ("valves", 4)):
        assert (second[name].value, second[name].quality, second[name].detail) == (
            None, Quality.INVALID, f"raw value {raw} is not in the map")


@pytest.mark.parametrize(("channel", "message"), [
    ({"table": "holding", "type": "float32", "channel_type": "int"}, "an int channel reads an integer"),
    ({"table": "holding", "channel_type": "int", "scale": 0.1}, "scale and offset make a float"),
    ({"table": "holding", "map": {0: "a", 1: True}}, "all words (an enum) or all true/false"),
    ({"table": "holding", "channel_type": "int", "map": {0: "a"}}, "makes an enum channel, not an int one"),
    ({"table": "holding", "channel_type": "enum"}, "an enum channel needs a map"),
    ({"table": "holding", "bits": {16: "x"}}, "bit 16 is past the 16 bits of a uint16"),
    ({"table": "holding", "type": "int16", "bits": {0: "x"}}, "an unsigned register"),
    ({"table": "holding", "channel_type": "bits", "map": {0: "a"}}, "makes an enum channel, not a bits one"),
    ({"table": "coil", "channel_type": "int"}, "a coil holds one bit"),
    ({"table": "holding", "channel_type": "string"}, "Input should be 'float', 'int', 'bool', 'enum' or 'bits'"),
])
def test_typed_register_entries_are_checked_at_load(channel: dict[str, Any], message: str) -> None:
    raw = {"site": "s", "bridge": {"instruments": [
        {"name": "plc", "driver": "modbus", "transport": {"kind": "modbus_tcp", "host": "h"},
         "options": {"channels": [{"name": "x", "address": 0, **channel}]}}]}}
    with pytest.raises(ConfigError) as caught:
        parse_config(raw)
    (problem,) = caught.value.problems
    assert problem.path.startswith("bridge.instruments[0].options.channels[0]")
    assert message in problem.message
