"""MKS 937B gauge controllers: ``codec`` (pure protocol) and ``driver`` (the dialogue)."""

from bridge.drivers.mks_937b.driver import MKS937B, MKS937BOptions

__all__ = ["MKS937B", "MKS937BOptions"]
