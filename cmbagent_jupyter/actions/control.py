"""Pause and cancel a run, wherever it executes: each is a write to the store that the
process executing the run hears of (at its next step boundary or heartbeat)."""

from __future__ import annotations

from cmbagent_jupyter.actions.executors import stop_here
from cmbagent_jupyter.actions.lookup import run_in
from cmbagent_jupyter.core import Run, RunStatus
from cmbagent_jupyter.engine.liveness import liveness
from cmbagent_jupyter.store import StorePort


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
