"""The state machine is data: printed by the CLI, enforced by the store, recorded atomically."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cmbagent_jupyter.core.states import (
    RUN_TRANSITIONS,
    STEP_TRANSITIONS,
    IllegalTransition,
    check_run_transition,
    check_step_transition,
    transition_table,
)
from cmbagent_jupyter.core import Run, RunStatus, StepStatus
from cmbagent_jupyter.core.errors import Invalid
from fixtures.waiting import wait_for


def test_every_state_has_a_row_and_terminal_states_lead_nowhere():
    table = transition_table()
    assert set(table["run"]) == {s.value for s in RunStatus}
    assert set(table["step"]) == {s.value for s in StepStatus}
    assert table["run"]["completed"] == [] and table["run"]["cancelled"] == []
    assert table["run"]["draft"] == ["cancelled", "executing", "planning"]
    assert "running" in table["step"]["failed"]  # a failed step can be retried


@pytest.mark.parametrize(("src", "dst"), [("completed", "executing"), ("draft", "completed"), ("cancelled", "draft")])
def test_an_illegal_run_move_names_both_states(src, dst):
    with pytest.raises(IllegalTransition, match=f"cannot move from '{src}' to '{dst}'"):
        check_run_transition("run_0123456789ab", src, dst, {"task": "t", "step_count": 1})


def test_an_illegal_step_move_names_both_states():
    with pytest.raises(IllegalTransition, match="cannot move from 'pending' to 'completed'"):
        check_step_transition("stp_0123456789ab", "pending", "completed")


def test_the_cli_prints_the_same_table_with_its_guards(cli):
    out = cli("states", "--json")
    assert out.code == 0, out.stderr
    doc = out.json()
    assert doc["run"] == transition_table()["run"] and doc["step"] == transition_table()["step"]
    guards = {(g["from"], g["to"]): g["requires"] for g in doc["guards"]}
    assert guards[(None, "planning")] == "planning needs a task"
    assert "plan" in guards[(None, "executing")]
    assert "approval" in guards[("waiting_approval", "executing")]
    text = cli("states")
    assert text.code == 0 and "waiting_approval" in text.stdout and "(terminal)" in text.stdout


def test_the_store_allows_exactly_the_tabled_run_moves(store):
    """From each state, every target: the store agrees with the table."""
    ss = store.session(store.create_session("walk", {"max_concurrent_runs": 100}).id)
    route = {  # how to reach each state from draft with legal moves
        "draft": [], "planning": ["planning"], "executing": ["executing"], "paused": ["executing", "paused"],
        "waiting_approval": ["executing", "waiting_approval"], "interrupted": ["executing", "interrupted"],
        "completed": ["executing", "completed"], "failed": ["executing", "failed"], "cancelled": ["cancelled"],
    }
    for src, path in route.items():
        for dst in RunStatus:
            if dst.value == src:
                continue
            run = ss.create_run(f"{src} -> {dst.value}")
            ss.put_plan(run.id, [{"key": "step_1", "description": "do it"}])
            for hop in path:
                ss.transition_run(run.id, hop)
            if dst in RUN_TRANSITIONS[RunStatus(src)]:
                moved = ss.transition_run(run.id, dst.value, owner_pid=4242, error="why")
                assert moved.status == dst
                # the row a move returns is the row the store now holds; run.json mirrors it once
                # the move committed (it is written while the reply goes out)
                assert moved == ss.get_run(run.id)
                mirror = Path(moved.path) / "run.json"
                wait_for(lambda: Run.model_validate(json.loads(mirror.read_text())) == moved, 10,
                         f"run.json of {run.id} to show the move to {dst.value}")
            else:
                with pytest.raises(Invalid, match=f"from '{src}' to '{dst.value}'"):
                    ss.transition_run(run.id, dst.value)
                assert ss.get_run(run.id).status.value == src


def test_the_store_allows_exactly_the_tabled_step_moves(store):
    ss = store.session(store.create_session("steps").id)
    run = ss.create_run("steps")
    route = {"pending": [], "running": ["running"], "paused": ["running", "paused"],
             "waiting_approval": ["waiting_approval"], "completed": ["running", "completed"],
             "failed": ["running", "failed"], "skipped": ["skipped"], "cancelled": ["cancelled"]}
    plan = [{"key": f"{src}_{dst.value}"} for src in route for dst in StepStatus if dst.value != src]
    steps = {s.key: s for s in ss.put_plan(run.id, plan)}
    for src, path in route.items():
        for dst in StepStatus:
            if dst.value == src:
                continue
            step = steps[f"{src}_{dst.value}"]
            for hop in path:
                ss.transition_step(step.id, hop)
            if dst in STEP_TRANSITIONS[StepStatus(src)]:
                assert ss.transition_step(step.id, dst.value).status == dst
            else:
                with pytest.raises(Invalid, match=f"from '{src}' to '{dst.value}'"):
                    ss.transition_step(step.id, dst.value)


def test_guards_planning_needs_a_task_and_executing_a_plan(store):
    ss = store.session(store.create_session("guards").id)
    empty = ss.create_run("   ")
    with pytest.raises(Invalid, match="planning needs a task"):
        ss.transition_run(empty.id, "planning")

    run = ss.create_run("fit the spectrum")
    ss.transition_run(run.id, "planning")
    with pytest.raises(Invalid, match="executing needs a valid plan"):
        ss.transition_run(run.id, "executing")
    ss.put_plan(run.id, [{"key": "step_1", "description": "fit"}])
    assert ss.transition_run(run.id, "executing").status.value == "executing"


def test_guard_leaving_waiting_approval_needs_the_decision(store):
    ss = store.session(store.create_session("approvals").id)
    run = ss.create_run("careful")
    ss.put_plan(run.id, [{"key": "step_1"}])
    ss.transition_run(run.id, "executing")
    approval = ss.create_approval(run_id=run.id, kind="before_step")
    assert ss.get_run(run.id).status.value == "waiting_approval"

    with pytest.raises(Invalid, match="pending approval must be decided"):
        ss.transition_run(run.id, "executing")
    ss.resolve_approval(approval_id=approval.id, decision="approve")
    assert ss.transition_run(run.id, "executing").status.value == "executing"


def test_each_transition_writes_its_history_row_and_event_together(store):
    ss = store.session(store.create_session("atomic").id)
    run = ss.create_run("story")
    step = ss.put_plan(run.id, [{"key": "step_1"}])[0]
    sub = ss.subscribe(run_id=run.id)

    ss.transition_run(run.id, "planning", reason="go", actor="tester")
    ss.transition_step(step.id, "running")

    [h] = [h for h in ss.history(run.id) if h.to_state == "planning"]
    assert (h.from_state, h.reason, h.actor) == ("draft", "go", "tester")
    [started] = ss.events(run_id=run.id, types=["workflow.started"])
    assert started.payload["from"] == "draft" and started.payload["to"] == "planning"
    [hs] = [h for h in ss.history(step.id) if h.to_state == "running"]
    [ev] = ss.events(run_id=run.id, types=["step.started"])
    assert hs.from_state == "pending" and ev.payload["step_id"] == step.id
    assert sub.get(timeout=10)["type"] == "workflow.started"  # pushed only after the commit

    history_before, events_before = len(ss.history()), len(ss.events())
    with pytest.raises(Invalid):
        ss.transition_run(run.id, "completed")  # planning -> completed is not a move
    with pytest.raises(Invalid):
        ss.transition_step(step.id, "skipped")  # running -> skipped is not a move
    assert len(ss.history()) == history_before and len(ss.events()) == events_before
    assert ss.get_run(run.id).status.value == "planning"


def test_a_failed_batch_keeps_the_writes_that_did_not_fail(store):
    """Group commit: a refused write in a batch does not take its neighbours down with it."""
    import threading

    ss = store.session(store.create_session("batch").id)
    runs = [ss.create_run(f"r{i}") for i in range(20)]
    errors: list[Exception] = []

    def move(i: int) -> None:
        try:
            ss.transition_run(runs[i].id, "completed" if i % 2 else "cancelled")
        except Invalid as exc:
            errors.append(exc)

    threads = [threading.Thread(target=move, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(errors) == 10  # draft -> completed refused, draft -> cancelled allowed
    statuses = [ss.get_run(r.id).status.value for r in runs]
    assert statuses == ["cancelled" if i % 2 == 0 else "draft" for i in range(20)]
    assert len([h for h in ss.history() if h.to_state == "cancelled"]) == 10
