"""Records put back from files (session.json, run.json, checkpoint files), each only if absent:
recovering twice changes nothing, and a store that still has a record keeps its own."""

from __future__ import annotations

from pathlib import Path

import pytest

from cmbagent_jupyter.core import CheckpointKind, Conflict, Invalid, NotFound, RunStatus, SessionStatus, StepStatus
from porttools import unknown


def test_a_session_is_put_back_once_under_its_id_and_a_name_taken_meanwhile_gets_a_suffix(port):
    sid = unknown("session")
    doc = {"id": sid, "name": "lost", "status": "archived", "quotas": {"max_cost_usd": 7},
           "created_at": "2025-01-01T00:00:00+00:00"}
    out = port.import_session(doc)
    assert (out.id, out.created, out.count, out.name) == (sid, True, 1, "lost")
    back = port.get_session(sid)
    assert (back.name, back.status, back.quotas.max_cost_usd, back.created_at.year) == (
        "lost", SessionStatus.archived, 7, 2025)
    assert Path(back.path).is_dir()
    assert port.import_session(doc).created is False
    [made] = port.session(sid).events()
    assert made.payload == {"name": "lost", "recovered": True}
    taken = port.create_session("taken")
    clash = port.import_session({"id": unknown("session"), "name": "taken"})
    assert clash.created and clash.name.startswith("taken (recovered ") and port.get_session(taken.id).name == "taken"
    for bad in ({"id": "ses_bad", "name": "x"}, {"id": unknown("session"), "name": "../x"},
                {"id": unknown("session"), "name": "x", "status": "lost"}, "not an object"):
        with pytest.raises(Invalid):
            port.import_session(bad)


def test_a_run_is_put_back_once_and_one_that_was_running_becomes_interrupted(port, ss):
    rid = unknown("run")
    doc = {"id": rid, "session_id": ss.session_id, "task": "lost run", "mode": "control", "status": "executing",
           "config": {"k": 1}, "started_at": "2025-01-01T00:00:00+00:00", "checkpoint_interval_s": 30}
    out = ss.import_run(doc)
    assert (out.id, out.created, out.status, out.was) == (rid, True, "interrupted", "executing")
    run = ss.get_run(rid)
    assert (run.status, run.task, run.config, run.checkpoint_interval_s, run.started_at.year) == (
        RunStatus.interrupted, "lost run", {"k": 1}, 30, 2025)
    assert Path(run.path).is_dir() and Path(run.path).parent == Path(ss.info().path) / "runs"
    assert [(h.from_state, h.to_state) for h in ss.history(rid)] == [(None, "executing"), ("executing", "interrupted")]
    again = ss.import_run(doc)
    assert (again.created, again.status) == (False, "interrupted")
    kept = ss.import_run({**doc, "id": unknown("run"), "status": "paused"})
    assert kept.status == "paused"
    as_was = ss.import_run({**doc, "id": unknown("run")}, interrupt_active=False)
    assert as_was.status == "executing"
    other = port.session(port.create_session("other").id)
    with pytest.raises(Conflict, match="another session"):
        other.import_run({**doc, "session_id": other.session_id})
    for bad in ({**doc, "id": unknown("run"), "session_id": other.session_id},
                {**doc, "id": unknown("run"), "status": "vanished"}, {**doc, "id": unknown("run"), "config": [1]},
                {**doc, "id": unknown("run"), "created_at": "yesterday"}):
        with pytest.raises(Invalid):
            ss.import_run(bad)


def test_steps_are_put_back_unless_stored_by_id_or_key(ss):
    run = ss.create_run("t", mode="control")
    [a] = ss.put_plan(run.id, [{"key": "a"}])
    new_b = unknown("step")
    out = ss.import_steps(run.id, [
        {"id": a.id, "key": "a", "status": "failed"},
        {"id": unknown("step"), "key": "a"},
        {"id": new_b, "key": "b", "number": 2, "status": "completed", "outputs": {"r": 1}, "depends_on": ["a"],
         "attempts": 2, "completed_at": "2025-01-01T00:00:00+00:00"},
    ])
    assert (out.id, out.created, out.count) == (run.id, True, 1)
    steps = {s.key: s for s in ss.list_steps(run.id)}
    assert steps["a"] == a and (steps["b"].id, steps["b"].status, steps["b"].outputs, steps["b"].attempts) == (
        new_b, StepStatus.completed, {"r": 1}, 2)
    assert ss.import_steps(run.id, [{"id": new_b, "key": "b"}]).count == 0
    other = ss.create_run("other", mode="control")
    with pytest.raises(Conflict, match="another run"):
        ss.import_steps(other.id, [{"id": new_b, "key": "z"}])
    with pytest.raises(Invalid):
        ss.import_steps(run.id, [{"key": "no id"}])
    with pytest.raises(NotFound):
        ss.import_steps(unknown("run"), [])


def test_a_checkpoint_file_is_put_back_once_inside_its_runs_folder_only(ss):
    run = ss.create_run("t", mode="control")
    [a] = ss.put_plan(run.id, [{"key": "a"}])
    cid = unknown("checkpoint")
    doc = {"id": cid, "kind": "timed", "step_id": a.id, "pickle_path": f"{run.path}/checkpoints/{cid}.pkl",
           "created_at": "2025-01-01T00:00:00+00:00"}
    out = ss.import_checkpoint(run.id, doc, {"completed": ["a"]})
    assert (out.id, out.created, out.count) == (cid, True, 1)
    latest = ss.latest_checkpoint(run.id)
    assert (latest.id, latest.kind, latest.step_id, latest.context, latest.created_at.year) == (
        cid, CheckpointKind.timed, a.id, {"completed": ["a"]}, 2025)
    assert ss.import_checkpoint(run.id, doc, {}).created is False
    replaced = ss.import_checkpoint(run.id, {"id": unknown("checkpoint"), "step_id": unknown("step")}, {})
    assert replaced.created and ss.latest_checkpoint(run.id).step_id is None
    with pytest.raises(Invalid, match="not inside the run's directory"):
        ss.import_checkpoint(run.id, {"id": unknown("checkpoint"), "pickle_path": "/etc/passwd"}, {})
    with pytest.raises(Invalid):
        ss.import_checkpoint(run.id, {"id": unknown("checkpoint"), "kind": "sometimes"}, {})
    assert len(ss.list_checkpoints(run.id)) == 2
