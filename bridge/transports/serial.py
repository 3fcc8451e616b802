"""Serial lines through pyserial's ``serial_for_url``: device paths, ``socket://``, ``rfc2217://``.

The transport keeps its own receive buffer so that replies which arrive split across reads or
merged into one read (TCP serial servers do both) are cut into frames exactly, with nothing
lost between two calls.
"""

from __future__ import annotations

import logging
import os
import re
import select
import time

import serial

from bridge.errors import TransportDisconnected, TransportTimeout
from bridge.transports.settings import ModbusRtuTransportConfig, SerialTransportConfig

log = logging.getLogger("bridge.transports.serial")

# pyserial blocks at most this long per read call; overall deadlines are enforced above it.
READ_SLICE = 0.05


class SerialTransport:
    def __init__(self, config: SerialTransportConfig | ModbusRtuTransportConfig, owner: str) -> None:
        self.config = config
        self.owner = owner
        self.timeout = config.timeout
        self._port: serial.SerialBase | None = None
        self._fd: int | None = None
        self._buffer = bytearray()

    # ---------------------------------------------------------- lifecycle

    def describe(self) -> str:
        return self.config.port

    @property
    def is_open(self) -> bool:
        return self._port is not None and self._port.is_open

    def open(self) -> None:
        c = self.config
        try:
            self._port = serial.serial_for_url(
                c.port, baudrate=c.baudrate, bytesize=c.bytesize, parity=c.parity,
                stopbits=c.stopbits, timeout=READ_SLICE,
                # pyserial's rfc2217 client refuses write_timeout (NotImplementedError)
                write_timeout=None if c.port.startswith("rfc2217://") else c.timeout,
            )
        except (serial.SerialException, OSError, ValueError, NotImplementedError) as exc:
            self._port = None
            raise TransportDisconnected(f"{self.owner}: cannot open {c.port}: {_reason(exc)}") from exc
        self._buffer.clear()
        # A local device (not socket://, rfc2217://, loop://) is read directly by its descriptor.
        self._fd = self._port.fileno() if isinstance(self._port, serial.Serial) else None
        log.debug("%s: opened %s", self.owner, c.port)

    def close(self) -> None:
        port, self._port = self._port, None
        self._fd = None
        self._buffer.clear()
        if port is not None:
            port.close()

    def _require(self) -> serial.SerialBase:
        if self._port is None:
            raise TransportDisconnected(f"{self.owner}: {self.config.port} is not open")
        return self._port

    # ---------------------------------------------------------- bytes

    def write(self, data: bytes) -> None:
        port = self._require()
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s > %r", self.owner, data)
        try:
            port.write(data)
        except serial.SerialTimeoutException as exc:
            raise TransportTimeout(f"{self.owner}: write to {self.config.port} timed out") from exc
        except (serial.SerialException, OSError) as exc:
            raise self._lost(exc) from exc

    def _fill(self, deadline: float) -> bool:
        """Read what is available (or wait for one byte) into the buffer; False at the deadline."""
        port = self._require()
        if self._fd is not None:
            return self._fill_fd(self._fd, deadline)
        try:
            while True:
                waiting = port.in_waiting
                chunk = port.read(waiting if waiting > 0 else 1)
                if chunk:
                    if log.isEnabledFor(logging.DEBUG):
                        log.debug("%s < %r", self.owner, chunk)
                    self._buffer += chunk
                    return True
                if time.monotonic() >= deadline:
                    return False
        except (serial.SerialException, OSError) as exc:
            raise self._lost(exc) from exc

    def _fill_fd(self, fd: int, deadline: float) -> bool:
        """The same for a local device (tty, pty): one select and one read per chunk.

        pyserial's ``read(n)`` waits for all n bytes, so ``in_waiting`` had to be asked first:
        three system calls per chunk instead of two, on the Pi's hottest path.
        """
        try:
            while True:
                ready, _, _ = select.select([fd], [], [], max(0.0, min(READ_SLICE, deadline - time.monotonic())))
                if ready:
                    chunk = os.read(fd, 4096)
                    if not chunk:  # readable but empty: the device is gone (USB adapter pulled)
                        raise TransportDisconnected(f"{self.owner}: lost {self.config.port}: device disconnected")
                    if log.isEnabledFor(logging.DEBUG):
                        log.debug("%s < %r", self.owner, chunk)
                    self._buffer += chunk
                    return True
                if time.monotonic() >= deadline:
                    return False
        except BlockingIOError:
            return True  # spurious wake-up; the caller looks at the buffer and reads again
        except OSError as exc:
            raise self._lost(exc) from exc

    def read_until(self, terminator: bytes, timeout: float | None = None) -> bytes:
        """Return the next frame up to and including ``terminator``."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        start = 0
        while True:
            index = self._buffer.find(terminator, start)
            if index >= 0:
                end = index + len(terminator)
                frame = bytes(self._buffer[:end])
                del self._buffer[:end]
                return frame
            start = max(0, len(self._buffer) - len(terminator) + 1)
            if not self._fill(deadline):
                partial = bytes(self._buffer)
                raise TransportTimeout(
                    f"{self.owner}: no reply ending in {terminator!r} from {self.config.port}"
                    + (f" within {self._timeout_text(timeout)} (got {partial!r})" if partial
                       else f" within {self._timeout_text(timeout)}"))

    def read_exact(self, size: int, timeout: float | None = None) -> bytes:
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while len(self._buffer) < size:
            if not self._fill(deadline):
                raise TransportTimeout(
                    f"{self.owner}: expected {size} bytes from {self.config.port}, got {bytes(self._buffer)!r}")
        frame = bytes(self._buffer[:size])
        del self._buffer[:size]
        return frame

    def drain(self, duration: float) -> bytes:
        """Collect whatever arrives during ``duration`` seconds (plus anything buffered) and drop it."""
        deadline = time.monotonic() + duration
        while self._fill(deadline):
            if time.monotonic() >= deadline:
                break
        junk = bytes(self._buffer)
        self._buffer.clear()
        return junk

    def flush_input(self) -> bytes:
        """Drop unread input, in our buffer and in the OS; return what was dropped (for logs)."""
        port = self._require()
        junk = bytes(self._buffer)
        self._buffer.clear()
        try:
            waiting = port.in_waiting
            if waiting:
                junk += port.read(waiting)
                port.reset_input_buffer()
        except (serial.SerialException, OSError) as exc:
            raise self._lost(exc) from exc
        return junk

    # ---------------------------------------------------------- helpers

    def _timeout_text(self, timeout: float | None) -> str:
        return f"{self.timeout if timeout is None else timeout:g} s"

    def _lost(self, exc: BaseException) -> TransportDisconnected:
        return TransportDisconnected(f"{self.owner}: lost {self.config.port}: {_reason(exc)}")


def _reason(exc: BaseException) -> str:
    """The OS reason, without pyserial's "Could not open port X:" restating the port."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc) or type(exc).__name__
    match = re.search(r"\[Errno \d+\] (.*)$", text)
    return match.group(1) if match else text
