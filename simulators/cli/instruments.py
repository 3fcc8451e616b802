"""``simulate`` for the byte-stream instruments, one command per driver name, each on :mod:`simulators.cli.common`.

Several ``--address`` options (``mks_937b``, ``impac``, ``genesys``) put several instruments on one line (one
pty or one TCP port), each answering only its own address, as on a real RS-485 bus. One
instrument serves every client in turn, so its settings (unit, outputs) outlive a reconnect.
"""

from __future__ import annotations

import click

from simulators.cli.common import (
    Line,
    after,
    channel_number,
    distinct,
    later,
    line_options,
    number,
    pair,
    refuse_identity_option,
    seed_of,
    seed_option,
    serve_devices,
)
from simulators.instruments.genesys import LATCHING, GenesysSimulator
from simulators.instruments.impac import MODELS as IMPAC_MODELS
from simulators.instruments.impac import SPECIAL_NAMES, ImpacSimulator
from simulators.instruments.mks_937b import DEFAULT_GAUGES, GAUGES, UNITS, MKS937BSimulator
from simulators.instruments.pfeiffer_tpg import MODELS as TPG_MODELS
from simulators.instruments.pfeiffer_tpg import STATUS_NAMES, TPGSimulator, parse_unit
from simulators.instruments.scpi_psu import DIALECTS, ScpiPsuSimulator
from simulators.instruments.scpi_psu import MODELS as PSU_MODELS
from simulators.instruments.serial_ascii import TextDevice

TPG_UNITS = ["mbar", "Torr", "Pa", "Micron", "hPa", "V"]
TERMINATORS = {"cr": b"\r", "lf": b"\n", "crlf": b"\r\n"}


# ---------------------------------------------------------------------- pfeiffer_tpg


@click.command("pfeiffer_tpg")
@line_options()
@click.option("--model", type=click.Choice(sorted(TPG_MODELS), case_sensitive=False), default="TPG362",
              show_default=True)
@click.option("--channels", type=int, help="Channel count; must match the model (1, 2 or 6).")
@click.option("--unit", type=click.Choice(TPG_UNITS, case_sensitive=False), default="mbar", show_default=True,
              help="Power-on pressure unit (Micron, hPa and V only on TPG 36x).")
@click.option("--status", "statuses", metavar="CH=STATE", multiple=True,
              help=f"Force a channel status; STATE is one of {', '.join(STATUS_NAMES)} or 0-6. Repeatable.")
@click.option("--power-up-stream", is_flag=True, help="Stream readings at connect until spoken to.")
@click.option("--stream-interval", type=click.FloatRange(min=0.01), default=1.0, show_default=True)
@refuse_identity_option
@click.option("--change-unit", metavar="SECONDS=UNIT",
              help="Switch the unit after SECONDS, as on the front panel (a unit changed mid-run).")
@seed_option
def pfeiffer_tpg(line: Line, model: str, channels: int | None, unit: str, statuses: tuple[str, ...],
                 power_up_stream: bool, stream_interval: float, refuse_identity: bool, change_unit: str | None,
                 seed: int | None) -> None:
    """Pfeiffer TPG 261/262/361/362/366 gauge controller (mnemonic protocol)."""
    try:
        sim = TPGSimulator(model, channels, parse_unit(unit), seed)
        if change_unit is not None:
            delay, new_unit = later(change_unit, "--change-unit", "SECONDS=UNIT, e.g. 30=Torr")
            code = parse_unit(new_unit)
            if code not in sim.model.units:
                raise ValueError(f"{sim.model.name} has no unit {new_unit}")
            after(delay, lambda: sim.set_unit(code))
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    sim.refuse_identity = refuse_identity
    for text in statuses:
        channel_text, state = pair(text, "--status", "CH=STATE, e.g. 1=off")
        state = state.strip().lower()
        channel = channel_number(channel_text, sim.channels, "--status")
        if state in STATUS_NAMES:
            sim.set_status(channel, STATUS_NAMES[state].value)
        elif state.isdigit() and int(state) <= 6:
            sim.set_status(channel, int(state))
        else:
            raise click.BadParameter(f"{text!r}: state is one of {', '.join(STATUS_NAMES)} or 0-6",
                                     param_hint="--status")
    sim.power_up_streaming = power_up_stream
    sim.stream_interval = stream_interval
    serve_devices([sim], line)


