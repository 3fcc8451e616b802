"""SCPI power supplies: ``codec`` (pure protocol) and ``driver`` (the dialogue)."""

from bridge.drivers.scpi_psu.driver import PsuOptions, ScpiPsu

__all__ = ["PsuOptions", "ScpiPsu"]
