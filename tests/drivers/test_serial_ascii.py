"""The ``serial_ascii`` query-table driver over a real pty and real TCP (``socket://``) against the
text device simulator, in every fault mode."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge.errors import ProtocolError, TransportDisconnected, TransportTimeout
from bridge.model import Quality
from simulators.instruments.serial_ascii import TextDevice
from tests.helpers.cli import example_with, read_json, simulator_command
from tests.helpers.conversation import driver_on, serial_conversation
from tests.helpers.drivers import fails_then_recovers, read_and_close, unplug_fails, values
from tests.helpers.text_query import Served, connect, serve

TABLE: list[dict[str, Any]] = [
    {"name": "temperature", "command": "T?", "parse": "regex", "regex": r"T=([-+0-9.]+)C", "units": "degC"},
    {"name": "humidity", "command": "H?", "parse": "regex", "regex": r"H=([-+0-9.]+)%", "units": "%"},
    {"name": "counts", "command": "N?", "scale": 0.5, "offset": 1.0, "units": "1"},
]


def station() -> TextDevice:
    """A temperature / humidity station; its counter answers a bare number."""
    return TextDevice({"T?": "T={T:.2f}C", "H?": "H={H:.1f}%", "N?": "{N:d}", "ID?": "WS-2 station"},
                      {"T": 23.51, "H": 40.0, "N": 17})


@pytest.fixture(params=["pty", "tcp"])
def dev(request: pytest.FixtureRequest) -> Iterator[Served]:
    with serve(station(), request.param) as served:
        yield served


def device_of(served: Served) -> TextDevice:
    assert isinstance(served.device, TextDevice)
    return served.device


def test_reads_the_query_table(dev: Served) -> None:
    readings = read_and_close(dev.serial("serial_ascii", name="weather", queries=TABLE))
    assert [(r.instrument, r.channel, r.units, r.quality) for r in readings] == [
        ("weather", "temperature", "degC", Quality.OK), ("weather", "humidity", "%", Quality.OK),
        ("weather", "counts", "1", Quality.OK)]
    assert values(readings) == {"temperature": pytest.approx(23.51), "humidity": pytest.approx(40.0),
                                "counts": pytest.approx(9.5)}
    sent = b"".join(data for direction, data in device_of(dev).log if direction == "rx")
    assert sent == b"T?\rH?\rN?\r", "each command once, with exactly the terminator"


def test_values_follow_the_device(dev: Served) -> None:
    inst = dev.serial("serial_ascii", queries=TABLE[:1])
    try:
        device_of(dev).set_source("T", lambda: -12.5)
        (reading,) = inst.read()
    finally:
        inst.close()
    assert reading.value == pytest.approx(-12.5)


def test_reply_that_does_not_parse_is_a_protocol_error_quoting_it(dev: Served) -> None:
    device = device_of(dev)
    inst = dev.serial("serial_ascii", name="weather", queries=TABLE)
    try:
        device.set_reply("T?", "T=----C")  # the sensor's "no reading"
        with pytest.raises(ProtocolError,
                           match=r"^weather: temperature \('T\?'\): captured '----' of reply 'T=----C' is not a"):
            inst.read()
        device.set_reply("N?", "overflow")
        device.set_reply("T?", "T={T:.2f}C")
        with pytest.raises(ProtocolError, match=r"^weather: counts \('N\?'\): reply 'overflow' is not a number$"):
            inst.read()
        device.set_reply("N?", "{N:d}")
        assert values(inst.read())["counts"] == pytest.approx(9.5)
    finally:
        inst.close()


def test_silence_is_a_timeout_naming_the_instrument_then_recovers(dev: Served) -> None:
    inst = dev.serial("serial_ascii", name="weather", timeout=0.3, queries=TABLE)
    try:
        after = fails_then_recovers(inst, device_of(dev), TransportTimeout, r"^weather: no reply ending in b'\\r'",
                                    silent=True)
        assert values(after)["temperature"] == pytest.approx(23.51)
    finally:
        inst.close()


def test_late_reply_is_not_taken_for_the_next_one(dev: Served) -> None:
    device = device_of(dev)
    inst = dev.serial("serial_ascii", timeout=0.3, queries=TABLE[1:2])
    try:
        device.reply_delay = 0.6  # "H=40.0%" arrives after the driver gave up
        with pytest.raises(TransportTimeout):
            inst.read()
        device.reply_delay = 0.0
        device.set_value("H", 55.0)
        assert dev.wait_sent(), "the late reply is on the line"
        (humidity,) = inst.read()
    finally:
        inst.close()
    assert humidity.value == pytest.approx(55.0)


def test_late_reply_still_in_flight_is_left_to_settle(dev: Served) -> None:
    device = device_of(dev)
    inst = dev.serial("serial_ascii", timeout=0.3, settle=1.0, queries=TABLE[1:2])
    try:
        device.reply_delay = 0.5
        with pytest.raises(TransportTimeout):
            inst.read()
        device.reply_delay = 0.0
        device.set_value("H", 55.0)
        (humidity,) = inst.read()  # at once: the settle time catches the late reply
    finally:
        inst.close()
    assert humidity.value == pytest.approx(55.0)


def test_echo_of_the_command_is_skipped(dev: Served) -> None:
    device_of(dev).echo = True
    assert values(read_and_close(dev.serial("serial_ascii", queries=TABLE)))["counts"] == pytest.approx(9.5)


def test_garbage_and_split_replies_are_tolerated(dev: Served) -> None:
    device = device_of(dev)
    inst = dev.serial("serial_ascii", queries=TABLE)
    try:
        device.garbage = b"\xff\xfe\x00"
        device.split_replies = True
        assert values(inst.read())["temperature"] == pytest.approx(23.51)
    finally:
        inst.close()


def test_unknown_command_answered_with_an_error_word(dev: Served) -> None:
    device_of(dev).unknown_reply = "ERR"
    inst = dev.serial("serial_ascii", name="weather", queries=[{"name": "p", "command": "P?"}])
    try:
        with pytest.raises(ProtocolError, match=r"^weather: p \('P\?'\): reply 'ERR' is not a number$"):
            inst.read()
    finally:
        inst.close()


def test_crlf_replies_and_lf_commands() -> None:
    device = TextDevice({"R": "{x:.3f}"}, {"x": 1.25}, terminator=b"\n", reply_terminator=b"\r\n")
    with serve(device, "pty") as served:
        inst = served.serial("serial_ascii", terminator="\n", reply_terminator="\r\n",
                             queries=[{"name": "r", "command": "R"}])
        try:
            assert values(inst.read()) == {"r": pytest.approx(1.25)}
            assert values(inst.read()) == {"r": pytest.approx(1.25)}
        finally:
            inst.close()


def test_overload_code_is_over_range_without_value() -> None:
    device = TextDevice({"V?": "+9.9E+37"}, {})
    with serve(device, "pty") as served:
        inst = served.serial("serial_ascii", queries=[{"name": "v", "command": "V?", "units": "V"}])
        try:
            (reading,) = inst.read()
        finally:
            inst.close()
    assert (reading.value, reading.quality, reading.units) == (None, Quality.OVER_RANGE, "V")


def test_unplugged_device_is_a_disconnect(dev: Served) -> None:
    inst = dev.serial("serial_ascii", timeout=0.3, queries=TABLE[:1])
    try:
        unplug_fails(inst, dev)
    finally:
        inst.close()


def test_unreachable_port_names_it(dev: Served) -> None:
    dev.server.stop()
    with pytest.raises(TransportDisconnected, match=r"^dev: cannot open"):
        dev.serial("serial_ascii", queries=TABLE)


def test_example_config_reads_the_cli_simulator(tmp_path: Path) -> None:
    with simulator_command("serial_ascii", "--tcp", "127.0.0.1:0", "--value", "T=-3.25") as cli:
        assert cli.where.startswith("socket://127.0.0.1:")
        config = example_with("serial_ascii.yaml", tmp_path, port=cli.where)
        got = {r["channel"]: (r["value"], r["units"], r["quality"], r.get("type", "float")) for r in read_json(config)}
    assert got == {"temperature": (pytest.approx(-3.25), "degC", "ok", "float"),
                   "temperature_k": (pytest.approx(269.9), "K", "ok", "float"),
                   "model": ("TT-100 thermometer", "1", "ok", "string")}


def test_cli_serves_on_a_pty_by_default() -> None:
    with simulator_command("serial_ascii", "--query", "F?=F={F:.1f}", "--value", "F=2.5") as cli:
        assert cli.where.startswith("/dev/")
        inst = connect("flow", "serial_ascii", {"kind": "serial", "port": cli.where, "timeout": 1.0},
                       {"queries": [{"name": "f", "command": "F?", "parse": "regex", "regex": r"F=(\S+)"}]})
        try:
            assert values(inst.read()) == {"f": pytest.approx(2.5)}
        finally:
            inst.close()


def test_conversation_one_poll_byte_for_byte_with_echo_and_blank_line_skipped() -> None:
    options = {"terminator": "\r", "reply_terminator": "\n", "queries": [
        {"name": "temperature", "command": "T?", "parse": "regex", "regex": r"T=([-+0-9.]+)C", "units": "degC"},
        {"name": "flow", "command": "F?", "scale": 0.1, "units": "l/min"},
    ]}
    with serial_conversation(
        (b"T?\r", b"T=23.5C\r\n"),
        (b"F?\r", b"F?\n\r\n152\r\n"),        # the command's echo and a blank line, then the reply
        owner="bath",
    ) as line:
        driver = driver_on(line, "serial_ascii", options)
        driver.connect()
        temperature, flow = driver.read()
    assert (temperature.value, temperature.units) == (23.5, "degC")
    assert (flow.value, flow.units) == (pytest.approx(15.2), "l/min")


def test_conversation_after_an_unparsable_reply_a_late_reply_is_dropped_not_read() -> None:
    options = {"queries": [{"name": "t", "command": "T?"}]}
    with serial_conversation((b"T?\r", b"ERR 3\r"), (b"T?\r", b"22.0\r"), owner="bath") as line:
        driver = driver_on(line, "serial_ascii", options)
        with pytest.raises(ProtocolError, match=r"^bath: t \('T\?'\): reply 'ERR 3' is not a number"):
            driver.read()
        line.feed(b"21.0\r")  # the real answer to the last query, late
        (reading,) = driver.read()
    assert reading.value == 22.0


# ---------------------------------------------------------------- typed channels

TYPED: list[dict[str, Any]] = [
    {"name": "heater", "command": "OUT?", "type": "bool", "map": {"ON": True, "OFF": False}},
    {"name": "mode", "command": "MODE?", "type": "enum", "choices": ["AUTO", "MANUAL"]},
    {"name": "status", "command": "ST?", "parse": "regex", "regex": r"ST=(\S+)", "type": "bits",
     "bits": {0: "low water", 2: "overheat"}},
    {"name": "cycles", "command": "N?", "type": "int"},
    {"name": "model", "command": "ID?", "type": "string"},
]


def bath() -> TextDevice:
    """A water bath: heater on or off, a mode word, a status word in hex, a cycle counter, its model."""
    return TextDevice({"OUT?": "{OUT}", "MODE?": "{MODE}", "ST?": "ST=0x{ST:02X}", "N?": "{N:d}", "ID?": "WB-7 bath"},
                      {"OUT": "ON", "MODE": "AUTO", "ST": 0, "N": 41})


@pytest.mark.parametrize("kind", ["pty", "tcp"])
def test_typed_queries_over_a_real_line(kind: str) -> None:
    with serve(bath(), kind) as served:
        sim = device_of(served)
        inst = served.serial("serial_ascii", name="bath", queries=TYPED)
        try:
            first = {r.channel: r for r in inst.read()}
            sim.set_value("OUT", "OFF")
            sim.set_value("MODE", "MANUAL")
            sim.set_value("ST", 0b101)
            sim.set_value("N", 42)
            second = {r.channel: r for r in inst.read()}
        finally:
            inst.close()
    assert {name: (r.type.value, r.value, r.detail) for name, r in first.items()} == {
        "heater": ("bool", True, ""), "mode": ("enum", "AUTO", ""), "status": ("bits", 0, ""),
        "cycles": ("int", 41, ""), "model": ("string", "WB-7 bath", "")}
    assert {name: (r.value, r.detail) for name, r in second.items()} == {
        "heater": (False, ""), "mode": ("MANUAL", ""), "status": (5, "low water, overheat"), "cycles": (42, ""),
        "model": ("WB-7 bath", "")}
    assert second["heater"].value is False and type(second["cycles"].value) is int


def test_conversation_typed_replies_byte_for_byte() -> None:
    options = {"queries": TYPED}
    with serial_conversation(
        (b"OUT?\r", b"OFF\r"), (b"MODE?\r", b"MANUAL\r"), (b"ST?\r", b"ST=0x04\r"), (b"N?\r", b"-3\r"),
        (b"ID?\r", b"WB-7 bath\r"),
        (b"OUT?\r", b"ON\r"), (b"MODE?\r", b"SERVICE\r"),    # not one of the choices: quoted, resynchronised
        owner="bath",
    ) as line:
        driver = driver_on(line, "serial_ascii", options)
        readings = {r.channel: r.value for r in driver.read()}
        with pytest.raises(ProtocolError, match=r"^bath: mode \('MODE\?'\): reply 'SERVICE': 'SERVICE' is not one of "
                                                r"AUTO, MANUAL"):
            driver.read()
    assert readings == {"heater": False, "mode": "MANUAL", "status": 4, "cycles": -3, "model": "WB-7 bath"}


def test_a_bits_reply_that_is_negative_or_not_an_integer_is_a_protocol_error() -> None:
    options = {"queries": [TYPED[2]]}
    with serial_conversation((b"ST?\r", b"ST=-1\r"), (b"ST?\r", b"ST=1.5\r"), owner="bath") as line:
        driver = driver_on(line, "serial_ascii", options)
        with pytest.raises(ProtocolError, match=r"a set of bits is not negative: '-1'"):
            driver.read()
        with pytest.raises(ProtocolError, match=r"not an integer: '1.5'"):
            driver.read()
