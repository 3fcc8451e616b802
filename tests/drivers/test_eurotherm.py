"""The eurotherm driver over real Modbus TCP and RTU (pty, 9600 baud) against the simulator:
every family, both regions, status bits, absent parameters, silence, unknown unit, slow replies,
disconnects, and two controllers with their own unit ids on one RTU line."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from bridge.config import SHARED_OWNER, InstrumentConfig, load_config, parse_config
from bridge.drivers.common.modbus_codec import encode
from bridge.drivers.eurotherm import Eurotherm, EurothermOptions
from bridge.edge.instrument import Instrument
from bridge.edge.polling.bus import assemble
from bridge.errors import ConfigError, DeviceError, TransportDisconnected, TransportTimeout
from bridge.model import Quality, Reading, ValueType
from bridge.transports.memory import ModbusRequest
from simulators.instruments.eurotherm import EurothermSimulator
from simulators.serving.modbus_server import Request
from tests.helpers.cli import EXAMPLES, example_with, read_json, run_cli, simulator_command
from tests.helpers.conversation import driver_on, modbus_conversation
from tests.helpers.drivers import by_channel, read_and_close, reconnect
from tests.helpers.modbus_server import SHORT, TIMEOUT, ModbusLink, serve

EXAMPLE = EXAMPLES / "eurotherm.yaml"


def controller(family: str = "2400", unit: int = 1, pv: float | None = 234.5, setpoint: float = 250.0
               ) -> EurothermSimulator:
    sim = EurothermSimulator(family, unit, setpoint=setpoint, seed=1)
    for loop in range(1, sim.loops + 1):
        sim.set_pv(pv, loop)
    return sim


@pytest.fixture(params=["tcp", "rtu"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def link(kind: str) -> Iterator[ModbusLink]:
    """A 2408 at unit 1, PV held at 234.5, setpoint 250."""
    with serve(controller(), kind) as link:
        yield link


def pv_of(readings: dict[str, Reading]) -> float:
    value = readings["pv"].value
    assert value is not None, readings["pv"]
    return value


def sim_of(link: ModbusLink, unit: int = 1) -> EurothermSimulator:
    sim = link.server.device(unit)
    assert isinstance(sim, EurothermSimulator)
    return sim


def connect(link: ModbusLink, family: str = "2400", *, unit: int = 1, name: str = "cell",
            timeout: float = TIMEOUT, **options: object) -> Instrument:
    return link.instrument("eurotherm", {"family": family, **options}, unit=unit, name=name, timeout=timeout)


def poll(link: ModbusLink, family: str = "2400", *, unit: int = 1, name: str = "cell", **options: object
         ) -> dict[str, Reading]:
    return by_channel(read_and_close(connect(link, family, unit=unit, name=name, **options)))


def test_reads_pv_setpoint_and_power_in_two_requests(link: ModbusLink) -> None:
    inst = connect(link)
    try:
        link.server.requests.clear()
        before = time.time()
        readings = by_channel(inst.read())
        after = time.time()
    finally:
        inst.close()
    pv, sp, op = readings["pv"], readings["working_setpoint"], readings["output_power"]
    assert (pv.value, pv.quality, pv.units, pv.detail) == (234.5, Quality.OK, "degC", "")
    assert (sp.value, sp.units) == (250.0, "degC")
    assert op.units == "%" and op.quality is Quality.OK and 0.0 < (op.value or 0) <= 100.0
    # the status word, then parameters 1..5 as IEEE floats in one block (docs/protocols.md 6.3)
    assert [(r.function, r.address, r.count) for r in link.server.requests] == [(3, 75, 1), (3, 0x8002, 10)]
    assert before <= pv.timestamp == sp.timestamp == op.timestamp <= after
    assert sim_of(link).writes == [] and sim_of(link).eeprom_writes == 0, "the driver never writes"


@pytest.mark.parametrize(("family", "op_register"), [("2400", 0x8006), ("3200", 0x8008), ("3500", 0x8006)])
def test_each_family_reads_its_own_output_power(kind: str, family: str, op_register: int) -> None:
    sim = controller(family)
    with serve(sim, kind) as link:
        sim.loop().output = 0.0
        readings = poll(link, family)
        power = sim.output_power()
    assert readings["output_power"].value == pytest.approx(power, abs=0.01)
    if family == "3200":
        assert sim.value("MAN.OP") == 0.0 != power, "3200 address 3 is the manual output, not the power"
    assert readings["pv"].value == 234.5 and op_register == 0x8000 + 2 * (4 if family == "3200" else 3)


def test_loop_two_of_a_3504(kind: str) -> None:
    sim = controller("3500")
    sim.set_pv(812.25, loop=2)
    sim.set_setpoint(820.0, loop=2)
    with serve(sim, kind) as link:
        link.server.requests.clear()
        readings = poll(link, "3500", loop=2)
        # connect (status), then the poll: status, loop 2's parameters 1025..1029 as floats
        assert [(r.address, r.count) for r in link.server.requests] == [(75, 1), (75, 1), (0x8000 + 2 * 1025, 10)]
    assert readings["pv"].value == 812.25 and readings["working_setpoint"].value == 820.0


def test_scaled_integers_with_the_display_resolution(link: ModbusLink) -> None:
    link.server.requests.clear()
    readings = poll(link, use_ieee=False, decimals=1)
    assert [(r.address, r.count) for r in link.server.requests] == [(75, 1), (1, 5), (75, 1)]
    assert readings["pv"].value == pytest.approx(234.5)
    assert readings["working_setpoint"].value == pytest.approx(250.0)
    sim_of(link).decimals = 2  # resolution changed on the front panel: integers now 10x larger
    assert poll(link, use_ieee=False, decimals=2)["pv"].value == pytest.approx(234.5)
    assert poll(link, use_ieee=False, decimals=1)["pv"].value == pytest.approx(2345.0), "why IEEE is the default"
    assert poll(link)["pv"].value == 234.5


def test_sensor_break_is_a_sensor_error_without_value(link: ModbusLink) -> None:
    sim_of(link).sensor_break = True
    readings = poll(link)
    pv = readings["pv"]
    assert (pv.value, pv.quality, pv.detail) == (None, Quality.SENSOR_ERROR, "sensor break")
    assert readings["working_setpoint"].value == 250.0
    assert (readings["output_power"].value, readings["output_power"].detail) == (0.0, "sensor break")


def test_pv_out_of_range_is_invalid_without_value(link: ModbusLink) -> None:
    sim_of(link).pv_out_of_range = True
    pv = poll(link)["pv"]
    assert (pv.value, pv.quality, pv.detail) == (None, Quality.INVALID, "PV out of range")
    sim_of(link).pv_out_of_range = False
    sim_of(link).set_pv(1500.0)  # beyond the thermocouple's range: the controller flags it itself
    assert poll(link)["pv"].quality is Quality.INVALID


def test_other_status_bits_are_named_in_the_detail(link: ModbusLink) -> None:
    sim_of(link).status_bits = 1 << 0 | 1 << 7
    readings = poll(link)
    assert (readings["pv"].value, readings["pv"].quality) == (234.5, Quality.OK)
    assert readings["pv"].detail == "alarm 1, heater fail"
    assert readings["output_power"].detail == "alarm 1, heater fail"


def test_the_status_word_is_a_bits_channel_over_a_real_modbus_server(link: ModbusLink) -> None:
    sim_of(link).status_bits = 1 << 0 | 1 << 7 | 1 << 11
    sim_of(link).sensor_break = True
    status = poll(link)["status"]
    assert (status.value, status.quality, status.type, status.units) == (
        1 << 0 | 1 << 5 | 1 << 7 | 1 << 11, Quality.OK, ValueType.BITS, "1")
    assert type(status.value) is int
    assert status.detail == "alarm 1, sensor break, heater fail, bit 11"
    sim_of(link).status_bits = 0
    sim_of(link).sensor_break = False
    status = poll(link)["status"]
    assert (status.value, status.detail) == (0, "")


def test_a_refused_status_word_is_an_invalid_status_channel(link: ModbusLink) -> None:
    sim_of(link).set_absent(75)
    status = poll(link)["status"]
    assert (status.value, status.quality, status.type) == (None, Quality.INVALID, ValueType.BITS)
    assert status.detail == "refused: illegal data address (0x02)"


def test_an_absent_parameter_fails_only_its_channel(link: ModbusLink) -> None:
    sim_of(link).set_absent(3)  # no OP on this model
    inst = connect(link)
    try:
        first = by_channel(inst.read())
        link.server.requests.clear()
        second = by_channel(inst.read())
    finally:
        inst.close()
    for readings in (first, second):
        op = readings["output_power"]
        assert (op.value, op.quality, op.detail) == (None, Quality.INVALID, "refused: illegal data address (0x02)")
        assert readings["pv"].value == 234.5 and readings["working_setpoint"].value == 250.0
    # from then on the refused block is read parameter by parameter
    assert [(r.address, r.count) for r in link.server.requests] == [(75, 1), (0x8002, 2), (0x8006, 2), (0x800A, 2)]


def test_without_the_status_word_the_pv_is_not_trusted(link: ModbusLink) -> None:
    sim_of(link).set_absent(75)
    readings = poll(link)
    pv = readings["pv"]
    assert (pv.value, pv.quality) == (None, Quality.INVALID)
    assert pv.detail == "status word refused: illegal data address (0x02)"
    assert readings["working_setpoint"].value == 250.0


def test_device_busy_fails_the_instrument(link: ModbusLink) -> None:
    inst = connect(link)
    try:
        sim_of(link).exception_code = 6
        with pytest.raises(DeviceError, match=r"^cell: .*server device busy") as caught:
            inst.read()
        assert caught.value.code == 6
    finally:
        inst.close()


def test_a_silent_controller_fails_at_connect_and_at_read(link: ModbusLink) -> None:
    sim_of(link).silent = True  # EI-Bisynch instead of Modbus, wrong baud, wrong parity
    with pytest.raises(TransportTimeout, match=r"^cell: no reply .*75"):
        connect(link, timeout=SHORT)
    sim_of(link).silent = False
    inst = connect(link, timeout=SHORT)
    try:
        sim_of(link).silent = True
        with pytest.raises(TransportTimeout):
            inst.read()
        sim_of(link).silent = False
        link.settle()
        assert by_channel(inst.read())["pv"].value == 234.5
    finally:
        inst.close()


def test_an_unknown_unit_id_gets_silence(link: ModbusLink) -> None:
    with pytest.raises(TransportTimeout, match="unit 2"):
        connect(link, unit=2, timeout=SHORT)
    assert Request(2, 3, 75, 1) in link.server.requests


def test_slow_replies(link: ModbusLink) -> None:
    inst = connect(link)
    try:
        sim_of(link).reply_delay = 0.1
        assert by_channel(inst.read())["pv"].value == 234.5
        sim_of(link).reply_delay = 1.5  # beyond the 1 s timeout: late, not lost
        with pytest.raises(TransportTimeout):
            inst.read()
        sim_of(link).reply_delay = 0.0
        sim_of(link).set_pv(240.0)
        link.settle()
        readings = by_channel(inst.read())
    finally:
        inst.close()
    assert readings["pv"].value == 240.0 and readings["working_setpoint"].value == 250.0


def test_disconnect(link: ModbusLink) -> None:
    inst = connect(link)
    try:
        inst.read()
        link.server.unplug()
        with pytest.raises((TransportDisconnected, TransportTimeout), match=r"^cell: "):
            inst.read()
        if link.kind == "tcp":
            reconnect(inst)
            assert by_channel(inst.read())["pv"].value == 234.5
    finally:
        inst.close()


def test_the_pv_follows_the_loop(kind: str) -> None:
    sim = controller(pv=None, setpoint=400.0)
    sim.loop().tau = 5.0  # a fast heater, so that a few polls see it move
    with serve(sim, kind) as link:
        inst = connect(link)
        try:
            first = by_channel(inst.read())
            assert first["output_power"].value == 100.0
            later = first
            deadline = time.monotonic() + 10
            while pv_of(later) < pv_of(first) + 20:
                assert time.monotonic() < deadline, "the PV does not rise"
                later = by_channel(inst.read())
        finally:
            inst.close()
    assert all(r.quality is Quality.OK for r in later.values())


def test_a_chamber_model_drives_the_pv(link: ModbusLink) -> None:
    cell = {"temperature": 987.5}
    sim_of(link).set_pv(None)
    sim_of(link).set_pv_source(lambda: cell["temperature"])
    sim_of(link).noise = 0.0
    assert poll(link)["pv"].value == 987.5
    assert sim_of(link).output_power() == 0.0  # above the 250 degC setpoint: heater off


# ---------------------------------------------------------------- two controllers on one RS-485 line


@pytest.fixture
def line() -> Iterator[ModbusLink]:
    """A 2408 (unit 1) and a 3216 (unit 2) on one RTU line at 9600 baud."""
    first, second = controller("2400", 1, pv=1000.5, setpoint=1010.0), controller("3200", 2, pv=455.0)
    with serve([first, second], "rtu") as link:
        yield link


def test_two_controllers_share_one_rtu_line_and_one_transport(line: ModbusLink) -> None:
    transport = line.transport("rs485", timeout=SHORT)
    try:
        gallium = Eurotherm(transport, EurothermOptions(family="2400"), "cell_ga", unit=1)
        arsenic = Eurotherm(transport, EurothermOptions(family="3200"), "cell_as", unit=2)
        missing = Eurotherm(transport, EurothermOptions(family="2400"), "cell_in", unit=3)
        sim_of(line, 2).sensor_break = True
        for _ in range(3):
            ga, as_ = by_channel(gallium.read()), by_channel(arsenic.read())
            assert (ga["pv"].value, ga["working_setpoint"].value) == (1000.5, 1010.0)
            assert (as_["pv"].value, as_["pv"].quality) == (None, Quality.SENSOR_ERROR)
            assert as_["working_setpoint"].value == 250.0
        with pytest.raises(TransportTimeout, match=r"^cell_in: "):
            missing.read()
        line.settle()
        assert by_channel(gallium.read())["pv"].value == 1000.5, "the line works on after the silence"
    finally:
        transport.close()
    units = {r.unit for r in line.server.requests}
    assert units == {1, 2, 3}
    assert sim_of(line, 1).writes == [] and sim_of(line, 2).writes == []


def test_two_instruments_configured_on_one_port(line: ModbusLink) -> None:
    # what `chamber-bridge read` does: each instrument opens the line in turn
    ga = poll(line, "2400", unit=1, name="cell_ga")
    as_ = poll(line, "3200", unit=2, name="cell_as")
    assert ga["pv"].value == 1000.5 and as_["pv"].value == 455.0
    assert ga["pv"].instrument == "cell_ga" and as_["pv"].instrument == "cell_as"


# ---------------------------------------------------------------- config and command line


def test_options_problems_are_named_by_key_path() -> None:
    options: list[dict[str, object]] = [
        {"family": "2400", "loop": 2},
        {"family": "2200"},
        {"family": "3200", "use_ieee": False},
        {"family": "3200", "decimals": 1},
        {},
        {"family": 3500, "loop": 2, "setpoint": 3},
    ]
    raw = {"site": "s", "bridge": {"instruments": [
        {"name": f"c{i}", "driver": "eurotherm", "transport": {"kind": "modbus_tcp", "host": "h"}, "options": o}
        for i, o in enumerate(options)]}}
    with pytest.raises(ConfigError) as caught:
        parse_config(raw)
    problems = {p.path: p.message for p in caught.value.problems}
    assert "loop 2 exists on the 3500 only" in problems["bridge.instruments[0].options.loop"]
    assert "bridge.instruments[1].options.family" in problems
    assert "needs decimals" in problems["bridge.instruments[2].options.decimals"]
    assert "only apply with use_ieee: false" in problems["bridge.instruments[3].options.decimals"]
    assert problems["bridge.instruments[4].options.family"] == "Field required"
    assert problems["bridge.instruments[5].options.setpoint"] == "unknown key"
    assert len(problems) == 6
    assert EurothermOptions.model_validate({"family": 3500, "loop": 2}).family == "3500"


def test_channel_table() -> None:
    table = Eurotherm.channel_table(EurothermOptions(family="3200", units="K"))
    assert [(c.name, c.units, c.type.kind) for c in table] == [
        ("pv", "K", "float"), ("working_setpoint", "K", "float"), ("output_power", "%", "float"),
        ("status", "1", "bits")]
    assert "WRK.OP, address 4" in table[2].description
    assert dict(table[3].type.bits)[5] == "sensor break" and dict(table[3].type.bits)[10] == "PV out of range"


def test_example_config_is_valid() -> None:
    config = load_config(EXAMPLE)
    assert [(i.driver, i.transport.kind, getattr(i.transport, "unit", None)) for i in config.bridge.instruments] == [
        ("eurotherm", "modbus_tcp", 1), ("eurotherm", "modbus_tcp", 2)]


def test_simulate_command_and_read_of_the_example_config(tmp_path: Path) -> None:
    with simulator_command("eurotherm", "--tcp", "127.0.0.1:0", "--unit", "1", "--unit", "2",
                           "--pv", "321.5", "--setpoint", "330", "--sensor-break") as cli:
        host, port = cli.where.rsplit(":", 1)
        readings = read_json(example_with("eurotherm.yaml", tmp_path, host=host, port=int(port)))
    assert [(r["instrument"], r["channel"]) for r in readings] == [
        (name, channel) for name in ("cell_ga", "cell_as")
        for channel in ("pv", "working_setpoint", "output_power", "status")]
    assert readings[0]["quality"] == "sensor_error" and readings[0]["value"] is None
    assert readings[1]["value"] == 330.0 and readings[5]["value"] == 330.0
    # the status word itself, with its bits named: sensor break is bit 5
    assert (readings[3]["type"], readings[3]["value"], readings[3]["detail"]) == ("bits", 32, "sensor break")


def test_simulate_command_on_an_rtu_pty(tmp_path: Path) -> None:
    with simulator_command("eurotherm", "--family", "3500", "--pv", "99.5") as cli:
        assert cli.where.startswith("/dev/")
        config = tmp_path / "c.yaml"
        config.write_text(yaml.safe_dump({"site": "s", "bridge": {"instruments": [
            {"name": "heater", "driver": "eurotherm",
             "transport": {"kind": "modbus_rtu", "port": cli.where, "baudrate": 9600, "unit": 1},
             "options": {"family": "3500", "loop": 2}}]}}))
        readings = read_json(config)
    assert readings[0]["value"] == 99.5


def test_conversation_connect_and_one_poll_register_for_register() -> None:
    pv, op, wsp = encode(234.5, "float32"), encode(42.0, "float32"), encode(240.0, "float32")
    with modbus_conversation(
        (ModbusRequest("holding", 75, 1, 1), [0]),                   # connect: the status word answers
        (ModbusRequest("holding", 75, 1, 1), [1 << 5]),              # every poll: status word (sensor break) ...
        (ModbusRequest("holding", 0x8002, 10, 1), [*pv, 0, 0, *op, 0, 0, *wsp]),   # ... PV..wSP in one read
        owner="cell",
    ) as link:
        driver = driver_on(link, "eurotherm", {"family": "2400"})
        driver.connect()
        readings = {r.channel: r for r in driver.read()}
    assert (readings["pv"].value, readings["pv"].quality) == (None, Quality.SENSOR_ERROR)
    assert "sensor break" in readings["pv"].detail
    assert (readings["working_setpoint"].value, readings["output_power"].value) == (240.0, 42.0)
    assert (readings["status"].value, readings["status"].detail) == (32, "sensor break")


def test_conversation_the_status_bits_of_one_word_register_for_register() -> None:
    """Alarms 1 and 2, PV out of range and the unnamed bit 15: one register, one bits value, every bit named."""
    word = 1 << 0 | 1 << 1 | 1 << 10 | 1 << 15
    with modbus_conversation(
        (ModbusRequest("holding", 75, 1, 1), [word]),
        (ModbusRequest("holding", 0x8002, 10, 1), [*encode(1.0, "float32"), 0, 0, *encode(0.0, "float32"), 0, 0,
                                                    *encode(2.0, "float32")]),
        owner="cell",
    ) as link:
        readings = {r.channel: r for r in driver_on(link, "eurotherm", {"family": "3500"}).read()}
    status = readings["status"]
    assert (status.value, status.quality, status.type) == (word, Quality.OK, ValueType.BITS)
    assert status.detail == "alarm 1, alarm 2, PV out of range, bit 15"
    assert readings["pv"].quality is Quality.INVALID


def test_conversation_two_controllers_on_one_line_are_assembled_with_their_units() -> None:
    with modbus_conversation(
        (ModbusRequest("holding", 75, 1, 1), [0]),     # each connect asks its own unit
        (ModbusRequest("holding", 75, 1, 2), [0]),
        owner=SHARED_OWNER,
    ) as link:
        configs = [InstrumentConfig(name=name, driver="eurotherm", options={"family": "3200"},
                                    transport=link.config.model_copy(update={"unit": unit}))
                   for name, unit in (("cell_a", 1), ("cell_b", 2))]
        bus = assemble(configs, transport=link)
        assert bus.transport is link and bus.owner == SHARED_OWNER
        for _config, driver in bus.drivers:
            driver.connect()


# ------------------------------------------------------------------------ identity and configuration


def test_conversation_baseline_byte_for_byte_with_a_refused_version_register() -> None:
    from bridge.transports.memory import Refusal

    with modbus_conversation(
        (ModbusRequest("holding", 107, 1, 1), Refusal(0x02)),   # the version: not on a 2400
        (ModbusRequest("holding", 122, 1, 1), [0x2480]),        # the instrument identity
        (ModbusRequest("holding", 0x8000 + 2 * 111, 4, 1), [*encode(1200.0, "float32"), *encode(0.0, "float32")]),
        owner="cell",
    ) as link:
        driver = driver_on(link, "eurotherm", {"family": "2400"})
        baseline = driver.baseline()
    assert baseline.identity == {"vendor": "Eurotherm", "instrument_id": "2480"}
    assert baseline.configuration == {"family": "2400", "loop": 1, "units": "degC", "use_ieee": True,
                                      "setpoint_high": 1200.0, "setpoint_low": 0.0}
    assert baseline.errors == {"version (107)": "refused: illegal data address (0x02)"}


def test_baseline_over_the_wire_each_family_and_a_refused_identity(kind: str) -> None:
    with serve(controller("3500"), kind) as link:
        loop2 = connect(link, "3500", loop=2)
        try:
            b3500 = loop2.driver.baseline()
        finally:
            loop2.close()
    with serve(controller("3200"), kind) as link:
        cell = connect(link, "3200", use_ieee=False, decimals=1)
        try:
            b3200 = cell.driver.baseline()
            sim_of(link).refuse_identity = True
            refused = cell.driver.baseline()
            assert pv_of(by_channel(cell.read())) == pytest.approx(234.5)
        finally:
            cell.close()
    assert b3200.identity == {"vendor": "Eurotherm", "instrument_id": "3216", "firmware": "1.11"}
    assert b3200.configuration == {"family": "3200", "loop": 1, "units": "degC", "use_ieee": False, "decimals": 1,
                                   "setpoint_high": 1200.0, "setpoint_low": 0.0}
    assert b3500.identity == {"vendor": "Eurotherm", "instrument_id": "3504"} and b3500.configuration["loop"] == 2
    assert b3500.errors == {"version (107)": "refused: illegal data address (0x02)"}
    assert refused.identity == {"vendor": "Eurotherm"}
    assert set(refused.errors) == {"identity (122)", "version (107)"}
    assert refused.configuration == b3200.configuration


def test_simulate_command_refuses_identity_and_read_baseline_goes_on(tmp_path: Path) -> None:
    with simulator_command("eurotherm", "--tcp", "127.0.0.1:0", "--unit", "1", "--unit", "2",
                           "--refuse-identity") as cli:
        host, port = cli.where.rsplit(":", 1)
        result = run_cli("read", str(example_with("eurotherm.yaml", tmp_path, host=host, port=int(port))),
                         "--json", "--baseline")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    baselines = {line["instrument"]: line["baseline"] for line in lines if "baseline" in line}
    assert set(baselines) == {"cell_ga", "cell_as"}
    assert baselines["cell_ga"]["identity"] == {"vendor": "Eurotherm"}
    assert baselines["cell_ga"]["errors"]["identity (122)"] == "refused: illegal data address (0x02)"
    assert sum(1 for line in lines if "channel" in line) == 8  # pv, working_setpoint, output_power, status
