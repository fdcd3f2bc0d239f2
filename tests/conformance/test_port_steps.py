"""Steps through the port: a plan put in (its completed steps kept), steps moved and their progress."""

from __future__ import annotations

import pytest

from cmbagent_jupyter.core import Invalid, NotFound, StepStatus
from cmbagent_jupyter.store.port import PlanStep
from porttools import unknown


def test_a_plan_is_stored_in_step_order_with_what_each_step_is_given(ss):
    run = ss.create_run("t", mode="control")
    chosen = unknown("step")
    steps = ss.put_plan(run.id, [
        PlanStep(key="b", number=2, agent="researcher", description="B", depends_on=["a"], inputs={"sub_task": "B!"}),
        {"key": "a", "number": 1, "id": chosen, "description": "A"},
        {"description": "no key"},
    ])
    assert [(s.key, s.number, s.agent, s.status) for s in steps] == [
        ("a", 1, "engineer", StepStatus.pending), ("b", 2, "researcher", StepStatus.pending),
        ("step_3", 3, "engineer", StepStatus.pending)]
    a, b, _ = steps
    assert a.id == chosen and (b.depends_on, b.inputs, b.description) == (["a"], {"sub_task": "B!"}, "B")
    assert all((s.run_id, s.session_id, s.attempts, s.outputs, s.progress) == (run.id, ss.session_id, 0, {}, 0.0)
               for s in steps)
    assert ss.list_steps(run.id) == steps and ss.get_step(chosen) == a


def test_a_new_plan_replaces_the_steps_not_completed_and_keeps_the_completed_ones(ss):
    run = ss.create_run("t", mode="control")
    a, b = ss.put_plan(run.id, [{"key": "a"}, {"key": "b", "depends_on": ["a"]}])
    ss.transition_step(a.id, "running")
    ss.transition_step(a.id, "completed", outputs={"r": 1})
    again = ss.put_plan(run.id, [{"key": "a", "description": "changed"}, {"key": "c", "depends_on": ["a"]}])
    assert [s.key for s in again] == ["a", "c"]
    assert (again[0].id, again[0].outputs, again[0].status) == (a.id, {"r": 1}, StepStatus.completed)
    with pytest.raises(NotFound, match=b.id):
        ss.get_step(b.id)


@pytest.mark.parametrize("plan", ["not a list", [1], [{"key": "a", "id": "stp_bad"}]])
def test_a_bad_plan_is_invalid_and_changes_nothing(ss, plan):
    run = ss.create_run("t", mode="control")
    kept = ss.put_plan(run.id, [{"key": "kept"}])
    with pytest.raises(Invalid):
        ss.put_plan(run.id, plan)
    assert ss.list_steps(run.id) == kept


def test_a_step_moves_by_the_tables_and_each_move_is_an_event_and_history(ss):
    run = ss.create_run("t", mode="control")
    a, b = ss.put_plan(run.id, [{"key": "a"}, {"key": "b"}])
    running = ss.transition_step(a.id, "running", reason="go", actor="me")
    assert (running.status, running.attempts) == (StepStatus.running, 1) and running.started_at is not None
    assert ss.step_progress(a.id, 0.5, "half way") == 0.5 and ss.get_step(a.id).progress == 0.5
    done = ss.transition_step(a.id, "completed", outputs={"x": 1})
    assert (done.progress, done.outputs) == (1.0, {"x": 1}) and done.completed_at is not None
    with pytest.raises(Invalid, match="cannot move from 'completed' to 'running'"):
        ss.transition_step(a.id, "running")
    with pytest.raises(Invalid, match="unknown step state"):
        ss.transition_step(a.id, "flying")
    back = ss.transition_step(a.id, "pending", description="redo it")
    assert (back.outputs, back.progress, back.completed_at, back.description) == ({}, 0.0, None, "redo it")
    ss.transition_step(b.id, "running")
    failed = ss.transition_step(b.id, "failed", error="it broke")
    assert (failed.status, failed.error) == (StepStatus.failed, "it broke")
    kinds = [(e.type.value, e.payload.get("step_id"), e.payload.get("to")) for e in ss.events(run.id)][1:]
    assert kinds == [("step.started", a.id, "running"), ("step.progress", a.id, None),
                     ("step.completed", a.id, "completed"), ("step.state_changed", a.id, "pending"),
                     ("step.started", b.id, "running"), ("step.failed", b.id, "failed")]
    assert ss.events(run.id, types=["step.failed"])[0].payload["error"] == "it broke"
    assert ss.events(run.id, types=["step.progress"])[0].payload == {"step_id": a.id, "progress": 0.5,
                                                                      "message": "half way"}
    history = ss.history(a.id)
    assert [(h.entity_type, h.from_state, h.to_state) for h in history] == [
        ("step", "pending", "running"), ("step", "running", "completed"), ("step", "completed", "pending")]
    assert (history[0].reason, history[0].actor) == ("go", "me")


def test_progress_is_a_fraction(ss):
    run = ss.create_run("t", mode="control")
    [a] = ss.put_plan(run.id, [{"key": "a"}])
    for bad in (-0.1, 1.5):
        with pytest.raises(Invalid, match="between 0 and 1"):
            ss.step_progress(a.id, bad)
    assert ss.get_step(a.id).progress == 0.0


def test_unknown_and_malformed_step_ids(ss):
    missing = unknown("step")
    for call in (lambda: ss.get_step(missing), lambda: ss.transition_step(missing, "running"),
                 lambda: ss.step_progress(missing, 0.1)):
        with pytest.raises(NotFound, match=f"step {missing} does not exist in session {ss.session_id}"):
            call()
    with pytest.raises(Invalid, match="malformed step id"):
        ss.get_step("stp_!")
