"""The actions that decide or change a run, on a real store: decide an approval, retry a
failed step with feedback, play from a step, branch, compare runs, costs."""

from __future__ import annotations

import os

import pytest
from fixtures.store import planned_run

from cmbagent_jupyter import actions
from cmbagent_jupyter.core import Conflict, InvalidInput, NotFound, StateConflict


def finished(ss, run, steps, *, failed: int | None = None):
    """Complete the run's steps in order; with `failed`, that step number fails and so does the run."""
    for s in steps:
        ss.transition_step(s.id, "running")
        if s.number == failed:
            ss.transition_step(s.id, "failed", error="FileNotFoundError: data/map.fits")
            return ss.transition_run(run.id, "failed", error=f"step {failed} failed")
        ss.transition_step(s.id, "completed", outputs={"summary": f"result of {s.key}"})
    return ss.transition_run(run.id, "completed")


# ---------------------------------------------------------------- decide


def test_decide_records_the_decision_with_clean_feedback_and_its_actor(store):
    ss, run, _ = planned_run(store, 1)
    gate = ss.create_approval(run.id, "after_planning")
    decided = actions.decide(store, gate.id, "modify", feedback="  use 50 bins \n", actor="tester")
    assert (decided.status.value, decided.decision, decided.feedback, decided.resolved_by) == (
        "modified", "modify", "use 50 bins", "tester")
    (event,) = ss.events(run_id=run.id, types=["approval.received"])
    assert event.payload == {"approval_id": gate.id, "decision": "modify", "status": "modified",
                             "feedback": "use 50 bins", "resolved_by": "tester", "kind": "after_planning",
                             "step_id": None}
    with pytest.raises(Conflict, match="already resolved \\(modified by tester\\)"):
        actions.decide(store, gate.id, "approve", actor="tester")


@pytest.mark.parametrize("decision, feedback, scope, error, message", [
    ("maybe", None, {}, InvalidInput, "unknown decision 'maybe'; expected one of approve, reject"),
    ("reject", "   ", {}, InvalidInput, "reject needs feedback that says what to change"),
    ("retry", None, {}, InvalidInput, "decision 'retry' is not an option of approval apr_"),
    ("approve", None, {"run_id": "run_0123456789abcdef0123"}, InvalidInput,
     "is not one of run run_0123456789abcdef0123's approvals"),
    ("approve", None, {"session_id": "other"}, NotFound, "does not exist in session"),
])
def test_decide_refuses_what_is_wrong_and_leaves_the_approval_pending(store, decision, feedback, scope, error,
                                                                      message):
    ss, run, _ = planned_run(store, 1)
    gate = ss.create_approval(run.id, "before_each_step")
    if scope.get("session_id") == "other":
        scope = {"session_id": store.create_session("other").id}
    with pytest.raises(error, match=message):
        actions.decide(store, gate.id, decision, feedback=feedback, actor="tester", **scope)
    assert ss.get_approval(gate.id).status.value == "pending"


# ---------------------------------------------------------------- retry


def test_retry_of_a_stopped_run_records_the_feedback_and_resets_the_step_and_its_descendants(store):
    ss, run, steps = planned_run(store, 3)
    finished(ss, run, steps, failed=2)

    out = actions.retry_step(store, run.id, "step_2", "  simulate the map instead  ", actor="tester")

    assert not out.answered_gate and out.execution is None
    assert out.step.id == steps[1].id and out.reset == ["step_2", "step_3"]
    record = out.approval
    assert (record.kind, record.step_id, record.status.value, record.decision, record.feedback, record.resolved_by) \
        == ("retry_feedback", steps[1].id, "approved", "retry", "simulate the map instead", "tester")
    assert record.request == {"title": "Retry step 2 with feedback", "summary": "simulate the map instead",
                              "step": "step_2", "source": "tester"}
    after = {s.key: s for s in ss.list_steps(run.id)}
    assert [after[k].status.value for k in ("step_1", "step_2", "step_3")] == ["completed", "pending", "pending"]
    assert after["step_2"].description == "Sub-task 2", "the feedback goes to the next attempt, not the plan"


def test_retry_answers_the_steps_waiting_error_gate(store):
    ss, run, steps = planned_run(store, 2)
    ss.transition_step(steps[0].id, "running")
    ss.transition_step(steps[0].id, "failed", error="boom")
    gate = ss.create_approval(run.id, "on_error", step_id=steps[0].id, options=["retry", "modify", "skip", "abort"])

    out = actions.retry_step(store, run.id, 1, "use fewer bins", actor="tester")

    assert out.answered_gate and out.approval.id == gate.id and out.reset == []
    assert (out.approval.decision, out.approval.feedback) == ("retry", "use fewer bins")
    assert [a.kind for a in ss.list_approvals(run.id, pending_only=False)] == ["on_error"], "no second record"


