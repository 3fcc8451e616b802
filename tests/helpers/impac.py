"""Simulated IMPAC pyrometers reachable over real transports, for the impac driver tests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bridge.config import InstrumentConfig
from bridge.edge.instrument import Instrument, connect_instrument
from simulators.instruments.impac import ImpacSimulator
from simulators.serving import PtyServer, TcpServer
from tests.helpers.served import ServedLink

#: short enough to keep silence tests quick, long enough for a loaded 2-core machine
TIMEOUT = 0.5


def line_parity(port: str) -> str:
    """8E1 as for the real pyrometer, except on a pty.

    A Linux pty always clears PARENB, and (seen on kernel 6.18) tcsetattr then fails with EINVAL
    when a request asks for even parity and changes nothing else: pyserial's open() with
    parity E succeeds on a fresh pty but fails on every later open of it (a second instrument on
    the same line, a reconnect). A pty has no parity anyway (docs/protocols.md 8.4), so ptys get N;
    ``socket://`` ignores the setting and keeps E, as a user's config would say.
    """
    return "N" if port.startswith("/dev/pts/") else "E"


def impac_config(port: str, name: str = "pyrometer", timeout: float = TIMEOUT, **options: Any) -> InstrumentConfig:
    """An instrument config as a user would write it: 8E1 serial line (see line_parity), options."""
    return InstrumentConfig.model_validate({
        "name": name, "driver": "impac",
        "transport": {"kind": "serial", "port": port, "baudrate": 19200, "parity": line_parity(port),
                      "timeout": timeout},
        "options": {"settle": 0.05, **options},
    })


@dataclass
class ImpacLink(ServedLink):
    """A simulated pyrometer (or line of them) on a real transport: ``port`` is what a config says."""

    sim: ImpacSimulator
    port: str
    kind: str
    server: PtyServer | TcpServer

    def instrument(self, name: str = "pyrometer", timeout: float = TIMEOUT, **options: Any) -> Instrument:
        options.setdefault("address", self.sim.address)
        return connect_instrument(impac_config(self.port, name, timeout, **options))

    def requests(self) -> list[bytes]:
        """The lines the pyrometer heard, in order (from its log)."""
        heard = b"".join(data for direction, data in self.sim.log if direction == "rx")
        return [line for line in heard.split(b"\r") if line]
