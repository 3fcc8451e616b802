"""VisaTransport against a real SCPI socket server (pyvisa-py) and the pyvisa-sim backend."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bridge.errors import TransportDisconnected, TransportTimeout
from bridge.transports import open_transport
from bridge.transports.base import Transport, reopen
from bridge.transports.settings import VisaTransportConfig
from bridge.transports.visa import VisaTransport
from tests.helpers.net import free_port
from tests.helpers.scpi_server import IDN, ScpiServer
from tests.helpers.transports import opened, restart_under

TIMEOUT = 0.3


def socket_transport(port: int) -> VisaTransport:
    config = VisaTransportConfig(kind="visa", resource=f"TCPIP::127.0.0.1::{port}::SOCKET",
                                 backend="@py", timeout=TIMEOUT)
    return VisaTransport(config, owner="psu1")


@pytest.fixture
def server() -> Iterator[ScpiServer]:
    with ScpiServer() as srv:
        yield srv


@pytest.fixture
def transport(server: ScpiServer) -> Iterator[VisaTransport]:
    with opened(socket_transport(server.port)) as t:
        yield t


def test_open_transport_builds_a_visa_transport() -> None:
    config = VisaTransportConfig(kind="visa", resource="TCPIP::10.0.0.7::5025::SOCKET")
    t = open_transport(config, "psu1")
    assert isinstance(t, VisaTransport)
    assert isinstance(t, Transport)
    assert t.describe() == "TCPIP::10.0.0.7::5025::SOCKET"
    assert not t.is_open


def test_query_write_and_read(server: ScpiServer, transport: VisaTransport) -> None:
    assert transport.is_open
    assert transport.query("*IDN?") == IDN
    assert float(transport.query("MEAS:VOLT?")) == 12.5
    transport.write("VOLT 5.25")
    assert float(transport.query("MEAS:VOLT?")) == 5.25
    transport.write("*IDN?")
    assert transport.read() == IDN
    # commands went out with exactly one LF each (pyvisa-py's SOCKET default would be CR LF)
    assert server.received == ["*IDN?", "MEAS:VOLT?", "VOLT 5.25", "MEAS:VOLT?", "*IDN?"]


def test_silence_is_a_timeout(server: ScpiServer, transport: VisaTransport) -> None:
    server.mode = "silent"
    with pytest.raises(TransportTimeout, match=r"^psu1: no reply to 'MEAS:VOLT\?' from TCPIP::"):
        transport.query("MEAS:VOLT?")
    server.mode = "answer"
    assert transport.query("*IDN?") == IDN


def test_unknown_query_is_a_timeout(transport: VisaTransport) -> None:
    with pytest.raises(TransportTimeout):
        transport.query("SYST:NOPE?")
    assert transport.query("*IDN?") == IDN


def test_dropped_connection_is_disconnected(server: ScpiServer,
                                            transport: VisaTransport) -> None:
    server.mode = "drop"
    with pytest.raises(TransportDisconnected, match=r"^psu1: "):
        transport.query("*IDN?")
    server.mode = "answer"
    reopen(transport)
    assert transport.query("*IDN?") == IDN


def test_open_without_server_is_disconnected() -> None:
    t = socket_transport(free_port())
    with pytest.raises(TransportDisconnected,
                       match=r"^psu1: cannot open TCPIP::127\.0\.0\.1::\d+::SOCKET: "
                             r"Connection refused"):
        t.open()
    assert not t.is_open
    with pytest.raises(TransportDisconnected, match="is not open"):
        t.query("*IDN?")


def test_reopen_after_server_restart(server: ScpiServer, transport: VisaTransport) -> None:
    assert transport.query("*IDN?") == IDN
    restart_under(server, transport, lambda: transport.query("*IDN?"), refused="cannot open")
    assert transport.query("*IDN?") == IDN


def test_bad_resource_name_is_disconnected_on_open() -> None:
    config = VisaTransportConfig(kind="visa", resource="NOT-A-RESOURCE", timeout=TIMEOUT)
    t = VisaTransport(config, owner="psu1")
    with pytest.raises(TransportDisconnected, match=r"^psu1: cannot open NOT-A-RESOURCE: "):
        t.open()
    assert not t.is_open


# ---------------------------------------------------------------- pyvisa-sim


def sim_transport(resource: str, owner: str) -> VisaTransport:
    # the bundled default.yaml expects CR LF after queries on ASRL resources, replies with LF
    config = VisaTransportConfig(kind="visa", resource=resource, backend="@sim",
                                 write_termination="\r\n", read_termination="\n",
                                 timeout=TIMEOUT)
    return VisaTransport(config, owner=owner)


def test_pyvisa_sim_default_dialogue() -> None:
    with opened(sim_transport("ASRL1::INSTR", "siggen1")) as t:
        assert t.query("?IDN") == "LSG Serial #1234"
        assert t.query("?FREQ") == "100.00"
    assert not t.is_open


def test_transports_on_one_backend_do_not_close_each_other() -> None:
    # pyvisa hands out one ResourceManager per backend; closing it closes all its resources
    first = sim_transport("ASRL1::INSTR", "siggen1")
    second = sim_transport("ASRL2::INSTR", "mock2")
    first.open()
    second.open()
    try:
        first.close()
        assert second.query("*IDN?") == "SCPI,MOCK,VERSION_1.0"
        first.open()
        assert first.query("?IDN") == "LSG Serial #1234"
    finally:
        first.close()
        second.close()
