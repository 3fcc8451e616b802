"""What the transport tests share: an open transport, and a server that goes away and comes back."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol, TypeVar

import pytest

from bridge.errors import TransportDisconnected, TransportTimeout
from bridge.transports.base import Transport, reopen

T = TypeVar("T", bound=Transport)


class Restartable(Protocol):
    def stop(self) -> None: ...

    def start(self) -> None: ...


@contextmanager
def opened(transport: T) -> Iterator[T]:
    """``transport``, open, and closed again on the way out."""
    transport.open()
    try:
        yield transport
    finally:
        transport.close()


def restart_under(server: Restartable, transport: Transport, request: Callable[[], object],
                  refused: str) -> pytest.ExceptionInfo[Exception]:
    """Stop ``server`` under an open ``transport``: ``request`` then fails (disconnect or timeout),
    and reopening fails with a disconnect matching ``refused`` while it is down. Start it again on
    the same port and reopen. Returns how ``request`` failed."""
    server.stop()
    with pytest.raises((TransportDisconnected, TransportTimeout)) as caught:
        request()
    # while the server is down, reopening fails the same way as a first open
    with pytest.raises(TransportDisconnected, match=refused):
        reopen(transport)
    assert not transport.is_open
    server.start()  # same port
    reopen(transport)
    return caught
