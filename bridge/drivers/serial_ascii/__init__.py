"""The ``serial_ascii`` driver: text queries on a serial line, one channel per query of the config's table."""

from bridge.drivers.serial_ascii.driver import SerialAscii, SerialAsciiOptions

__all__ = ["SerialAscii", "SerialAsciiOptions"]
