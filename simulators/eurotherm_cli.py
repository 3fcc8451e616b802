"""``simulate eurotherm``: Eurotherm controllers on one Modbus line (RTU pty or TCP).

``--unit`` may be given several times: that many controllers share the line (an RS-485 bus
with effusion cells), each answering only its own address; other addresses get silence.
"""

from __future__ import annotations

import click

from bridge.drivers.eurotherm.codec import FAMILIES
from simulators.eurotherm import EurothermSimulator
from simulators.modbus_cli import line_options, serve


@click.command("eurotherm")
@line_options
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
@click.option("--seed", type=int, help="Repeatable noise.")
def command(use_pty: bool, tcp: str | None, baudrate: int, delay: float, silent: bool, family: str,
            units: tuple[int, ...], setpoint: float, ambient: float, pv: float | None, decimals: int,
            sensor_break: bool, out_of_range: bool, absent: tuple[int, ...], seed: int | None) -> None:
    """Eurotherm 2400/3200/3500 controllers (Modbus; PV follows the setpoint through a PI loop)."""
    addresses = list(dict.fromkeys(units)) or [1]
    controllers = []
    for n, unit in enumerate(addresses):
        sim = EurothermSimulator(family, unit, decimals=decimals, setpoint=setpoint, ambient=ambient,
                                 seed=None if seed is None else seed + n)
        for loop in range(1, sim.loops + 1):
            sim.set_pv(pv, loop)
        sim.sensor_break = sensor_break
        sim.pv_out_of_range = out_of_range
        for address in absent:
            sim.set_absent(address)
        controllers.append(sim)
    serve(controllers, use_pty=use_pty, tcp=tcp, baudrate=baudrate, delay=delay, silent=silent)
