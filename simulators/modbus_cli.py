"""``simulate modbus``: a generic Modbus device serving a register map (the modbus driver's).

Without ``--config`` it serves :data:`DEMO_CHANNELS`, the map of ``configs/examples/modbus.yaml``;
with ``--config FILE [--instrument NAME]`` it serves exactly what that config's ``modbus``
instrument reads, so a register map can be commissioned before the device is at hand.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import click
from pydantic import ValidationError

from bridge.config import load_config
from bridge.drivers.modbus.driver import ModbusOptions
from bridge.errors import ConfigError
from bridge.transports.settings import ModbusRtuTransportConfig, ModbusTcpTransportConfig
from simulators.cli_common import delay_option, options, serve_until_signal, silent_option, tcp_address, where_options
from simulators.modbus_device import DeviceServer, MappedDevice, RegisterDevice

#: A chamber PLC (the example config's map): every type, both word orders, scaled values, bits.
DEMO_CHANNELS: list[dict[str, Any]] = [
    {"name": "chamber_pressure", "table": "input", "address": 0, "type": "float32", "units": "mbar"},
    {"name": "cooling_flow", "table": "input", "address": 2, "type": "uint16", "scale": 0.1, "units": "l/min"},
    {"name": "water_temperature", "table": "input", "address": 3, "type": "int16", "scale": 0.1, "units": "degC"},
    {"name": "rotation_count", "table": "holding", "address": 10, "type": "uint32", "word_order": "little"},
    {"name": "heater_setpoint", "table": "holding", "address": 20, "type": "float32", "word_order": "little",
     "units": "degC"},
    {"name": "valve_position", "table": "holding", "address": 22, "type": "int16", "byte_order": "little",
     "scale": 0.01, "units": "%"},
    {"name": "gas_flow", "table": "holding", "address": 24, "type": "float64", "units": "sccm"},
    {"name": "stage_offset", "table": "holding", "address": 28, "type": "int32", "scale": 0.001,
     "offset": -10.0, "units": "mm"},
    {"name": "shutter_open", "table": "coil", "address": 0, "type": "bool"},
    {"name": "interlock_ok", "table": "discrete", "address": 0, "type": "bool"},
]
DEMO_VALUES: dict[str, float] = {
    "chamber_pressure": 2.5e-7, "cooling_flow": 12.3, "water_temperature": 18.7, "rotation_count": 123456,
    "heater_setpoint": 650.0, "valve_position": 42.5, "gas_flow": 20.5, "stage_offset": -2.5,
    "shutter_open": 0, "interlock_ok": 1,
}
DEMO_OPTIONS: dict[str, Any] = {"channels": DEMO_CHANNELS, "max_gap": 8}


def demo_device(unit: int = 1, *, wander: float = 0.0) -> MappedDevice:
    """The demo map with its values (what ``simulate modbus`` serves by default)."""
    return device_for(ModbusOptions.model_validate(DEMO_OPTIONS), DEMO_VALUES, unit, wander=wander)


def device_for(options: ModbusOptions, values: dict[str, float], unit: int, *, wander: float = 0.0,
               strict: bool = False) -> MappedDevice:
    """A device holding every channel of ``options``: ``values`` where given, else a number
    that fits the channel's type (1, 2, 3... by position; bits 0). ``strict``: a given value
    that the channel's type cannot hold is a ValueError, not replaced. Holes up to the
    options' ``max_gap`` read as spare registers, so the planned reads succeed."""
    points = []
    for i, channel in enumerate(options.channels):
        spec = channel.spec
        value = values.get(channel.name, 0.0 if spec.type == "bool" else float(i + 1))
        try:
            spec.encode(value)
        except ValueError:
            if strict and channel.name in values:
                raise ValueError(f"{channel.name}: {value:g} does not fit {spec.type}") from None
            value = spec.offset  # raw 0 fits every type
        points.append((channel.name, spec, value))
    return MappedDevice(points, unit, wander=wander, fill_gaps=options.max_gap)


