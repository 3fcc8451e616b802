"""The ``scpi`` driver: text queries over VISA, one channel per query of the config's table."""

from bridge.drivers.scpi.driver import ScpiOptions, ScpiText

__all__ = ["ScpiOptions", "ScpiText"]
