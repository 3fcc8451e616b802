"""A minimal RFC 2217 serial server (pyserial's PortManager) in front of a real serial port.

Lets tests reach a simulator through ``rfc2217://host:port`` the way a lab reaches a serial
device server (Moxa NPort, ser2net in RFC 2217 mode) on the network.
"""

from __future__ import annotations

import select
import socket
import threading

import serial
import serial.rfc2217


class _PtyPort(serial.Serial):
    """A pty has no modem lines: the ioctls for DTR/RTS/CTS/DSR fail there with ENOTTY."""

    def _update_dtr_state(self) -> None:
        pass

    def _update_rts_state(self) -> None:
        pass

    @property
    def cts(self) -> bool:
        return True

    @property
    def dsr(self) -> bool:
        return True

    @property
    def ri(self) -> bool:
        return False

    @property
    def cd(self) -> bool:
        return True


class _Writer:
    """PortManager writes telnet negotiation through ``.write``; a socket calls it ``sendall``."""

    def __init__(self, conn: socket.socket) -> None:
        self.write = conn.sendall


class Rfc2217Server:
    def __init__(self, serial_port: str) -> None:
        self.serial_port = serial_port
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(1)
        self.port = int(self._listener.getsockname()[1])
        self.url = f"rfc2217://127.0.0.1:{self.port}"
        self._stop = threading.Event()
        #: why serving ended early, for a failing test to show
        self.error: OSError | None = None
        self._thread = threading.Thread(target=self._serve, name="rfc2217", daemon=True)

    def __enter__(self) -> Rfc2217Server:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._listener.close()
        self._thread.join(timeout=2)

    def _serve(self) -> None:
        try:
            conn, _ = self._listener.accept()
        except OSError:
            return
        port = _PtyPort(self.serial_port, timeout=0)
        manager = serial.rfc2217.PortManager(port, _Writer(conn))
        try:
            while not self._stop.is_set():
                readable, _, _ = select.select([conn, port.fileno()], [], [], 0.05)
                if conn in readable:
                    data = conn.recv(4096)
                    if not data:
                        break
                    port.write(b"".join(manager.filter(data)))
                if port.fileno() in readable:
                    data = port.read(port.in_waiting or 1)
                    if data:
                        conn.sendall(b"".join(manager.escape(data)))
        except OSError as exc:
            self.error = exc
        finally:
            port.close()
            conn.close()
