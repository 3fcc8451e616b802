"""A run as a figure for the lab notebook (PNG, 150 dpi; SVG or PDF by the file's suffix).

One panel per unit (channels read in the same unit share an axis, so the two gauges of a
controller, or a pyrometer and the heater's process value, can be compared directly), a shared
time axis in UTC with the elapsed time on top, pressures on a log scale when every value is
positive. The figure says what the data cannot: the title names the stream, sample, run, start,
exit status and whether the run was finalized and complete, and nothing is drawn where there is
no data: a channel's line breaks where it has no value (a point whose quality was not ok, an
instrument that dropped out), and stretches where nothing at all was recorded (lost seqs, a
bridge that was down) are shaded on every panel, so a reader never mistakes an interpolated
line for a measurement. Where a channel's quality was not ok (the gauge was off, under range),
the stretch is shaded in the channel's colour and labelled with the quality. Channels that are
not numbers (a supply's output on or off, an operating mode, a text) are drawn on a panel of
their own as a timeline of their states. No channel is dropped silently: one with no value at
all is still in its panel's legend (and shaded), and one the store holds no point of (a
version 1 store left out readings whose quality was not ok) is named under the title. Gaps the
manifest records (lost seqs, the time a bridge was down) and problems with the chunk files are
listed under the title. The run's events (annotations: a shutter opened, a ramp began) are
vertical lines through every panel, labelled on the top one.

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

from bridge.model import Value, ValueType
from bridge.names import printable
from bridge.store.export import atomic_path, cell
from bridge.store.reader import MissingExtra, RunData, Series, StoreError, format_duration, format_gap, format_time

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
#: characters of an event's text on its label ("auto start: pyrometer.temperature > 300.0 held 3 s")
EVENT_LABEL_CHARS = 64
#: the time axis reaches this fraction of the run beyond its first and last reading
EDGE_MARGIN = 0.02
#: events in this last fraction of the run are labelled on the left of their line
LABEL_LEFT_OF_LINE = 0.1
EVENT_COLOR = "#6a3d9a"
#: value types drawn as a timeline of states rather than as a line
STATE_TYPES = frozenset({ValueType.BOOL, ValueType.ENUM, ValueType.STRING})
#: the states panel's name (it has no unit)
STATES = "states"
#: a state's text is written in its bar when the bar is at least this fraction of the time axis
STATE_LABEL_MIN = 0.06
#: not-ok stretches labelled per panel, at most (more are shaded only)
MAX_QUALITY_LABELS = 12


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
    """One line to draw: a channel's points with a value, read in one unit; ``spans`` the stretches
    where its quality was not ok (on the first trace of a channel only, so none is shaded twice).
    On the states panel ``states`` holds the values and ``values`` stays empty."""

    label: str
    flow: str
    timestamps: list[float]
    values: list[float]
    spans: list[tuple[float, float, str]] = field(default_factory=list)
    states: list[Value] = field(default_factory=list)
    #: the channel (``instrument/channel``), for the labels of its not-ok stretches
    name: str = ""


@dataclass
class Panel:
    units: str
    traces: list[Trace] = field(default_factory=list)

    @property
    def log_scale(self) -> bool:
        finite = [v for t in self.traces for v in t.values if math.isfinite(v)]
        return self.units in PRESSURE_UNITS and bool(finite) and min(finite) > 0

    @property
    def is_states(self) -> bool:
        return self.units == STATES

    def order(self) -> tuple[int, str]:
        rank = (0 if self.units in PRESSURE_UNITS else 1 if self.units in TEMPERATURE_UNITS else
                3 if self.is_states else 2)
        return rank, min(t.label for t in self.traces)


def _label(name: str, s: Series, units: str | None, left_out: int) -> str:
    """``main_gauge/p2 (sensor_off 61)``: the channel, its unit when it has several, its points without a
    value; ``left_out``: the readings a version 1 store counted as bad but did not keep."""
    label = plain(name, 80) if units is None else f"{plain(name, 80)} (in {plain(units, 20)})"
    others = [f"{plain(q, 20)} {n}" for q, n in s.quality_counts().items() if q != "ok"]
    if left_out:
        others.append(f"{left_out} bad reading{'' if left_out == 1 else 's'}")
    if others:
        label += f" ({', '.join(others)})"
    return label


def panels(run: RunData) -> list[Panel]:
    """Traces grouped by unit, pressures first, then temperatures, then the rest, then the states.

    Every series of the run gets a trace, even one with no value at all (a gauge off the whole
    run): its label says why, and its stretches are shaded."""
    by_unit: dict[str, Panel] = {}
    m = run.manifest
    left_out = {} if m.keeps_every_reading else {name: c.bad_quality for name, c in m.channels.items()}
    for name, s in run.series.items():
        spans = s.not_ok_spans()
        if s.type in STATE_TYPES:
            ok = [i for i, v in enumerate(s.values) if v is not None]
            trace = Trace(_label(name, s, None, left_out.get(name, 0)), s.flow, [s.timestamps[i] for i in ok], [],
                          spans, [v for v in (s.values[i] for i in ok) if v is not None], name)
            by_unit.setdefault(STATES, Panel(STATES)).traces.append(trace)
            continue
        units_seen = list(dict.fromkeys(s.units))
        for units in units_seen:
            # the points with a number (a type changed mid-run may leave a text among them: not drawable)
            idx = [i for i, u in enumerate(s.units) if u == units and isinstance(s.values[i], int | float)]
            label = _label(name, s, None if len(units_seen) == 1 else units, left_out.get(name, 0))
            trace = Trace(label, s.flow, [s.timestamps[i] for i in idx], [float(s.values[i]) for i in idx],  # type: ignore[arg-type]  # numbers, just checked
                          spans, name=name)
            spans = []
            by_unit.setdefault(unit_label(units), Panel(unit_label(units))).traces.append(trace)
    return sorted(by_unit.values(), key=Panel.order)


def not_drawn(run: RunData) -> list[str]:
    """Channels the manifest names that the chunk files hold no point of, with what the manifest says.

    In a version 1 store these are channels whose every reading had a bad quality (left out)."""
    missing = []
    for name, c in run.manifest.channels.items():
        if name not in run.series:
            counts = ", ".join(f"{q} {n}" for q, n in c.qualities.items()) or f"{c.bad_quality} bad quality"
            missing.append(f"{plain(name, 80)} ({plain(counts, 80)})")
    return missing


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
    missing = not_drawn(run)
    if missing:
        more = f" and {len(missing) - MAX_LISTED} more" if len(missing) > MAX_LISTED else ""
        kept = "" if m.keeps_every_reading else ": readings of a bad quality are not kept in a version 1 store"
        notes.append(f"No point to draw{kept}: {'; '.join(missing[:MAX_LISTED])}{more}")
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
            if group.is_states:
                _draw_states(ax, group, days, t1 - t0)
            labelled = 0
            for trace in group.traces:
                color: Any = "0.35"
                if not group.is_states:
                    xs, ys = broken(trace.timestamps, trace.values, median_step(trace.timestamps))
                    marker = "o" if len(trace.values) < MARKERS_BELOW else None
                    (line,) = ax.plot([days(x) for x in xs], ys, label=trace.label, linewidth=1.2, marker=marker,
                                      markersize=2.5)
                    color = line.get_color()
                for a, b, quality in trace.spans:
                    if not group.is_states:  # the states panel shades each channel's own row (_draw_states)
                        ax.axvspan(days(a), days(b), facecolor=color, alpha=0.08, hatch="//", edgecolor=color,
                                   linewidth=0, zorder=0)
                    if labelled < MAX_QUALITY_LABELS:
                        labelled += 1
                        ax.annotate(plain(f"{trace.name}: {quality}", 60), xy=(days(a), 0.02),
                                    xycoords=("data", "axes fraction"), xytext=(2, 2), textcoords="offset points",
                                    fontsize=7, color=color, va="bottom", ha="left", clip_on=True,
                                    bbox={"facecolor": "white", "alpha": 0.7, "edgecolor": "none", "pad": 1})
            for a, b in empty:
                ax.axvspan(days(a), days(b), color="0.5", alpha=0.18, linewidth=0, zorder=0)
            for event in events:
                ax.axvline(days(event.time), color=EVENT_COLOR, linewidth=0.9, linestyle="--", alpha=0.8, zorder=1)
            if group.log_scale:
                ax.set_yscale("log")
                ax.grid(True, which="minor", axis="y", alpha=0.12)
            ax.grid(True, which="major", axis="x" if group.is_states else "both", alpha=0.3)
            kind = quantity(group.units)
            units = plain(group.units, 20)
            ax.set_ylabel(f"{kind} ({units})" if kind and units else units or "value")
            handles, labels = ax.get_legend_handles_labels()
            if any(t.spans for t in group.traces):
                handles.append(Patch(facecolor="0.6", alpha=0.3, hatch="//", edgecolor="0.4", linewidth=0))
                labels.append("quality not ok (labelled)")
            if empty and ax is axes[0]:
                handles.append(Patch(facecolor="0.5", alpha=0.18, label="no data"))
                labels.append("no data")
            if events and ax is axes[0]:
                handles.append(Line2D([], [], color=EVENT_COLOR, linewidth=0.9, linestyle="--"))
                labels.append("event")
            if handles:
                # beside the panel, not on it: a legend inside covers the traces and the event labels
                ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.005, 1.0), frameon=True,
                          framealpha=0.85)
        # a margin on both sides, so a marker on the first or last reading (an automatic stop) shows
        margin = (t1 - t0) * EDGE_MARGIN
        axes[0].set_xlim(days(t0 - margin), days(t1 + margin))
        for event in events[:MAX_EVENT_LABELS]:
            # labels of the last stretch go left of their line, so the figure's edge does not cut them
            right = event.time > t1 - (t1 - t0) * LABEL_LEFT_OF_LINE
            axes[0].annotate(plain(event.text, EVENT_LABEL_CHARS), xy=(days(event.time), 1.0),
                             xycoords=("data", "axes fraction"), xytext=(-2 if right else 2, -3),
                             textcoords="offset points", rotation=90, va="top", ha="right" if right else "left",
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


def _draw_states(ax: Axes, group: Panel, days: Any, span_s: float) -> None:
    """One row per channel: a bar per stretch of one value, from its first point to the next point
    with another value (or a point without one), its text written in it when it is wide enough."""
    palette = ["#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22"]
    rows = list(reversed(group.traces))
    for row, trace in enumerate(rows):
        seen: dict[str, int] = {}
        stretches = _stretches(trace)
        for start, end, value in stretches:
            text = cell(value)
            colour = "0.85" if value is False else palette[seen.setdefault(text, len(seen)) % len(palette)]
            ax.broken_barh([(days(start), max(end - start, 1e-9) / 86400.0)], (row - 0.35, 0.7),
                           facecolors=colour, edgecolor="none")
            if span_s > 0 and (end - start) / span_s >= STATE_LABEL_MIN:
                ax.text(days(start + (end - start) / 2), row, plain(text, 30), ha="center", va="center",
                        fontsize=7, clip_on=True)
        for start, end, _quality in trace.spans:
            ax.broken_barh([(days(start), max(end - start, 1e-9) / 86400.0)], (row - 0.35, 0.7), facecolors="0.9",
                           hatch="//", edgecolor="0.5", linewidth=0)
    ax.set_yticks(range(len(rows)), [t.label for t in rows])
    ax.set_ylim(-0.6, len(rows) - 0.4)


def _stretches(trace: Trace) -> list[tuple[float, float, Value]]:
    """``(start, end, value)`` for each run of one value: it lasts until the next point with another
    value, or until the first point of a not-ok stretch, or to its own last point."""
    ends = sorted([a for a, _, _ in trace.spans])
    points = sorted(zip(trace.timestamps, trace.states, strict=True), key=lambda p: p[0])
    out: list[tuple[float, float, Value]] = []
    for stamp, value in points:
        if out and out[-1][2] == value and not any(out[-1][1] < e <= stamp for e in ends):
            out[-1] = (out[-1][0], stamp, value)
            continue
        if out:
            cut = min([e for e in ends if out[-1][1] < e <= stamp], default=stamp)
            out[-1] = (out[-1][0], cut, out[-1][2])
        out.append((stamp, stamp, value))
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
