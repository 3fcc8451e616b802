"""Driver read rate against the raw library's exchange rate, on the same simulator, same run.

For each serial and Modbus driver: one driver poll is recorded at the simulator (the exact
requests it sends), then the raw baseline replays exactly those requests with the bare library
(pyserial ``read_until`` / pymodbus client calls) with no parsing or checking, and the driver
polls through the project's transport and driver. The ratio is driver polls/s over raw polls/s.
Target (issue 3): at least 0.8.

    .venv/bin/python benchmarks/driver_read_rate.py [--seconds 3]
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, Protocol

import serial
from pymodbus.client import ModbusTcpClient

from bridge.config import InstrumentConfig
from bridge.edge.instrument import connect_instrument
from simulators.instruments.eurotherm import EurothermSimulator
from simulators.instruments.impac import ImpacSimulator
from simulators.instruments.mks_937b import MKS937BSimulator
from simulators.instruments.modbus import demo_device
from simulators.instruments.pfeiffer_tpg import TPGSimulator
from simulators.instruments.serial_ascii import TextDevice
from simulators.serving import ByteDevice, PtyServer
from simulators.serving.modbus_server import DeviceServer


class RawExchange(Protocol):
    def __call__(self) -> None: ...

    def close(self) -> None: ...


class LoggingDevice(ByteDevice, Protocol):
    log: list[tuple[str, bytes]]


class SerialReplay:
    """Writes each recorded request and reads its reply up to the protocol's terminator."""

    def __init__(self, port: str, requests: list[bytes], terminator: bytes, serial_options: dict[str, Any]) -> None:
        self.port = serial.serial_for_url(port, timeout=1, **serial_options)
        self.requests = requests
        self.terminator = terminator

    def __call__(self) -> None:
        for request in self.requests:
            self.port.write(request)
            self.port.read_until(self.terminator)

    def close(self) -> None:
        self.port.close()


class ModbusReplay:
    """Issues each recorded register read with a bare pymodbus client."""

    def __init__(self, host: str, port: int, requests: list[tuple[int, int, int, int]]) -> None:
        self.client = ModbusTcpClient(host, port=port, timeout=1, retries=0)
        self.client.connect()  # type: ignore[no-untyped-call]
        self.requests = requests
        self.calls: dict[int, Callable[..., Any]] = {
            1: self.client.read_coils, 2: self.client.read_discrete_inputs,
            3: self.client.read_holding_registers, 4: self.client.read_input_registers,
        }

    def __call__(self) -> None:
        for unit, function, address, count in self.requests:
            self.calls[function](address, count=count, device_id=unit)

    def close(self) -> None:
        self.client.close()  # type: ignore[no-untyped-call]


#: a running simulator: how to build the raw baseline, and the driver's instrument config
Setup = tuple[Callable[[], RawExchange], dict[str, Any]]


def rate(action: Callable[[], object], seconds: float) -> float:
    action()  # warm up
    count = 0
    start = time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        action()
        count += 1
    return count / (time.perf_counter() - start)


def _record_serial_poll(device: LoggingDevice, config: dict[str, Any]) -> list[bytes]:
    instrument = connect_instrument(InstrumentConfig.model_validate(config))
    try:
        device.log.clear()
        instrument.read()
        return [data for direction, data in device.log if direction == "rx"]
    finally:
        instrument.close()


@contextmanager
def _serial_case(device: LoggingDevice, driver: str, options: dict[str, Any], terminator: bytes,
                 serial_options: dict[str, Any] | None = None) -> Iterator[Setup]:
    serial_options = serial_options or {}
    with PtyServer(device) as server:
        config = {"name": driver, "driver": driver, "options": options,
                  "transport": {"kind": "serial", "port": server.port, **serial_options}}
        requests = _record_serial_poll(device, config)

        def raw() -> RawExchange:
            return SerialReplay(server.port, requests, terminator, serial_options)

        yield raw, config


@contextmanager
def _modbus_case(device: Any, driver: str, options: dict[str, Any]) -> Iterator[Setup]:
    with DeviceServer(device) as server:
        host, _, port = server.host_port.rpartition(":")
        config = {"name": driver, "driver": driver, "options": options,
                  "transport": {"kind": "modbus_tcp", "host": host, "port": int(port), "unit": device.unit}}
        instrument = connect_instrument(InstrumentConfig.model_validate(config))
        try:
            server.requests.clear()
            instrument.read()
            requests = [(r.unit, r.function, r.address, r.count) for r in server.requests]
        finally:
            instrument.close()

        def raw() -> RawExchange:
            return ModbusReplay(host, int(port), requests)

        yield raw, config


def _example_options(driver: str) -> dict[str, Any]:
    """The options of the shipped example config, which the simulator's default map serves."""
    from bridge.config import load_config

    config = load_config(Path(__file__).resolve().parent.parent / "configs" / "examples" / f"{driver}.yaml")
    return dict(config.bridge.instruments[0].options)


CASES: dict[str, Callable[[], AbstractContextManager[Setup]]] = {
    "pfeiffer_tpg / pty": lambda: _serial_case(
        TPGSimulator("TPG362", seed=1), "pfeiffer_tpg", {"channels": [1, 2], "settle": 0.05}, b"\r\n"),
    "mks_937b / pty": lambda: _serial_case(
        MKS937BSimulator(address=253, seed=1), "mks_937b", {"channels": [1, 2], "settle": 0.05}, b";FF"),
    "impac / pty": lambda: _serial_case(
        ImpacSimulator(address=0, seed=1), "impac", {"address": 0, "settle": 0.05}, b"\r"),
    "serial_ascii / pty": lambda: _serial_case(
        TextDevice(), "serial_ascii",
        {"queries": [{"name": "t", "command": "T?", "parse": "regex", "regex": r"T=([-0-9.]+)"}], "settle": 0.05},
        b"\r"),
    "eurotherm / modbus tcp": lambda: _modbus_case(
        EurothermSimulator("3500", unit=1, seed=1), "eurotherm", {"family": "3500"}),
    "modbus / modbus tcp": lambda: _modbus_case(demo_device(1), "modbus", _example_options("modbus")),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0, help="measuring time per side and case")
    args = parser.parse_args()
    print(f"driver read rate vs raw exchange rate ({platform.node()}, Python {platform.python_version()}, "
          f"{time.strftime('%Y-%m-%d')})")
    print(f"{'case':<26} {'raw polls/s':>12} {'driver polls/s':>15} {'ratio':>7}")
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
        print(f"{name:<26} {raw_rate:>12.0f} {driver_rate:>15.0f} {driver_rate / raw_rate:>7.2f}", flush=True)


if __name__ == "__main__":
    main()
