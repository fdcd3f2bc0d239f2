"""The run actions on a real store: start, pause, resume, cancel, and the executors that
continue a run here or in a process of its own."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from fixtures.engine import control_scenario
from fixtures.store import planned_run
from fixtures.waiting import wait_for

from cmbagent_jupyter import actions
from cmbagent_jupyter.actions import Detached, InProcess, executing_here
from cmbagent_jupyter.core import Conflict, InvalidInput, NotFound, QuotaExceeded, StateConflict

ARGV_SCRIPT = "import pathlib, sys; pathlib.Path(sys.argv[1]).write_text(' '.join(sys.argv[2:]))"


def recording(store, tmp_path: Path) -> tuple[Detached, Path]:
    """A detached executor whose command only writes down the argv it was given."""
    out = tmp_path / "argv.txt"
    command = [sys.executable, "-c", ARGV_SCRIPT, str(out), "resume", "{run_id}", "{session_id}"]
    return Detached(store.home, command, log_dir=tmp_path / "logs"), out


def owned_here(ss, run_id: str) -> None:
    """Make this process the run's owner, as an engine executing it would be."""
    ss.heartbeat(run_id, owner_pid=os.getpid())


# ---------------------------------------------------------------- start


def test_start_checks_everything_before_it_creates_a_run(store):
    session = store.create_session("start")
    ss = store.session(session.id)
    refusals = [
        (dict(task="  "), "a run needs a task"),
        (dict(task="t", mode="fast"), "unknown mode 'fast'"),
        (dict(task="t", mode="control"), "a control run executes a given plan"),
        (dict(task="t", plan={"sub_tasks": []}), "a plan is given only to control runs"),
        (dict(task="t", max_parallel=0), "max_parallel"),
        (dict(task="t", checkpoint_interval_s=-1), "checkpoint_interval_s must be positive"),
    ]
    for options, message in refusals:
        with pytest.raises(InvalidInput, match=message):
            actions.start_run(store, session.id, executor=None, **options)
    assert ss.list_runs() == [], "no half-made run is left behind"


def test_start_without_an_executor_leaves_a_draft_with_its_plan(store):
    session = store.create_session("draft")
    plan = {"sub_tasks": [{"key": "a", "sub_task": "one", "sub_task_agent": "engineer"},
                          {"key": "b", "sub_task": "two", "sub_task_agent": "engineer", "depends_on": ["a"]}]}
    started = actions.start_run(store, session.id, "two steps", executor=None, actor="tester", mode="control",
                                plan=plan, scenario="cmb_power_spectrum")
    ss = store.session(session.id)
    assert started.execution is None and started.run.status.value == "draft"
    assert started.model == "scripted:cmb_power_spectrum" and "scripted offline model" in started.announcement
    assert [s.key for s in ss.list_steps(started.run.id)] == ["a", "b"]
    assert ss.history(started.run.id)[0].actor == "tester"


def test_start_hands_the_run_to_the_executor_when_the_session_has_room(store, tmp_path):
    session = store.create_session("room")
    ss = store.session(session.id)
    executor, argv = recording(store, tmp_path)
    started = actions.start_run(store, session.id, "go", executor=executor, scenario="cmb_power_spectrum")
    assert started.execution.where == "detached" and started.execution.pid > 0
    assert wait_for(lambda: argv.exists() and argv.read_text(), what="the executor's command") == \
        f"resume {started.run.id} {session.id}"
    ss.set_quotas(max_concurrent_runs=0)
    with pytest.raises(QuotaExceeded, match="max_concurrent_runs"):
        actions.start_run(store, session.id, "no room", executor=executor)
    assert [r.id for r in ss.list_runs()] == [started.run.id]


# ---------------------------------------------------------------- pause and cancel


def test_pause_asks_a_live_run_and_pauses_one_whose_process_is_gone(store):
    ss, live, _ = planned_run(store, 1)
    owned_here(ss, live.id)
    asked = actions.pause(store, live.id, actor="tester")
    assert (asked.status.value, asked.pause_requested) == ("executing", True)

    _, orphan, _ = planned_run(store, 1, task="its process died")
    paused = actions.pause(store, orphan.id, session_id=ss.session_id, actor="tester")
    assert paused.status.value == "paused"
    assert (ss.history(orphan.id)[-1].reason, ss.history(orphan.id)[-1].actor) == (
        "paused while its process was gone", "tester")
    with pytest.raises(Conflict, match="only a running run can be paused"):
        actions.pause(store, orphan.id)


