"""``chamber-bridge runs list|show|export|plot``: runs read back from the local store.

Each subcommand takes ``--store DIR`` (default ``./runs``, the config default of
``uploader.sink.path``) or ``--config CONFIG`` (the store of a config whose sink is local).
Only the reader is imported here; the export and plot modules pull in pyarrow and matplotlib
(the ``server`` extra) when they run, so ``chamber-bridge --help`` and the Pi never load them.
Exit codes follow the CLI contract: 2 when the store or the run named cannot be found (bad
usage), 1 when a file is corrupt, an output cannot be written, or an extra is missing.

The store may hold anything (docs/store.md): every text read from it is printed through
:func:`bridge.names.printable` (escaped, long ones cut), and a damaged run is one line naming its
folder and the reason. ``runs list`` lists the readable runs, reports each damaged one on stderr
and still exits 0: a listing that worked is a success, and one bad folder must not break every
script that lists the store; ``show``, ``export`` and ``plot`` of a damaged run exit 1.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from bridge.cli.common import fail, reported_errors
from bridge.names import printable
from bridge.store import baseline as baselines
from bridge.store.reader import (
    Manifest,
    RunData,
    RunLookupError,
    RunStore,
    StoreError,
    format_duration,
    format_event,
    format_gap,
    format_time,
    load_run,
)

DEFAULT_STORE = Path("./runs")
EXIT_RUNTIME = 1
EXIT_USAGE = 2
#: characters shown of a name in a table cell, a metadata value, an error line
CELL = 40
VALUE = 200
LINE = 1000

F = TypeVar("F", bound=Callable[..., Any])


def _fail(message: str, code: int) -> NoReturn:

    fail(message, code)


@contextmanager
def _reported(ctx: click.Context) -> Iterator[None]:
    """A store error as one line: exit 2 for a store or run that is not there, 1 otherwise."""
    try:
        yield
    except StoreError as exc:
        if (ctx.obj or {}).get("debug"):
            raise
        _fail(printable(str(exc), LINE), EXIT_USAGE if isinstance(exc, RunLookupError) else EXIT_RUNTIME)


def _store_options(func: F) -> F:
    func = click.option("--config", "config", type=click.Path(dir_okay=False), metavar="CONFIG",
                        help="Take the store from this config's uploader.sink.path (local sink).")(func)
    func = click.option("--store", "store", type=click.Path(file_okay=False), metavar="DIR",
                        help="The local run store [default: ./runs].")(func)
    return func


def _open_store(ctx: click.Context, store: str | None, config: str | None) -> RunStore:
    if store is not None and config is not None:
        _fail("give --store or --config, not both", EXIT_USAGE)
    if config is None:
        return RunStore(store if store is not None else DEFAULT_STORE)
    from bridge.config import LocalSinkConfig, load_config

    with reported_errors((ctx.obj or {}).get("debug", False)):
        sink = load_config(config).uploader.sink
    if not isinstance(sink, LocalSinkConfig):
        _fail(f"{config}: uploader.sink is {sink.kind}, not local: its runs are not in a local store "
              "(use --store DIR)", EXIT_USAGE)
    return RunStore(sink.path)


def _with_store(func: Callable[..., None]) -> Callable[..., None]:
    """Turn ``--store``/``--config`` into a :class:`RunStore` argument and report store errors."""

    def wrapper(ctx: click.Context, /, store: str | None, config: str | None, **kwargs: Any) -> None:
        run_store = _open_store(ctx, store, config)
        with _reported(ctx):
            func(run_store, **kwargs)

    wrapper.__name__, wrapper.__doc__ = func.__name__, func.__doc__
    return _store_options(click.pass_context(wrapper))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def runs() -> None:
    """Read runs back from the local store: list, show, export (CSV/Parquet), plot (PNG)."""


# ---------------------------------------------------------------- list


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int] = ()) -> list[str]:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()

    return [line(header), *(line(r) for r in rows)]


@runs.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object (the manifest) per run.")
@_with_store
def list_runs(store: RunStore, as_json: bool) -> None:
    """One line per run, oldest first: id, stream, site, start, duration, points, state."""
    manifests, broken = store.manifests()
    if as_json:
        for m in manifests:
            click.echo(_json(m.raw))
    elif manifests:
        rows = []
        for m in manifests:
            try:  # an open run's manifest counts nothing yet: count its chunk files
                points = m.total_points if m.finalized else load_run(m).points
            except StoreError as exc:
                broken.append(exc)
                continue
            rows.append((m.short_id, _cell(m.stream_name), _cell(m.site or "-"), format_time(m.started_at),
                         format_duration(m.duration) if m.duration is not None else "open",
                         str(points), _cell(m.exit_status or "-"), m.state))
        for text in _table(("id", "stream", "site", "started (UTC)", "duration", "points", "exit", "state"),
                           rows, right=(5,)):
            click.echo(text)
    elif not broken:
        click.echo(f"no runs in {store}", err=True)
    for problem in broken:
        click.echo(f"chamber-bridge: warning: damaged run: {printable(str(problem), LINE)}", err=True)


# ---------------------------------------------------------------- show


def _metadata(m: Manifest) -> list[tuple[str, str]]:
    report = m.report
    clock = report.get("clock") if isinstance(report.get("clock"), dict) else {}
    ntp = clock.get("ntp_synchronized") if clock else None
    stopped = format_time(m.stopped_at) + (f" UTC ({format_duration(m.duration)})" if m.stopped_at else "")
    if m.finalized:
        finalized = "yes" + (f", {format_time(m.finalized_at)} UTC" if m.finalized_at else "")
        if report.get("finalized_because"):
            finalized += f" ({_value(report['finalized_because'], CELL)})"
    else:
        finalized = "no (still streaming, or waiting for data)"
    complete = {True: "yes", False: "no", None: "-"}[m.complete]
    missing = m.missing_gaps
    if m.complete is False and missing:
        complete += f": {len(missing)} gap{'' if len(missing) == 1 else 's'} (below)"
    if m.bridge_down > 0:
        complete += f"; the bridge was down {format_duration(m.bridge_down)} while the run went on (below)"
    counts = ", ".join(f"{_value(report[k], CELL)} {k.replace('_', ' ')}"
                       for k in ("readings", "bad_quality", "not_numeric", "chunks", "retries") if k in report)
    qualities = report.get("qualities")
    clock_text = {True: "NTP synchronized", False: "not NTP synchronized", None: "sync unknown"}.get(
        ntp, _value(ntp, CELL)) if isinstance(ntp, bool | None) else _value(ntp, CELL)
    return [
        ("run", _value(m.run_id or "-")), ("data id", m.data_id), ("stream", _value(m.stream_name)),
        ("site", _value(m.site or "-")), ("sample", _value(m.physical_sample or "-")),
        ("instrument id", _value(m.synth_source_id or "-")), ("project", _value(m.project_id or "-")),
        ("tags", _value(", ".join(printable(t, 64) for t in m.tags[:32]) or "-")),
        ("points/chunk", str(m.points_per_chunk or "-")),
        ("started", f"{format_time(m.started_at)} UTC"), ("stopped", stopped),
        ("exit status", _value(m.exit_status or "-")), ("trigger", _value(m.trigger, CELL)),
        *[(label, _why(m.why[when])) for when, label in (("start", "why started"), ("stop", "why stopped"))
          if isinstance(m.why.get(when), dict)],
        ("finalized", finalized), ("complete", complete),
        ("report", counts or "-"),
        *([("qualities", _value(_quality_text(qualities), LINE))] if isinstance(qualities, dict) and qualities
          else []),
        ("clock", clock_text),
        *([("stop reason", _value(report["stop_reason"]))] if report.get("stop_reason") else []),
        ("store", _value(m.run_dir, LINE)),
    ]


def _why(why: dict[str, Any]) -> str:
    """``cell_ga.pv > 500.0 (cell_ga.pv=512.3)``: the expression and the values that made it true."""
    values = why.get("values")
    if not isinstance(values, dict):
        values = {}
    shown = ", ".join(f"{printable(k, 80)}={printable(v, 40)}" for k, v in list(values.items())[:16])
    return _value(f"{printable(why.get('expression'), VALUE)}" + (f" ({shown})" if shown else ""), LINE)


def _value(text: object, limit: int = VALUE) -> str:
    """A text from the store as it may be printed: escaped, cut to ``limit``."""
    return printable(text, limit)


def _cell(text: object) -> str:
    return printable(text, CELL)


def _json(document: object, indent: int | None = None) -> str:
    """JSON that cannot drive a terminal: every non-ASCII character escaped (JSON readers do not
    care; C1 controls and bidi overrides would reach the terminal raw otherwise)."""
    return json.dumps(document, ensure_ascii=True, indent=indent)


def _quality_text(counts: dict[str, Any]) -> str:
    """``ok 1739, sensor_off 61``: readings per quality, ok first."""
    order = sorted(counts, key=lambda q: (q != "ok", str(q)))
    return ", ".join(f"{printable(q, CELL)} {printable(counts[q], CELL)}" for q in order)


def _channel_rows(m: Manifest, data: RunData | None) -> list[tuple[str, ...]]:
    """The manifest's counts; channels only the chunk files know (an open run's) from the files.

    ``ok`` and the other qualities are counted per channel: a gauge off for half the run shows
    ``sensor_off 61`` beside its ok points. A version 1 store kept the ok points only and counted
    the others as bad quality without saying which."""
    rows: list[tuple[str, ...]] = []
    on_disk = data.series if data is not None else {}
    for name in sorted(set(m.channels) | set(on_disk)):
        c = m.channels.get(name)
        shown = printable(name, 2 * CELL)
        if c is not None:
            others = {q: n for q, n in c.qualities.items() if q != "ok"}
            if m.keeps_every_reading:
                other = _quality_text(others) or "-"
            else:
                other = f"{c.bad_quality} bad quality, not kept (store version 1)" if c.bad_quality else "-"
            rows.append((shown, _cell(c.flow), _cell(c.units or "-"), _cell(c.type), str(c.points),
                         str(c.qualities.get("ok", 0)), _value(other, LINE), str(c.chunks)))
        else:
            assert data is not None
            s = on_disk[name]
            counts = s.quality_counts()
            others = {q: n for q, n in counts.items() if q != "ok"}
            rows.append((shown, _cell(s.flow), _cell(s.unit or "-"), _cell(s.type.value), str(len(s)),
                         str(counts.get("ok", 0)), _value(_quality_text(others) or "-", LINE),
                         str(data.chunks_per_channel.get(name, 0))))
    return rows


def _setting(value: object) -> str:
    """A baseline value as it is printed: texts as they are, true/false, numbers as written."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return _cell(value)


