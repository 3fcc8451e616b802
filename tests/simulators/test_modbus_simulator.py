"""The generic Modbus device simulator: the pure state machine, then the real pymodbus server.

``RegisterDevice.serve`` is tested directly (function code in, values or exception code out);
the server tests speak to a real pymodbus server through pymodbus' own client and through raw
RTU bytes on the pty null modem, to pin what a host sees on the wire (silence included).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import serial
from click.testing import CliRunner
from pymodbus import FramerType
from pymodbus.client import ModbusSerialClient, ModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusIOException
from pymodbus.framer.rtu import FramerRTU

from bridge.drivers.common.modbus_codec import RegisterSpec
from simulators.cli.common import parse_host_port
from simulators.cli.modbus import eurotherm as eurotherm_command
from simulators.cli.modbus import modbus as modbus_command
from simulators.instruments.modbus import MappedDevice
from simulators.serving.modbus_server import DeviceServer, Request
from simulators.serving.register_device import ILLEGAL_ADDRESS, ILLEGAL_FUNCTION, RegisterDevice, Write
from tests.helpers.clock import FakeClock
from tests.helpers.modbus_server import exchange
from tests.helpers.polling import wait_until


def small_device(unit: int = 1) -> RegisterDevice:
    device = RegisterDevice(unit)
    device.define("holding", 0, [10, 11, 12])
    device.define("holding", 5, [15], read_only=True)
    device.define("input", 0, [100])
    device.define("coil", 0, [1, 0])
    device.define("coil", 3, [1])
    device.define("discrete", 8, [1])
    return device


# ---------------------------------------------------------------- the state machine


def test_reads_each_table_by_function_code() -> None:
    device = small_device()
    assert device.serve(3, 0, 3) == [10, 11, 12]
    assert device.serve(4, 0, 1) == [100]
    assert device.serve(1, 0, 2) == [1, 0]
    assert device.serve(2, 8, 1) == [1]


def test_undefined_or_refused_addresses_fail_the_whole_request_with_02() -> None:
    device = small_device()
    assert device.serve(3, 3, 1) == ILLEGAL_ADDRESS
    assert device.serve(3, 0, 4) == ILLEGAL_ADDRESS  # one missing address fails the block
    assert device.serve(4, 1, 1) == ILLEGAL_ADDRESS
    assert device.serve(1, 0, 4) == ILLEGAL_ADDRESS  # coil 2 is a hole
    device.refuse("holding", 1)
    assert device.serve(3, 0, 3) == ILLEGAL_ADDRESS
    assert device.serve(3, 0, 1) == [10]
    device.refuse("holding", 1, refused=False)
    assert device.serve(3, 0, 3) == [10, 11, 12]


def test_writes_are_stored_and_logged_read_only_refused() -> None:
    device = small_device()
    assert device.serve(6, 1, 1, [42]) == [42]
    assert device.serve(16, 0, 2, [1, 2]) == [1, 2]
    assert device.serve(15, 0, 2, [0, 1]) == [0, 1]
    assert device.serve(3, 0, 3) == [1, 2, 12]
    assert device.writes == [Write("holding", 1, (42,)), Write("holding", 0, (1, 2)), Write("coil", 0, (0, 1))]
    assert device.serve(6, 5, 1, [1]) == ILLEGAL_ADDRESS
    assert device.serve(3, 5, 1) == [15]


def test_unknown_function_and_forced_exception() -> None:
    device = small_device()
    assert device.serve(43, 0, 1) == ILLEGAL_FUNCTION
    device.exception_code = 6  # server device busy
    assert device.serve(3, 0, 1) == 6
    device.exception_code = None
    assert device.serve(3, 0, 1) == [10]


def test_map_is_fixed_once_served_and_values_are_checked() -> None:
    device = small_device()
    with pytest.raises(ValueError, match=r"outside 0\.\.65535"):
        device.define("holding", 9, [70000])
    with pytest.raises(KeyError):
        device.set("holding", 9, [1])
    device.sim_device()
    with pytest.raises(RuntimeError, match="before the device is served"):
        device.define("holding", 9, [1])
    with pytest.raises(ValueError, match="unit 0"):
        RegisterDevice(0)


def test_update_runs_before_every_read() -> None:
    class Counter(RegisterDevice):
        def update(self, now: float) -> None:
            self.set("input", 0, [self.get("input", 0)[0] + 1])

    device = Counter()
    device.define("input", 0, [0])
    assert [device.serve(4, 0, 1) for _ in range(3)] == [[1], [2], [3]]


def test_mapped_device_encodes_like_the_driver_decodes() -> None:
    specs = [
        ("t", RegisterSpec("holding", 0, "float32", word_order="little"), 234.5),
        ("flow", RegisterSpec("input", 0, "uint16", scale=0.1), 12.3),
        ("valve", RegisterSpec("holding", 2, "int16", byte_order="little", scale=0.01), 42.5),
        ("big", RegisterSpec("holding", 3, "float64"), 0.1),
        ("on", RegisterSpec("coil", 0, "bool"), 1),
    ]
    device = MappedDevice(specs)
    assert device.get("holding", 0, 2) == [0x8000, 0x436A]
    assert device.get("input", 0) == [123]
    assert device.get("holding", 2) == [0x9A10]  # 4250 = 0x109A, bytes swapped
    assert device.get("holding", 3, 4) == [0x3FB9, 0x9999, 0x9999, 0x999A]
    assert device.get("coil", 0) == [1]
    assert device.value("t") == 234.5 and device.value("flow") == pytest.approx(12.3)
    device.set_value("flow", 6553.5)
    assert device.get("input", 0) == [65535]
    with pytest.raises(ValueError, match="does not fit"):
        device.set_value("flow", 6553.6)
    with pytest.raises(KeyError, match="no point 'nope'"):
        device.set_value("nope", 1)
    with pytest.raises(ValueError, match="defined twice"):
        MappedDevice([specs[0], specs[0]])


def test_mapped_device_sources_and_wander() -> None:
    clock = FakeClock()
    spec = RegisterSpec("holding", 0, "float32")
    device = MappedDevice([("t", spec, 100.0)], wander=0.01, period=40.0, clock=clock)
    clock.now += 10.0  # a quarter period: the top of the sine
    assert device.value("t") == pytest.approx(101.0)
    device.set_source("t", lambda: 55.5)
    assert device.serve(3, 0, 2) == spec.encode(55.5)
    device.set_value("t", 7.0)  # holding a value drops the source
    device.wander = 0.0
    assert device.value("t") == 7.0


def test_parse_host_port() -> None:
    assert parse_host_port("127.0.0.1:1502") == ("127.0.0.1", 1502)
    assert parse_host_port(":0") == ("127.0.0.1", 0)
    with pytest.raises(ValueError):
        parse_host_port("localhost")


# ---------------------------------------------------------------- on a real server


@pytest.fixture
def tcp_server() -> Iterator[DeviceServer]:
    with DeviceServer([small_device(1), small_device(2)], transport="tcp") as server:
        yield server


def tcp_client(server: DeviceServer) -> ModbusTcpClient:
    client = ModbusTcpClient(server.host, port=server.port, timeout=0.3, retries=0)
    assert client.connect()
    return client


def test_several_units_on_one_server_and_silence_for_unknown_ones(tcp_server: DeviceServer) -> None:
    client = tcp_client(tcp_server)
    try:
        tcp_server.device(2).set("holding", 0, [222])
        assert client.read_holding_registers(0, count=1, device_id=1).registers == [10]
        assert client.read_holding_registers(0, count=1, device_id=2).registers == [222]
        with pytest.raises(ModbusIOException):  # pymodbus alone would answer 0x04; a real bus is silent
            client.read_holding_registers(0, count=1, device_id=3)
        assert Request(3, 3, 0, 1) in tcp_server.requests
        assert tcp_server.replies_dropped == 1
    finally:
        client.close()


def test_exception_and_bit_reads_with_exact_counts(tcp_server: DeviceServer) -> None:
    client = tcp_client(tcp_server)
    try:
        assert client.read_holding_registers(0, count=4, device_id=1).exception_code == ILLEGAL_ADDRESS
        assert client.read_coils(0, count=2, device_id=1).bits[:2] == [True, False]
        assert client.read_coils(3, count=1, device_id=1).bits[0] is True
        assert client.read_coils(0, count=4, device_id=1).exception_code == ILLEGAL_ADDRESS  # coil 2 missing
        assert client.read_discrete_inputs(8, count=1, device_id=1).bits[0] is True
        assert client.read_discrete_inputs(0, count=1, device_id=1).exception_code == ILLEGAL_ADDRESS
        assert client.write_register(1, 77, device_id=1).registers == [77]
        assert tcp_server.device(1).get("holding", 1) == [77]
        assert tcp_server.device(2).get("holding", 1) == [11]
        assert client.write_coil(0, False, device_id=1).bits[0] is False
        assert tcp_server.device(1).get("coil", 0) == [0]
    finally:
        client.close()


def test_silent_device_and_slow_replies(tcp_server: DeviceServer) -> None:
    client = tcp_client(tcp_server)
    try:
        tcp_server.device(1).silent = True
        with pytest.raises(ModbusIOException):
            client.read_holding_registers(0, count=1, device_id=1)
        assert client.read_holding_registers(0, count=1, device_id=2).registers == [10]
        tcp_server.device(1).silent = False
        tcp_server.device(1).reply_delay = 0.15
        started = time.monotonic()
        assert client.read_holding_registers(0, count=1, device_id=1).registers == [10]
        assert time.monotonic() - started >= 0.15
    finally:
        client.close()


def test_drop_connections_then_reconnect(tcp_server: DeviceServer) -> None:
    client = tcp_client(tcp_server)
    try:
        assert client.read_holding_registers(0, count=1, device_id=1).registers == [10]
        tcp_server.unplug()
        with pytest.raises((ConnectionException, ModbusIOException)):
            client.read_holding_registers(0, count=1, device_id=1)
    finally:
        client.close()
    client = tcp_client(tcp_server)
    try:
        assert client.read_holding_registers(0, count=1, device_id=1).registers == [10]
    finally:
        client.close()


def test_stop_and_start_on_the_same_port() -> None:
    server = DeviceServer(small_device(), transport="tcp").start()
    try:
        port = server.port
        server.stop()
        server.start()
        assert server.port == port
        client = tcp_client(server)
        assert client.read_input_registers(0, count=1, device_id=1).registers == [100]
        client.close()
    finally:
        server.stop()


def test_rtu_restart_gets_a_new_line() -> None:
    server = DeviceServer(small_device(), transport="rtu").start()
    try:
        server.stop()
        server.start()  # a pty cannot come back under its name: a new line, maybe a new path
        client = ModbusSerialClient(server.host_port, framer=FramerType.RTU, baudrate=9600, timeout=0.5, retries=0)
        assert client.connect()
        assert client.read_input_registers(0, count=1, device_id=1).registers == [100]
        client.close()
    finally:
        server.stop()


def test_devices_need_distinct_units() -> None:
    with pytest.raises(ValueError, match="distinct unit ids"):
        DeviceServer([small_device(1), small_device(1)])


def frame(data: bytes) -> bytes:
    return data + FramerRTU.compute_CRC(data).to_bytes(2, "big")


def test_rtu_bytes_on_the_null_modem() -> None:
    with DeviceServer([small_device(1), small_device(2)], transport="rtu") as server, \
            serial.Serial(server.host_port, 9600, timeout=0.05) as port:
        assert exchange(port, frame(bytes.fromhex("010300000002")), 9) == frame(bytes.fromhex("010304000a000b"))
        assert exchange(port, frame(bytes.fromhex("020300020001")), 7) == frame(bytes.fromhex("020302000c"))
        assert exchange(port, frame(bytes.fromhex("010300030001")), 5) == frame(bytes.fromhex("018302"))
        # nobody at unit 9: silence, and the line works on afterwards
        assert exchange(port, frame(bytes.fromhex("090300000001")), 7, wait=0.3) == b""
        assert wait_until(lambda: Request(9, 3, 0, 1) in server.requests)
        assert exchange(port, frame(bytes.fromhex("010400000001")), 7) == frame(bytes.fromhex("0104020064"))


def test_rtu_unplug_fails_the_host_like_a_pulled_adapter() -> None:
    with DeviceServer(small_device(), transport="rtu") as server:
        client = ModbusSerialClient(server.host_port, framer=FramerType.RTU, baudrate=9600, timeout=0.3, retries=0)
        assert client.connect()
        try:
            assert client.read_holding_registers(0, count=1, device_id=1).registers == [10]
            server.unplug()
            assert server.null_modem is not None and not server.null_modem.plugged
            with pytest.raises((ConnectionException, ModbusIOException)):
                client.read_holding_registers(0, count=1, device_id=1)
        finally:
            client.close()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tcp", "nowhere"], "expected HOST:PORT"),
        (["--pty", "--tcp", "127.0.0.1:0"], "exclusive"),
        (["--set", "nope=1"], "no channel nope"),
        (["--set", "cooling_flow"], "expected NAME=NUMBER"),
        (["--set", "cooling_flow=99999"], "99999 does not fit uint16"),
        (["--absent", "valve"], "no channel valve"),
        (["--instrument", "plc"], "--instrument needs --config"),
    ],
)
def test_modbus_command_usage_errors(args: list[str], message: str) -> None:
    result = CliRunner().invoke(modbus_command, args)
    assert result.exit_code == 2
    assert message in result.output


def test_eurotherm_command_usage_errors() -> None:
    result = CliRunner().invoke(eurotherm_command, ["--family", "2200"])
    assert result.exit_code == 2 and "2200" in result.output
    result = CliRunner().invoke(eurotherm_command, ["--unit", "0"])
    assert result.exit_code == 2
