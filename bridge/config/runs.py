"""``bridge.runs``: how runs survive restarts and open by themselves (docs/runs.md).

A restart inside ``resume_within`` seconds of the last entry the bridge logged keeps the open
run (a ``run_resume`` marker records the time it was down); a longer one closes it as
``abort``. ``auto`` is the automatic trigger (:mod:`bridge.config.auto_runs`).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from bridge.config.auto_runs import AutoRunsConfig
from bridge.schema import StrictModel

#: the default window (seconds): a reboot, an upgrade or a short power cut keeps the growth's run
RESUME_WITHIN = 900.0


class RunsConfig(StrictModel):
    #: seconds the bridge may have been down for the open run to go on; 0: never resume (close as abort)
    resume_within: Annotated[float, Field(ge=0, le=7 * 86_400)] = RESUME_WITHIN
    #: automatic runs from chamber signals; none: runs open and close by command only
    auto: AutoRunsConfig | None = None