def _baseline_lines(m: Manifest) -> list[str]:
    """The run's identity and configuration at its start and stop, a field that changed flagged."""
    recorded = [moment for moment in baselines.MOMENTS if moment in m.baseline]
    if not recorded:
        return ["baseline: not recorded (a run closed at a restart, or logged by a bridge without baselines)"]
    fields = baselines.fields(m.baseline)
    changed = [f for f in fields if f.changed]
    said = "start and stop" if len(recorded) == 2 else f"{recorded[0]} only"
    verdict = (f"{len(changed)} field{'' if len(changed) == 1 else 's'} changed during the run: "
               f"{_value(', '.join(f.name for f in changed), LINE)}" if changed
               else "nothing changed" if len(recorded) == 2 else "no stop snapshot to compare with")
    lines = [f"baseline: identity and configuration at the run's {said}; {verdict}"]
    rows = [(_cell(f.instrument), _cell(f"{f.section}.{f.key}"), _setting(f.start) if f.start_read else "-",
             _setting(f.stop) if f.stop_read else "-", "CHANGED" if f.changed else "") for f in fields]
    if rows:
        lines += [f"  {text}" for text in _table(("instrument", "field", "start", "stop", ""), rows)]
    lines += [f"  not read at {moment}: {_cell(name)}: {_value(why)}"
              for moment, name, why in baselines.unread(m.baseline)]
    lines += [f"  refused at {moment}: {_cell(name)} {_cell(query)}: {_value(why)}"
              for moment, name, query, why in baselines.refused(m.baseline)]
    return lines


