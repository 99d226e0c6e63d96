"""The base of every config section, so each room can own its section's model."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictSection(BaseModel):
    """A config section in which a typo in a key is an error, not a silent default."""

    model_config = ConfigDict(extra="forbid")
