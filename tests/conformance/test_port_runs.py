"""Runs through the port: made as drafts with their folders, moved by the state machine's
tables and guards, each move an event and a history entry; heartbeats, pauses, updates."""

from __future__ import annotations

from pathlib import Path

import pytest

from cmbagent_jupyter.core import Conflict, Invalid, NotFound, Run, RunMode, RunStatus
from porttools import PID, unknown

LAYOUT = ("planning", "control/codebase", "control/data", "context", "checkpoints")


def test_a_run_is_a_draft_in_its_sessions_folder_in_cmbagents_layout(port, ss):
    run = ss.create_run("Analyse the map", mode="control", model="m1", config={"k": [1, 2]},
                        checkpoint_interval_s=30, actor="tester")
    assert isinstance(run, Run) and run.status == RunStatus.draft and run.session_id == ss.session_id
    assert (run.mode, run.model, run.config, run.checkpoint_interval_s) == (RunMode.control, "m1", {"k": [1, 2]}, 30)
    assert (run.started_at, run.completed_at, run.owner_pid, run.pause_requested) == (None, None, None, False)
    root = Path(run.path)
    assert root == Path(ss.info().path) / "runs" / run.id
    assert all((root / sub).is_dir() for sub in LAYOUT)
    assert ss.get_run(run.id) == run == port.find_run(run.id)
    [event] = ss.events(run.id)
    assert (event.type.value, event.payload, event.seq, event.run_id) == (
        "workflow.created", {"task": "Analyse the map", "mode": "control"}, 1, run.id)
    [made] = ss.history(run.id)
    assert (made.entity_type, made.from_state, made.to_state, made.actor) == ("run", None, "draft", "tester")
    default = ss.create_run("defaults")
    assert (default.mode, default.config, default.checkpoint_interval_s) == (RunMode.deep_research, {}, 600.0)


def test_a_run_may_be_given_its_id_once(ss):
    rid = unknown("run")
    assert ss.create_run("mine", run_id=rid).id == rid
    with pytest.raises(Conflict, match=rid):
        ss.create_run("again", run_id=rid)


@pytest.mark.parametrize("bad", [
    {"task": 5}, {"task": "x" * 200_001}, {"mode": "nonsense"}, {"checkpoint_interval_s": -1},
    {"run_id": "run_NOPE"}, {"config": ["not", "an", "object"]}, {"parent_run_id": "stp_0123456789abcdef"},
])
def test_bad_run_arguments_are_invalid_and_nothing_is_made(ss, bad):
    args = {"task": "t", **bad}
    with pytest.raises(Invalid):
        ss.create_run(args.pop("task"), **args)
    assert ss.list_runs() == []


def test_an_unknown_parent_is_not_found(ss):
    with pytest.raises(NotFound, match="does not exist in session"):
        ss.create_run("child", parent_run_id=unknown("run"))
    parent = ss.create_run("parent")
    assert ss.create_run("child", parent_run_id=parent.id, branch_from_step=2).parent_run_id == parent.id


def test_runs_are_listed_oldest_first_and_by_status(ss):
    a, b, c = (ss.create_run(t) for t in "abc")
    ss.transition_run(b.id, "planning")
    ss.transition_run(c.id, "cancelled")
    assert [r.id for r in ss.list_runs()] == [a.id, b.id, c.id]
    assert [r.id for r in ss.list_runs("planning")] == [b.id]
    assert [r.id for r in ss.list_runs(["draft", "cancelled"])] == [a.id, c.id]


def test_each_move_is_an_event_of_its_kind_and_a_history_entry(ss):
    run = ss.create_run("work")
    started = ss.transition_run(run.id, "planning", reason="go", actor="me", owner_pid=PID)
    assert started.status == RunStatus.planning and started.owner_pid == PID
    assert started.started_at is not None and started.last_heartbeat_at is not None
    ss.transition_run(run.id, "paused", reason="later")
    ss.transition_run(run.id, "planning")
    failed = ss.transition_run(run.id, "failed", error="boom")
    assert (failed.status, failed.error) == (RunStatus.failed, "boom") and failed.completed_at is not None
    assert failed.started_at == started.started_at, "a run starts once"
    moves = [(e.type.value, e.payload.get("from"), e.payload.get("to")) for e in ss.events(run.id)][1:]
    assert moves == [("workflow.started", "draft", "planning"), ("workflow.paused", "planning", "paused"),
                     ("workflow.resumed", "paused", "planning"), ("workflow.failed", "planning", "failed")]
    first = ss.events(run.id, types=["workflow.started"])[0].payload
    assert (first["reason"], first["actor"]) == ("go", "me")
    assert ss.events(run.id, types=["workflow.failed"])[0].payload["error"] == "boom"
    history = ss.history(run.id)
    assert [(h.from_state, h.to_state) for h in history] == [
        (None, "draft"), ("draft", "planning"), ("planning", "paused"), ("paused", "planning"), ("planning", "failed")]
    assert (history[1].reason, history[1].actor, history[2].reason) == ("go", "me", "later")