@runs.command()
@click.argument("run")
@click.option("--json", "as_json", is_flag=True,
              help="Print the manifest as JSON: metadata, completeness report, gaps, events and baselines.")
@_with_store
def show(store: RunStore, run: str, as_json: bool) -> None:
    """A run's metadata, completeness report and baselines (flagging what changed between the run's start
    and stop); checks its chunk files against the manifest.

    RUN is the data id, a unique prefix of it, or the stream name if only one run has it."""
    m = store.find(run)
    if as_json:
        click.echo(_json(m.raw, indent=2))
        return
    metadata = _metadata(m)
    width = max(len(k) for k, _ in metadata)
    for key, value in metadata:
        click.echo(f"{key:<{width}}  {value}")
    try:  # every chunk is read; a corrupt one is reported after what the manifest says
        data: RunData | None = load_run(m)
        error: StoreError | None = None
    except StoreError as exc:
        data, error = None, exc
    click.echo("")
    header = ("channel", "flow", "units", "type", "points", "ok", "other qualities", "chunks")
    for text in _table(header, _channel_rows(m, data), right=(4, 5, 7)):
        click.echo(text)
    if not m.channels and data is not None and not m.finalized:
        click.echo("(run open: points and chunks counted from the chunk files so far)")
    for key, what in (("units_changed", "units"), ("types_changed", "value types")):
        changed = m.report.get(key)
        if changed and isinstance(changed, list):
            click.echo(f"{what} changed during the run: {_value(', '.join(map(str, changed)))}")
    if m.flows:
        click.echo("")
        for text in _table(("flow", "points", "chunks"),
                           [(_cell(f.name), str(f.points), str(f.chunks)) for f in m.flows.values()], right=(1, 2)):
            click.echo(text)
    click.echo("")
    for text in _baseline_lines(m):
        click.echo(text)
    click.echo("")
    click.echo(f"gaps: {len(m.gaps)}" if m.gaps else "gaps: none")
    for gap in m.gaps:
        click.echo(f"  {format_gap(gap)}")
    click.echo(f"events: {len(m.events)}" if m.events else "events: none")
    for event in m.events:
        click.echo(f"  {format_event(event)}")
    if error is not None:
        raise error
    assert data is not None
    if data.problems:
        click.echo(f"files: {_files(data)}; they disagree with the manifest:")
        for problem in data.problems:
            click.echo(f"  {printable(problem, LINE)}")
        sys.exit(EXIT_RUNTIME)
    agree = "match the manifest" if m.finalized else "run still open"
    click.echo(f"files: {_files(data)}, all readable; {agree}")


