"""What a session records along its runs: checkpoints, its history, costs, files and metrics."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from cmbagent_jupyter.core import CheckpointKind, Conflict, CostRow, Invalid, NotFound
from cmbagent_jupyter.store.port import FileRecord, NewCost, NewFile, NewMetric
from porttools import executing, unknown


# ---------------------------------------------------------------- checkpoints


def test_checkpoints_are_listed_oldest_first_and_the_latest_comes_with_its_context(ss):
    run, (s1, _) = executing(ss)
    assert ss.latest_checkpoint(run.id) is None and ss.list_checkpoints(run.id) == []
    chosen = unknown("checkpoint")
    first = ss.put_checkpoint(run.id, kind="manual", context={"n": 1})
    second = ss.put_checkpoint(run.id, kind=CheckpointKind.timed, context={"n": 2}, step_id=s1.id,
                               pickle_path=f"{run.path}/checkpoints/c.pkl", checkpoint_id=chosen)
    assert (second.id, second.kind, second.step_id, second.context) == (chosen, CheckpointKind.timed, s1.id, {"n": 2})
    listed = ss.list_checkpoints(run.id)
    assert [c.id for c in listed] == [first.id, chosen] and all(c.context == {} for c in listed)
    assert ss.latest_checkpoint(run.id) == second
    saved = [e.payload for e in ss.events(run.id, types=["checkpoint.saved"])]
    assert saved == [{"checkpoint_id": first.id, "kind": "manual", "step_id": None},
                     {"checkpoint_id": chosen, "kind": "timed", "step_id": s1.id}]


def test_a_checkpoint_is_refused_for_a_bad_kind_a_foreign_step_or_an_id_taken(ss):
    run, _ = executing(ss)
    taken = ss.put_checkpoint(run.id)
    with pytest.raises(Invalid, match="checkpoint kind"):
        ss.put_checkpoint(run.id, kind="whenever")
    with pytest.raises(NotFound, match="does not exist in session"):
        ss.put_checkpoint(run.id, step_id=unknown("step"))
    with pytest.raises(Conflict, match=taken.id):
        ss.put_checkpoint(run.id, checkpoint_id=taken.id)
    with pytest.raises(NotFound):
        ss.latest_checkpoint(unknown("run"))
    assert [c.id for c in ss.list_checkpoints(run.id)] == [taken.id]


# ---------------------------------------------------------------- history


def test_the_history_holds_every_move_of_the_session_its_runs_and_steps_in_time_order(ss):
    run = ss.create_run("t", mode="control")
    [a] = ss.put_plan(run.id, [{"key": "a"}])
    ss.transition_run(run.id, "executing")
    ss.transition_step(a.id, "running")
    everything = ss.history()
    assert [(h.entity_type, h.entity_id, h.to_state) for h in everything] == [
        ("session", ss.session_id, "active"), ("run", run.id, "draft"), ("run", run.id, "executing"),
        ("step", a.id, "running")]
    assert [h.at for h in everything] == sorted(h.at for h in everything)
    assert all(h.session_id == ss.session_id for h in everything)
    assert [h.to_state for h in ss.history(a.id)] == ["running"]
    assert ss.history(unknown("run")) == []


# ---------------------------------------------------------------- costs


def test_costs_are_recorded_with_their_tokens_and_announced_per_run(ss):
    run, (s1, s2) = executing(ss)
    total = ss.add_costs([
        NewCost(run_id=run.id, step_id=s1.id, agent="engineer", model="gpt-x", prompt_tokens=100,
                completion_tokens=20, cost_usd=0.5),
        {"run_id": run.id, "step_id": s2.id, "agent": "researcher", "model": "gpt-y", "cost_usd": 0.25,
         "total_tokens": 7},
        {"agent": "planner", "model": "gpt-x", "priced": False},
    ])
    assert total == 0.75
    first, second, third = ss.cost_records()
    assert (first.total_tokens, first.session_id, first.priced) == (120, ss.session_id, True)
    assert (second.total_tokens, third.model, third.cost_usd, third.priced, third.run_id) == (7, "gpt-x", 0.0,
                                                                                            False, None)
    assert [c.id for c in ss.cost_records(run.id)] == [first.id, second.id]
    [update] = ss.events(run.id, types=["cost.update"])
    assert update.payload["cost_usd"] == 0.75 and [r["model"] for r in update.payload["records"]] == [
        "gpt-x", "gpt-y"]
    assert len(ss.events(types=["cost.update"])) == 2, "one per run, and one for the session's own"


@pytest.mark.parametrize("bad", [{"cost_usd": -1}, {"prompt_tokens": -5}, {"cost_usd": True},
                                 {"cost_usd": "a lot"}, {"completion_tokens": -0.75}])
def test_a_negative_or_non_numeric_amount_is_invalid_and_nothing_of_the_batch_is_kept(ss, bad):
    with pytest.raises(Invalid, match="non-negative number"):
        ss.add_costs([{"model": "m", "cost_usd": 0.1}, {"model": "m", **bad}])
    assert ss.cost_records() == [] and ss.usage().cost_usd == 0.0


def test_costs_are_summed_by_any_of_run_step_agent_and_model(port, ss):
    run, (s1, s2) = executing(ss)
    ss.add_costs([{"run_id": run.id, "step_id": s1.id, "agent": "engineer", "model": "a", "cost_usd": 1.0,
                   "prompt_tokens": 10},
                  {"run_id": run.id, "step_id": s1.id, "agent": "engineer", "model": "a", "cost_usd": 2.0,
                   "completion_tokens": 5},
                  {"run_id": run.id, "step_id": s2.id, "agent": "researcher", "model": "b", "cost_usd": 4.0,
                   "priced": False}])
    default = ss.cost_summary()
    assert [(r.agent, r.model, r.calls, r.cost_usd, r.prompt_tokens, r.completion_tokens, r.total_tokens,
             r.priced) for r in default] == [("engineer", "a", 2, 3.0, 10, 5, 15, True),
                                              ("researcher", "b", 1, 4.0, 0, 0, 0, False)]
    assert all(isinstance(r, CostRow) and r.run_id is None for r in default)
    by_step = ss.cost_summary(run.id, group_by=["step_id"])
    assert [(r.step_id, r.cost_usd) for r in by_step] == sorted([(s1.id, 3.0), (s2.id, 4.0)])
    assert [(r.run_id, r.calls) for r in ss.cost_summary(group_by=["run_id"])] == [(run.id, 3)]
    assert ss.cost_summary(unknown("run")) == []
    with pytest.raises(Invalid, match="group_by"):
        ss.cost_summary(group_by=["price"])
    other = port.session(port.create_session("other").id)
    other.add_costs([{"model": "a", "cost_usd": 0.5}])
    across = {r.session_id: r.cost_usd for r in port.cost_summary(group_by=["session_id"])}
    assert across == {ss.session_id: 7.0, other.session_id: 0.5}
    assert [(r.model, r.cost_usd) for r in port.cost_summary(group_by=["model"])] == [("a", 3.5), ("b", 4.0)]
    other.set_status("deleted")
    assert {r.session_id for r in port.cost_summary(group_by=["session_id"])} == {ss.session_id}


# ---------------------------------------------------------------- files and metrics


def test_files_are_recorded_with_their_kind_and_size_and_announced(ss):
    run, (s1, _) = executing(ss)
    out = ss.record_files([NewFile(path="control/codebase/fit.py", kind="code", size=120, run_id=run.id,
                                   step_id=s1.id), NewFile(path="notes.md")])
    assert all(isinstance(f, FileRecord) for f in out)
    assert [(f.path, f.kind, f.size, f.run_id, f.step_id, f.session_id) for f in out] == [
        ("control/codebase/fit.py", "code", 120, run.id, s1.id, ss.session_id),
        ("notes.md", "other", None, None, None, ss.session_id)]
    assert ss.list_files() == out and ss.list_files(run.id) == out[:1]
    [created] = ss.events(run.id, types=["file.created"])
    assert created.payload == {"path": "control/codebase/fit.py", "kind": "code", "size": 120, "step_id": s1.id}


@pytest.mark.parametrize("bad", [{"path": ""}, {"path": "x" * 4097}, {"path": "a", "kind": "binary"},
                                 {"path": "a", "size": -1}, {"path": "a", "size": 1.5}])
def test_a_bad_file_is_invalid_and_nothing_of_the_batch_is_kept(ss, bad):
    with pytest.raises(Invalid):
        ss.record_files([{"path": "fine.py"}, bad])
    assert ss.list_files() == []


def test_metrics_are_recorded_listed_by_run_and_name_and_announced(ss):
    run, _ = executing(ss)
    when = datetime(2025, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    assert ss.record_metrics([NewMetric(name="chi2", value=1.5, run_id=run.id, at=when),
                              NewMetric(name="chi2", value=1.25, run_id=run.id),
                              NewMetric(name="loss", value=3)]) == 3
    chi2 = ss.list_metrics(run_id=run.id, name="chi2")
    assert [(m.value, m.session_id) for m in chi2] == [(1.5, ss.session_id), (1.25, ss.session_id)]
    assert chi2[0].at == when
    assert [m.name for m in ss.list_metrics(name="loss")] == ["loss"] and len(ss.list_metrics()) == 3
    assert [e.payload for e in ss.events(run.id, types=["metric.update"])] == [
        {"name": "chi2", "value": 1.5}, {"name": "chi2", "value": 1.25}]
    for bad in ({"name": "", "value": 1}, {"name": "x", "value": "high"}, {"name": "x", "value": True},
                {"name": "x", "value": 1, "at": "yesterday"}):
        with pytest.raises(Invalid):
            ss.record_metrics([bad])
    assert len(ss.list_metrics()) == 3
