"""``simulate`` for the Modbus instruments, ``modbus`` (a register map) and ``eurotherm``, on a Modbus RTU pty or TCP.

``simulate modbus`` without ``--config`` serves :data:`~simulators.instruments.modbus.DEMO_CHANNELS`,
the map of ``configs/examples/modbus.yaml``; with ``--config FILE [--instrument NAME]`` it serves
exactly what that config's ``modbus`` instrument reads, so a register map can be commissioned
before the device is at hand.

``simulate eurotherm --unit`` may be given several times: that many controllers share the line
(an RS-485 bus with effusion cells), each answering only its own address; other addresses get
silence.
"""

from __future__ import annotations

from collections.abc import Sequence

import click
from pydantic import ValidationError

from bridge.config import load_config
from bridge.drivers.eurotherm.codec import FAMILIES
from bridge.drivers.modbus.driver import ModbusOptions
from bridge.errors import ConfigError
from bridge.transports.settings import ModbusRtuTransportConfig, ModbusTcpTransportConfig
from simulators.cli.common import (
    delay_option,
    options,
    pair,
    refuse_identity_option,
    seed_of,
    serve_until_signal,
    silent_option,
    tcp_address,
    where_options,
)
from simulators.instruments.eurotherm import EurothermSimulator
from simulators.instruments.modbus import DEMO_OPTIONS, DEMO_VALUES, device_for
from simulators.serving.modbus_server import DeviceServer
from simulators.serving.register_device import RegisterDevice


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
    name, value = pair(text, "--set", "NAME=NUMBER")
    try:
        return name, float(value)
    except ValueError:
        raise click.BadParameter(f"{text!r}: expected NAME=NUMBER", param_hint="--set") from None


#: The options every Modbus simulator command shares: where it serves, and line faults.
modbus_line_options = options(
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
@modbus_line_options
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False),
              help="Serve the register map of a modbus instrument in this bridge config.")
@click.option("--instrument", metavar="NAME", help="Which modbus instrument of --config (default: the first).")
@click.option("--unit", type=click.IntRange(1, 247), help="Unit id (default: the config's, else 1).")
@click.option("--set", "settings", metavar="NAME=VALUE", multiple=True, help="A channel's value. Repeatable.")
@click.option("--absent", metavar="NAME", multiple=True,
              help="Refuse this channel's registers with exception 02. Repeatable.")
@click.option("--wander", type=click.FloatRange(min=0.0), default=0.01, show_default=True,
              help="Relative slow drift of the numbers (0: constant).")
def modbus(use_pty: bool, tcp: str | None, baudrate: int, delay: float, silent: bool, config_path: str | None,
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


@click.command("eurotherm")
@modbus_line_options
@click.option("--family", type=click.Choice(sorted(FAMILIES)), default="2400", show_default=True)
@click.option("--unit", "units", type=click.IntRange(1, 247), multiple=True,
              help="Modbus address of a controller on the line; repeat for several (default: 1).")
@click.option("--setpoint", type=float, default=150.0, show_default=True, help="Target setpoint of every loop.")
@click.option("--ambient", type=float, default=25.0, show_default=True, help="Start temperature.")
@click.option("--pv", type=float, help="Hold the PV at this value (no dynamics, no noise).")
@click.option("--decimals", type=click.IntRange(0, 3), default=1, show_default=True,
              help="Display resolution of the integer region.")
@click.option("--sensor-break", is_flag=True, help="Set status bit 5 (thermocouple open).")
@click.option("--out-of-range", is_flag=True, help="Set status bit 10 (PV out of range).")
@click.option("--absent", "absent", metavar="ADDRESS", type=click.IntRange(0, 16383), multiple=True,
              help="Parameter address to refuse with exception 02 (both regions). Repeatable.")
@refuse_identity_option
@click.option("--seed", type=int, help="Repeatable noise.")
def eurotherm(use_pty: bool, tcp: str | None, baudrate: int, delay: float, silent: bool, family: str,
              units: tuple[int, ...], setpoint: float, ambient: float, pv: float | None, decimals: int,
              sensor_break: bool, out_of_range: bool, absent: tuple[int, ...], refuse_identity: bool,
              seed: int | None) -> None:
    """Eurotherm 2400/3200/3500 controllers (Modbus; PV follows the setpoint through a PI loop)."""
    addresses = list(dict.fromkeys(units)) or [1]
    controllers = []
    for n, unit in enumerate(addresses):
        sim = EurothermSimulator(family, unit, decimals=decimals, setpoint=setpoint, ambient=ambient,
                                 seed=seed_of(seed, n))
        for loop in range(1, sim.loops + 1):
            sim.set_pv(pv, loop)
        sim.sensor_break = sensor_break
        sim.pv_out_of_range = out_of_range
        for address in absent:
            sim.set_absent(address)
        sim.refuse_identity = refuse_identity
        controllers.append(sim)
    serve(controllers, use_pty=use_pty, tcp=tcp, baudrate=baudrate, delay=delay, silent=silent)
