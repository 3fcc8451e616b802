"""Building blocks of every settings model: strict (unknown keys are errors) and frozen.

Core: imported by the config and by each transport's settings, so a transport owns its own
settings model without depending on the config module.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """Unknown keys are errors: a misspelt key must not silently fall back to a default."""

    model_config = ConfigDict(extra="forbid", frozen=True)
