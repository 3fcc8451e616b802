"""A simulator on a real transport: a pty (``kind="pty"``) or TCP (reached through ``socket://``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from simulators.serving import ByteDevice, PtyServer, TcpServer


@contextmanager
def serve_on(kind: str, device: ByteDevice) -> Iterator[tuple[PtyServer | TcpServer, str]]:
    """``device`` (one instrument, its state shared by every connection) on a pty or on TCP, with
    the port a config names to reach it."""
    if kind == "pty":
        with PtyServer(device) as pty:
            yield pty, pty.port
    else:
        with TcpServer(lambda: device) as tcp:
            yield tcp, tcp.url


class ServedLink:
    """Base of the links the driver tests hold: ``unplug()`` pulls the cable of ``self.server``."""

    server: PtyServer | TcpServer

    def unplug(self) -> None:
        """A pty's adapter is pulled; a serial device server drops its connections (and comes back)."""
        if isinstance(self.server, PtyServer):
            self.server.unplug()
        else:
            self.server.drop_connections()
