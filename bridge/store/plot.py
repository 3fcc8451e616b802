"""A run as a figure for the lab notebook (PNG, 150 dpi; SVG or PDF by the file's suffix).

One panel per unit (channels read in the same unit share an axis, so the two gauges of a
controller, or a pyrometer and the heater's process value, can be compared directly), a shared
time axis in UTC with the elapsed time on top, pressures on a log scale when every value is
positive. The figure says what the data cannot: the title names the stream, sample, run, start,
exit status and whether the run was finalized and complete, and nothing is drawn where there is
no data: a channel's line breaks where its points are missing (a bad-quality reading leaves its
point out, an instrument may drop out), and stretches where nothing at all was recorded (lost
seqs, a bridge that was down) are shaded on every panel, so a reader never mistakes an
interpolated line for a measurement. Gaps the manifest records (lost seqs, the time a bridge
was down) and problems with the chunk files are listed under the title. The run's events
(annotations: a shutter opened, a ramp began) are vertical lines through every panel, labelled
on the top one.

matplotlib (the ``server`` extra) is imported inside :func:`plot_run` and only its object API
with the Agg canvas is used: no pyplot, no global backend switch, safe in any process.
"""

from __future__ import annotations

import itertools
import math
import statistics
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bridge.names import printable
from bridge.store.export import atomic_path
from bridge.store.reader import MissingExtra, RunData, StoreError, format_duration, format_gap, format_time

if TYPE_CHECKING:
    from matplotlib.axes import Axes

DPI = 150
FORMATS = ("png", "svg", "pdf")
PRESSURE_UNITS = frozenset({"mbar", "Torr", "Pa", "hPa", "kPa", "bar", "mTorr", "micron"})
TEMPERATURE_UNITS = frozenset({"°C", "°F", "K"})
#: spellings of one unit, shown and grouped as one
UNIT_ALIASES = {"degC": "°C", "degF": "°F", "deg C": "°C", "C": "°C", "F": "°F"}
QUANTITIES = {"V": "voltage", "A": "current", "W": "power"}
#: a channel's line breaks where consecutive points are further apart than this many poll intervals
BREAK_FACTOR = 1.5
#: a stretch with no point of any flow for this many intervals of the slowest flow is shaded "no data"
HOLE_FACTOR = 3.0
#: below this many points per channel, points get markers (an isolated point has no line)
MARKERS_BELOW = 300
MAX_LISTED = 3
#: events labelled on the figure, at most (more are drawn as lines only: labels would overlap anyway)
MAX_EVENT_LABELS = 40
EVENT_COLOR = "#6a3d9a"


def unit_label(units: str) -> str:
    return UNIT_ALIASES.get(units, units)


def quantity(units: str) -> str:
    if units in PRESSURE_UNITS:
        return "pressure"
    if units in TEMPERATURE_UNITS:
        return "temperature"
    return QUANTITIES.get(units, "")


@dataclass
class Trace:
    """One line to draw: a channel's points read in one unit."""

    label: str
    flow: str
    timestamps: list[float]
    values: list[float]


@dataclass
class Panel:
    units: str
    traces: list[Trace] = field(default_factory=list)

    @property
    def log_scale(self) -> bool:
        finite = [v for t in self.traces for v in t.values if math.isfinite(v)]
        return self.units in PRESSURE_UNITS and bool(finite) and min(finite) > 0

    def order(self) -> tuple[int, str]:
        rank = 0 if self.units in PRESSURE_UNITS else 1 if self.units in TEMPERATURE_UNITS else 2
        return rank, min(t.label for t in self.traces)


def panels(run: RunData) -> list[Panel]:
    """Traces grouped by unit, pressures first, then temperatures, then the rest."""
    by_unit: dict[str, Panel] = {}
    bad = {name: c.bad_quality for name, c in run.manifest.channels.items()}
    for name, s in run.series.items():
        units_seen = list(dict.fromkeys(s.units))
        for units in units_seen:
            idx = [i for i, u in enumerate(s.units) if u == units]
            label = plain(name, 80) if len(units_seen) == 1 else f"{plain(name, 80)} (in {plain(units, 20)})"
            if bad.get(name):
                label += f" ({bad[name]} bad reading{'' if bad[name] == 1 else 's'})"
            trace = Trace(label, s.flow, [s.timestamps[i] for i in idx], [s.values[i] for i in idx])
            by_unit.setdefault(unit_label(units), Panel(unit_label(units))).traces.append(trace)
    return sorted(by_unit.values(), key=Panel.order)


def median_step(timestamps: Iterable[float]) -> float | None:
    """A channel's typical spacing of points; None with fewer than two."""
    steps = [b - a for a, b in itertools.pairwise(sorted(timestamps)) if b > a]
    return statistics.median(steps) if steps else None