# ---------------------------------------------------------------------- mks_937b


@click.command("mks_937b")
@line_options()
@click.option("--address", "addresses", type=click.IntRange(1, 253), multiple=True,
              help="Controller address; repeat for several controllers on one line.  [default: 253]")
@click.option("--unit", type=click.Choice(list(UNITS), case_sensitive=False), default="TORR", show_default=True,
              help="Power-on pressure unit.")
@click.option("--gauges", metavar="T1,...,T6",
              help=f"Gauge type per channel PR1..PR6, from {', '.join(GAUGES)} (NC: none).  "
                   f"[default: {','.join(DEFAULT_GAUGES)}]")
@click.option("--status", "statuses", metavar="CH=STRING", multiple=True,
              help="Make channel CH (1-6) of every controller read STRING (OFF, WAIT, MISCONN, ...). Repeatable.")
@click.option("--no-gauge-spelling", type=click.Choice(["NOGAUGE", "NO_GAUGE"]), default="NOGAUGE",
              show_default=True, help="How a channel without gauge reads.")
@click.option("--echo", is_flag=True, help="Echo every request, as a 2-wire RS-485 adapter does.")
@click.option("--truncate", type=click.IntRange(min=0), default=0, help="Characters lost from each reply.")
@refuse_identity_option
@click.option("--change-unit", metavar="SECONDS=UNIT",
              help=f"Switch every controller's unit after SECONDS ({', '.join(UNITS)}), as on the front panel.")
@seed_option
def mks_937b(line: Line, addresses: tuple[int, ...], unit: str, gauges: str | None, statuses: tuple[str, ...],
             no_gauge_spelling: str, echo: bool, truncate: int, refuse_identity: bool, change_unit: str | None,
             seed: int | None) -> None:
    """MKS 937B gauge controller(s) (@aaa...;FF protocol)."""
    types = [g.strip().upper() for g in gauges.split(",")] if gauges else None
    forced = []
    for text in statuses:
        channel_text, status = pair(text, "--status", "CH=STRING, e.g. 2=WAIT")
        status = status.strip()
        if not status or not status.isprintable() or ";" in status or " " in status:
            raise click.BadParameter(f"{text!r}: STRING is printable, without blanks or ';'", param_hint="--status")
        forced.append((channel_number(channel_text, 6, "--status"), status))
    sims = []
    for n, address in enumerate(distinct(addresses, 253, "--address")):
        try:
            sim = MKS937BSimulator(address, unit, seed_of(seed, n), gauges=types or DEFAULT_GAUGES)
        except ValueError as exc:
            raise click.UsageError(str(exc)) from exc
        for channel, status in forced:
            sim.set_status(channel, status)
        sim.no_gauge_spelling = no_gauge_spelling
        sim.truncate = truncate
        sim.refuse_identity = refuse_identity
        sims.append(sim)
    sims[0].echo = echo  # the adapter echoes once, whatever the number of units
    if change_unit is not None:
        delay, new_unit = later(change_unit, "--change-unit", "SECONDS=UNIT, e.g. 30=MBAR")
        if new_unit.upper() not in UNITS:
            raise click.BadParameter(f"{change_unit!r}: UNIT is one of {', '.join(UNITS)}", param_hint="--change-unit")

        def switch_units() -> None:
            for sim in sims:
                sim.set_unit(new_unit)

        after(delay, switch_units)
    serve_devices(sims, line)


# ---------------------------------------------------------------------- impac