def test_retry_refusals_write_nothing(store):
    ss, run, steps = planned_run(store, 2)
    with pytest.raises(InvalidInput, match="feedback must say what to do differently"):
        actions.retry_step(store, run.id, 1, " ", actor="tester")
    with pytest.raises(InvalidInput, match="has no step 'zz'; its steps are 1 \\(step_1\\), 2 \\(step_2\\)"):
        actions.retry_step(store, run.id, "zz", "x", actor="tester")
    with pytest.raises(StateConflict, match="step 1 \\(step_1\\) is pending; only a failed step is retried"):
        actions.retry_step(store, run.id, 1, "x", actor="tester")
    ss.heartbeat(run.id, owner_pid=os.getpid())
    ss.transition_step(steps[0].id, "running")
    ss.transition_step(steps[0].id, "failed", error="boom")
    with pytest.raises(StateConflict, match="pause it \\(and let it stop\\) before you retry a step"):
        actions.retry_step(store, run.id, 1, "x", actor="tester")
    ss.transition_run(run.id, "cancelled")
    with pytest.raises(StateConflict, match="is cancelled; branch it"):
        actions.retry_step(store, run.id, 1, "x", actor="tester")
    assert ss.list_approvals(run.id, pending_only=False) == []
    assert ss.get_step(steps[0].id).status.value == "failed"


# ---------------------------------------------------------------- play from, branch, compare


def test_play_from_resets_the_step_with_new_instructions_and_what_depends_on_it(store):
    ss, run, steps = planned_run(store, 3, parallel=True)  # 2 and 3 both depend on 1
    finished(ss, run, steps)
    out = actions.play_from(store, run.id, "step_1", "  use 50 bins ", actor="tester")
    assert out.reset == ["step_1", "step_2", "step_3"] and out.execution is None
    assert ss.get_run(run.id).status.value == "paused", "a completed run is ready to resume"
    assert ss.get_step(steps[0].id).description.endswith("Changed instructions (follow these):\nuse 50 bins")

    again = actions.play_from(store, run.id, 3, actor="tester")
    assert again.reset == ["step_3"]
    assert ss.get_step(steps[1].id).status.value == "pending" and ss.get_step(steps[2].id).description == "Sub-task 3"


def test_play_from_refuses_a_run_a_process_is_executing(store):
    ss, run, _ = planned_run(store, 2)
    ss.heartbeat(run.id, owner_pid=os.getpid())
    with pytest.raises(StateConflict, match="pause it \\(and let it stop\\) before you play from a step"):
        actions.play_from(store, run.id, 1, actor="tester")


def test_a_branch_keeps_the_steps_before_its_fork_and_shows_in_the_tree_and_comparison(store):
    ss, run, steps = planned_run(store, 3)
    finished(ss, run, steps)
    made = actions.branch(store, run.id, "step_2", actor="tester", name=" finer ", instructions="use 50 bins",
                          hypothesis="finer bins lower the error")
    assert (made.parent_run_id, made.from_step, made.kept_steps, made.reused_steps) == (run.id, 2, [1], [1])
    assert made.run.status.value == "paused" and made.execution is None
    child = [s.status.value for s in ss.list_steps(made.run.id)]
    assert child == ["completed", "pending", "pending"]

    tree = actions.branch_tree(store, made.run.id)
    assert (tree.run_id, tree.name, [(c.run_id, c.name, c.from_step) for c in tree.children]) == (
        run.id, "main", [(made.run.id, "finer", 2)])
    compared = actions.compare_runs(store, run.id, made.run.id)
    assert [(r.number, r.same_output, r.a_status, r.b_status) for r in compared.steps] == [
        (1, True, "completed", "completed"), (2, False, "completed", "pending"), (3, False, "completed", "pending")]
    other = store.create_session("elsewhere")
    with pytest.raises(InvalidInput, match="has no step 9"):
        actions.branch(store, run.id, 9, actor="tester")
    with pytest.raises(NotFound):
        actions.branch_tree(store, run.id, session_id=other.id)


def test_runs_of_different_sessions_are_not_compared(store):
    _, a, _ = planned_run(store, 1, session="one")
    _, b, _ = planned_run(store, 1, session="two")
    with pytest.raises(InvalidInput, match="runs of different sessions are not compared"):
        actions.compare_runs(store, a.id, b.id)


# ---------------------------------------------------------------- costs


def test_costs_of_a_run_a_session_and_every_session(store):
    ss, run, steps = planned_run(store, 1, session="alpha")
    _, other_run, _ = planned_run(store, 1, session="alpha", task="second")
    sb, run_b, _ = planned_run(store, 1, session="beta")
    ss.add_costs([{"run_id": run.id, "step_id": steps[0].id, "agent": "engineer", "model": "gpt-4o",
                   "prompt_tokens": 100, "cost_usd": 0.25},
                  {"run_id": other_run.id, "agent": "planner", "model": "local", "cost_usd": 0.0, "priced": False}])
    sb.add_costs([{"run_id": run_b.id, "agent": "engineer", "model": "gpt-4o", "cost_usd": 1.5}])

    one = actions.costs(store, run_id=run.id)
    assert (one.session_id, one.run_id, one.group_by, one.total_usd) == (ss.session_id, run.id, ["agent", "model"],
                                                                        0.25)
    session = actions.costs(store, session_id=ss.session_id, group_by=["run_id"])
    assert {r.run_id: r.cost_usd for r in session.rows} == {run.id: 0.25, other_run.id: 0.0}
    assert actions.costs(store, session_id=ss.session_id).unpriced == ["local"]
    assert actions.costs(store).total_usd == pytest.approx(1.75)
    assert {c.name: c.cost_usd for c in actions.cost_by_session(store)} == {"alpha": 0.25, "beta": 1.5}
    with pytest.raises(NotFound, match=run.id):
        actions.costs(store, session_id=sb.session_id, run_id=run.id)
