"""Eurotherm controllers: ``codec`` (Eurotherm specifics over the shared Modbus codec) and ``driver``."""

from bridge.drivers.eurotherm.driver import Eurotherm, EurothermOptions

__all__ = ["Eurotherm", "EurothermOptions"]