@click.command("impac")
@line_options()
@click.option("--address", "addresses", type=click.IntRange(0, 97), multiple=True,
              help="Pyrometer address (default 0); repeat for several pyrometers on one line.")
@click.option("--model", type=click.Choice([m.name for m in IMPAC_MODELS.values()], case_sensitive=False),
              default="IGA 12", show_default=True)
@click.option("--temperature", "temperatures", type=float, multiple=True, metavar="DEGC",
              help="Pin the temperature (°C): once for all pyrometers, or once per --address in order.")
@click.option("--unit", type=click.Choice(["C", "F"], case_sensitive=False), default="C", show_default=True,
              help="Power-on unit (models without AAfh keep it).")
@click.option("--emissivity", type=click.FloatRange(0.05, 1.0), help="Emissivity set on the pyrometer(s).")
@click.option("--special", type=click.Choice(sorted(SPECIAL_NAMES)), help="Report this special value instead.")
@click.option("--warm-up", type=click.FloatRange(min=0.0), default=0.0, help="Seconds of 77770 after start.")
@click.option("--legacy-firmware", is_flag=True, help="Say nothing to invalid commands instead of 'no'.")
@click.option("--mismatch", type=click.Choice(["parity", "baud"]), help="Garble replies as wrong line settings do.")
@refuse_identity_option
@click.option("--change-emissivity", metavar="SECONDS=EMISSIVITY",
              help="Set another emissivity after SECONDS, as with InfraWin (an emissivity changed mid-run).")
@seed_option
def impac(line: Line, addresses: tuple[int, ...], model: str, temperatures: tuple[float, ...], unit: str,
          emissivity: float | None, special: str | None, warm_up: float, legacy_firmware: bool,
          mismatch: str | None, refuse_identity: bool, change_emissivity: str | None, seed: int | None) -> None:
    """LumaSense/Advanced Energy IMPAC pyrometer(s) (UPP protocol)."""
    addresses = distinct(addresses, 0, "--address")
    if len(temperatures) not in (0, 1, len(addresses)):
        raise click.UsageError("give --temperature once, or once per --address")
    sims = []
    for n, address in enumerate(addresses):
        sim = ImpacSimulator(address, model, "F" if unit.upper() == "F" else "C", seed_of(seed, n))
        if temperatures:
            sim.set_temperature(temperatures[n] if len(temperatures) > 1 else temperatures[0])
        if emissivity is not None:
            try:
                sim.set_emissivity(emissivity)
            except ValueError as exc:
                raise click.UsageError(str(exc)) from exc
        sim.special = SPECIAL_NAMES[special] if special else None
        sim.warm_up = warm_up
        sim.answers_no = sim.answers_no and not legacy_firmware
        sim.line_mismatch = "parity" if mismatch == "parity" else "baud" if mismatch == "baud" else None
        sim.refuse_identity = refuse_identity
        sims.append(sim)
    if change_emissivity is not None:
        delay, text = later(change_emissivity, "--change-emissivity", "SECONDS=EMISSIVITY, e.g. 30=0.65")
        value = number(change_emissivity, text, "--change-emissivity")
        if not 0.05 <= value <= 1.0:
            raise click.BadParameter(f"{change_emissivity!r}: emissivity 0.05-1.0", param_hint="--change-emissivity")

        def set_emissivities() -> None:
            for sim in sims:
                sim.set_emissivity(value)

        after(delay, set_emissivities)
    serve_devices(sims, line)


# ---------------------------------------------------------------------- scpi_psu


@click.command("scpi_psu")
@line_options(pty_help="Serve on a new pty (an ASRL resource) instead of TCP.",
              tcp_help="Where to listen (port 0 picks a free port; real supplies use 5025 Keysight, 5555 Rigol).",
              tcp_default="127.0.0.1:0")
@click.option("--dialect", type=click.Choice(DIALECTS), default="keysight", show_default=True)
@click.option("--model", type=click.Choice(sorted(PSU_MODELS), case_sensitive=False),
              help="Model of that dialect (default E36312A / DP832).")
