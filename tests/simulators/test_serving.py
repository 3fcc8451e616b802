"""Simulators over real transports: raw pyserial on a pty and on ``socket://``, plus the CLI.

Timing is only ever waited for (bounded polls), never asserted, so a slow CI box makes these
slower, not red.
"""

from __future__ import annotations

import re
import signal
import threading
import time
from collections.abc import Iterator

import pytest
import serial
from click.testing import CliRunner

from simulators.cli import simulate
from simulators.instruments.pfeiffer_tpg import TPGSimulator
from simulators.serving import Link, MemoryLink, PtyServer, TcpServer
from tests.helpers.cli import in_background
from tests.helpers.polling import wait_until

ACK = b"\x06\r\n"
PRX_2 = re.compile(rb"[0-6],[+-]\d\.\d{4}E[+-]\d{2},[0-6],[+-]\d\.\d{4}E[+-]\d{2}\r\n")


def line(port: serial.SerialBase) -> bytes:
    return bytes(port.read_until(b"\r\n"))


def unit_code(port: serial.SerialBase) -> bytes:
    """Ask for the display unit (UNI, then ENQ): the ACK must come first, then the unit line."""
    port.write(b"UNI\r\x05")
    assert line(port) == ACK
    return line(port)


def server_threads() -> list[str]:
    names = ("pty-server", "tcp-server", "tcp-conn")
    return [t.name for t in threading.enumerate() if t.name.startswith(names)]


@pytest.fixture
def sim() -> TPGSimulator:
    return TPGSimulator(seed=5)


@pytest.fixture
def pty_server(sim: TPGSimulator) -> Iterator[PtyServer]:
    with PtyServer(sim) as server:
        yield server


@pytest.fixture
def tcp_server(sim: TPGSimulator) -> Iterator[TcpServer]:
    # The same simulator for every connection: one instrument, state kept across reconnects.
    with TcpServer(lambda: sim) as server:
        yield server


def open_pty(server: PtyServer) -> serial.Serial:
    port = serial.Serial(server.port, timeout=1.0)
    assert server.wait_connected()
    return port


def open_tcp(server: TcpServer, count: int = 1) -> serial.SerialBase:
    port = serial.serial_for_url(server.url, timeout=1.0)
    assert server.wait_for_clients(count)
    return port


@pytest.fixture(params=["pty", "tcp"])
def client(request: pytest.FixtureRequest, sim: TPGSimulator) -> Iterator[serial.SerialBase]:
    port: serial.SerialBase
    if request.param == "pty":
        with PtyServer(sim) as pty:
            port = open_pty(pty)
            yield port
            port.close()
    else:
        with TcpServer(lambda: sim) as tcp:
            port = open_tcp(tcp)
            yield port
            port.close()


# ------------------------------------------------------------------------ both transports


def test_pr1_enq_exchange(client: serial.SerialBase, sim: TPGSimulator) -> None:
    sim.set_pressure(1, 1.23e-7)
    client.write(b"PR1\r\n")
    assert line(client) == ACK
    client.write(b"\x05")
    assert line(client) == b"0,+1.2300E-07\r\n"
    client.write(b"\x05")
    assert line(client) == b"0,+1.2300E-07\r\n"


def test_split_replies_arrive_complete(client: serial.SerialBase, sim: TPGSimulator) -> None:
    sim.split_replies = True
    sim.set_pressure(1, 4.2e-6)
    sim.set_pressure(2, 9.9e-1)
    client.write(b"PRX\r\x05")
    assert line(client) == ACK
    assert line(client) == b"0,+4.2000E-06,0,+9.9000E-01\r\n"


def test_delayed_replies_arrive_complete(client: serial.SerialBase, sim: TPGSimulator) -> None:
    sim.reply_delay = 0.05
    assert unit_code(client) == b"0\r\n"


def test_garbage_reaches_the_host(client: serial.SerialBase, sim: TPGSimulator) -> None:
    sim.garbage = b"\xff\xfe\x00"
    client.write(b"UNI\r")
    assert line(client) == b"\xff\xfe\x00" + ACK


