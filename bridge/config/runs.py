"""``bridge.runs``: how runs survive restarts and open by themselves (docs/runs.md)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from bridge.config.auto_runs import AutoRunsConfig
from bridge.schema import StrictModel


class RunsConfig(StrictModel):
    #: seconds: a run left open by a restart this recent goes on (resumed); older, it is closed as abort
    resume_within: Annotated[float, Field(ge=0)] = 900.0
    #: automatic runs from chamber signals; none: runs open and close by command only
    auto: AutoRunsConfig | None = None