@click.option("--set", "settings", metavar="CH=VOLTS,AMPS[,on]", multiple=True,
              help="Program a channel at start, e.g. 1=5,0.5,on. Repeatable.")
@click.option("--load", "loads", metavar="CH=OHMS", multiple=True,
              help="Resistive load on a channel (default 10 ohm; 'open' for none). Repeatable.")
@click.option("--first-reply-delay", type=click.FloatRange(min=0.0), default=0.0,
              help="Extra seconds before the first reply after each connect.")
@seed_option
def scpi_psu(line: Line, dialect: str, model: str | None, settings: tuple[str, ...], loads: tuple[str, ...],
             first_reply_delay: float, seed: int | None) -> None:
    """SCPI power supply, Keysight E36300 or Rigol DP800 dialect.

    Prints where it listens: ``socket://HOST:PORT`` (which a VISA config names
    ``TCPIP::HOST::PORT::SOCKET``), or with ``--pty`` a pty path (``ASRL/dev/pts/N::INSTR``).
    """
    try:
        sim = ScpiPsuSimulator(dialect, model, seed=seed)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    for text in settings:
        channel_text, rest = pair(text, "--set", "CH=VOLTS,AMPS[,on|off]")
        parts = [p.strip().lower() for p in rest.split(",")]
        if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] not in ("on", "off")):
            raise click.BadParameter(f"{text!r}: expected CH=VOLTS,AMPS[,on|off]", param_hint="--set")
        channel = channel_number(channel_text, sim.channels, "--set")
        sim.set_voltage(channel, number(text, parts[0], "--set"))
        sim.set_current(channel, number(text, parts[1], "--set"))
        sim.set_output(channel, len(parts) == 3 and parts[2] == "on")
    for text in loads:
        channel_text, ohms_text = pair(text, "--load", "CH=OHMS")
        channel = channel_number(channel_text, sim.channels, "--load")
        if ohms_text.strip().lower() == "open":
            sim.set_load(channel, None)
            continue
        ohms = number(text, ohms_text, "--load")
        if ohms <= 0:
            raise click.BadParameter(f"{text!r}: ohms must be a positive number or 'open'", param_hint="--load")
        sim.set_load(channel, ohms)
    sim.first_reply_delay = first_reply_delay
    serve_devices([sim], line)


# ---------------------------------------------------------------------- genesys


@click.command("genesys")
@line_options()
@click.option("--address", "addresses", type=click.IntRange(0, 30), multiple=True,
              help="Supply address; repeat for several supplies on one RS-485 chain.  [default: 6]")
@click.option("--model", default="GEN60-25", show_default=True, help="Model GENV-A (its rating).")
@click.option("--set", "setting", metavar="VOLTS,AMPS[,on]", help="Program every supply at start, e.g. 12,2.5,on.")
@click.option("--load", metavar="OHMS", help="Resistive load on every supply (default 10 ohm; 'open' for none).")
@click.option("--multidrop", is_flag=True, help="Start in multi-drop mode: service requests are single bytes.")
@click.option("--fault", "faults", type=click.Choice(sorted(LATCHING), case_sensitive=False), multiple=True,
              help="A fault that keeps the output down (AC fail, over temperature, shut off, enable open).")
@click.option("--refuse", "refusals", metavar="COMMAND=CODE", multiple=True,
              help="Answer COMMAND (e.g. MODE?) with an error code (e.g. C01). Repeatable.")