def test_a_move_the_tables_do_not_list_is_invalid_naming_both_states_and_changes_nothing(ss):
    run = ss.create_run("work")
    ss.transition_run(run.id, "planning")
    before = (ss.get_run(run.id), len(ss.events(run.id)), len(ss.history(run.id)))
    with pytest.raises(Invalid, match="cannot move from 'planning' to 'completed'"):
        ss.transition_run(run.id, "completed")
    with pytest.raises(Invalid, match="unknown run state"):
        ss.transition_run(run.id, "sideways")
    assert (ss.get_run(run.id), len(ss.events(run.id)), len(ss.history(run.id))) == before
    ss.transition_run(run.id, "cancelled")
    with pytest.raises(Invalid, match="terminal"):
        ss.transition_run(run.id, "planning")


def test_guards_planning_needs_a_task_executing_a_plan_and_leaving_an_approval_a_decision(ss):
    blank = ss.create_run("   ")
    with pytest.raises(Invalid, match="planning needs a task"):
        ss.transition_run(blank.id, "planning")
    control = ss.create_run("given plan", mode="control")
    with pytest.raises(Invalid, match="executing needs a valid plan"):
        ss.transition_run(control.id, "executing")
    one_shot = ss.create_run("one step", mode="one_shot")
    assert ss.transition_run(one_shot.id, "executing").status == RunStatus.executing
    ss.put_plan(control.id, [{"key": "a"}])
    ss.transition_run(control.id, "executing")
    approval = ss.create_approval(control.id, "before_step")
    assert ss.get_run(control.id).status == RunStatus.waiting_approval
    with pytest.raises(Invalid, match="pending approval must be decided first"):
        ss.transition_run(control.id, "executing")
    ss.resolve_approval(approval.id, "approve")
    assert ss.transition_run(control.id, "executing").status == RunStatus.executing


def test_a_move_to_where_the_run_is_changes_nothing_and_expected_from_is_checked(ss):
    run = ss.create_run("work")
    ss.transition_run(run.id, "planning")
    events = len(ss.events(run.id))
    assert ss.transition_run(run.id, "planning").status == RunStatus.planning
    assert len(ss.events(run.id)) == events
    with pytest.raises(Conflict, match="planning"):
        ss.transition_run(run.id, "paused", expected_from=["executing"])
    assert ss.transition_run(run.id, "paused", expected_from=["planning"]).status == RunStatus.paused


def test_a_heartbeat_stamps_the_run_and_says_whether_a_pause_was_asked(ss):
    run = ss.create_run("work")
    ss.transition_run(run.id, "planning")
    beat = ss.heartbeat(run.id, owner_pid=PID)
    assert (beat.status, beat.pause_requested) == ("planning", False)
    after = ss.get_run(run.id)
    assert after.last_heartbeat_at == beat.last_heartbeat_at and after.owner_pid == PID
    ss.request_pause(run.id)
    assert ss.heartbeat(run.id).pause_requested is True
    assert ss.get_run(run.id).owner_pid == PID, "a heartbeat without a pid keeps the owner"


def test_a_pause_is_asked_of_a_running_run_only_and_cleared_when_it_runs_again(ss):
    run = ss.create_run("work")
    with pytest.raises(Conflict, match="only a running run can be paused"):
        ss.request_pause(run.id)
    ss.transition_run(run.id, "planning")
    asked = ss.request_pause(run.id)
    assert asked.pause_requested is True and asked.status == RunStatus.planning
    [event] = ss.events(run.id, types=["workflow.state_changed"])
    assert event.payload["pause_requested"] is True
    ss.transition_run(run.id, "paused")
    assert ss.transition_run(run.id, "planning").pause_requested is False


def test_an_update_merges_the_config_and_sets_model_and_task(ss):
    run = ss.create_run("old task", model="m1", config={"a": 1, "b": 2})
    out = ss.update_run(run.id, config={"b": 3, "c": 4}, model="m2", task="new task")
    assert (out.config, out.model, out.task) == ({"a": 1, "b": 3, "c": 4}, "m2", "new task")
    assert ss.get_run(run.id) == out
    assert ss.update_run(run.id).config == out.config
    with pytest.raises(Invalid, match="config must be an object"):
        ss.update_run(run.id, config=[1])


def test_unknown_and_malformed_run_ids(ss):
    missing = unknown("run")
    for call in (lambda: ss.get_run(missing), lambda: ss.transition_run(missing, "planning"),
                 lambda: ss.heartbeat(missing), lambda: ss.request_pause(missing), lambda: ss.update_run(missing),
                 lambda: ss.list_steps(missing)):
        with pytest.raises(NotFound, match=f"run {missing} does not exist in session {ss.session_id}"):
            call()
    with pytest.raises(Invalid, match="malformed run id"):
        ss.get_run("run_XYZ")
