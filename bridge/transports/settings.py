"""Each transport's settings, as the config's ``transport:`` section gives them, and what a bus is.

The transports own their settings (``kind: serial | modbus_tcp | modbus_rtu | visa``); the config
composes them. A bus is the set of instruments that must share one transport and take turns on
it: one serial port (device path or pyserial URL), whatever speaks on it; one Modbus TCP
``host:port`` (a gateway answers one request at a time anyway); one VISA resource.
:func:`bus_key` names it and :func:`line_settings` are what instruments on one bus must agree on.
"""

from __future__ import annotations

import os
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator

from bridge.schema import StrictModel

Parity = Literal["N", "E", "O", "M", "S"]
Timeout = Annotated[float, Field(gt=0, le=60)]
TcpPort = Annotated[int, Field(ge=1, le=65535)]
ModbusUnit = Annotated[int, Field(ge=0, le=247)]
STANDARD_BAUDRATES = (300, 600, 1200, 2400, 4800, 9600, 14400, 19200, 38400, 57600, 115200,
                      230400, 460800, 921600)


class _SerialLine(StrictModel):
    port: str = Field(min_length=1)
    baudrate: int = 9600
    bytesize: Literal[5, 6, 7, 8] = 8
    parity: Parity = "N"
    stopbits: float = 1
    timeout: Timeout = 1.0

    @field_validator("stopbits")
    @classmethod
    def _stopbits(cls, v: float) -> float:
        if v not in (1, 1.5, 2):
            raise ValueError("stopbits must be 1, 1.5 or 2")
        return v

    @field_validator("baudrate")
    @classmethod
    def _standard_baudrate(cls, v: int) -> int:
        if v not in STANDARD_BAUDRATES:
            raise ValueError(f"{v} is not a standard baud rate ({', '.join(map(str, STANDARD_BAUDRATES))})")
        return v


class SerialTransportConfig(_SerialLine):
    """A serial line: a device path, or a pyserial URL such as socket://host:port."""

    kind: Literal["serial"]


class ModbusTcpTransportConfig(StrictModel):
    kind: Literal["modbus_tcp"]
    host: str = Field(min_length=1)
    port: TcpPort = 502
    unit: ModbusUnit = 1
    timeout: Timeout = 1.0


class ModbusRtuTransportConfig(_SerialLine):
    """Modbus RTU. The baud default is 9600 (Eurotherm's), not pymodbus' 19200."""

    kind: Literal["modbus_rtu"]
    unit: ModbusUnit = 1


class VisaTransportConfig(StrictModel):
    kind: Literal["visa"]
    resource: str = Field(min_length=1)
    backend: str = "@py"
    read_termination: str | None = "\n"
    write_termination: str = "\n"
    timeout: Timeout = 2.0

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, v: str) -> str:
        if not (v == "@py" or v.endswith("@sim")):
            raise ValueError("backend must be '@py' (pyvisa-py) or '@sim' / 'FILE.yaml@sim' (pyvisa-sim)")
        return v


TransportConfig = Annotated[
    SerialTransportConfig | ModbusTcpTransportConfig | ModbusRtuTransportConfig | VisaTransportConfig,
    Field(discriminator="kind"),
]
TRANSPORT_KINDS = ("serial", "modbus_tcp", "modbus_rtu", "visa")

#: keys that name the bus (compared through bus_key) or may differ between its instruments
_NOT_LINE_SETTINGS = frozenset({"port", "host", "resource", "timeout", "unit"})


def bus_key(config: TransportConfig) -> str:
    """The bus a transport config is on: ``serial:/dev/ttyUSB0``, ``modbus_tcp:10.0.0.7:502``,
    ``visa:TCPIP::10.0.0.9::5025::SOCKET``. Serial and Modbus RTU on one port share the key (one
    wire); a device path is resolved, so ``/dev/serial/by-id/...`` and the ``/dev/ttyUSB0`` it
    links to are one bus."""
    if isinstance(config, SerialTransportConfig | ModbusRtuTransportConfig):
        port = os.path.realpath(config.port) if config.port.startswith("/") else config.port
        return f"serial:{port}"
    if isinstance(config, ModbusTcpTransportConfig):
        return f"modbus_tcp:{config.host.lower()}:{config.port}"
    if isinstance(config, VisaTransportConfig):
        return f"visa:{config.resource.upper()}"  # VISA resource names are case-insensitive
    raise TypeError(f"no bus for {type(config).__name__}")


def line_settings(config: TransportConfig) -> dict[str, Any]:
    """The settings every instrument on one bus must share (one line has one set of settings)."""
    return config.model_dump(exclude=set(_NOT_LINE_SETTINGS))
