"""A tiny SCPI instrument on a raw TCP socket (what ``TCPIP::host::port::SOCKET`` talks to).

Commands end in LF (CR is ignored); replies end in LF. Known commands:

* ``*IDN?``        -> ``ACME,PSU1,123,1.0``
* ``MEAS:VOLT?``   -> the voltage, e.g. ``12.500``
* ``VOLT <value>`` -> sets the voltage, no reply
* anything else    -> no reply (an unknown SCPI query times out on real instruments too)

``mode`` changes the behaviour at any time: ``"answer"`` (normal), ``"silent"`` (read, never
answer) or ``"drop"`` (close the connection on the next command). ``stop()`` closes the
listener and every connection; ``start()`` listens again on the same port.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
from typing import Literal

IDN = "ACME,PSU1,123,1.0"
JOIN_TIMEOUT = 5.0

Mode = Literal["answer", "silent", "drop"]


class ScpiServer:
    def __init__(self, port: int = 0, voltage: float = 12.5) -> None:
        self.host = "127.0.0.1"
        self.port = port
        self.voltage = voltage
        self.mode: Mode = "answer"
        self.received: list[str] = []
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None

    # ---------------------------------------------------------- life

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("SCPI server already running")
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind((self.host, self.port))
            listener.listen()
        except OSError:
            listener.close()
            raise
        self.port = int(listener.getsockname()[1])
        self._listener = listener
        self._wake_r, self._wake_w = socket.socketpair()
        self._thread = threading.Thread(target=self._serve, name="scpi-server", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        thread, self._thread = self._thread, None
        if thread is None:
            return
        assert self._wake_w is not None
        self._wake_w.send(b"x")
        thread.join(JOIN_TIMEOUT)
        if thread.is_alive():
            raise RuntimeError("SCPI server thread did not stop")
        for sock in (self._listener, self._wake_r, self._wake_w):
            if sock is not None:
                sock.close()
        self._listener = self._wake_r = self._wake_w = None

    def __enter__(self) -> ScpiServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---------------------------------------------------------- serving

    def _serve(self) -> None:
        assert self._listener is not None and self._wake_r is not None
        buffers: dict[socket.socket, bytearray] = {}
        with selectors.DefaultSelector() as sel:
            sel.register(self._listener, selectors.EVENT_READ)
            sel.register(self._wake_r, selectors.EVENT_READ)
            try:
                while True:
                    for key, _ in sel.select():
                        sock = key.fileobj
                        assert isinstance(sock, socket.socket)
                        if sock is self._wake_r:
                            return
                        if sock is self._listener:
                            conn, _addr = sock.accept()
                            buffers[conn] = bytearray()
                            sel.register(conn, selectors.EVENT_READ)
                        elif not self._receive(sock, buffers[sock]):
                            sel.unregister(sock)
                            del buffers[sock]
                            sock.close()
            finally:
                for conn in buffers:
                    with contextlib.suppress(OSError):
                        conn.shutdown(socket.SHUT_RDWR)
                    conn.close()

    def _receive(self, conn: socket.socket, buffer: bytearray) -> bool:
        """Handle what arrived on ``conn``; False when the connection is to be closed."""
        try:
            data = conn.recv(4096)
        except OSError:
            return False
        if not data:
            return False
        buffer += data
        while b"\n" in buffer:
            line, _, rest = bytes(buffer).partition(b"\n")
            buffer[:] = rest
            command = line.decode("ascii", "replace").strip()
            self.received.append(command)
            if self.mode == "drop":
                return False
            reply = self.reply(command)
            if reply is not None and self.mode == "answer":
                try:
                    conn.sendall(reply.encode("ascii") + b"\n")
                except OSError:
                    return False
        return True

    def reply(self, command: str) -> str | None:
        upper = command.upper()
        if upper == "*IDN?":
            return IDN
        if upper in ("MEAS:VOLT?", "MEASURE:VOLTAGE?"):
            return f"{self.voltage:.3f}"
        if upper.startswith("VOLT "):
            with contextlib.suppress(ValueError):
                self.voltage = float(command.split(None, 1)[1])
            return None
        return None
