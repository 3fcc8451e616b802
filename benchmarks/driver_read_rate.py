"""Driver read rate against the raw library's exchange rate, on the same simulator, same run.

For each case the raw baseline performs exactly the exchanges one driver poll performs (same
bytes, same simulator, same transport), with the bare library and no parsing or checking; the
driver then polls through the project's transport and driver. The ratio is driver / raw.
Target (issue 3): at least 0.8.

    .venv/bin/python benchmarks/driver_read_rate.py [--seconds 3]
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

import serial

from bridge.config import InstrumentConfig
from bridge.instrument import connect_instrument
from simulators.pfeiffer_tpg import TPGSimulator
from simulators.serving import PtyServer, TcpServer


class RawExchange:
    """One driver poll's worth of exchanges, done with the bare library."""

    def __call__(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


#: a running simulator: how to build the raw baseline, and the instrument config for the driver
Setup = tuple[Callable[[], RawExchange], dict[str, object]]


def rate(action: Callable[[], object], seconds: float) -> float:
    action()  # warm up
    count = 0
    start = time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        action()
        count += 1
    return count / (time.perf_counter() - start)


class TPGRaw(RawExchange):
    """UNI and PR1, each acknowledged and fetched with ENQ: what one TPG driver poll sends."""

    def __init__(self, url: str) -> None:
        self.port = serial.serial_for_url(url, timeout=1)

    def __call__(self) -> None:
        for command in (b"UNI\r", b"PR1\r"):
            self.port.write(command)
            self.port.read_until(b"\r\n")
            self.port.write(b"\x05")
            self.port.read_until(b"\r\n")

    def close(self) -> None:
        self.port.close()


@contextmanager
def _tpg(transport: str) -> Iterator[Setup]:
    sim = TPGSimulator("TPG362", seed=1)
    server: PtyServer | TcpServer = PtyServer(sim) if transport == "pty" else TcpServer(lambda: sim)
    with server:
        url = server.port if isinstance(server, PtyServer) else server.url
        config: dict[str, object] = {
            "name": "tpg", "driver": "pfeiffer_tpg", "transport": {"kind": "serial", "port": url},
            "options": {"channels": [1], "settle": 0.05},
        }

        def raw() -> RawExchange:
            return TPGRaw(str(url))

        yield raw, config


CASES: dict[str, Callable[[], AbstractContextManager[Setup]]] = {
    "pfeiffer_tpg / pty": lambda: _tpg("pty"),
    "pfeiffer_tpg / tcp": lambda: _tpg("tcp"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0, help="measuring time per side and case")
    args = parser.parse_args()
    print(f"driver read rate vs raw exchange rate ({platform.node()}, {platform.python_version()}, "
          f"{time.strftime('%Y-%m-%d')})")
    print(f"{'case':<28} {'raw polls/s':>12} {'driver polls/s':>15} {'ratio':>7}")
    for name, case in CASES.items():
        with case() as (make_raw, config):
            raw = make_raw()
            try:
                raw_rate = rate(raw, args.seconds)
            finally:
                raw.close()
            instrument = connect_instrument(InstrumentConfig.model_validate(config))
            try:
                driver_rate = rate(instrument.read, args.seconds)
            finally:
                instrument.close()
        print(f"{name:<28} {raw_rate:>12.0f} {driver_rate:>15.0f} {driver_rate / raw_rate:>7.2f}")


if __name__ == "__main__":
    main()
