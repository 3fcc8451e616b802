"""ModbusTransport against real pymodbus servers: TCP on 127.0.0.1 and RTU over bridged ptys."""

from __future__ import annotations

import termios
from collections.abc import Iterator

import pytest

from bridge.errors import DeviceError, TransportDisconnected, TransportTimeout
from bridge.transports import open_transport
from bridge.transports.base import Transport
from bridge.transports.modbus import ModbusTransport
from bridge.transports.settings import ModbusRtuTransportConfig, ModbusTcpTransportConfig
from tests.helpers.modbus_server import (
    COILS,
    DISCRETE,
    HOLDING,
    INPUT,
    ModbusServerThread,
    PtyBridge,
)
from tests.helpers.net import free_port
from tests.helpers.transports import opened, restart_under

TIMEOUT = 0.3


@pytest.fixture
def server() -> Iterator[ModbusServerThread]:
    with ModbusServerThread() as srv:
        yield srv


def tcp_transport(port: int, unit: int = 1) -> ModbusTransport:
    config = ModbusTcpTransportConfig(kind="modbus_tcp", host="127.0.0.1", port=port, unit=unit,
                                      timeout=TIMEOUT)
    return ModbusTransport(config, owner="plc1")


@pytest.fixture
def transport(server: ModbusServerThread) -> Iterator[ModbusTransport]:
    with opened(tcp_transport(server.port)) as t:
        yield t


def test_open_transport_builds_a_modbus_transport() -> None:
    config = ModbusTcpTransportConfig(kind="modbus_tcp", host="127.0.0.1", port=1502)
    t = open_transport(config, "plc1")
    assert isinstance(t, ModbusTransport)
    assert isinstance(t, Transport)
    assert t.describe() == "127.0.0.1:1502"
    assert not t.is_open


def test_reads_holding_and_input_registers(transport: ModbusTransport) -> None:
    assert transport.is_open
    assert transport.read_registers("holding", 0, len(HOLDING)) == HOLDING
    assert transport.read_registers("holding", 1, 2) == [2345, 250]
    assert transport.read_registers("input", 0, 3) == INPUT
    assert transport.read_registers("input", 2, 1, unit=1) == [303]


def test_reads_coils_and_discrete_inputs_without_padding(transport: ModbusTransport) -> None:
    assert transport.read_bits("coils", 0, 8) == COILS
    assert transport.read_bits("coils", 0, 3) == [True, False, True]
    assert transport.read_bits("discrete", 1, 5) == DISCRETE[1:6]


def test_written_registers_read_back(transport: ModbusTransport) -> None:
    transport.write_register(3, 4242)
    assert transport.read_registers("holding", 3, 1) == [4242]
    transport.write_registers(5, [1, 2, 3])
    assert transport.read_registers("holding", 3, 5) == [4242, 0xFFFF, 1, 2, 3]


def test_undefined_address_is_a_device_error_with_the_exception_code(
        transport: ModbusTransport) -> None:
    with pytest.raises(DeviceError) as caught:
        transport.read_registers("holding", 100, 1)
    assert caught.value.code == 2
    message = str(caught.value)
    assert message.startswith("plc1: ")
    assert "read holding registers 100" in message
    assert "illegal data address (0x02)" in message
    # a block running past the end fails as a whole (Eurotherm does the same)
    with pytest.raises(DeviceError) as caught:
        transport.read_registers("holding", 8, 5)
    assert caught.value.code == 2
    # the link is still usable after an exception response
    assert transport.read_registers("holding", 0, 1) == [HOLDING[0]]


def test_write_to_undefined_address_is_a_device_error(transport: ModbusTransport) -> None:
    with pytest.raises(DeviceError) as caught:
        transport.write_register(500, 1)
    assert caught.value.code == 2
    assert "write register 500" in str(caught.value)


