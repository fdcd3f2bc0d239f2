"""Checks several actions share, made before anything is written so a refusal leaves
nothing half done: room in the session's quotas, a run that is stopped, clean text."""

from __future__ import annotations

from cmbagent_jupyter.actions.executors import executing_here
from cmbagent_jupyter.core import QuotaExceeded, Run, RunStatus, StateConflict
from cmbagent_jupyter.core.states import STOPPED_RUN_STATES
from cmbagent_jupyter.engine.liveness import liveness
from cmbagent_jupyter.store import SessionPort


def text(value: str | None) -> str | None:
    """User-typed text without surrounding blanks; blank is no text at all."""
    return (value or "").strip() or None


def check_room(ss: SessionPort) -> None:
    """Refuse early a start the store would refuse when the run is claimed."""
    quotas, usage = ss.info().quotas, ss.usage()
    if usage.active_runs >= quotas.max_concurrent_runs:
        raise QuotaExceeded(f"quota max_concurrent_runs reached: session {ss.session_id} has {usage.active_runs} "
                            f"active run(s) of {quotas.max_concurrent_runs} allowed; pause or finish one first")
    if usage.cost_usd >= quotas.max_cost_usd:
        raise QuotaExceeded(f"quota max_cost_usd reached: session {ss.session_id} has spent "
                            f"${usage.cost_usd:.4f} of ${quotas.max_cost_usd:.2f}")


def ensure_stopped(run: Run, what: str) -> None:
    """A run's steps are changed only while no process executes it and it can go on after."""
    if executing_here(run.id) is not None or liveness(run).state == "running":
        raise StateConflict(f"run {run.id} is {run.status.value}; pause it (and let it stop) before you {what}")
    if run.status == RunStatus.cancelled:
        raise StateConflict(f"run {run.id} is cancelled; branch it to {what} in a new run")
    if run.status not in STOPPED_RUN_STATES | {RunStatus.completed}:
        raise StateConflict(f"run {run.id} is {run.status.value} with no process on it; pause it before you {what}")
