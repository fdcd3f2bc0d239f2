"""Resuming a stopped run from its last checkpoint, handed to the caller's executor.

Completed steps are never executed again; a run is refused, with the reason, while a
process still executes it or when it cannot go on (completed, cancelled).
"""

from __future__ import annotations

from pydantic import BaseModel

from cmbagent_jupyter.actions.executors import Execution, Executor, executing_here
from cmbagent_jupyter.actions.guards import check_room
from cmbagent_jupyter.actions.lookup import run_in
from cmbagent_jupyter.core import Run, RunStatus, StateConflict, StepStatus
from cmbagent_jupyter.core.states import ACTIVE_RUN_STATES
from cmbagent_jupyter.engine.liveness import liveness
from cmbagent_jupyter.llm.providers import resolve_model
from cmbagent_jupyter.store import StorePort


class Resumed(BaseModel):
    """A run handed to an executor: how it stood before (`state`, as `cmbagent status` says it),
    how many steps it had completed, and the model it goes on with."""

    run: Run
    state: str
    described: str
    steps_completed: int
    model: str
    announcement: str
    execution: Execution


def resume(store: StorePort, run_id: str, *, executor: Executor, session_id: str | None = None,
           model: str | None = None, max_parallel: int | None = None) -> Resumed:
    """Continue a stopped run from its last checkpoint (completed steps are not run again):
    paused, interrupted, failed, waiting for a decision its process can no longer take, or
    stalled (its process gone)."""
    ss, run = run_in(store, run_id, session_id)
    live = liveness(run)
    if executing_here(run.id) is not None:
        raise StateConflict(f"run {run.id} is already executing in this process")
    if live.state == "running":
        raise StateConflict(f"run {run.id} is {run.status.value} in process {run.owner_pid}; pause it there or "
                            f"wait for it to stop")
    if not live.resumable and run.status != RunStatus.draft:
        raise StateConflict(f"run {run.id} is {run.status.value}; only a paused, interrupted, failed or stalled "
                            f"run can be resumed")
    choice = resolve_model(model or run.model, home=store.home)
    if run.status not in ACTIVE_RUN_STATES:
        check_room(ss)
    done = sum(s.status == StepStatus.completed for s in ss.list_steps(run.id))
    execution = executor.execute(store, run, choice=choice, max_parallel=max_parallel)
    return Resumed(run=run, state=live.state, described=live.describe(), steps_completed=done, model=choice.ref,
                   announcement=choice.announcement, execution=execution)