@click.option("--missing-ok", is_flag=True, help="Acknowledge no setting (ADR included) with OK.")
@click.option("--srq-in-replies", is_flag=True, help="Put an SRQ byte inside every reply (a collision).")
@seed_option
def genesys(line: Line, addresses: tuple[int, ...], model: str, setting: str | None, load: str | None,
            multidrop: bool, faults: tuple[str, ...], refusals: tuple[str, ...], missing_ok: bool,
            srq_in_replies: bool, seed: int | None) -> None:
    """TDK-Lambda Genesys power supply(s) (GEN language, ADR addressing, RS-232/RS-485)."""
    text = setting or ""
    parts = [p.strip().lower() for p in text.split(",")] if text else []
    if text and (len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] not in ("on", "off"))):
        raise click.BadParameter(f"{text!r}: expected VOLTS,AMPS[,on|off]", param_hint="--set")
    programmed = [number(text, part, "--set") for part in parts[:2]]
    ohms = None if load is None or load.strip().lower() == "open" else number(load, load, "--load")
    if ohms is not None and ohms <= 0:
        raise click.BadParameter(f"{load!r}: ohms must be a positive number or 'open'", param_hint="--load")
    refuse = {}
    for text in refusals:
        command, code = pair(text, "--refuse", "COMMAND=CODE, e.g. MODE?=C01")
        refuse[command.upper()] = code.strip().upper()
    sims = []
    for n, address in enumerate(distinct(addresses, 6, "--address")):
        try:
            sim = GenesysSimulator(address, model, seed=seed_of(seed, n))
        except ValueError as exc:
            raise click.UsageError(str(exc)) from exc
        if programmed:
            sim.set_current(programmed[1])
            sim.set_voltage(programmed[0])
            sim.set_output(parts[2:] == ["on"])
        if load is not None:
            sim.set_load(ohms)
        for fault in faults:
            sim.set_fault(fault, True)
        sim.multidrop = multidrop
        sim.refuse = dict(refuse)
        sim.missing_ok = missing_ok
        sim.srq_in_replies = srq_in_replies
        sims.append(sim)
    serve_devices(sims, line)


# ---------------------------------------------------------------------- serial_ascii (and scpi)


def _typed_value(text: str) -> float | int | str:
    """``5`` -> 5 (a status word formats with ``:d``), ``23.51`` -> 23.51, ``ON`` -> "ON"."""
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return text


@click.command("serial_ascii")
@line_options()
@click.option("--query", "queries", metavar="COMMAND=TEMPLATE", multiple=True,
              help="A command and its reply template, e.g. 'T?=T={T:.2f}C'. Repeatable.")
@click.option("--value", "values", metavar="NAME=VALUE", multiple=True,
              help="A value the templates use: a number (T=23.51, ST=5) or a text (OUT=ON). Repeatable.")
@click.option("--terminator", type=click.Choice(sorted(TERMINATORS)), default="cr", show_default=True,
              help="Ends every command.")
@click.option("--reply-terminator", type=click.Choice(sorted(TERMINATORS)),
              help="Ends every reply (default: the command terminator).")
@click.option("--unknown-reply", metavar="TEXT", help="Answer unknown commands with TEXT (default: silence).")
@click.option("--echo", is_flag=True, help="Echo every command before the reply (2-wire RS-485).")
def serial_ascii(line: Line, queries: tuple[str, ...], values: tuple[str, ...], terminator: str,
                 reply_terminator: str | None, unknown_reply: str | None, echo: bool) -> None:
    """Generic text instrument for the serial_ascii and scpi drivers (default: a thermometer, T? -> T=23.51C)."""
    table = dict(pair(text, "--query", "COMMAND=TEMPLATE") for text in queries) if queries else None
    numbers: dict[str, float | int | str] = {}
    for text in values:
        name, value = pair(text, "--value", "NAME=VALUE")
        numbers[name] = _typed_value(value)
    try:
        device = TextDevice(table, numbers if table is not None else None, terminator=TERMINATORS[terminator],
                            reply_terminator=TERMINATORS[reply_terminator] if reply_terminator else None)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    if table is None:
        for name, held in numbers.items():
            device.set_value(name, held)
    device.unknown_reply = unknown_reply
    device.echo = echo
    serve_devices([device], line)
