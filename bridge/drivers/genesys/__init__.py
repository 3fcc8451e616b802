"""TDK-Lambda Genesys power supplies: ``codec`` (the GEN language, pure) and ``driver`` (the dialogue)."""

from bridge.drivers.genesys.driver import Genesys, GenesysOptions

__all__ = ["Genesys", "GenesysOptions"]
