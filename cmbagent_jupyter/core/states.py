"""Run, step, session and approval lifecycles as data: the tables below are the whole state machine.

`cmbagent states` prints them. A move not listed is refused with an error naming
both states; guards add conditions that the data of the run must meet. Every set of
states that a part of the code asks about ("can it resume?", "does it count against
the quota?") is named here once, so the store, the engine and every front end agree.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, Callable

from cmbagent_jupyter.core.errors import InvalidInput


class SessionStatus(str, Enum):
    active = "active"
    archived = "archived"
    deleted = "deleted"


class RunStatus(str, Enum):
    draft = "draft"
    planning = "planning"
    executing = "executing"
    paused = "paused"
    waiting_approval = "waiting_approval"
    interrupted = "interrupted"
    completed = "completed"
    failed = "failed"
    cancelled = "cancelled"


class StepStatus(str, Enum):
    pending = "pending"
    running = "running"
    paused = "paused"
    waiting_approval = "waiting_approval"
    completed = "completed"
    failed = "failed"
    skipped = "skipped"
    cancelled = "cancelled"


class RunMode(str, Enum):
    one_shot = "one_shot"
    deep_research = "deep_research"
    planning_and_control = "planning_and_control"
    control = "control"


class CheckpointKind(str, Enum):
    step_complete = "step_complete"
    timed = "timed"
    manual = "manual"
    error = "error"
    emergency = "emergency"


class ApprovalStatus(str, Enum):
    pending = "pending"
    approved = "approved"
    rejected = "rejected"
    modified = "modified"
    expired = "expired"


R = RunStatus
S = StepStatus

RUN_TRANSITIONS: dict[RunStatus, frozenset[RunStatus]] = {
    R.draft: frozenset({R.planning, R.executing, R.cancelled}),
    R.planning: frozenset({R.executing, R.paused, R.waiting_approval, R.interrupted, R.failed, R.cancelled}),
    R.executing: frozenset({R.paused, R.waiting_approval, R.interrupted, R.completed, R.failed, R.cancelled, R.planning}),
    R.paused: frozenset({R.executing, R.planning, R.cancelled, R.failed}),
    R.waiting_approval: frozenset({R.executing, R.planning, R.interrupted, R.paused, R.failed, R.cancelled}),
    R.interrupted: frozenset({R.executing, R.planning, R.paused, R.cancelled, R.failed}),
    R.completed: frozenset(),
    R.failed: frozenset({R.executing}),
    R.cancelled: frozenset(),
}

STEP_TRANSITIONS: dict[StepStatus, frozenset[StepStatus]] = {
    S.pending: frozenset({S.running, S.skipped, S.cancelled, S.waiting_approval}),
    S.running: frozenset({S.paused, S.waiting_approval, S.completed, S.failed, S.cancelled, S.pending}),
    S.paused: frozenset({S.running, S.cancelled, S.pending}),
    S.waiting_approval: frozenset({S.running, S.pending, S.skipped, S.cancelled, S.failed}),
    S.failed: frozenset({S.running, S.pending, S.skipped, S.cancelled}),
    S.completed: frozenset({S.pending}),
    S.skipped: frozenset({S.pending}),
    S.cancelled: frozenset({S.pending}),
}

# a process executes the run: it owns it, heartbeats, and takes a pause at its next step boundary
RUNNING_RUN_STATES = frozenset({R.planning, R.executing, R.waiting_approval})
# counted against a session's max_concurrent_runs (a paused run keeps its place)
ACTIVE_RUN_STATES = RUNNING_RUN_STATES | {R.paused}
# the run has ended (a failed run may still be resumed: it is in RESUMABLE_RUN_STATES too)
TERMINAL_RUN_STATES = frozenset({R.completed, R.failed, R.cancelled})
# `resume` continues it from its last checkpoint
RESUMABLE_RUN_STATES = frozenset({R.paused, R.interrupted, R.waiting_approval, R.failed})
# stopped with steps left to do, and no process on it: a step may be retried or replayed now
STOPPED_RUN_STATES = frozenset({R.paused, R.interrupted, R.failed})
# `wait()` returns once the run has left these
UNSETTLED_RUN_STATES = frozenset({R.draft, R.planning, R.executing, R.waiting_approval})


class IllegalTransition(InvalidInput):
    def __init__(self, entity: str, entity_id: str, src: str, dst: str, why: str | None = None):
        allowed = sorted(
            s.value for s in (RUN_TRANSITIONS if entity == "run" else STEP_TRANSITIONS).get(
                (RunStatus if entity == "run" else StepStatus)(src), frozenset()
            )
        )
        msg = f"{entity} {entity_id} cannot move from {src!r} to {dst!r}"
        msg += f": {why}" if why else f"; from {src!r} it may move to {', '.join(allowed) or 'nothing (terminal)'}"
        super().__init__(msg)
        self.src, self.dst = src, dst


def _planning_needs_task(run: dict[str, Any]) -> str | None:
    return None if (run.get("task") or "").strip() else "planning needs a task"


def _executing_needs_plan(run: dict[str, Any]) -> str | None:
    if run.get("mode") == "one_shot":
        return None
    return None if run.get("step_count", 0) > 0 else "executing needs a valid plan with at least one step"


def _leaving_approval_needs_decision(run: dict[str, Any]) -> str | None:
    return None if run.get("pending_approvals", 0) == 0 else "a pending approval must be decided first"


RUN_GUARDS: dict[tuple[RunStatus | None, RunStatus], Callable[[dict[str, Any]], str | None]] = {
    (None, R.planning): _planning_needs_task,
    (None, R.executing): _executing_needs_plan,
    (R.waiting_approval, R.executing): _leaving_approval_needs_decision,
    (R.waiting_approval, R.planning): _leaving_approval_needs_decision,
}


def needs_counts(src: RunStatus, dst: RunStatus) -> bool:
    """Whether a guard of this move reads the run's step or approval counts."""
    return (src, dst) in RUN_GUARDS or (None, dst) in RUN_GUARDS


