"""Run and step lifecycles as data: the tables below are the whole state machine.

`cmbagent states` prints them. A move not listed is refused with an error naming
both states; guards add conditions that the data of the run must meet.
"""

from __future__ import annotations

from typing import Any, Callable

from cmbagent_jupyter.models import InvalidInput, RunStatus, StepStatus

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

ACTIVE_RUN_STATES = frozenset({R.planning, R.executing, R.waiting_approval, R.paused})
TERMINAL_RUN_STATES = frozenset({R.completed, R.failed, R.cancelled})
RESUMABLE_RUN_STATES = frozenset({R.paused, R.interrupted, R.waiting_approval, R.failed})


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
