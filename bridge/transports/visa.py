"""Message-based VISA resources through PyVISA: pyvisa-py (``@py``) or pyvisa-sim (``@sim``).

Terminations and the timeout are always set from the config: pyvisa-py's defaults for
``TCPIP::host::port::SOCKET`` (no read termination, ``\\r\\n`` on write) are wrong for SCPI.

Two pyvisa-py behaviours are compensated here (both measured on pyvisa-py 0.8.1):

* opening a ``::SOCKET`` resource "succeeds" when the connection is refused (the non-blocking
  connect is only waited for, never checked), so ``open()`` checks the socket itself;
* a connection closed by the instrument is reported as ``VI_ERROR_TMO`` after the full timeout,
  so after a timeout the socket is probed for end-of-file to report ``TransportDisconnected``.

``pyvisa.ResourceManager(backend)`` returns one shared manager per backend, and closing it closes
every resource opened through it. Transports therefore share the manager of their backend and the
last one to close it closes the manager.
"""

from __future__ import annotations

import logging
import os
import select
import socket
import threading

import pyvisa
from pyvisa import constants, rname
from pyvisa.errors import InvalidSession, VisaIOError
from pyvisa.resources import MessageBasedResource

from bridge.errors import ProtocolError, TransportDisconnected, TransportTimeout
from bridge.transports.settings import VisaTransportConfig

log = logging.getLogger("bridge.transports.visa")


class _SharedManagers:
    """One ResourceManager per backend string, reference-counted by the transports using it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._managers: dict[str, tuple[pyvisa.ResourceManager, int]] = {}

    def acquire(self, backend: str) -> pyvisa.ResourceManager:
        with self._lock:
            entry = self._managers.get(backend)
            manager = entry[0] if entry is not None else pyvisa.ResourceManager(backend)
            self._managers[backend] = (manager, (entry[1] if entry is not None else 0) + 1)
            return manager

    def release(self, backend: str) -> None:
        with self._lock:
            entry = self._managers.get(backend)
            if entry is None:
                return
            manager, users = entry
            if users > 1:
                self._managers[backend] = (manager, users - 1)
                return
            del self._managers[backend]
        manager.close()


_managers = _SharedManagers()


class VisaTransport:
    def __init__(self, config: VisaTransportConfig, owner: str) -> None:
        self.config = config
        self.owner = owner
        self.timeout = config.timeout
        self._manager: pyvisa.ResourceManager | None = None
        self._resource: MessageBasedResource | None = None

    # ---------------------------------------------------------- lifecycle

    def describe(self) -> str:
        return self.config.resource

    @property
    def is_open(self) -> bool:
        return self._resource is not None

    def open(self) -> None:
        self.close()
        c = self.config
        timeout_ms = max(1, round(c.timeout * 1000))
        try:
            # pyvisa opens a malformed name as a bare Resource and then fails confusingly
            rname.parse_resource_name(c.resource)
            self._manager = _managers.acquire(c.backend)
            resource = self._manager.open_resource(
                c.resource, open_timeout=timeout_ms, read_termination=c.read_termination,
                write_termination=c.write_termination, timeout=timeout_ms,
            )
        # pyvisa raises VisaIOError, ValueError (bad name or backend), OSError, and pyvisa-py
        # plain Exception("could not connect: ...") for a connect timeout.
        except Exception as exc:
            self.close()
            raise TransportDisconnected(
                f"{self.owner}: cannot open {c.resource}: {_reason(exc)}") from exc
        if not isinstance(resource, MessageBasedResource):
            resource.close()
            self.close()
            raise TransportDisconnected(
                f"{self.owner}: cannot open {c.resource}: not a message-based resource")
        self._resource = resource
        sock = self._socket()
        if sock is not None:
            try:
                error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if error:
                    raise OSError(error, os.strerror(error))
                sock.getpeername()  # ENOTCONN if the connect did not complete
            except OSError as exc:
                self.close()
                raise TransportDisconnected(
                    f"{self.owner}: cannot open {c.resource}: {_reason(exc)}") from exc
        log.debug("%s: opened %s via %s", self.owner, c.resource, c.backend)

    def close(self) -> None:
        resource, self._resource = self._resource, None
        manager, self._manager = self._manager, None
        try:
            if resource is not None:
                try:
                    resource.close()
                except (VisaIOError, OSError, InvalidSession):
                    log.debug("%s: closing %s failed", self.owner, self.config.resource,
                              exc_info=True)
        finally:
            if manager is not None:
                _managers.release(self.config.backend)

    def _require(self) -> MessageBasedResource:
        if self._resource is None:
            raise TransportDisconnected(f"{self.owner}: {self.config.resource} is not open")
        return self._resource

    # ---------------------------------------------------------- messages

    def write(self, command: str) -> None:
        resource = self._require()
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s > %r", self.owner, command)
        try:
            resource.write(command)
        except (VisaIOError, OSError, InvalidSession) as exc:
            raise self._failed(exc, f"write {command!r}") from exc

    def read(self) -> str:
        """Read one message; the read termination and surrounding whitespace are stripped."""
        return self._read("read")

    def query(self, command: str) -> str:
        """Write ``command`` and return the stripped reply."""
        self.write(command)
        return self._read(f"reply to {command!r}")

    def _read(self, what: str) -> str:
        resource = self._require()
        try:
            reply = resource.read()
        except UnicodeDecodeError as exc:
            raise ProtocolError(
                f"{self.owner}: {what} from {self.config.resource} is not text: {exc.object!r}"
            ) from exc
        except (VisaIOError, OSError, InvalidSession) as exc:
            raise self._failed(exc, what) from exc
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s < %r", self.owner, reply)
        return reply.strip()

    # ---------------------------------------------------------- helpers

    def _failed(self, exc: Exception, what: str) -> TransportTimeout | TransportDisconnected:
        name = self.config.resource
        if isinstance(exc, VisaIOError) and exc.error_code == constants.StatusCode.error_timeout:
            if self._peer_closed():
                return TransportDisconnected(
                    f"{self.owner}: {name} closed the connection ({what})")
            return TransportTimeout(
                f"{self.owner}: no {what} from {name} within {self.timeout:g} s")
        return TransportDisconnected(f"{self.owner}: lost {name} ({what}): {_reason(exc)}")

    def _socket(self) -> socket.socket | None:
        """The TCP socket under a pyvisa-py ``::SOCKET`` session, or None for anything else."""
        if self._manager is None or self._resource is None:
            return None
        sessions = getattr(self._manager.visalib, "sessions", None)
        session = sessions.get(self._resource.session) if isinstance(sessions, dict) else None
        sock = getattr(session, "interface", None)
        return sock if isinstance(sock, socket.socket) else None

    def _peer_closed(self) -> bool:
        """True if the instrument closed the TCP connection (readable, yet nothing to read)."""
        try:
            sock = self._socket()
            if sock is None:
                return False
            readable, _, _ = select.select([sock], [], [], 0)
            return bool(readable) and sock.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError, InvalidSession):  # reset, or already closed
            return True


def _reason(exc: BaseException) -> str:
    if isinstance(exc, VisaIOError):
        return f"{exc.abbreviation}: {exc.description}"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
