"""``bridge.runs.auto``: runs the chamber opens and closes itself (docs/runs.md, "Automatic runs").

The model checks each key on its own (types, bounds, the name template); the expressions are
checked against the instruments' channels by :func:`auto_runs_problems`, which config loading
runs on the raw document beside the driver checks (bridge/config/loading.py), so an unknown
channel is reported with its key path even when another part of the file is wrong too.
"""

from __future__ import annotations

import string
from collections.abc import Collection, Mapping
from datetime import datetime
from typing import Annotated, Any, Final

from pydantic import Field, field_validator

from bridge.errors import ConfigProblem
from bridge.expressions import MAX_LENGTH, Catalog, ExpressionError, compile_expression
from bridge.names import check_text
from bridge.schema import StrictModel

#: the longest pre-roll: the uploader keeps readings taken outside runs at least this long (s),
#: so a start marker can still claim them (bridge/uploader/ledger.py)
PRE_ROLL_MAX: Final = 600.0
#: the fields a run name template may use
NAME_FIELDS: Final = ("site", "start")
DEFAULT_NAME: Final = "{site}-{start:%Y%m%d-%H%M}"

Seconds = Annotated[float, Field(ge=0, le=366 * 86400)]


def render_name(template: str, site: str, start: float) -> str:
    """The run name ``template`` gives for ``site`` and a start at ``start`` (Unix s, the bridge's local time)."""
    return template.format(site=site, start=datetime.fromtimestamp(start))


class AutoRunsConfig(StrictModel):
    #: CEL over ``instrument.channel``: a run starts once it has held true for ``true_for`` seconds
    start_when: str = Field(min_length=1, max_length=MAX_LENGTH)
    true_for: Seconds = 0.0
    #: closes the run once it has held true for ``false_for`` seconds; default: ``!(start_when)``
    stop_when: str | None = Field(default=None, min_length=1, max_length=MAX_LENGTH)
    false_for: Seconds = 0.0
    #: seconds of readings before ``start_when`` first held that belong to the run
    pre_roll: Annotated[float, Field(ge=0, le=PRE_ROLL_MAX)] = 0.0
    #: an automatic run open this long is closed as ``abort``; none: no limit
    max_duration: Annotated[float, Field(gt=0, le=366 * 86400)] | None = None
    #: the run's name: ``{site}`` and ``{start:<strftime format>}`` (the bridge's local time)
    name: str = Field(default=DEFAULT_NAME, min_length=1, max_length=200)
    tags: list[str] = Field(default_factory=list, max_length=32)

    @field_validator("name")
    @classmethod
    def _template(cls, v: str) -> str:
        try:
            fields = [field for _, field, _, _ in string.Formatter().parse(v) if field is not None]
        except ValueError as exc:
            raise ValueError(f"not a name template: {exc} (write {{ as {{{{)") from None
        unknown = [field for field in fields if field not in NAME_FIELDS]
        if unknown:
            raise ValueError(f"unknown field {{{unknown[0]}}} (a name may use {{site}} and {{start:FORMAT}})")
        try:
            check_text(render_name(v, "site", 1_765_000_000.0), "the name it gives")
        except (ValueError, TypeError) as exc:
            raise ValueError(str(exc)) from None
        return v

    @field_validator("tags")
    @classmethod
    def _tags(cls, v: list[str]) -> list[str]:
        for tag in v:
            check_text(tag, "a tag", 64)
        return v


def auto_runs_problems(raw: Any, catalog: Catalog, unpolled: Collection[str] = ()) -> list[ConfigProblem]:
    """The expressions of ``bridge.runs.auto`` in the raw document, checked against ``catalog``.

    Only what the model cannot see: names and types, and that no expression names an instrument of
    ``unpolled`` (``interval: baseline``): it is read only at connect and at a run's start and stop,
    so its channels would be stale whenever they were asked. A value that is not text, or too long,
    is the model's to report.
    """
    bridge = raw.get("bridge") if isinstance(raw, Mapping) else None
    runs = bridge.get("runs") if isinstance(bridge, Mapping) else None
    auto = runs.get("auto") if isinstance(runs, Mapping) else None
    if not isinstance(auto, Mapping):
        return []
    problems = []
    for key in ("start_when", "stop_when"):
        text = auto.get(key)
        if not isinstance(text, str) or not text or len(text) > MAX_LENGTH:
            continue
        try:
            expression = compile_expression(text, catalog)
        except ExpressionError as exc:
            problems.append(ConfigProblem(f"bridge.runs.auto.{key}", str(exc)))
            continue
        for name in sorted(expression.instruments.intersection(unpolled)):
            problems.append(ConfigProblem(
                f"bridge.runs.auto.{key}",
                f"{name} has interval: baseline (read only at connect and at a run's start and stop), so its "
                f"channels cannot start or stop a run; give it a poll interval in seconds"))
    return problems

