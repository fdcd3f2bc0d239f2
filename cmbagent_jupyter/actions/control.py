"""Pause, resume and cancel a run, wherever it executes: each is a write to the store that
the process executing the run hears of (at its next step boundary or heartbeat)."""

from __future__ import annotations

from pydantic import BaseModel

from cmbagent_jupyter.actions.executors import Execution, Executor, executing_here, stop_here
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


def pause(store: StorePort, run_id: str, *, session_id: str | None = None, actor: str | None = None) -> Run:
    """Ask the run to pause at its next step boundary (the steps in flight finish first).
    A run whose process is gone would never hear it: it is paused at once."""
    ss, run = run_in(store, run_id, session_id)
    requested = ss.request_pause(run.id)
    if liveness(run).state in ("stalled", "orphaned"):
        return ss.transition_run(run.id, RunStatus.paused.value, reason="paused while its process was gone",
                                 actor=actor)
    return requested


def cancel(store: StorePort, run_id: str, *, session_id: str | None = None, actor: str | None = None) -> Run:
    """Cancel the run: it stops at once (running steps are killed) and cannot be resumed."""
    ss, run = run_in(store, run_id, session_id)
    cancelled = ss.transition_run(run.id, RunStatus.cancelled.value, reason="cancelled by the user", actor=actor)
    stop_here(run.id, "cancel", "cancelled by the user")
    return cancelled


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
