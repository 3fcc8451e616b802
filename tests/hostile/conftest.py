"""The hostile-input suite records its figures like the fault matrix (docs/reliability.md)."""

from tests.faults.conftest import figures

__all__ = ["figures"]