def test_com_stream_then_etx(client: serial.SerialBase, sim: TPGSimulator) -> None:
    client.write(b"COM,0\r")
    assert line(client) == ACK
    assert PRX_2.fullmatch(line(client))
    assert PRX_2.fullmatch(line(client))
    client.write(b"\x03")
    assert wait_until(lambda: not sim.streaming)
    time.sleep(0.02)  # let a line already on its way land, then drop it like a driver would
    client.reset_input_buffer()
    assert unit_code(client) == b"0\r\n"


# ------------------------------------------------------------------------ pty


def test_pty_is_raw(pty_server: PtyServer) -> None:
    # CR must reach the device as CR (a cooked pty would turn it into LF and echo it).
    port = open_pty(pty_server)
    assert unit_code(port) == b"0\r\n"
    port.close()


def test_pty_power_up_stream_seen_mid_line(pty_server: PtyServer, sim: TPGSimulator) -> None:
    sim.power_up_streaming = True
    sim.stream_interval = 0.05
    port = open_pty(pty_server)
    first = line(port)
    assert first.endswith(b"\r\n")
    assert not PRX_2.fullmatch(first)
    assert PRX_2.fullmatch(line(port))
    port.close()


def test_pty_close_and_reopen(pty_server: PtyServer, sim: TPGSimulator) -> None:
    port = open_pty(pty_server)
    port.write(b"UNI,1\r")
    assert line(port) == ACK
    port.close()
    assert wait_until(lambda: not pty_server.connected)
    port = open_pty(pty_server)
    assert unit_code(port) == b"1\r\n"
    port.close()


def test_pty_unplug_raises_on_the_host(pty_server: PtyServer) -> None:
    port = open_pty(pty_server)
    pty_server.unplug()
    with pytest.raises(serial.SerialException):
        port.read(1)
    with pytest.raises(serial.SerialException):
        port.write(b"PR1\r")
    port.close()


def test_pty_link_split_knob(pty_server: PtyServer, sim: TPGSimulator) -> None:
    port = open_pty(pty_server)
    assert pty_server.link is not None
    pty_server.link.split = True
    port.write(b"TID\r\x05")
    assert line(port) == ACK
    assert line(port) == b"PKR,TPR\r\n"
    port.close()


def test_pty_threads_end_on_stop(sim: TPGSimulator) -> None:
    server = PtyServer(sim).start()
    port = open_pty(server)
    server.stop()
    port.close()
    assert not [n for n in server_threads() if n.startswith("pty-server")]
    server.stop()  # twice is harmless


# ------------------------------------------------------------------------ TCP


def test_tcp_url_and_port(tcp_server: TcpServer) -> None:
    assert tcp_server.port > 0
    assert tcp_server.url == f"socket://127.0.0.1:{tcp_server.port}"


def test_tcp_drop_raises_then_reconnect_keeps_state(
    tcp_server: TcpServer, sim: TPGSimulator
) -> None:
    port = open_tcp(tcp_server)
    port.write(b"UNI,2\r")
    assert line(port) == ACK
    tcp_server.drop_connections()
    with pytest.raises(serial.SerialException):
        port.read(1)
    port.close()
    port = open_tcp(tcp_server)
    assert unit_code(port) == b"2\r\n"
    port.close()


def test_tcp_drop_with_reset(tcp_server: TcpServer) -> None:
    port = open_tcp(tcp_server)
    tcp_server.drop_connections(reset=True)
    with pytest.raises(serial.SerialException):
        port.read(1)
    port.close()


def test_tcp_factory_gives_each_connection_its_own_device() -> None:
    with TcpServer(lambda: TPGSimulator(seed=1)) as server:
        a = open_tcp(server, 1)
        b = open_tcp(server, 2)
        a.write(b"UNI,1\r")
        assert line(a) == ACK
        assert unit_code(b) == b"0\r\n"
        assert len(server.devices) == 2
        a.close()
        b.close()
        assert wait_until(lambda: not server.devices)


