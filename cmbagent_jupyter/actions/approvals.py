"""Deciding an approval: the one way any front end answers a run that waits for a person.

The decision is a write to the store, so it can come from any process; the waiting run
hears of it through the store's event push and goes on.
"""

from __future__ import annotations

from typing import Literal

from cmbagent_jupyter.actions.guards import text
from cmbagent_jupyter.actions.lookup import approval_in
from cmbagent_jupyter.core import ApprovalRequest, InvalidInput
from cmbagent_jupyter.core.states import APPROVAL_DECISIONS, DECISIONS_NEEDING_FEEDBACK
from cmbagent_jupyter.store import StorePort

Decision = Literal["approve", "reject", "modify", "retry", "skip", "abort"]
MAX_FEEDBACK = 100_000


def decide(store: StorePort, approval_id: str, decision: Decision | str, *, feedback: str | None = None,
           actor: str, session_id: str | None = None, run_id: str | None = None) -> ApprovalRequest:
    """Answer a pending approval with one of its options (`reject` and `modify` say what to
    change in `feedback`). `session_id` / `run_id`: the approval must belong to them."""
    if decision not in APPROVAL_DECISIONS:
        raise InvalidInput(f"unknown decision {decision!r}; expected one of {', '.join(APPROVAL_DECISIONS)}")
    feedback = text(feedback)
    if decision in DECISIONS_NEEDING_FEEDBACK and feedback is None:
        raise InvalidInput(f"{decision} needs feedback that says what to change")
    if feedback is not None and len(feedback) > MAX_FEEDBACK:
        raise InvalidInput(f"feedback is {len(feedback)} characters long; at most {MAX_FEEDBACK} are kept")
    ss, approval = approval_in(store, approval_id, session_id)
    if run_id is not None and approval.run_id != run_id:
        raise InvalidInput(f"approval {approval.id} is not one of run {run_id}'s approvals")
    if decision not in approval.options:
        raise InvalidInput(f"decision {decision!r} is not an option of approval {approval.id}; choose one of "
                           f"{', '.join(approval.options)}")
    return ss.resolve_approval(approval.id, decision, feedback=feedback, actor=actor)
