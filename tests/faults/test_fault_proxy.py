"""The TCP fault proxy (tests/helpers/fault_proxy.py) against a real echo server and a real HTTP server."""

from __future__ import annotations

import contextlib
import json
import socket
import socketserver
import threading
import time
import urllib.request
from collections.abc import Iterator

import pytest

from simulators.services.atomscale import AtomscaleEmulator
from tests.helpers.fault_proxy import FaultProxy
from tests.helpers.net import free_port


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        self.server.connections += 1  # type: ignore[attr-defined]
        with contextlib.suppress(ConnectionResetError):  # the reset mode resets the server's side too
            while data := self.request.recv(65536):
                self.request.sendall(data)


class EchoServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Echo)
        self.connections = 0


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    server = EchoServer()
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def proxy(echo: EchoServer) -> Iterator[FaultProxy]:
    host, port = echo.server_address[:2]
    with FaultProxy(str(host), port) as p:
        yield p


def connect(proxy: FaultProxy) -> socket.socket:
    sock = socket.create_connection((proxy.host, proxy.port), timeout=5)
    return sock


def receive(sock: socket.socket, size: int, timeout: float = 5.0) -> bytes:
    sock.settimeout(timeout)
    data = b""
    while len(data) < size:
        more = sock.recv(size - len(data))
        if not more:
            break
        data += more
    return data


def nothing_arrives(sock: socket.socket, within: float = 0.3) -> bool:
    sock.settimeout(within)
    try:
        return not sock.recv(1)
    except TimeoutError:
        return True


def test_pass_forwards_both_ways_and_counts(proxy: FaultProxy) -> None:
    with connect(proxy) as sock:
        payload = bytes(range(256)) * 1000
        sock.sendall(payload)
        assert receive(sock, len(payload)) == payload
    deadline = time.monotonic() + 5
    while proxy.bytes_down < len(payload) and time.monotonic() < deadline:
        time.sleep(0.01)  # the proxy counts a chunk just after it sent it
    assert proxy.accepted == 1
    assert proxy.bytes_up == proxy.bytes_down == len(payload)


def test_blackhole_holds_open_and_new_connections_then_delivers_intact(proxy: FaultProxy, echo: EchoServer) -> None:
    with connect(proxy) as old:
        old.sendall(b"before")
        assert receive(old, 6) == b"before"
        proxy.set_mode("blackhole")
        old.sendall(b"held-1")
        late = connect(proxy)  # accepted and held: the server never hears of it
        late.sendall(b"held-2")
        assert nothing_arrives(old) and nothing_arrives(late)
        assert echo.connections == 1
        proxy.set_mode("pass")
        assert receive(old, 6) == b"held-1"
        assert receive(late, 6) == b"held-2"
        late.close()
    assert echo.connections == 2


def test_reset_answers_open_and_new_connections_with_rst(proxy: FaultProxy) -> None:
    with connect(proxy) as old:
        old.sendall(b"hello")
        assert receive(old, 5) == b"hello"
        proxy.set_mode("reset")
        with pytest.raises(ConnectionResetError):
            receive(old, 1)
        with pytest.raises(ConnectionResetError), connect(proxy) as new:  # at connect, or at the first read
            new.sendall(b"x")
            receive(new, 1)
    deadline = time.monotonic() + 5
    while proxy.resets < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proxy.resets == 2
    proxy.set_mode("pass")
    with connect(proxy) as again:
        print("DEBUG again", again.getsockname(), time.monotonic())
        again.sendall(b"back")
        assert receive(again, 4) == b"back"


def test_delay_holds_every_chunk_and_keeps_the_order(proxy: FaultProxy) -> None:
    proxy.set_mode("delay", delay=0.2)
    with connect(proxy) as sock:
        sent = time.monotonic()
        sock.sendall(b"one")
        assert receive(sock, 3) == b"one"
        # out through the proxy and back: held twice, never sooner
        assert time.monotonic() - sent >= 0.4
        for part in (b"a", b"b", b"c"):
            sock.sendall(part)
            time.sleep(0.01)
        assert receive(sock, 3) == b"abc"
    proxy.set_mode("pass")
    assert proxy.delay == 0.2


def test_a_server_that_is_down_is_answered_with_a_reset() -> None:
    with (FaultProxy("127.0.0.1", free_port()) as proxy, pytest.raises((ConnectionResetError, BrokenPipeError)),
          connect(proxy) as sock):
        sock.sendall(b"x")
        receive(sock, 1)


def test_a_half_close_is_passed_on_so_http_works_through_it() -> None:
    with AtomscaleEmulator() as emulator, FaultProxy("127.0.0.1", emulator.port) as proxy:
        with urllib.request.urlopen(f"http://{proxy.host}:{proxy.port}/gateway/time", timeout=5) as answer:
            assert "receivedAtUnixMs" in json.loads(answer.read())
        with connect(proxy) as sock:
            sock.sendall(b"GET /gateway/time HTTP/1.0\r\n\r\n")
            sock.shutdown(socket.SHUT_WR)
            reply = b""
            while more := receive(sock, 65536):
                reply += more
            assert reply.split(b"\r\n", 1)[0].endswith(b" 200 OK") and b"receivedAtUnixMs" in reply


def test_unknown_mode_is_refused(proxy: FaultProxy) -> None:
    with pytest.raises(ValueError, match="unknown mode"):
        proxy.set_mode("drop")  # type: ignore[arg-type]
