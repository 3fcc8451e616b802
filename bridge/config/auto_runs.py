"""``bridge.runs.auto``: when the bridge opens and closes runs by itself (docs/runs.md, "Automatic runs").

The keys are fixed by docs/design.md section 11. This model only says what each key is; the
expressions are CEL, compiled and checked against the configured instruments by the automatic
trigger's own component, which owns their meaning.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from bridge.schema import StrictModel


class AutoRunsConfig(StrictModel):
    #: CEL over ``instrument.channel``: a run opens once this has held for ``true_for`` seconds
    start_when: str = Field(min_length=1, max_length=1000)
    true_for: Annotated[float, Field(ge=0, le=86_400)] = 0.0
    #: CEL; default: the negation of ``start_when``
    stop_when: str | None = Field(default=None, min_length=1, max_length=1000)
    false_for: Annotated[float, Field(ge=0, le=86_400)] = 0.0
    #: seconds of readings before the start condition first held that belong to the run
    pre_roll: Annotated[float, Field(ge=0, le=86_400)] = 0.0
    #: an automatic run open longer than this is closed as abort
    max_duration: Annotated[float, Field(gt=0)] | None = None
    #: the stream name of an automatic run: ``{site}`` and ``{start:%Y%m%d-%H%M}`` are filled in
    name: str = Field(default="{site}-{start:%Y%m%d-%H%M}", min_length=1, max_length=200)
    tags: list[str] = Field(default_factory=list)
