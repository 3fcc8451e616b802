"""SerialTransport's framing calls over pyserial's ``loop://`` (what is written comes back):
frames cut exactly, the rest kept for the next call."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bridge.errors import TransportTimeout
from bridge.transports.serial import SerialTransport
from bridge.transports.settings import SerialTransportConfig
from tests.helpers.transports import opened


@pytest.fixture
def loop() -> Iterator[SerialTransport]:
    with opened(SerialTransport(SerialTransportConfig(kind="serial", port="loop://", timeout=0.3), "echo")) as t:
        yield t


def test_read_exact_cuts_fixed_length_frames_and_keeps_the_rest(loop: SerialTransport) -> None:
    # read_exact is the call a third-party driver of a binary, fixed-length protocol uses
    # (docs/third-party-drivers.md section 6); no built-in driver needs it.
    loop.write(b"\x02AB\x03\x02CD\x03")
    assert loop.read_exact(4) == b"\x02AB\x03"
    assert loop.read_exact(4) == b"\x02CD\x03"


def test_read_exact_times_out_naming_what_it_got(loop: SerialTransport) -> None:
    loop.write(b"ab")
    with pytest.raises(TransportTimeout, match=r"echo: expected 3 bytes from loop://, got b'ab'"):
        loop.read_exact(3, timeout=0.1)