def _files(data: RunData) -> str:
    n = data.chunk_files
    return f"{n} chunk file{'' if n == 1 else 's'}, {data.points} points"


# ---------------------------------------------------------------- export, plot


def _load(store: RunStore, run: str) -> RunData:
    data = load_run(store.find(run))
    for problem in data.problems:
        click.echo(f"chamber-bridge: warning: run {data.manifest.short_id}: {printable(problem, LINE)}", err=True)
    return data


@runs.command()
@click.argument("run")
@click.option("--format", "fmt", type=click.Choice(["csv", "parquet"]), default="csv", show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), metavar="FILE",
              help="Output file ('-' for CSV on stdout) [default: STREAM-ID.csv|parquet here, "
                   "STREAM-ID-events.csv|parquet with --events].")
@click.option("--events", "events", is_flag=True,
              help="Export the run's events instead: timestamp_iso, timestamp, seq, source, text, tags.")
@_with_store
def export(store: RunStore, run: str, fmt: str, out: str | None, events: bool) -> None:
    """A run as a table, one row per point: timestamp_iso, timestamp, channel, value, units, quality,
    detail, type.

    Sorted by channel then time; values are written so they read back exactly; a point whose
    quality is not ok has no value and says why in quality (and detail). With --events,
    the run's events (annotations) in log order instead. Parquet needs the server extra (pyarrow)."""
    from bridge.store import export as exporter

    if out == "-" and fmt != "csv":
        raise click.BadParameter("only CSV can go to stdout", param_hint="--out")
    if events:
        m = store.find(run)
        if out == "-":
            exporter.write_events_csv(m, None)
            return
        path = Path(out) if out else exporter.default_name(m, fmt, "events")
        count = exporter.write_events_csv(m, path) if fmt == "csv" else exporter.write_events_parquet(m, path)
        click.echo(f"{_value(path, LINE)}: {count} events of run {m.short_id} ({_value(m.stream_name, 2 * CELL)})")
        return
    data = _load(store, run)
    if out == "-":
        exporter.write_csv(data, None)
        return
    path = Path(out) if out else exporter.default_name(data.manifest, fmt)
    count = exporter.write_csv(data, path) if fmt == "csv" else exporter.write_parquet(data, path)
    click.echo(f"{_value(path, LINE)}: {count} points of run {_said(data)}")


@runs.command()
@click.argument("run")
@click.option("--out", type=click.Path(dir_okay=False), metavar="FILE",
              help="Image file, .png (150 dpi), .svg or .pdf [default: STREAM-ID.png here].")
@_with_store
def plot(store: RunStore, run: str, out: str | None) -> None:
    """A run as a figure: one panel per unit, shared UTC time axis, gaps shaded, events drawn as
    labelled vertical lines. Needs the server extra (matplotlib)."""
    from bridge.store.export import default_name
    from bridge.store.plot import plot_run

    data = _load(store, run)
    path = plot_run(data, Path(out) if out else default_name(data.manifest, "png"))
    click.echo(f"{_value(path, LINE)}: {data.points} points of run {_said(data)}")


def _said(data: RunData) -> str:
    """``1a2b3c4d (GaN-17)``: how a line names the run it is about."""
    return f"{data.manifest.short_id} ({_value(data.manifest.stream_name, 2 * CELL)})"
