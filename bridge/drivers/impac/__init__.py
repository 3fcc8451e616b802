"""IMPAC pyrometers (UPP protocol): ``codec`` (pure protocol) and ``driver`` (the dialogue)."""

from bridge.drivers.impac.driver import Impac, ImpacOptions

__all__ = ["Impac", "ImpacOptions"]
