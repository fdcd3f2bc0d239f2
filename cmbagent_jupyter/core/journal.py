"""The step journal's record: one line per step boundary, the durable record of a run's steps.

The engine appends one to the run's `checkpoints/journal.jsonl` before any step that
depends on it starts (as a plain JSON object of this shape: it is written at every
boundary, and building a model there costs more than the write); the store applies
records in `seq` order, each once, and checks each one against this model at its edge.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from cmbagent_jupyter.core.states import CheckpointKind


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid")


class JournalCheckpoint(_Part):
    """The checkpoint of a record's completions (and the snapshot file written with it, if any)."""

    id: str
    kind: CheckpointKind = CheckpointKind.step_complete
    pickle_path: str | None = None
    context: dict[str, Any] | None = None


class Completion(_Part):
    step_id: str
    key: str | None = None
    outputs: dict[str, Any] = Field(default_factory=dict)
    checkpoint: JournalCheckpoint | None = None


class Failure(_Part):
    step_id: str
    key: str | None = None
    error: str = ""


class JournalRecord(_Part):
    """Steps that finished (with their outputs), failed and started at one boundary."""

    seq: int = Field(ge=1)
    at: datetime
    run_id: str | None = None
    complete: list[Completion] = Field(default_factory=list)
    fail: list[Failure] = Field(default_factory=list)
    start: list[str] = Field(default_factory=list)

    def named(self) -> list[str]:
        """The step ids the record names (completed, failed, started)."""
        return [*(c.step_id for c in self.complete), *(f.step_id for f in self.fail), *self.start]