def poll_intervals(run: RunData) -> dict[str, float]:
    """Each flow's typical spacing of points: the slowest of its channels' median steps.

    Per channel, not over the flow's pooled timestamps: a driver stamps each exchange, so two
    channels of one poll can differ by milliseconds, and pooling would make every poll look like
    two and every line broken."""
    intervals: dict[str, float] = {}
    for s in run.series.values():
        step = median_step(s.timestamps)
        if step is not None:
            intervals[s.flow] = max(step, intervals.get(s.flow, 0.0))
    return intervals


def holes(timestamps: Iterable[float], interval: float) -> list[tuple[float, float]]:
    """Stretches longer than HOLE_FACTOR intervals with no point at all.

    Run-wide rather than per instrument: lost seqs and a stopped bridge take every instrument's
    readings with them, while one instrument's bad readings are already visible as breaks in its
    lines (shading those too would paint over every flaky pyrometer reading)."""
    stamps = sorted(set(timestamps))
    return [(a, b) for a, b in itertools.pairwise(stamps) if b - a > HOLE_FACTOR * interval]


def broken(timestamps: Sequence[float], values: Sequence[float], interval: float | None
           ) -> tuple[list[float], list[float]]:
    """Sorted points with a NaN inserted wherever points are missing, so the line breaks there."""
    order = sorted(range(len(timestamps)), key=timestamps.__getitem__)
    xs: list[float] = []
    ys: list[float] = []
    for i in order:
        if xs and interval is not None and timestamps[i] - xs[-1] > BREAK_FACTOR * interval:
            xs.append(xs[-1])
            ys.append(math.nan)
        xs.append(timestamps[i])
        ys.append(values[i])
    return xs, ys


def title_lines(run: RunData) -> tuple[str, str, str]:
    """Headline, details (two lines) and a caption of what is missing (may be empty)."""
    m = run.manifest
    head = plain(m.stream_name, 60) + (f"  ·  sample {plain(m.physical_sample, 40)}" if m.physical_sample else "")
    line1 = "  ·  ".join(x for x in (f"run {plain(m.run_id or m.data_id, 64)}", m.site and f"site {plain(m.site, 64)}")
                         if x)
    line2 = "  ·  ".join((
        f"started {format_time(m.started_at)} UTC",
        f"duration {format_duration(m.duration)}" if m.duration is not None else "still open",
        f"exit {plain(m.exit_status, 40)}" if m.exit_status else "no exit status",
        m.state))
    notes = []
    if m.gaps:
        listed = "; ".join(plain(format_gap(g), 200) for g in m.gaps[:MAX_LISTED])
        more = f" and {len(m.gaps) - MAX_LISTED} more" if len(m.gaps) > MAX_LISTED else ""
        notes.append(f"Gaps recorded in the manifest: {listed}{more}")
    if run.problems:
        more = f" (and {len(run.problems) - 1} more)" if len(run.problems) > 1 else ""
        notes.append(f"Store: {plain(run.problems[0], 200)}{more}")
    return head, f"{line1}\n{line2}", "\n".join(notes)


def plain(text: object, max_length: int) -> str:
    """A text from the store as matplotlib must draw it: escaped and cut (:func:`printable`), and
    with ``$`` escaped, which would otherwise start mathtext (and a bad formula fails the plot)."""
    return printable(text, max_length).replace("$", r"\$")


def plot_run(run: RunData, out: Path, *, dpi: int = DPI) -> Path:
    """Draw ``run`` to ``out`` (format from the suffix: png, svg or pdf); returns ``out``."""
    fmt = out.suffix.lower().lstrip(".") or "png"
    if fmt not in FORMATS:
        raise StoreError(f"{out}: cannot plot to .{fmt} files (use {', '.join('.' + f for f in FORMATS)})")
    if not run.points:
        raise StoreError(f"run {_said(run)} has no points to plot")
    try:
        import matplotlib  # noqa: F401  # is the server extra installed? (_draw imports what it uses)
    except ImportError:
        raise MissingExtra("plot", "matplotlib") from None
    try:
        with warnings.catch_warnings():
            # numpy's overflow warnings for values near the float limits: the figure is drawn
            # anyway, and two lines of numpy internals on stderr tell an operator nothing
            warnings.simplefilter("ignore", RuntimeWarning)
            return _draw(run, out, fmt, dpi)
    except (ValueError, OverflowError, RuntimeError) as exc:
        # numbers matplotlib cannot place (a run spanning millennia, values near the float limits):
        # the run's data, not a bug of the caller, so one line rather than a traceback
        raise StoreError(f"run {_said(run)}: cannot be plotted: {type(exc).__name__}: {printable(exc, 200)}"
                         ) from exc


def _said(run: RunData) -> str:
    return f"{run.manifest.short_id} ({printable(run.manifest.stream_name, 80)})"


