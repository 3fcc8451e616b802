"""Pfeiffer TPG gauge controllers: ``codec`` (pure protocol) and ``driver`` (the dialogue)."""

from bridge.drivers.pfeiffer_tpg.driver import PfeifferTPG, TPGOptions

__all__ = ["PfeifferTPG", "TPGOptions"]
