"""Retrying a failed step with feedback for its next attempt.

A run waiting at the step's error gate is answered `retry` with the feedback. A stopped
run gets the feedback recorded durably (an approval of kind `retry_feedback`, resolved
`retry`), the step and what depends on it set back to pending, and is continued by the
caller's executor. Either way the engine gives the feedback to the step's next attempt
(with the earlier attempts' errors), records it on that attempt and in `retry.started`.
"""

from __future__ import annotations

from pydantic import BaseModel

from cmbagent_jupyter.actions.executors import Execution, Executor
from cmbagent_jupyter.actions.guards import ensure_stopped, text
from cmbagent_jupyter.actions.lookup import run_in, step_in
from cmbagent_jupyter.actions.resuming import Resumed, resume
from cmbagent_jupyter.core import RETRY_FEEDBACK_KIND, ApprovalRequest, InvalidInput, StateConflict, Step, StepStatus
from cmbagent_jupyter.store import StorePort


class Retried(BaseModel):
    """What a retry did: answered the run's waiting gate, or recorded the feedback and reset
    the step (`reset`: the keys set back to pending) and maybe continued the run."""

    run_id: str
    step: Step
    answered_gate: bool
    approval: ApprovalRequest
    reset: list[str] = []
    execution: Execution | None = None


def retry_step(store: StorePort, run_id: str, step: int | str, feedback: str, *, actor: str,
               session_id: str | None = None, executor: Executor | None = None,
               max_parallel: int | None = None) -> Retried:
    """Retry the run's failed `step` (number, key or id) with `feedback` for its next attempt."""
    feedback = text(feedback)
    if feedback is None:
        raise InvalidInput("feedback must say what to do differently")
    ss, run = run_in(store, run_id, session_id)
    target = step_in(ss, run, step)
    gate = next((a for a in ss.list_approvals(run.id) if a.step_id == target.id and "retry" in a.options), None)
    if gate is not None:
        answered = ss.resolve_approval(gate.id, "retry", feedback=feedback, actor=actor)
        return Retried(run_id=run.id, step=target, answered_gate=True, approval=answered)
    if target.status != StepStatus.failed:
        raise StateConflict(f"step {target.number} ({target.key}) is {target.status.value}; only a failed step is "
                            f"retried (play from it to re-run a completed one)")
    ensure_stopped(run, "retry a step")
    request = {"title": f"Retry step {target.number} with feedback", "summary": feedback[:300], "step": target.key,
               "source": actor}
    record = ss.create_approval(run.id, RETRY_FEEDBACK_KIND, step_id=target.id, request=request, options=["retry"],
                                actor=actor)
    recorded = ss.resolve_approval(record.id, "retry", feedback=feedback, actor=actor)
    reset = set(ss.reset_from(target.id, actor=actor).reset)
    keys = [s.key for s in ss.list_steps(run.id) if s.key in reset]
    resumed: Resumed | None = None
    if executor is not None:
        resumed = resume(store, run.id, executor=executor, session_id=run.session_id, max_parallel=max_parallel)
    return Retried(run_id=run.id, step=target, answered_gate=False, approval=recorded, reset=keys,
                   execution=resumed.execution if resumed else None)