def _draw(run: RunData, out: Path, fmt: str, dpi: int) -> Path:
    import matplotlib
    from matplotlib import dates as mdates
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    groups = panels(run)
    intervals = poll_intervals(run)
    empty = holes((t for s in run.series.values() for t in s.timestamps), max(intervals.values())) if intervals else []
    epoch = float(mdates.date2num(datetime(1970, 1, 1, tzinfo=UTC)))  # type: ignore[no-untyped-call]

    def days(ts: float) -> float:
        return epoch + ts / 86400.0

    head, details, notes = title_lines(run)
    m = run.manifest
    first, last = run.time_range() or (m.started_at, m.started_at)
    t0 = min(m.started_at, first)
    t1 = max(m.stopped_at if m.stopped_at is not None else last, last)
    if t1 <= t0:
        t1 = t0 + 1.0
    events = [e for e in m.events if t0 <= e.time <= t1]
    with matplotlib.rc_context({"font.size": 10, "axes.titlesize": 10, "axes.labelsize": 10, "legend.fontsize": 9,
                                "xtick.labelsize": 9, "ytick.labelsize": 9, "axes.spines.top": False,
                                "axes.spines.right": False}):
        fig = Figure(figsize=(10, 1.9 + 2.5 * len(groups) + (0.25 * (notes.count("\n") + 1) if notes else 0)),
                     layout="constrained")
        FigureCanvasAgg(fig)
        axes: list[Axes] = list(fig.subplots(len(groups), 1, sharex=True, squeeze=False)[:, 0])
        fig.suptitle(head, fontsize=13, fontweight="bold")
        axes[0].set_title(details, fontsize=9, pad=24)
        if notes:
            fig.supxlabel(notes, fontsize=9, color="#8b1a1a", x=0.01, ha="left")
        for ax, group in zip(axes, groups, strict=True):
            for trace in group.traces:
                xs, ys = broken(trace.timestamps, trace.values, median_step(trace.timestamps))
                marker = "o" if len(trace.values) < MARKERS_BELOW else None
                ax.plot([days(x) for x in xs], ys, label=trace.label, linewidth=1.2, marker=marker,
                        markersize=2.5)
            for a, b in empty:
                ax.axvspan(days(a), days(b), color="0.5", alpha=0.18, linewidth=0, zorder=0)
            for event in events:
                ax.axvline(days(event.time), color=EVENT_COLOR, linewidth=0.9, linestyle="--", alpha=0.8, zorder=1)
            if group.log_scale:
                ax.set_yscale("log")
                ax.grid(True, which="minor", axis="y", alpha=0.12)
            ax.grid(True, which="major", alpha=0.3)
            kind = quantity(group.units)
            units = plain(group.units, 20)
            ax.set_ylabel(f"{kind} ({units})" if kind and units else units or "value")
            handles, labels = ax.get_legend_handles_labels()
            if empty and ax is axes[0]:
                handles.append(Patch(facecolor="0.5", alpha=0.18, label="no data"))
                labels.append("no data")
            if events and ax is axes[0]:
                handles.append(Line2D([], [], color=EVENT_COLOR, linewidth=0.9, linestyle="--"))
                labels.append("event")
            ax.legend(handles, labels, loc="best", frameon=True, framealpha=0.85)
        axes[0].set_xlim(days(t0), days(t1))
        for event in events[:MAX_EVENT_LABELS]:
            axes[0].annotate(plain(event.text, 40), xy=(days(event.time), 1.0), xycoords=("data", "axes fraction"),
                             xytext=(2, -3), textcoords="offset points", rotation=90, va="top", ha="left",
                             fontsize=7, color=EVENT_COLOR, clip_on=True,
                             bbox={"facecolor": "white", "alpha": 0.75, "edgecolor": "none", "pad": 1})
        locator = mdates.AutoDateLocator(tz=UTC, minticks=4, maxticks=10)  # type: ignore[no-untyped-call]
        bottom = axes[-1]
        bottom.xaxis.set_major_locator(locator)
        bottom.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz=UTC))  # type: ignore[no-untyped-call]
        bottom.set_xlabel("time (UTC)")
        _elapsed_axis(axes[0], days(m.started_at), t1 - m.started_at)
        with atomic_path(out) as tmp:
            fig.savefig(tmp, format=fmt, dpi=dpi)
    return out


def _elapsed_axis(ax: Axes, start_days: float, span_s: float) -> None:
    """Time since the run started, on top: what a grower reads the run by."""
    scale, name = (86400.0 / 3600.0, "h") if span_s > 3 * 3600 else (86400.0 / 60.0, "min") if span_s > 180 else (
        86400.0, "s")

    def to_elapsed(x: Any) -> Any:
        return (x - start_days) * scale

    def from_elapsed(x: Any) -> Any:
        return x / scale + start_days

    top = ax.secondary_xaxis("top", functions=(to_elapsed, from_elapsed))
    top.set_xlabel(f"elapsed since run start ({name})", fontsize=9)
    top.tick_params(labelsize=8)