def check_run_transition(run_id: str, src: str, dst: str, facts: dict[str, Any] | None = None) -> None:
    s, d = RunStatus(src), RunStatus(dst)
    if d not in RUN_TRANSITIONS[s]:
        raise IllegalTransition("run", run_id, src, dst)
    facts = facts or {}
    for key in ((s, d), (None, d)):
        guard = RUN_GUARDS.get(key)
        why = guard(facts) if guard else None
        if why:
            raise IllegalTransition("run", run_id, src, dst, why)


_STEP_MOVES = frozenset((s.value, d.value) for s, ds in STEP_TRANSITIONS.items() for d in ds)


def check_step_transition(step_id: str, src: str, dst: str) -> None:
    if (src, dst) in _STEP_MOVES:  # the hot path: two state names, one set lookup
        return
    if StepStatus(dst) not in STEP_TRANSITIONS[StepStatus(src)]:
        raise IllegalTransition("step", step_id, src, dst)


def transition_table() -> dict[str, dict[str, list[str]]]:
    return {
        "run": {s.value: sorted(d.value for d in ds) for s, ds in RUN_TRANSITIONS.items()},
        "step": {s.value: sorted(d.value for d in ds) for s, ds in STEP_TRANSITIONS.items()},
    }


def run_controls(status: RunStatus | str) -> list[str]:
    """The run controls a front end offers in a state (pause, cancel, resume)."""
    s = RunStatus(status)
    if s in RUNNING_RUN_STATES:
        return ["pause", "cancel"]
    if s in (R.paused, R.interrupted):
        return ["resume", "cancel"]
    if s == R.failed:
        return ["resume"]
    if s == R.draft:
        return ["cancel"]
    return []


# ---------------------------------------------------------------- approvals

# what a person may answer to an approval request; each request offers some of them
APPROVAL_DECISIONS = ("approve", "reject", "modify", "retry", "skip", "abort")
DEFAULT_APPROVAL_OPTIONS = ("approve", "reject", "modify")
# a decision that asks for a change must say what to change
DECISIONS_NEEDING_FEEDBACK = frozenset({"reject", "modify"})
# the durable record of feedback given to a failed step for its next attempt (resolved `retry`)
RETRY_FEEDBACK_KIND = "retry_feedback"


def approval_status_of(decision: str) -> "ApprovalStatus":
    """The status a request takes when it is answered with `decision`."""
    return {"approve": ApprovalStatus.approved, "reject": ApprovalStatus.rejected,
            "modify": ApprovalStatus.modified, "abort": ApprovalStatus.rejected}.get(decision, ApprovalStatus.approved)


def state_sets() -> dict[str, list[str]]:
    """Every named set of run states, by name (exported with the JSON Schema for the front ends)."""
    return {name: sorted(s.value for s in states) for name, states in (
        ("running", RUNNING_RUN_STATES), ("active", ACTIVE_RUN_STATES), ("terminal", TERMINAL_RUN_STATES),
        ("resumable", RESUMABLE_RUN_STATES), ("stopped", STOPPED_RUN_STATES), ("unsettled", UNSETTLED_RUN_STATES))}
