"""The project's own error tree.

Library exceptions (pyserial, pymodbus, pyvisa, pydantic, yaml) are mapped to these at the
boundary where they are raised, so the poller and the CLI reason about four kinds of failure
instead of every library's vocabulary, and so messages can always name the instrument or key.
"""

from __future__ import annotations

from dataclasses import dataclass


class BridgeError(Exception):
    """Base of every error the project raises on purpose."""


@dataclass(frozen=True)
class ConfigProblem:
    """One problem in a config file, located by its key path (``bridge.instruments[1].driver``)."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ConfigError(BridgeError):
    """A config that cannot be used; carries every problem found, not just the first."""

    def __init__(self, problems: list[ConfigProblem], source: str = "") -> None:
        self.problems = problems
        self.source = source
        head = f"{source}: " if source else ""
        super().__init__(head + "; ".join(str(p) for p in problems))


class TransportError(BridgeError):
    """Bytes or registers could not be moved."""


class TransportTimeout(TransportError):
    """The instrument did not answer in time (silence, wrong address, bad checksum...)."""


class TransportDisconnected(TransportError):
    """The link is gone or could not be opened (unplugged adapter, refused TCP connection)."""


class ProtocolError(BridgeError):
    """Bytes arrived but do not form a valid frame; the message quotes the frame."""


class DeviceError(BridgeError):
    """The instrument understood us and said no (NAK, error word, Modbus exception)."""

    def __init__(self, message: str, code: int | str | None = None) -> None:
        self.code = code
        super().__init__(message)


class DriverRegistryError(BridgeError):
    """A driver could not be registered or found."""
