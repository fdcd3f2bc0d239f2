"""ApprovalWidget: pending approvals as cards; clicks resolve them through the store."""

from __future__ import annotations

from fixtures.store import planned_run
from fixtures.waiting import wait_for

from cmbagent_jupyter.widgets import ApprovalWidget

PLAN = {"sub_tasks": [{"sub_task": "Simulate a map", "sub_task_agent": "engineer"},
                      {"sub_task": "Write the report", "sub_task_agent": "researcher"}]}


def test_a_plan_approval_shows_as_a_card_with_the_plan(store, wire):
    ss, run, _ = planned_run(store, 2)
    gate = ss.create_approval(run_id=run.id, kind="after_planning",
                   request={"title": "Approve the plan", "plan": PLAN, "reviews": 1, "mermaid": "flowchart TD",
                            "summary": "2 steps in 2 levels: 1. Simulate a map; 2. Write the report"})
    card_widget = ApprovalWidget(run.id, store=store, live=False)
    wire(card_widget)
    [card] = card_widget.approvals
    assert card["id"] == gate.id and card["status"] == "pending"
    assert card["title"] == "Approve the plan" and card["summary"] == "2 steps in 2 levels"
    assert card["options"] == ["approve", "reject", "modify"]
    assert [(p["number"], p["agent"], p["text"]) for p in card["plan"]] == [
        (1, "engineer", "Simulate a map"), (2, "researcher", "Write the report")]
    assert card["details"] == "reviews: 1", "the plan is listed, not repeated as JSON or Mermaid"


def test_clicking_approve_resolves_the_approval_in_the_store(store, wire):
    ss, run, _ = planned_run(store, 1)
    gate = ss.create_approval(run_id=run.id, kind="after_planning", request={"plan": PLAN})
    widget = ApprovalWidget(run.id, store=store)
    w = wire(widget)

    w.click({"type": "resolve", "approval_id": gate.id, "decision": "approve", "feedback": ""})

    stored = ss.get_approval(approval_id=gate.id)
    assert (stored.status, stored.decision, stored.resolved_by) == ("approved", "approve", "notebook")
    assert w.last("notice") == {"type": "notice", "level": "info", "text": "after planning: approved"}
    assert widget.pending == []
    assert widget.approvals[-1]["status"] == "approved"


def test_modify_carries_the_feedback(store, wire):
    ss, run, _ = planned_run(store, 1)
    gate = ss.create_approval(run_id=run.id, kind="after_planning")
    widget = ApprovalWidget(run.id, store=store, live=False)
    w = wire(widget)
    w.click({"type": "resolve", "approval_id": gate.id, "decision": "modify", "feedback": "use 50 bins"})
    stored = ss.get_approval(approval_id=gate.id)
    assert (stored.status, stored.feedback) == ("modified", "use 50 bins")
    assert w.last("notice")["text"] == "after planning: modified with feedback: use 50 bins"


def test_reject_without_feedback_is_refused_and_stays_pending(store, wire):
    ss, run, _ = planned_run(store, 1)
    gate = ss.create_approval(run_id=run.id, kind="after_planning")
    widget = ApprovalWidget(run.id, store=store, live=False)
    w = wire(widget)
    w.click({"type": "resolve", "approval_id": gate.id, "decision": "reject", "feedback": ""})
    assert w.last("notice") == {"type": "notice", "level": "error", "text": "reject needs feedback that says what to change"}
    assert ss.get_approval(approval_id=gate.id).status == "pending"


def test_an_approval_of_another_run_cannot_be_resolved_here(store, wire):
    ss, run, _ = planned_run(store, 1)
    other_ss, other, _ = planned_run(store, 1, task="another run")
    foreign = other_ss.create_approval(run_id=other.id, kind="after_planning")
    widget = ApprovalWidget(run.id, store=store, live=False)
    w = wire(widget)
    w.click({"type": "resolve", "approval_id": foreign.id, "decision": "approve"})
    assert w.last("notice")["text"] == f"approval {foreign.id} is not one of run {run.id}'s approvals"
    assert other_ss.get_approval(approval_id=foreign.id).status == "pending"


def test_an_approval_resolved_elsewhere_leaves_the_card(store, wire):
    ss, run, _ = planned_run(store, 1)
    widget = ApprovalWidget(run.id, store=store)
    wire(widget)
    gate = ss.create_approval(run_id=run.id, kind="before_each_step")
    wait_for(lambda: [a["id"] for a in widget.pending] == [gate.id], what="the new approval's card")
    ss.resolve_approval(approval_id=gate.id, decision="approve", actor="cli")
    wait_for(lambda: not widget.pending, what="the card to go once resolved from the CLI")
    assert widget.approvals[-1]["resolved_by"] == "cli"
