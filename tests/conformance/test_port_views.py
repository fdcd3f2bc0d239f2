"""What the port shows across sessions: records found by their bare id, the runs overview, the
sessions' metrics, the dashboard's snapshot and the approvals waiting anywhere."""

from __future__ import annotations

import pytest

from cmbagent_jupyter.core import Invalid, NotFound, RunOverview, RunStatus
from porttools import PID, executing, record, unknown


def test_a_record_of_any_live_session_is_found_by_its_bare_id(port):
    one, two = (port.session(port.create_session(n).id) for n in ("one", "two"))
    run, (s1, _) = executing(two)
    approval = two.create_approval(run.id, "before_step")
    assert (port.find_run(run.id), port.find_step(s1.id), port.find_approval(approval.id)) == (
        two.get_run(run.id), two.get_step(s1.id), two.get_approval(approval.id))
    for find, kind in ((port.find_run, "run"), (port.find_step, "step"), (port.find_approval, "approval")):
        missing = unknown(kind)
        with pytest.raises(NotFound, match=f"{kind} {missing} does not exist"):
            find(missing)
        with pytest.raises(Invalid):
            find(f"{kind[:3]}_nope")
    two.transition_run(run.id, "cancelled")
    two.set_status("deleted")
    for find, entity in ((port.find_run, run.id), (port.find_step, s1.id), (port.find_approval, approval.id)):
        with pytest.raises(NotFound):
            find(entity)
    assert one.list_runs() == [] and port.pending_approvals() == []


def test_the_runs_overview_is_newest_first_with_session_name_step_counts_and_cost(port):
    ss = port.session(port.create_session("busy").id)
    other = port.session(port.create_session("quiet").id)
    old = ss.create_run("old")
    run, (s1, s2) = executing(ss)
    ss.advance(run.id, [record(1, start=[s1.id]), record(2, complete=[s1.id], start=[s2.id])])
    ss.add_costs([{"run_id": run.id, "model": "m", "cost_usd": 0.5}, {"run_id": run.id, "model": "m", "cost_usd": 1}])
    theirs = other.create_run("theirs")
    rows = port.runs_overview()
    assert [r.id for r in rows] == [theirs.id, run.id, old.id] and all(isinstance(r, RunOverview) for r in rows)
    mine = rows[1]
    assert (mine.session_name, mine.status, mine.steps_total, mine.steps_completed, mine.steps_running,
            mine.cost_usd, mine.owner_pid, mine.path) == ("busy", RunStatus.executing, 2, 1, 1, 1.5, PID, run.path)
    assert [r.id for r in port.runs_overview(session_id=ss.session_id)] == [run.id, old.id]
    assert [r.id for r in port.runs_overview(status="draft")] == [theirs.id, old.id]
    assert [r.id for r in port.runs_overview(status=["executing"], limit=1)] == [run.id]
    assert len(port.runs_overview(limit=2)) == 2
    other.set_status("deleted")
    assert theirs.id not in {r.id for r in port.runs_overview()}


def test_session_metrics_count_runs_by_status_time_the_finished_ones_and_sum_the_spending(port):
    ss = port.session(port.create_session("measured").id)
    done, _ = executing(ss)
    ss.settle(done.id, "completed", owner_pid=PID)
    ss.create_run("waiting")
    paused = ss.create_run("paused")
    ss.transition_run(paused.id, "planning")
    ss.transition_run(paused.id, "paused")
    ss.add_costs([{"model": "m", "cost_usd": 2.0}])
    port.create_session("empty")
    [mine, empty] = port.session_metrics()
    assert (mine.session_id, mine.name, mine.status) == (ss.session_id, "measured", "active")
    assert mine.runs_by_status == {"completed": 1, "draft": 1, "paused": 1}
    assert (mine.total_runs, mine.active_runs, mine.finished_runs, mine.total_cost_usd) == (3, 1, 1, 2.0)
    finished = ss.get_run(done.id)
    span = (finished.completed_at - finished.started_at).total_seconds()
    assert mine.mean_duration_s == pytest.approx(span, abs=1e-3)
    assert (empty.total_runs, empty.mean_duration_s, empty.runs_by_status) == (0, None, {})
    assert port.session_metrics(ss.session_id) == [mine]
    with pytest.raises(NotFound):
        port.session_metrics(unknown("session"))


def test_the_snapshot_is_what_a_dashboard_shows_at_one_point_of_the_store(port):
    ss = port.session(port.create_session("shown").id)
    other = port.session(port.create_session("other").id)
    long_task = "x" * 400
    run = ss.create_run(long_task, mode="control")
    steps = ss.put_plan(run.id, [{"key": "a"}])
    ss.add_costs([{"run_id": run.id, "model": "m", "cost_usd": 0.5}, {"model": "m", "cost_usd": 0.25}])
    approval = ss.create_approval(run.id, "after_planning")
    decided = ss.create_approval(run.id, "after_planning")
    ss.resolve_approval(decided.id, "approve")
    other.create_run("theirs")
    snap = port.snapshot()
    assert snap.gseq == port.ping().gseq
    assert {s.id: s.cost_usd for s in snap.sessions} == {ss.session_id: 0.75, other.session_id: 0.0}
    shown = next(r for r in snap.runs if r.id == run.id)
    assert shown.task == "x" * 300 + "..." and shown.cost_usd == 0.5 and len(snap.runs) == 2
    assert [a.id for a in snap.approvals] == [approval.id]
    scoped = port.snapshot(session_id=ss.session_id, run_id=run.id)
    assert [s.id for s in scoped.sessions] == [ss.session_id] and [r.id for r in scoped.runs] == [run.id]
    assert scoped.run == ss.get_run(run.id) and scoped.steps == steps
    with pytest.raises(NotFound):
        port.snapshot(session_id=unknown("session"))


def test_approvals_waiting_anywhere_and_decided_ones_on_request(port):
    one, two = (port.session(port.create_session(n).id) for n in ("one", "two"))
    first = one.create_approval(one.create_run("a").id, "k")
    second = two.create_approval(two.create_run("b").id, "k")
    one.resolve_approval(first.id, "approve")
    assert [a.id for a in port.pending_approvals()] == [second.id] == [a.id for a in port.list_approvals()]
    assert [a.id for a in port.list_approvals(pending_only=False)] == [first.id, second.id]
