"""Generic Modbus driver: ``codec`` (register decoding, read planning; shared) and ``driver``."""

from bridge.drivers.modbus.driver import BlockReader, ModbusOptions, ModbusRegisters, RegisterChannel

__all__ = ["BlockReader", "ModbusOptions", "ModbusRegisters", "RegisterChannel"]
