"""The records every layer passes around: sessions, runs, steps, approvals, costs, ...

They are what the store port returns and what the front ends show; the store builds
them from its rows, the engine and the actions read them, nobody passes raw dicts.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from cmbagent_jupyter.core.states import (
    ApprovalStatus,
    CheckpointKind,
    RunMode,
    RunStatus,
    SessionStatus,
    StepStatus,
)


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid", use_enum_values=False)


class Quotas(Record):
    max_cost_usd: float = Field(100.0, ge=0)
    max_disk_mb: float = Field(10_240.0, ge=0)
    max_concurrent_runs: int = Field(3, ge=0)
    max_memory_mb: float = Field(4_096.0, ge=0)


class Session(Record):
    id: str
    name: str
    status: SessionStatus = SessionStatus.active
    quotas: Quotas = Field(default_factory=Quotas)
    created_at: datetime
    updated_at: datetime
    path: str


class Run(Record):
    id: str
    session_id: str
    task: str
    mode: RunMode = RunMode.deep_research
    status: RunStatus = RunStatus.draft
    model: str | None = None
    config: dict[str, Any] = Field(default_factory=dict)
    parent_run_id: str | None = None
    branch_from_step: int | None = None
    created_at: datetime
    started_at: datetime | None = None
    completed_at: datetime | None = None
    last_heartbeat_at: datetime | None = None
    checkpoint_interval_s: float = 600.0
    error: str | None = None
    owner_pid: int | None = None
    pause_requested: bool = False
    path: str


class Step(Record):
    id: str
    session_id: str
    run_id: str
    number: int
    key: str
    agent: str
    status: StepStatus = StepStatus.pending
    description: str = ""
    depends_on: list[str] = Field(default_factory=list)
    progress: float = 0.0
    inputs: dict[str, Any] = Field(default_factory=dict)
    outputs: dict[str, Any] = Field(default_factory=dict)
    error: str | None = None
    attempts: int = 0
    started_at: datetime | None = None
    completed_at: datetime | None = None


class StepAttempt(Record):
    id: str
    session_id: str
    run_id: str
    step_id: str
    attempt: int
    status: StepStatus
    error_type: str | None = None
    error: str | None = None
    traceback: str | None = None
    output: str | None = None
    feedback: str | None = None
    cost_usd: float = 0.0
    started_at: datetime
    ended_at: datetime | None = None


class Checkpoint(Record):
    id: str
    session_id: str
    run_id: str
    step_id: str | None = None
    kind: CheckpointKind
    context: dict[str, Any] = Field(default_factory=dict)
    pickle_path: str | None = None
    created_at: datetime


class StateTransition(Record):
    id: str
    session_id: str
    entity_type: Literal["session", "run", "step"]
    entity_id: str
    from_state: str | None
    to_state: str
    reason: str | None = None
    actor: str | None = None
    at: datetime


class ApprovalRequest(Record):
    id: str
    session_id: str
    run_id: str
    step_id: str | None = None
    kind: str
    status: ApprovalStatus = ApprovalStatus.pending
    request: dict[str, Any] = Field(default_factory=dict)
    options: list[str] = Field(default_factory=lambda: ["approve", "reject", "modify"])
    decision: str | None = None
    feedback: str | None = None
    resolved_by: str | None = None
    created_at: datetime
    resolved_at: datetime | None = None
    timeout_at: datetime | None = None
    default_action: str | None = None


class CostRecord(Record):
    id: str
    session_id: str
    run_id: str | None = None
    step_id: str | None = None
    agent: str | None = None
    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cost_usd: float = 0.0
    priced: bool = True
    at: datetime


class Branch(Record):
    id: str
    session_id: str
    parent_run_id: str
    parent_step: int
    child_run_id: str
    name: str
    hypothesis: str | None = None
    created_at: datetime


class PolicyDecision(Record):
    id: str
    session_id: str | None = None
    run_id: str | None = None
    policy: str
    action: str
    allowed: bool
    reason: str | None = None
    input: dict[str, Any] = Field(default_factory=dict)
    at: datetime


class AgentRecord(Record):
    name: str
    version: str = "1.0.0"
    role: str
    instructions: str
    source: str = "builtin"
    tags: list[str] = Field(default_factory=list)
    capabilities: list[str] = Field(default_factory=list)
    enabled: bool = True


# ---------------------------------------------------------------- summaries


class Usage(Record):
    """What a session uses of its quotas."""

    active_runs: int = 0
    cost_usd: float = 0.0
    disk_mb: float = 0.0


class CostRow(BaseModel):
    """Cost records summed by some of run_id, step_id, agent, model, session_id (the others are None)."""

    model_config = ConfigDict(extra="forbid")

    session_id: str | None = None
    run_id: str | None = None
    step_id: str | None = None
    agent: str | None = None
    model: str | None = None
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cost_usd: float = 0.0
    priced: bool = True


class RunOverview(Record):
    """A run with its session's name, its step counts and its cost: a line of `cmbagent status`."""

    id: str
    session_id: str
    session_name: str
    task: str
    mode: RunMode
    status: RunStatus
    model: str | None = None
    created_at: datetime
    started_at: datetime | None = None
    completed_at: datetime | None = None
    last_heartbeat_at: datetime | None = None
    owner_pid: int | None = None
    pause_requested: bool = False
    error: str | None = None
    path: str
    steps_total: int = 0
    steps_completed: int = 0
    steps_running: int = 0
    cost_usd: float = 0.0


RECORD_TYPES: dict[str, type[Record]] = {
    "session": Session,
    "run": Run,
    "step": Step,
    "attempt": StepAttempt,
    "checkpoint": Checkpoint,
    "transition": StateTransition,
    "approval": ApprovalRequest,
    "cost": CostRecord,
    "branch": Branch,
    "decision": PolicyDecision,
    "agent": AgentRecord,
}
