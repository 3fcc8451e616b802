"""What every transport offers the poller: open, close, reopen after a failure."""

from __future__ import annotations

import logging
from typing import Protocol, runtime_checkable

log = logging.getLogger("bridge.transports")


@runtime_checkable
class Transport(Protocol):
    """A link to one bus. ``describe()`` names it in logs and errors (port, host:port, resource)."""

    @property
    def is_open(self) -> bool: ...

    def open(self) -> None: ...

    def close(self) -> None: ...

    def describe(self) -> str: ...


def reopen(transport: Transport) -> None:
    """Close quietly, then open: the recovery step after a disconnect or a desynchronised link."""
    try:
        transport.close()
    except Exception:  # closing a broken link may fail in any library-specific way
        log.debug("closing %s before reopening failed", transport.describe(), exc_info=True)
    transport.open()
