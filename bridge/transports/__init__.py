"""Transports move bytes or registers and nothing else; drivers are handed one and never open one."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bridge.transports.settings import (
    ModbusRtuTransportConfig,
    ModbusTcpTransportConfig,
    SerialTransportConfig,
    TransportConfig,
    VisaTransportConfig,
)

if TYPE_CHECKING:
    from bridge.transports.base import Transport


def open_transport(config: TransportConfig, owner: str) -> Transport:
    """Build (not yet open) the transport a config describes; ``owner`` names it in errors."""
    if isinstance(config, SerialTransportConfig):
        from bridge.transports.serial import SerialTransport

        return SerialTransport(config, owner)
    if isinstance(config, ModbusTcpTransportConfig | ModbusRtuTransportConfig):
        from bridge.transports.modbus import ModbusTransport

        return ModbusTransport(config, owner)
    if isinstance(config, VisaTransportConfig):
        from bridge.transports.visa import VisaTransport

        return VisaTransport(config, owner)
    raise TypeError(f"no transport for {type(config).__name__}")