def test_tcp_power_up_stream_and_connect_garbage(
    tcp_server: TcpServer, sim: TPGSimulator
) -> None:
    sim.garbage_at_connect = b"\xff\x00"
    sim.power_up_streaming = True
    sim.stream_interval = 0.05
    port = open_tcp(tcp_server)
    first = line(port)
    assert first.startswith(b"\xff\x00")
    assert not PRX_2.fullmatch(first[2:])
    assert PRX_2.fullmatch(line(port))
    port.close()


def test_tcp_silent_device_times_out(tcp_server: TcpServer, sim: TPGSimulator) -> None:
    sim.silent = True
    port = open_tcp(tcp_server)
    port.timeout = 0.1
    port.write(b"PR1\r\x05")
    assert port.read(1) == b""
    port.close()


def test_tcp_threads_end_on_stop(sim: TPGSimulator) -> None:
    server = TcpServer(lambda: sim).start()
    port = open_tcp(server)
    server.stop()
    with pytest.raises(serial.SerialException):
        port.read(1)
    port.close()
    assert not [n for n in server_threads() if n.startswith(("tcp-server", "tcp-conn"))]
    server.stop()


# ------------------------------------------------------------------------ Link


def test_link_keeps_order_behind_a_delayed_message() -> None:
    now = [0.0]
    link = MemoryLink(clock=lambda: now[0])
    link.send(b"first", delay=0.5)
    link.send(b"second")
    assert link.take() == b""
    now[0] = 0.5
    link.pump()
    assert link.take() == b"firstsecond"


def test_link_retries_partial_writes_and_caps_backlog() -> None:
    accepted: list[bytes] = []
    budget = [2]

    def write(data: bytes) -> int:
        n = min(budget[0], len(data))
        accepted.append(data[:n])
        budget[0] -= n
        return n

    link = Link(write, max_backlog=8)
    link.send(b"abcd")
    assert b"".join(accepted) == b"ab"
    assert link.pending == 2
    link.send(b"0123456789")  # beyond the backlog: the oldest unsent message is dropped
    budget[0] = 100
    link.pump()
    assert b"".join(accepted) == b"ab0123456789"
    assert link.pending == 0


def test_link_write_error_closes_it() -> None:
    def broken(data: bytes) -> int:
        raise BrokenPipeError

    link = Link(broken)
    link.send(b"x")
    assert link.closed
    link.send(b"y")  # ignored, does not raise


# ------------------------------------------------------------------------ CLI


def test_cli_serves_tcp_until_sigterm() -> None:
    with in_background("-m", "simulators", "pfeiffer_tpg", "--tcp", "127.0.0.1:0", "--model", "TPG262",
                       "--unit", "Torr", "--status", "2=nosensor", "--seed", "1",
                       stop=signal.SIGTERM, timeout=5) as cli:
        assert re.fullmatch(r"socket://127\.0\.0\.1:\d+", cli.where), cli.where
        port = serial.serial_for_url(cli.where, timeout=2.0)
        port.write(b"UNI\r\x05TID\r\x05")
        assert [line(port) for _ in range(4)] == [ACK, b"1\r\n", ACK, b"PKR,noSEn\r\n"]
        port.close()


def test_cli_serves_pty_until_sigint() -> None:
    with in_background("-m", "simulators", "pfeiffer_tpg", "--pty", timeout=5) as cli:
        assert cli.where.startswith("/dev/")
        port = serial.Serial(cli.where, timeout=2.0)
        port.write(b"AYT\r\x05")
        assert line(port) == ACK
        assert line(port).startswith(b"TPG362,")
        port.close()


@pytest.mark.parametrize(
    "args",
    [
        ["--pty", "--tcp", "127.0.0.1:0"],
        ["--tcp", "nonsense"],
        ["--status", "1=melted"],
        ["--status", "3=off"],
        ["--model", "TPG262", "--unit", "Micron"],
        ["--model", "TPG366", "--channels", "2"],
    ],
)
def test_cli_usage_errors_exit_2(args: list[str]) -> None:
    result = CliRunner().invoke(simulate, ["pfeiffer_tpg", *args])
    assert result.exit_code == 2, result.output
