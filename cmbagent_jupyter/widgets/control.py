"""What the widgets' buttons do: store writes (and engine calls where a run must restart).

Every decision is a write to the store, so it works whatever process runs the run:
this kernel, another kernel, the CLI. The waiting run hears of it through the
store's event stream.
"""

from __future__ import annotations

from typing import Any

from cmbagent_jupyter.core import STOPPED_RUN_STATES, ApprovalRequest, InvalidInput

RETRY_FEEDBACK_KIND = "retry_feedback"


def resolve_approval(feed: Any, approval_id: str, decision: str, feedback: str | None = None,
                     actor: str = "notebook") -> ApprovalRequest:
    """Approve / reject / modify one of the feed's run's approvals (store op `approval.resolve`)."""
    if approval_id not in {a.id for a in feed.approvals}:
        feed.refresh({"approvals"})
        if approval_id not in {a.id for a in feed.approvals}:
            raise InvalidInput(f"approval {approval_id} is not one of run {feed.run_id}'s approvals")
    approval = feed.session.resolve_approval(approval_id, decision, feedback=(feedback or "").strip() or None,
                                             actor=actor)
    feed.refresh({"approvals", "run"})
    return approval


def retry_with_feedback(feed: Any, step_id: str, feedback: str, *, resume: Any = None,
                        actor: str = "notebook") -> str:
    """Give a failed step feedback for its next attempt; returns what happened, in one line.

    - If the run waits on an approval for this step that offers `retry` (an
      `on_error` gate), that approval is resolved with decision `retry` and the
      feedback: the waiting engine retries with it.
    - Otherwise the feedback is recorded as an approval of kind `retry_feedback`
      for the step, resolved `retry` (a durable record the engine and `cmbagent
      approvals --all` can read), the step and what depends on it go back to
      pending with the feedback appended to the step's instructions (store op
      `step.reset_from`), and `resume(run_id)` is called when given.
    """
    feedback = feedback.strip()
    if not feedback:
        raise InvalidInput("feedback must not be empty")
    feed.refresh({"steps", "approvals", "run"})
    step = feed.step_by_id(step_id)
    if step is None:
        raise InvalidInput(f"step {step_id} is not part of run {feed.run_id}")
    gate = next((a for a in feed.pending_approvals() if a.step_id == step_id and "retry" in a.options), None)
    if gate is not None:
        resolve_approval(feed, gate.id, "retry", feedback, actor)
        return f"step {step.number} will be retried with your feedback"
    if step.status.value != "failed":
        raise InvalidInput(f"step {step.number} is {step.status.value}; only a failed step can be retried")
    status = feed.run.status.value
    if feed.run.status not in STOPPED_RUN_STATES:
        raise InvalidInput(f"run {feed.run_id} is {status}; pause it first, or wait until it stops")
    record = feed.session.create_approval(feed.run_id, RETRY_FEEDBACK_KIND, step_id=step_id,
                               request={"summary": f"retry step {step.number} with feedback", "source": actor},
                               options=["retry"])
    feed.session.resolve_approval(record.id, "retry", feedback=feedback, actor=actor)
    description = f"{step.description}\n\nFeedback from the user for this attempt (follow it):\n{feedback}"
    feed.session.reset_from(step_id, description=description, actor=actor)
    feed.refresh({"steps", "approvals", "run"})
    if resume is None:
        return (f"feedback saved for step {step.number}; it is pending again: resume run {feed.run_id} to retry it")
    resume(feed.run_id)
    return f"step {step.number} will be retried with your feedback (run {feed.run_id} resumed)"