def silence_is_a_timeout(server: ModbusServerThread, transport: ModbusTransport, match: str) -> None:
    """A read from a server that swallows its replies times out; once it answers, reads work again."""
    server.silent = True
    with pytest.raises(TransportTimeout, match=match):
        transport.read_registers("holding", 0, 1)
    server.silent = False
    assert transport.read_registers("holding", 0, 1) == [HOLDING[0]]


def test_silent_server_is_a_timeout(server: ModbusServerThread,
                                    transport: ModbusTransport) -> None:
    silence_is_a_timeout(server, transport, r"^plc1: no reply from 127\.0\.0\.1:\d+")


def test_open_without_server_is_disconnected() -> None:
    t = tcp_transport(free_port())
    with pytest.raises(TransportDisconnected, match=r"^plc1: cannot open 127\.0\.0\.1:\d+: "
                                                    r"Connection refused"):
        t.open()
    assert not t.is_open
    with pytest.raises(TransportDisconnected, match="is not open"):
        t.read_registers("holding", 0, 1)


def test_server_killed_mid_session_then_reopen_after_restart(
        server: ModbusServerThread, transport: ModbusTransport) -> None:
    assert transport.read_registers("holding", 0, 1) == [HOLDING[0]]
    caught = restart_under(server, transport, lambda: transport.read_registers("holding", 0, 1),
                           refused="Connection refused")
    assert str(caught.value).startswith("plc1: ")
    assert transport.is_open
    assert transport.read_registers("holding", 0, 2) == HOLDING[:2]


def test_close_is_idempotent_and_open_twice_is_harmless(server: ModbusServerThread) -> None:
    t = tcp_transport(server.port)
    t.close()
    t.open()
    t.open()
    assert t.read_registers("input", 0, 1) == [INPUT[0]]
    t.close()
    t.close()
    assert not t.is_open


# ---------------------------------------------------------------- RTU over ptys


@pytest.fixture
def rtu_link() -> Iterator[tuple[PtyBridge, ModbusServerThread]]:
    with PtyBridge() as bridge, ModbusServerThread(serial_port=bridge.server_port,
                                                   baudrate=9600) as srv:
        yield bridge, srv


def test_rtu_reads_and_writes_over_a_serial_line(
        rtu_link: tuple[PtyBridge, ModbusServerThread]) -> None:
    bridge, _srv = rtu_link
    config = ModbusRtuTransportConfig(kind="modbus_rtu", port=bridge.client_port, timeout=TIMEOUT)
    assert config.baudrate == 9600
    t = ModbusTransport(config, owner="eurotherm1")
    assert t.describe() == bridge.client_port
    with opened(t):
        # the line is set to the config's 9600 baud, not pymodbus' 19200 default
        assert termios.tcgetattr(bridge.client_slave_fd)[4] == termios.B9600
        assert t.read_registers("holding", 1, 1) == [2345]  # PV 234.5 with one decimal
        t.write_register(2, 260)
        assert t.read_registers("holding", 0, 3) == [HOLDING[0], 2345, 260]
        assert t.read_bits("coils", 0, 4) == COILS[:4]
        with pytest.raises(DeviceError) as caught:
            t.read_registers("input", 50, 2)
        assert caught.value.code == 2
        assert str(caught.value).startswith("eurotherm1: read input registers 50")


def test_rtu_silent_device_is_a_timeout(rtu_link: tuple[PtyBridge, ModbusServerThread]) -> None:
    bridge, srv = rtu_link
    config = ModbusRtuTransportConfig(kind="modbus_rtu", port=bridge.client_port, timeout=TIMEOUT)
    with opened(ModbusTransport(config, owner="eurotherm1")) as t:
        silence_is_a_timeout(srv, t, r"^eurotherm1: no reply")


def test_rtu_missing_port_is_disconnected() -> None:
    config = ModbusRtuTransportConfig(kind="modbus_rtu", port="/dev/does-not-exist-tty",
                                      timeout=TIMEOUT)
    t = ModbusTransport(config, owner="eurotherm1")
    with pytest.raises(TransportDisconnected,
                       match=r"^eurotherm1: cannot open /dev/does-not-exist-tty: no such device"):
        t.open()
