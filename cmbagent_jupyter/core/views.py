"""What the front ends show that is not a record of its own: an approval as its card shows
it, a bar of the cost chart, a run's header, and what the server sends (a session with its
spending, a snapshot, a run's status with its graph). Their JSON Schema goes to the front
ends with the records (core/schema.py), so the TypeScript types are generated too; the store
port answers with the same models.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from cmbagent_jupyter.core.graph import RunGraph
from cmbagent_jupyter.core.records import ApprovalRequest, Run, Session, Step
from cmbagent_jupyter.core.states import ApprovalStatus, RunMode, RunStatus


class PlanItem(BaseModel):
    """One numbered line of a plan."""

    model_config = ConfigDict(extra="forbid")

    number: int
    agent: str
    text: str


class ApprovalCard(BaseModel):
    """An approval request as its card shows it: worded for a person, the plan it asks about listed.
    Every field is always sent, so the card's type has none optional."""

    model_config = ConfigDict(extra="forbid")

    id: str
    kind: str
    title: str
    status: ApprovalStatus
    options: list[str]
    summary: str
    plan: list[PlanItem]
    details: str
    step_label: str | None
    created_at: str | None
    decision: str | None
    feedback: str | None
    resolved_by: str | None


class CostBar(BaseModel):
    """Cost records summed under one label (an agent, a model, a step) for the cost chart."""

    model_config = ConfigDict(extra="forbid")

    label: str
    cost_usd: float
    tokens: int
    calls: int


class RunHeader(BaseModel):
    """A run as its header shows it: task and state, step counts, cost, times."""

    model_config = ConfigDict(extra="forbid")

    id: str
    task: str
    status: RunStatus
    mode: RunMode
    model: str | None
    session: str
    steps_total: int
    steps_done: int
    steps_failed: int
    cost_usd: float
    started_at: str | None
    completed_at: str | None
    error: str | None
    parent_run_id: str | None


# ---------------------------------------------------------------- what the server sends


class SessionSummary(Session):
    """A session as the server lists it (GET sessions, the event socket's snapshot): with what it spent."""

    cost_usd: float = 0.0
    runs_by_status: dict[str, int] | None = None


class RunSummary(Run):
    """A run as the event socket's snapshot lists it: its task cut to a preview, its cost, no path or owner."""

    path: str | None = None
    checkpoint_interval_s: float | None = None
    cost_usd: float = 0.0


class Snapshot(BaseModel):
    """What the event socket sends on connect and on request_state; a run-scoped socket adds the run."""

    sessions: list[SessionSummary]
    runs: list[RunSummary]
    approvals: list[ApprovalRequest]
    gseq: int
    run: Run | None = None
    steps: list[Step] | None = None
    dag: RunGraph | None = None


class RunStatusReply(BaseModel):
    """GET workflows/RUN/status: the run, its steps, its pending approvals and its graph."""

    run: Run
    steps: list[Step]
    approvals: list[ApprovalRequest]
    dag: RunGraph
