"""Dual persistence: checkpoint files rebuild a lost or corrupted store; CMBAgent contexts import."""

from __future__ import annotations

import os
import pickle
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest

from cmbagent_jupyter.core import InvalidInput
from cmbagent_jupyter.store.local import stop_service
from cmbagent_jupyter.store import StorePort, open_store
from cmbagent_jupyter.store.checkpoints import CheckpointWriter, UnsafePickle, read_checkpoint_file
from cmbagent_jupyter.store.recovery import import_context

CMBAGENT_CONTEXT = {
    "main_task": "Measure the lensing power spectrum from the Planck maps",
    "final_plan": {"sub_tasks": [
        {"sub_task": "Load the maps", "sub_task_agent": "engineer", "bullet_points": ["read FITS", "mask"]},
        {"sub_task": "Interpret the spectrum", "sub_task_agent": "researcher", "bullet_points": []},
    ]},
    "number_of_steps_in_plan": 2,
    "current_plan_step_number": 1,
    "previous_steps_execution_summary": "step 1: maps loaded",
    "agent_for_sub_task": "engineer",
    "ells": np.arange(5),
}


class RunsShell:
    """Pickled, it makes the loader call os.system: what an unsafe pickle looks like."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def build_home(store: StorePort) -> dict:
    """Two sessions with runs in several states, checkpointed the way the engine does."""
    home = store.home
    s = store.create_session("Project X", {"max_cost_usd": 42})
    ss = store.session(s.id)
    writer = CheckpointWriter(ss, home)

    active = ss.create_run("fit the spectrum")
    steps = ss.put_plan(active.id, [{"key": "step_1", "description": "load"},
                                    {"key": "step_2", "description": "fit", "depends_on": ["step_1"]}])
    active = ss.transition_run(active.id, "executing")
    ss.transition_step(steps[0].id, "running")
    running_steps = ss.list_steps(active.id)
    ss.transition_step(steps[0].id, "completed", outputs={"maps": 2})
    # the pickle's step list was taken just before step 1 was marked completed
    writer.save(active, kind="step_complete", context={"main_task": "fit", "ells": np.arange(4)},
                steps=running_steps, step=steps[0])

    done = ss.create_run("already finished")
    ss.put_plan(done.id, [{"key": "step_1"}])
    ss.transition_run(done.id, "executing")
    done = ss.transition_run(done.id, "completed")
    writer.save(done, kind="manual", context={"result": "ok"})

    draft = ss.create_run("never started")

    cold = store.create_session("Old project")
    cold_ss = store.session(cold.id)
    paused = cold_ss.create_run("paused work")
    cold_ss.put_plan(paused.id, [{"key": "step_1"}])
    cold_ss.transition_run(paused.id, "executing")
    paused = cold_ss.transition_run(paused.id, "paused")
    CheckpointWriter(cold_ss, home).save(paused, kind="emergency", context={"where": "paused"})
    store.session(cold.id).set_status("archived")
    return {"session": s, "cold": cold, "active": active, "steps": steps, "done": done, "draft": draft,
            "paused": paused}


def lose_database(store: StorePort) -> None:
    home = store.home
    store.close()
    stop_service(home)
    (home / "store.duckdb").unlink()
    assert not (home / "store.duckdb.wal").exists()


def test_the_writer_saves_a_pickle_and_a_row(store, cmb_home):
    ss = store.session(store.create_session("cp").id)
    run = ss.create_run("t")
    [step] = ss.put_plan(run.id, [{"key": "step_1"}])
    context = {"main_task": "t", "ells": np.arange(3), "when": datetime(2026, 1, 1, tzinfo=timezone.utc)}

    cp = CheckpointWriter(ss, cmb_home).save(run, kind="step_complete", context=context, step=step)

    path = Path(cp.pickle_path)
    assert path.is_file() and path.parent == Path(run.path) / "checkpoints"
    doc = read_checkpoint_file(path, cmb_home)
    assert doc["run"]["id"] == run.id and doc["steps"][0]["id"] == step.id
    row = ss.latest_checkpoint(run.id)
    assert row.id == cp.id and row.pickle_path == str(path) and row.step_id == step.id
    assert row.context == {"main_task": "t", "ells": [0, 1, 2], "when": "2026-01-01T00:00:00+00:00"}
    exact = CheckpointWriter(ss, cmb_home).load_context(row)
    assert isinstance(exact["ells"], np.ndarray) and exact["ells"].tolist() == [0, 1, 2]


def test_recover_rebuilds_a_deleted_store_from_the_files(store, cmb_home, cli):
    built = build_home(store)
    lose_database(store)

    out = cli("recover", "--json")
    assert out.code == 0, out.stderr
    report = out.json()
    assert (report["sessions"], report["runs"], report["steps"], report["checkpoints"]) == (2, 4, 4, 3)
    assert report["interrupted"] == [built["active"].id] and report["skipped"] == []

    with open_store(cmb_home) as again:
        s = again.get_session(built["session"].id)
        assert s.name == "Project X" and s.quotas.max_cost_usd == 42
        assert again.get_session(built["cold"].id).status.value == "archived"
        ss = again.session(s.id)
        active = ss.get_run(built["active"].id)
        assert active.status.value == "interrupted" and active.task == "fit the spectrum"
        assert [h.to_state for h in ss.history(active.id)] == ["executing", "interrupted"]
        assert [(x.key, x.status.value) for x in ss.list_steps(active.id)] == [("step_1", "completed"),
                                                                             ("step_2", "pending")]
        cp = ss.latest_checkpoint(active.id)
        assert cp.kind.value == "step_complete" and cp.step_id == built["steps"][0].id
        assert CheckpointWriter(ss, cmb_home).load_context(cp)["ells"].tolist() == [0, 1, 2, 3]
        assert ss.get_run(built["done"].id).status.value == "completed"
        assert ss.get_run(built["draft"].id).status.value == "draft"
        assert again.session(built["cold"].id).get_run(built["paused"].id).status.value == "paused"
        # interrupted is resumable: the run can execute again
        assert ss.transition_run(active.id, "executing").status.value == "executing"

    second = cli("recover", "--json").json()
    assert (second["sessions"], second["runs"], second["steps"], second["checkpoints"]) == (0, 0, 0, 0)


def test_recover_moves_a_corrupted_database_aside_and_rebuilds(store, cmb_home, cli):
    built = build_home(store)
    store.close()
    stop_service(cmb_home)
    garbage = os.urandom(32 * 1024)
    (cmb_home / "store.duckdb").write_bytes(garbage)

    declined = cli("recover", input="n\n")
    assert declined.code == 1 and "cmbagent recover" in declined.stdout
    assert (cmb_home / "store.duckdb").read_bytes() == garbage

    out = cli("recover", "--yes")
    assert out.code == 0, out.stderr
    [kept] = list(cmb_home.glob("store.duckdb.corrupt-*"))
    assert kept.read_bytes() == garbage and "kept the unreadable database" in out.stdout
    assert "interrupted" in out.stdout and built["active"].id in out.stdout
    with open_store(cmb_home) as again:
        assert {s.name for s in again.list_sessions(include_archived=True)} == {"Project X", "Old project"}


def test_a_session_created_after_the_loss_keeps_its_name_and_the_recovered_one_is_renamed(store, cmb_home, cli):
    built = build_home(store)
    lose_database(store)
    with open_store(cmb_home) as fresh:
        newer = fresh.create_session("Project X")
    report = cli("recover", "--json").json()
    assert report["sessions"] == 2
    with open_store(cmb_home) as again:
        names = {s.id: s.name for s in again.list_sessions()}
    assert names[newer.id] == "Project X"
    assert names[built["session"].id].startswith("Project X (recovered")


def write_pickle(path: Path, obj) -> Path:
    path.write_bytes(pickle.dumps(obj))
    return path


def test_a_cmbagent_context_becomes_a_draft_run_with_its_plan(store, cmb_home, cli, tmp_path):
    store.create_session("Project X")
    ctx_file = write_pickle(tmp_path / "context_step_1.pkl", CMBAGENT_CONTEXT)

    out = cli("import-context", str(ctx_file), "--session", "Project X", "--json")
    assert out.code == 0, out.stderr
    doc = out.json()
    assert doc["run"]["status"] == "draft" and doc["steps"] == 2
    assert doc["run"]["task"] == CMBAGENT_CONTEXT["main_task"]

    ss = store.session(doc["run"]["session_id"])
    steps = ss.list_steps(doc["run"]["id"])
    assert [(s.key, s.agent) for s in steps] == [("step_1", "engineer"), ("step_2", "researcher")]
    assert "read FITS" in steps[0].description and steps[1].depends_on == ["step_1"]
    [cp] = ss.list_checkpoints(doc["run"]["id"])
    assert cp.kind.value == "manual"
    context = CheckpointWriter(ss, cmb_home).load_context(ss.latest_checkpoint(doc["run"]["id"]))
    assert context["previous_steps_execution_summary"] == "step 1: maps loaded"
    assert context["ells"].tolist() == [0, 1, 2, 3, 4]


def test_import_context_from_python_with_a_task(store, tmp_path):
    ss = store.session(store.create_session("py").id)
    run = import_context(ss, write_pickle(tmp_path / "ctx.pkl", CMBAGENT_CONTEXT), task="A new question")
    assert run.task == "A new question" and run.status.value == "draft"
    assert run.config["imported_context"] == str((tmp_path / "ctx.pkl").resolve())
    assert len(ss.list_steps(run.id)) == 2


def test_unsafe_pickles_are_refused_before_anything_runs(store, cli, tmp_path):
    ss = store.session(store.create_session("Project X").id)
    marker = tmp_path / "pwned"
    evil = write_pickle(tmp_path / "evil.pkl", {"main_task": "x", "payload": RunsShell(marker)})

    out = cli("import-context", str(evil), "--session", "Project X")
    assert out.code == 2 and "Traceback" not in out.stderr
    assert "refusing to load posix.system" in out.stderr
    with pytest.raises(UnsafePickle, match="posix.system"):
        import_context(ss, evil)
    assert not marker.exists()
    assert ss.list_runs() == []


def test_files_that_are_not_contexts_are_explained(store, cli, tmp_path):
    store.create_session("Project X")
    not_dict = write_pickle(tmp_path / "list.pkl", [1, 2])
    no_keys = write_pickle(tmp_path / "other.pkl", {"hello": 1})
    junk = tmp_path / "junk.pkl"
    junk.write_bytes(b"\x80\x05not a pickle")
    for path, complaint in [(not_dict, "holds a list, not a CMBAgent context dict"),
                            (no_keys, "does not look like a CMBAgent context"),
                            (junk, "is not a readable pickle"),
                            (tmp_path / "missing.pkl", "no context file")]:
        out = cli("import-context", str(path), "--session", "Project X")
        assert out.code == 2 and complaint in out.stderr and "Traceback" not in out.stderr


def test_pickles_outside_our_directories_are_not_loaded_as_checkpoints(store, cmb_home, cli, tmp_path):
    built = build_home(store)
    outside = tmp_path / "elsewhere.pkl"
    outside.write_bytes((Path(built["done"].path) / "checkpoints").glob("*.pkl").__next__().read_bytes())
    with pytest.raises(InvalidInput, match="only read from"):
        read_checkpoint_file(outside, cmb_home)

    link = Path(built["draft"].path) / "checkpoints" / "ckpt_link.pkl"
    link.symlink_to(outside)
    with pytest.raises(InvalidInput, match="only read from"):
        read_checkpoint_file(link, cmb_home)

    ss = store.session(built["session"].id)
    with pytest.raises(InvalidInput, match="not inside the run's directory"):
        ss.import_checkpoint(built["draft"].id, {"id": "ckp_0123456789abcdef", "kind": "manual",
                                                 "pickle_path": str(outside)}, {})

    lose_database(store)
    report = cli("recover", "--json").json()
    assert [s["path"] for s in report["skipped"]] == [str(link)]
    assert "only read from" in report["skipped"][0]["reason"]
    with open_store(cmb_home) as again:
        assert again.session(ss.session_id).list_checkpoints(built["draft"].id) == []


def test_recover_reports_what_it_cannot_read_and_goes_on(store, cmb_home, cli):
    built = build_home(store)
    lose_database(store)
    (cmb_home / "sessions" / "notes").mkdir()
    broken = cmb_home / "sessions" / "ses_00000000000000000bad"
    (broken / "runs").mkdir(parents=True)
    (broken / "session.json").write_text("{ not json")
    truncated = Path(built["done"].path) / "checkpoints" / "ckpt_truncated.pkl"
    truncated.write_bytes(pickle.dumps({"format": "x"})[:5])

    report = cli("recover", "--json").json()
    reasons = {Path(s["path"]).name: s["reason"] for s in report["skipped"]}
    assert reasons["notes"] == "not a session directory"
    assert "no readable session.json" in reasons[broken.name]
    assert "is not a readable pickle" in reasons[truncated.name]
    assert (report["sessions"], report["runs"], report["checkpoints"]) == (2, 4, 3)
