"""The generic ``modbus`` driver: one channel per entry of the config's register map."""

from bridge.drivers.modbus.driver import ModbusOptions, ModbusRegisters, RegisterChannel

__all__ = ["ModbusOptions", "ModbusRegisters", "RegisterChannel"]
