"""Execution control through the port: approval gates, step attempts, playing from a node, branches."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from cmbagent_jupyter.core import ApprovalStatus, Conflict, Invalid, NotFound, RunStatus, StepStatus
from porttools import PID, executing, finished, record, unknown


# ---------------------------------------------------------------- approvals


def test_an_approval_gate_holds_a_running_run_until_it_is_decided(port, ss):
    run, (s1, _) = executing(ss)
    approval = ss.create_approval(run.id, "before_step", request={"title": "Go?"}, step_id=s1.id, actor="engine")
    assert (approval.status, approval.options, approval.kind, approval.step_id, approval.request) == (
        ApprovalStatus.pending, ["approve", "reject", "modify"], "before_step", s1.id, {"title": "Go?"})
    assert ss.get_run(run.id).status == RunStatus.waiting_approval
    [asked] = ss.events(run.id, types=["approval.requested"])
    assert (asked.payload["approval_id"], asked.payload["resume_status"]) == (approval.id, "executing")
    assert [h.to_state for h in ss.history(run.id)][-1] == "waiting_approval"
    assert ss.get_approval(approval.id) == approval == port.find_approval(approval.id)
    assert [a.id for a in ss.list_approvals(run.id)] == [approval.id] == [a.id for a in port.pending_approvals()]
    with pytest.raises(Invalid, match="pending approval"):
        ss.transition_run(run.id, "executing")
    decided = ss.resolve_approval(approval.id, "approve", actor="alice")
    assert (decided.status, decided.decision, decided.resolved_by) == (ApprovalStatus.approved, "approve", "alice")
    assert decided.resolved_at is not None and ss.get_run(run.id).status == RunStatus.waiting_approval
    [answer] = ss.events(run.id, types=["approval.received"])
    assert answer.payload | {"feedback": None} == {"approval_id": approval.id, "decision": "approve",
                                                   "status": "approved", "feedback": None, "resolved_by": "alice",
                                                   "kind": "before_step", "step_id": s1.id}
    assert ss.list_approvals(run.id) == [] and port.pending_approvals() == []
    assert [a.id for a in ss.list_approvals(run.id, pending_only=False)] == [approval.id]
    assert ss.transition_run(run.id, "executing").status == RunStatus.executing


def test_a_decision_must_be_an_option_a_change_needs_feedback_and_a_decided_request_is_a_conflict(ss):
    run = ss.create_run("t")
    ask = lambda **kw: ss.create_approval(run.id, "after_planning", **kw)  # noqa: E731
    approval = ask()
    assert ss.get_run(run.id).status == RunStatus.draft, "only a running run waits"
    with pytest.raises(Invalid, match="not an option"):
        ss.resolve_approval(approval.id, "skip")
    for decision, feedback in (("reject", None), ("modify", "   ")):
        with pytest.raises(Invalid, match="needs feedback"):
            ss.resolve_approval(approval.id, decision, feedback=feedback)
    modified = ss.resolve_approval(approval.id, "modify", feedback="use two bins")
    assert (modified.status, modified.feedback, modified.resolved_by) == (ApprovalStatus.modified, "use two bins",
                                                                         "user")
    with pytest.raises(Conflict, match="already resolved"):
        ss.resolve_approval(approval.id, "approve")
    assert ss.get_approval(approval.id) == modified
    assert ss.resolve_approval(ask().id, "reject", allow_empty_feedback=True).status == ApprovalStatus.rejected
    aborted = ss.resolve_approval(ask(options=["approve", "abort"]).id, "abort")
    assert aborted.status == ApprovalStatus.rejected
    expired = ss.resolve_approval(ask(default_action="approve").id, "approve", expired=True)
    assert expired.status == ApprovalStatus.expired


def test_an_approvals_options_default_action_and_timeout_are_checked(ss):
    run = ss.create_run("t")
    with pytest.raises(Invalid, match="unknown approval option"):
        ss.create_approval(run.id, "k", options=["approve", "shrug"])
    with pytest.raises(Invalid, match="default_action"):
        ss.create_approval(run.id, "k", options=["approve", "abort"], default_action="reject")
    timed = ss.create_approval(run.id, "k", timeout_s=60, default_action="approve")
    assert timed.timeout_at - timed.created_at == timedelta(seconds=60) and timed.default_action == "approve"
    assert [a.id for a in ss.list_approvals()] == [timed.id]
    with pytest.raises(NotFound, match="does not exist in session"):
        ss.create_approval(run.id, "k", step_id=unknown("step"))
    missing = unknown("approval")
    for call in (lambda: ss.get_approval(missing), lambda: ss.resolve_approval(missing, "approve")):
        with pytest.raises(NotFound, match=f"approval {missing} does not exist in session"):
            call()


# ---------------------------------------------------------------- attempts


def test_attempts_are_numbered_per_step_and_a_retry_is_announced(ss):
    run, (s1, s2) = executing(ss)
    first = ss.start_attempt(s1.id)
    assert first.attempt == 1 and ss.events(run.id, types=["retry.started"]) == []
    failed = ss.finish_attempt(first.id, "failed", error_type="ValueError", error="bad", traceback="tb", cost_usd=0.2)
    assert (failed.status, failed.error_type, failed.error, failed.traceback, failed.cost_usd) == (
        StepStatus.failed, "ValueError", "bad", "tb", 0.2) and failed.ended_at is not None
    second = ss.start_attempt(s1.id, feedback="try harder")
    assert second.attempt == 2
    [retry] = ss.events(run.id, types=["retry.started"])
    assert retry.payload == {"step_id": s1.id, "attempt": 2, "feedback": "try harder"}
    done = ss.finish_attempt(second.id, "completed", output="ok")
    assert (done.status, done.output, done.feedback) == (StepStatus.completed, "ok", "try harder")
    [succeeded] = ss.events(run.id, types=["retry.succeeded"])
    assert succeeded.payload == {"step_id": s1.id, "attempt": 2}
    other = ss.start_attempt(s2.id)
    assert [a.attempt for a in ss.list_attempts(step_id=s1.id)] == [1, 2]
    assert [a.id for a in ss.list_attempts(run_id=run.id)] == [first.id, second.id, other.id]
    with pytest.raises(Invalid, match="completed, failed or cancelled"):
        ss.finish_attempt(other.id, "running")
    with pytest.raises(Invalid):
        ss.list_attempts()
    with pytest.raises(NotFound, match="does not exist in session"):
        ss.finish_attempt(unknown("attempt"), "completed")
    with pytest.raises(NotFound):
        ss.start_attempt(unknown("step"))


# ---------------------------------------------------------------- play from a node


def _plan_config() -> dict:
    return {"final_plan": {"sub_tasks": [
        {"key": "a", "sub_task": "Load"}, {"key": "b", "sub_task": "Fit", "bullet_points": ["two bins"]},
        {"key": "c", "sub_task": "Plot"}, {"key": "d", "sub_task": "Other"}]}}


def test_playing_from_a_node_resets_exactly_it_and_its_descendants(ss):
    run = ss.create_run("replay", mode="control", config=_plan_config())
    steps = ss.put_plan(run.id, [{"key": "a"}, {"key": "b", "depends_on": ["a"]}, {"key": "c", "depends_on": ["b"]},
                                 {"key": "d"}])
    ss.claim(run.id, to="executing", owner_pid=PID)
    records = []
    for i, s in enumerate(steps):
        records += [record(2 * i + 1, start=[s.id]), record(2 * i + 2, complete=[(s.id, {"summary": s.key})])]
    ss.settle(run.id, "completed", owner_pid=PID, records=records)
    by_key = {s.key: s for s in ss.list_steps(run.id)}
    out = ss.reset_from(by_key["b"].id, instructions="use three bins", actor="alice")
    assert (out.run_id, out.reset) == (run.id, ["b", "c"])
    assert out.description == "Fit\n- two bins\n\nChanged instructions (follow these):\nuse three bins"
    after = {s.key: s for s in ss.list_steps(run.id)}
    assert {k: (s.status.value, s.outputs) for k, s in after.items()} == {
        "a": ("completed", {"summary": "a"}), "b": ("pending", {}), "c": ("pending", {}),
        "d": ("completed", {"summary": "d"})}
    assert after["b"].description == out.description and after["c"].description == by_key["c"].description
    resumed = ss.get_run(run.id)
    assert resumed.status == RunStatus.paused and resumed.completed_at is None
    assert [(h.from_state, h.to_state, h.reason, h.actor) for h in ss.history(by_key["c"].id)][-1] == (
        "completed", "pending", "replay from b", "alice")
    changed = {e.payload["key"] for e in ss.events(run.id, types=["dag.node_status_changed"])}
    assert changed == {"b", "c"}
    plain = ss.reset_from(by_key["c"].id, description="just plot")
    assert (plain.reset, plain.description, ss.get_step(by_key["c"].id).description) == (
        ["c"], "just plot", "just plot")


def test_playing_from_a_node_needs_a_stopped_run(ss):
    run, (s1, _) = executing(ss)
    with pytest.raises(Conflict, match="pause it before replaying"):
        ss.reset_from(s1.id)
    ss.transition_run(run.id, "cancelled")
    with pytest.raises(Conflict, match="branch it instead"):
        ss.reset_from(s1.id)
    with pytest.raises(NotFound):
        ss.reset_from(unknown("step"))


# ---------------------------------------------------------------- branches


def test_a_branch_keeps_the_parents_results_before_its_fork_and_redoes_the_rest(ss):
    parent, steps = finished(ss, "a", "b", "c", "d")
    data = Path(parent.path) / "control" / "data"
    (data / "result.txt").write_text("from the parent")
    (Path(parent.path) / "control" / "chats").mkdir(parents=True, exist_ok=True)
    (Path(parent.path) / "control" / "chats" / "log.jsonl").write_text("{}")
    out = ss.create_branch(parent.id, 3, name="alt", instructions="try X", hypothesis="X is better", actor="bob")
    child = out.run
    assert (child.status, child.parent_run_id, child.branch_from_step, child.task) == (
        RunStatus.paused, parent.id, 3, parent.task)
    assert child.config["branch"] == {"parent_run_id": parent.id, "from_step": 3, "name": "alt",
                                      "instructions": "try X", "hypothesis": "X is better"}
    assert (out.kept_steps, out.incomplete_before_fork) == ([1, 2], [])
    copies = {s.key: s for s in ss.list_steps(child.id)}
    assert {k: (s.status.value, s.outputs) for k, s in copies.items()} == {
        "a": ("completed", {"summary": "a"}), "b": ("completed", {"summary": "b"}), "c": ("pending", {}),
        "d": ("pending", {})}
    assert copies["c"].description.endswith("try X") and not set(c.id for c in copies.values()) & {
        s.id for s in steps.values()}
    assert (Path(child.path) / "control" / "data" / "result.txt").read_text() == "from the parent"
    assert not (Path(child.path) / "control" / "chats").exists()
    [branch] = ss.list_branches(parent.id)
    assert (branch.id, branch.parent_run_id, branch.parent_step, branch.child_run_id, branch.name,
            branch.hypothesis) == (out.branch_id, parent.id, 3, child.id, "alt", "X is better")
    assert ss.list_branches(child.id) == [branch] == ss.list_branches()
    assert [h.to_state for h in ss.history(child.id)] == ["draft", "paused"]
    assert ss.events(child.id, types=["dag.created"])[0].payload == {"branch_of": parent.id, "from_step": 3}
    assert ss.get_run(parent.id) == parent, "the parent is left as it was"


def test_a_branch_says_which_steps_before_its_fork_never_finished_and_refuses_a_missing_step(ss):
    run, (s1, _, _) = executing(ss, "a", "b", "c")
    ss.settle(run.id, "paused", owner_pid=PID, records=[record(1, start=[s1.id]), record(2, complete=[s1.id])])
    out = ss.create_branch(run.id, 3)
    assert (out.kept_steps, out.incomplete_before_fork) == ([1, 2], [2])
    assert ss.list_branches(run.id)[0].name == f"branch of {run.id} at step 3"
    with pytest.raises(Invalid, match="has no step 9"):
        ss.create_branch(run.id, 9)
    with pytest.raises(NotFound):
        ss.create_branch(unknown("run"), 1)