def test_cancel_is_recorded_with_its_actor_and_the_session_is_checked(store):
    ss, run, _ = planned_run(store, 1)
    other = store.create_session("someone else")
    with pytest.raises(NotFound, match=run.id):
        actions.cancel(store, run.id, session_id=other.id, actor="tester")
    cancelled = actions.cancel(store, run.id, session_id=ss.session_id, actor="tester")
    assert cancelled.status.value == "cancelled"
    assert (ss.history(run.id)[-1].to_state, ss.history(run.id)[-1].actor) == ("cancelled", "tester")


# ---------------------------------------------------------------- resume


def test_resume_refuses_what_cannot_go_on_and_hands_the_rest_to_the_executor(store, tmp_path):
    ss, run, steps = planned_run(store, 2)
    executor, argv = recording(store, tmp_path)
    owned_here(ss, run.id)
    with pytest.raises(StateConflict, match=f"run {run.id} is executing in process {os.getpid()}"):
        actions.resume(store, run.id, executor=executor)
    ss.transition_step(steps[0].id, "running")
    ss.transition_step(steps[0].id, "completed", outputs={"summary": "ok"})
    ss.transition_run(run.id, "interrupted")

    resumed = actions.resume(store, run.id, executor=executor, model="scripted:cmb_power_spectrum",
                             max_parallel=2)

    assert (resumed.state, resumed.steps_completed) == ("interrupted", 1)
    assert resumed.model == "scripted:cmb_power_spectrum"
    assert resumed.execution.log == str(tmp_path / "logs" / f"resume-{run.id}.log")
    said = wait_for(lambda: argv.exists() and argv.read_text(), what="the resume command")
    assert said == f"resume {run.id} {ss.session_id} --max-parallel 2"
    ss.transition_run(run.id, "cancelled")
    with pytest.raises(StateConflict, match="is cancelled; only a paused, interrupted, failed or stalled run"):
        actions.resume(store, run.id, executor=executor)


def test_resume_refuses_a_stopped_run_when_the_session_has_no_room(store, tmp_path):
    ss, busy, _ = planned_run(store, 1)
    _, stopped, _ = planned_run(store, 1, task="stopped")
    ss.transition_run(stopped.id, "interrupted")
    ss.set_quotas(max_concurrent_runs=1)
    executor, argv = recording(store, tmp_path)
    with pytest.raises(QuotaExceeded, match="1 active run\\(s\\) of 1 allowed"):
        actions.resume(store, stopped.id, executor=executor)
    assert not argv.exists() and not (tmp_path / "logs").exists()


def test_a_run_executes_here_once_and_cancel_stops_it_here(engine_home, tmp_path):
    scenario, plan = control_scenario(tmp_path / "gate.yaml", [{"key": "s1", "depends_on": []}])
    store = actions.process_store(engine_home)
    session = actions.session_for(store, "here")
    started = actions.start_run(store, session.id, "wait for me", executor=InProcess(), mode="control", plan=plan,
                                scenario=str(scenario), approval_mode="before_each_step")
    ss = store.session(session.id)
    wait_for(lambda: ss.list_approvals(started.run.id), 60, "the run to wait for a decision")
    assert executing_here(started.run.id) is started.execution
    with pytest.raises(StateConflict, match="already executing in this process"):
        actions.resume(store, started.run.id, executor=InProcess())

    actions.cancel(store, started.run.id, actor="tester")

    run = started.execution.future.result(timeout=60)
    assert run.status.value == "cancelled" and executing_here(run.id) is None


# ---------------------------------------------------------------- sessions


def test_a_session_is_found_by_name_or_made_and_several_must_be_chosen(store):
    default = actions.session_for(store)
    assert default.name == "default" and actions.session_for(store).id == default.id
    made = actions.session_for(store, "Project X")
    assert store.resolve_session("Project X").id == made.id
    with pytest.raises(NotFound):
        actions.session_for(store, "Project Y", create=False)
    with pytest.raises(NotFound):
        actions.session_for(store, "ses_0123456789abcdef0123")
    actions.session_for(store, "Project Z")
    store.session(default.id).set_status("deleted")
    with pytest.raises(InvalidInput, match="several sessions exist: pick one"):
        actions.session_for(store, None, choose="pick one")