def _from_config(path: str, instrument: str | None) -> tuple[ModbusOptions, int]:
    try:
        config = load_config(path)
    except ConfigError as exc:
        raise click.BadParameter(str(exc), param_hint="--config") from exc
    candidates = [i for i in config.bridge.instruments if i.driver == "modbus" and i.name == (instrument or i.name)]
    if not candidates:
        which = f"named {instrument!r}" if instrument else "at all"
        raise click.BadParameter(f"{path} has no modbus instrument {which}", param_hint="--config")
    chosen = candidates[0]
    try:
        options = ModbusOptions.model_validate(chosen.options)
    except ValidationError as exc:  # load_config already checked it; kept for a clear message
        raise click.BadParameter(str(exc), param_hint="--config") from exc
    unit = chosen.transport.unit if isinstance(chosen.transport, ModbusTcpTransportConfig
                                               | ModbusRtuTransportConfig) else 1
    return options, unit


def _name_value(text: str) -> tuple[str, float]:
    name, sep, value = text.partition("=")
    try:
        if not sep:
            raise ValueError(text)
        return name.strip(), float(value)
    except ValueError:
        raise click.BadParameter(f"{text!r}: expected NAME=NUMBER", param_hint="--set") from None


#: The options every Modbus simulator command shares: where it serves, and line faults.
line_options = options(
    where_options(pty_help="Serve Modbus RTU on a new pty (the default).",
                  tcp_help="Serve Modbus TCP instead (port 0 picks a free port)."),
    click.option("--baudrate", type=int, default=9600, show_default=True, help="RTU line speed."),
    delay_option,
    silent_option,
)


def serve(devices: Sequence[RegisterDevice], *, use_pty: bool, tcp: str | None, baudrate: int, delay: float,
          silent: bool) -> None:
    """Apply the line options to ``devices``, serve them, print where, run until a signal."""
    address = tcp_address(use_pty, tcp)
    for device in devices:
        device.reply_delay = delay
        device.silent = silent
    if address is None:
        server = DeviceServer(devices, transport="rtu", baudrate=baudrate)
    else:
        server = DeviceServer(devices, transport="tcp", host=address[0], port=address[1])
    serve_until_signal(server, lambda: server.host_port)


@click.command("modbus")
@line_options
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False),
              help="Serve the register map of a modbus instrument in this bridge config.")
@click.option("--instrument", metavar="NAME", help="Which modbus instrument of --config (default: the first).")
@click.option("--unit", type=click.IntRange(1, 247), help="Unit id (default: the config's, else 1).")
@click.option("--set", "settings", metavar="NAME=VALUE", multiple=True, help="A channel's value. Repeatable.")
@click.option("--absent", metavar="NAME", multiple=True,
              help="Refuse this channel's registers with exception 02. Repeatable.")
@click.option("--wander", type=click.FloatRange(min=0.0), default=0.01, show_default=True,
              help="Relative slow drift of the numbers (0: constant).")
def command(use_pty: bool, tcp: str | None, baudrate: int, delay: float, silent: bool, config_path: str | None,
            instrument: str | None, unit: int | None, settings: tuple[str, ...], absent: tuple[str, ...],
            wander: float) -> None:
    """Generic Modbus device serving a register map (default: the example config's)."""
    if config_path:
        options, config_unit = _from_config(config_path, instrument)
        values: dict[str, float] = {}
    elif instrument:
        raise click.UsageError("--instrument needs --config")
    else:
        options, config_unit, values = ModbusOptions.model_validate(DEMO_OPTIONS), 1, dict(DEMO_VALUES)
    values.update(_name_value(text) for text in settings)
    names = {c.name for c in options.channels}
    unknown = sorted((set(values) | set(absent)) - names)
    if unknown:
        raise click.BadParameter(f"no channel {', '.join(unknown)} (known: {', '.join(sorted(names))})",
                                 param_hint="--set/--absent")
    try:
        device = device_for(options, values, unit or config_unit, wander=wander, strict=True)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--set") from exc
    for name in absent:
        spec = device.spec(name)
        device.refuse(spec.table, spec.address, spec.count)
    serve([device], use_pty=use_pty, tcp=tcp, baudrate=baudrate, delay=delay, silent=silent)
