"""The step journal: a boundary is durable once journaled; the store catches up behind it.

A run whose store updates are held back (the CMBAGENT_TEST_HOLD_STORE_FLUSH hook) and
that is SIGKILLed after its journal recorded a step loses nothing: the resume in a new
process applies the journal first and never runs that step again. `engine.advance_many`
applies each journal record once, however often it is sent.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import pytest

from cmbagent_jupyter.store.checkpoint_files import JOURNAL_NAME, StepJournal
from cmbagent_jupyter.engine.ledger import HOLD_FLUSH_ENV
from cmbagent_jupyter.core.errors import Conflict, NotFound
from cmbagent_jupyter.store.local import stop_service
from cmbagent_jupyter.store import StorePort, open_store
from cmbagent_jupyter.store.local.recover import recover
from fixtures.cli import cli_env, cmbagent, cmbagent_command
from fixtures.engine import control_scenario, engine_home, executions  # noqa: F401 - fixture
from fixtures.waiting import wait_with_deadline as wait_for

STEPS = [{"key": "a", "depends_on": []}, {"key": "b", "depends_on": ["a"]}, {"key": "c", "depends_on": ["b"]}]


def _completed_in_journal(path: Path) -> set[str]:
    return {c["key"] for r in StepJournal.read(path)[0] for c in r["complete"]}


def _session(store: StorePort, name: str):
    try:
        return store.resolve_session(name)
    except NotFound:
        return None


def _run_held_then_kill(home: Path, tmp_path: Path, name: str) -> tuple[StorePort, object, Path]:
    """Start a run whose flusher never sends, SIGKILL it once step a is in its journal."""
    scenario, plan = control_scenario(tmp_path / f"{name}.yaml", STEPS, sleep_s=0.4)
    plan_file = tmp_path / f"{name}.json"
    plan_file.write_text(json.dumps(plan))
    proc = subprocess.Popen([*cmbagent_command(), "run", "held", "--mode", "control", "--plan", str(plan_file),
                             "--scenario", str(scenario), "--session", name, "--json"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=cli_env(home, **{HOLD_FLUSH_ENV: "1"}))
    store = open_store(home)
    try:
        session = wait_for(lambda: _session(store, name), 60, f"session {name}")
        ss = store.session(session.id)
        run = wait_for(lambda: (ss.list_runs() or [None])[0], 60, "the run")
        journal = Path(run.path) / "checkpoints" / JOURNAL_NAME
        wait_for(lambda: "a" in _completed_in_journal(journal), 60, "step a in the journal")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    except BaseException:
        store.close()
        raise
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return store, ss, journal


def test_a_kill_after_the_journal_append_but_before_the_store_flush_loses_nothing(engine_home: Path,
                                                                                   tmp_path: Path):
    store, ss, journal = _run_held_then_kill(engine_home, tmp_path, "held")
    try:
        run = ss.list_runs()[0]
        at_kill = {s.key: s.status.value for s in ss.list_steps(run.id)}
        assert at_kill["a"] != "completed", f"the store was held back, yet it has a completed: {at_kill}"
        assert executions(Path(run.path)) == ["a"]
        resumed = cmbagent(engine_home, "resume", run.id, "--json", timeout=180)
        assert resumed.returncode == 0, resumed.stderr[-2000:]
        assert ss.get_run(run.id).status.value == "completed"
        counts = Counter(executions(Path(run.path)))
        assert counts == {"a": 1, "b": 1, "c": 1}, f"a was journaled as done, so it never runs again: {counts}"
        steps = {s.key: s for s in ss.list_steps(run.id)}
        assert all(s.status.value == "completed" for s in steps.values())
        assert steps["a"].attempts == 1 and steps["a"].outputs == json.loads(json.dumps(steps["a"].outputs))
        # the store caught up with the whole journal, both processes' records
        records = StepJournal.read(journal)[0]
        assert [r["seq"] for r in records] == list(range(1, len(records) + 1))
        assert ss.advance(run_id=run.id, records=[]).journal_seq == records[-1]["seq"]
        completions = [e for e in ss.events(run.id) if e.type.value == "step.completed"]
        assert sorted(e.payload["key"] for e in completions) == ["a", "b", "c"]
    finally:
        store.close()


def test_recover_replays_the_journal_into_the_store(engine_home: Path, tmp_path: Path):
    store, ss, journal = _run_held_then_kill(engine_home, tmp_path, "recover")
    try:
        run = ss.list_runs()[0]
        assert ss.list_steps(run.id)[0].status.value != "completed"
        store.close()
        report = recover(engine_home)
        assert report.journal_records >= 1, report.to_dict()
        store = open_store(engine_home)
        ss = store.session(run.session_id)
        steps = {s.key: s for s in ss.list_steps(run.id)}
        assert steps["a"].status.value == "completed" and steps["a"].outputs["summary"]
        assert steps["b"].status.value == "running", "b was started in the journal and is re-run on resume"
        assert recover(engine_home).journal_records == 0, "a second recovery finds nothing new"
    finally:
        store.close()


def test_a_lost_store_is_rebuilt_from_run_json_and_the_journal_before_the_first_snapshot(engine_home: Path,
                                                                                        tmp_path: Path):
    """A new run whose config lists its steps is not snapshotted at its first completion: if
    the store is lost, `recover` builds the steps from the plan in run.json and replays the
    journal over them."""
    store, ss, journal = _run_held_then_kill(engine_home, tmp_path, "lost")
    try:
        run = ss.list_runs()[0]
        assert not list((Path(run.path) / "checkpoints").glob("*.pkl"))
    finally:
        store.close()
    stop_service(engine_home)
    for name in ("store.duckdb", "store.duckdb.wal"):
        (engine_home / name).unlink(missing_ok=True)
    report = recover(engine_home)
    assert (report.runs, report.steps) == (1, 3) and report.journal_records >= 1, report.to_dict()
    store = open_store(engine_home)
    try:
        steps = {s.key: s for s in store.session(run.session_id).list_steps(run.id)}
        assert {k: s.status.value for k, s in steps.items()} == {"a": "completed", "b": "running", "c": "pending"}
        assert steps["a"].outputs["summary"] and [s.number for s in steps.values()] == [1, 2, 3]
        assert steps["c"].depends_on == ["b"]
    finally:
        store.close()


def test_step_snapshots_are_synced_only_for_a_run_whose_steps_run_json_cannot_rebuild(engine_home: Path,
                                                                                        monkeypatch):
    """A run whose config lists its steps is rebuilt from run.json and the journal: its step
    snapshots are written (atomically) without an fsync, and its first completion is not
    snapshotted. Any other run's are, as before."""
    import asyncio

    from cmbagent_jupyter.api import create_run
    from cmbagent_jupyter.store import checkpoint_files
    from cmbagent_jupyter.engine.ledger import StepLedger
    from cmbagent_jupyter.engine.runner import RunEngine
    from cmbagent_jupyter.core import Session, Step

    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(checkpoint_files.os, "fsync", fsync)

    async def step(s, ctx):
        return {"summary": f"{s.key} done", "files": [], "figures": []}

    store = open_store(engine_home)
    try:
        ss = store.session(store.create_session("snapshots").id)
        plan = {"sub_tasks": [{"key": k, "sub_task": k, "sub_task_agent": "engineer", "depends_on": d}
                              for k, d in (("a", []), ("b", ["a"]), ("c", ["b"]))]}
        run, _ = create_run(ss, "planned", mode="control", plan=plan)
        assert asyncio.run(RunEngine(store, run, step_runner=step).execute()).status.value == "completed"
        pickles = sorted((Path(run.path) / "checkpoints").glob("*.pkl"))
        assert len(pickles) == 1, "only the one when every step is done"
        assert not [p for p in synced if "ckpt_" in p], synced
        session = Session.model_validate(ss.info().model_dump())
    finally:
        store.close()

    steps = [Step(session_id=run.session_id, run_id=run.id, id=run.config["step_ids"][k], key=k, number=i + 1,
                  agent="engineer", status="pending") for i, k in enumerate("abc")]
    files = checkpoint_files.CheckpointFiles(run, session)
    planned = StepLedger(None, files, steps, lambda outputs: {})
    assert (planned._sync_snapshots, planned._since_snapshot) == (False, 0)
    # steps kept from an earlier plan (not the ids the config lists): synced, snapshotted at once
    other = [st.model_copy(update={"id": f"step_{'0' * 19}{i}"}) for i, st in enumerate(steps)]
    kept = StepLedger(None, files, other, lambda outputs: {})
    assert (kept._sync_snapshots, kept._since_snapshot) == (True, None)


@pytest.fixture
def executing_run(engine_home: Path):
    """A control run of two steps (s2 after s1) that this process claimed to execute: the
    store, the session, the run and the steps; the store is closed afterwards."""
    store = open_store(engine_home)
    try:
        ss = store.session(store.create_session("journal").id)
        run = ss.create_run("journal", mode="control")
        steps = ss.put_plan(run.id, [{"key": "s1", "description": "one"},
                                     {"key": "s2", "description": "two", "depends_on": ["s1"]}])
        ss.claim(run_id=run.id, to="executing", owner_pid=os.getpid())
        yield store, ss, run, steps
    finally:
        store.close()


def _at(second: int) -> str:
    return datetime(2026, 1, 1, 0, 0, second, tzinfo=timezone.utc).isoformat()


def test_advance_many_applies_each_record_once(executing_run):
    store, ss, run, (s1, s2) = executing_run
    records = [
        {"seq": 1, "at": _at(1), "start": [s1.id]},
        {"seq": 2, "at": _at(2), "complete": [{"step_id": s1.id, "outputs": {"summary": "one"},
                                               "checkpoint": {"id": "ckp_0123456789abcdef",
                                                              "kind": "step_complete", "context": {"d": 1}}}],
         "start": [s2.id]},
    ]
    first = ss.advance(run_id=run.id, owner_pid=os.getpid(), records=records)
    assert first.applied == 2 and first.journal_seq == 2 and first.run_status == "executing"

    def state():
        steps = {s.key: (s.status.value, s.attempts, s.outputs) for s in ss.list_steps(run.id)}
        kinds = Counter(e.type.value for e in ss.events(run.id))
        return steps, kinds, len(ss.list_checkpoints(run.id)), len(ss.history(s1.id))

    after_first = state()
    assert after_first[0] == {"s1": ("completed", 1, {"summary": "one"}), "s2": ("running", 1, {})}
    assert after_first[1]["step.completed"] == 1 and after_first[1]["step.started"] == 2
    assert after_first[2] == 1
    again = ss.advance(run_id=run.id, owner_pid=os.getpid(), records=records)
    assert again.applied == 0 and again.journal_seq == 2
    replayed = ss.advance(run_id=run.id, records=records, replay=True)
    assert replayed.applied == 0
    assert state() == after_first, "the same records sent again change nothing"
    # the seen ones skipped, the new one applied
    more = records + [{"seq": 3, "at": _at(3), "complete": [{"step_id": s2.id, "outputs": {"summary": "two"}}]}]
    third = ss.advance(run_id=run.id, owner_pid=os.getpid(), records=more)
    assert third.applied == 1 and third.journal_seq == 3
    assert {s.key: s.status.value for s in ss.list_steps(run.id)} == {"s1": "completed", "s2": "completed"}
    assert Counter(e.type.value for e in ss.events(run.id))["step.completed"] == 2
    completed_at = {s.key: s.completed_at for s in ss.list_steps(run.id)}
    assert completed_at["s1"] == datetime(2026, 1, 1, 0, 0, 2, tzinfo=timezone.utc), "the journal's time"


def test_advance_many_refuses_what_the_ledger_forbids(executing_run):
    store, ss, run, (s1, s2) = executing_run
    done = [{"seq": 1, "at": _at(1), "start": [s1.id]},
            {"seq": 2, "at": _at(2), "complete": [{"step_id": s1.id, "outputs": {}}]}]
    ss.advance(run_id=run.id, records=done)
    twice = [{"seq": 3, "at": _at(3), "complete": [{"step_id": s1.id, "outputs": {"x": 1}}]}]
    with pytest.raises(Conflict, match="completed already"):
        ss.advance(run_id=run.id, records=twice)
    with pytest.raises(Conflict, match="executed by process"):
        ss.advance(run_id=run.id, owner_pid=os.getpid() + 1,
                records=[{"seq": 3, "at": _at(3), "start": [s2.id]}])
    assert ss.advance(run_id=run.id, records=[]).journal_seq == 2
    assert {s.key: (s.status.value, s.outputs) for s in ss.list_steps(run.id)} == {
        "s1": ("completed", {}), "s2": ("pending", {})}


def test_advance_many_refuses_a_hole_in_the_journal(executing_run):
    """A batch lost on its way must not let a later one skip it: the store says where it is."""
    store, ss, run, (s1, s2) = executing_run
    later = [{"seq": 2, "at": _at(2), "start": [s1.id]}]
    with pytest.raises(Conflict, match="out of order: the store has up to seq 0, this batch starts at 2"):
        ss.advance(run_id=run.id, owner_pid=os.getpid(), records=later)
    assert ss.advance(run_id=run.id, records=[]).journal_seq == 0
    assert {s.key: s.status.value for s in ss.list_steps(run.id)} == {"s1": "pending", "s2": "pending"}
    # a replay (recovery of what a journal on disk proves) applies what it has
    assert ss.advance(run_id=run.id, records=later, replay=True).applied == 1


def test_settle_applies_the_last_records_and_moves_the_run_in_one_transaction(executing_run):
    store, ss, run, (s1, s2) = executing_run
    records = [{"seq": 1, "at": _at(1), "start": [s1.id]},
               {"seq": 2, "at": _at(2), "complete": [{"step_id": s1.id, "outputs": {"summary": "one"},
                                                      "checkpoint": {"id": "ckp_00000000000000000001",
                                                                     "kind": "step_complete"}}],
                "start": [s2.id]},
               {"seq": 3, "at": _at(3), "complete": [{"step_id": s2.id, "outputs": {"summary": "two"}}]}]
    bad = [*records[:2], {"seq": 3, "at": _at(3), "complete": [{"step_id": s1.id, "outputs": {}}]}]
    with pytest.raises(Conflict, match="completed already"):
        ss.settle(run_id=run.id, to="completed", records=bad, owner_pid=os.getpid())
    assert ss.get_run(run.id).status.value == "executing", "nothing of a refused settle is kept"
    assert {s.status.value for s in ss.list_steps(run.id)} == {"pending"}
    out = ss.settle(run_id=run.id, to="completed", records=records, owner_pid=os.getpid(),
                  reason="all steps completed")
    assert out.run.status == "completed"
    assert {s.key: s.status.value for s in ss.list_steps(run.id)} == {"s1": "completed", "s2": "completed"}
    [cp] = ss.list_checkpoints(run.id)
    latest = ss.latest_checkpoint(run_id=run.id)
    assert cp.id == latest.id == "ckp_00000000000000000001" and latest.context == {"completed": ["s1"]}
    completed = [e for e in ss.events(run.id) if e.type.value == "step.completed"]
    assert [e.payload.get("checkpoint_id") for e in completed] == ["ckp_00000000000000000001", None]


def test_a_snapshot_of_the_journal_is_a_checkpoint_with_its_file_shown_from_its_events(executing_run):
    """A record whose completions were snapshotted names the file: the checkpoint is listed and
    loaded with it (from the events, like any journal checkpoint), and checkpoint.saved announces it."""
    store, ss, run, (s1, s2) = executing_run
    snapshot = str(Path(run.path) / "checkpoints" / "ckpt_snapshot.pkl")
    records = [{"seq": 1, "at": _at(1), "start": [s1.id, s2.id]},
               {"seq": 2, "at": _at(2), "complete": [
                   {"step_id": s1.id, "outputs": {"summary": "one"},
                    "checkpoint": {"id": "ckp_00000000000000000002", "kind": "step_complete", "pickle_path": snapshot}},
                   {"step_id": s2.id, "outputs": {"summary": "two"}}]}]
    ss.settle(run_id=run.id, to="completed", records=records, owner_pid=os.getpid())
    [cp] = ss.list_checkpoints(run.id)
    latest = ss.latest_checkpoint(run.id)
    assert (cp.id, cp.pickle_path, cp.step_id) == ("ckp_00000000000000000002", snapshot, s1.id)
    assert (latest.id, latest.pickle_path, latest.context) == (cp.id, snapshot, {"completed": ["s1", "s2"]})
    saved = [e.payload for e in ss.events(run.id) if e.type.value == "checkpoint.saved"]
    assert saved == [{"checkpoint_id": cp.id, "kind": "step_complete", "step_id": s1.id, "pickle_path": snapshot}]


def test_group_sync_journal_survives_its_process_at_once_and_reaches_the_disk(tmp_path: Path):
    """`append` returns with the line in the OS (a process killed right after loses nothing);
    `wait_durable` returns once a group fdatasync covered it; a bad mode is named."""
    script = (
        "import os, sys\n"
        "from cmbagent_jupyter.store.checkpoint_files import StepJournal\n"
        "j = StepJournal(sys.argv[1], sync='group')\n"
        "j.open()\n"
        "for i in range(1, 51):\n"
        "    j.append({'seq': i, 'complete': [], 'fail': [], 'start': []})\n"
        "os.kill(os.getpid(), 9)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path / "killed")],
                          env=cli_env(tmp_path / "home"), capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    records, _ = StepJournal.read(tmp_path / "killed" / "checkpoints" / JOURNAL_NAME)
    assert [r["seq"] for r in records] == list(range(1, 51))

    journal = StepJournal(tmp_path / "run", sync="group")
    journal.open()
    for i in range(1, 21):
        journal.append({"seq": i, "complete": [], "fail": [], "start": []})
    assert journal.wait_durable(timeout=30) and journal.durable
    journal.close()
    assert journal.last_seq == 20 and len(journal.records()) == 20
    with pytest.raises(ValueError, match="journal sync must be one of group, boundary, not 'sometimes'"):
        StepJournal(tmp_path / "run", sync="sometimes")


def test_a_journal_made_while_the_claim_is_in_flight_never_touches_one_that_exists(tmp_path: Path):
    """`create` (a new run's journal, made before its claim has answered) makes and opens a
    journal that does not exist yet; one that exists (another process may be appending to it)
    is left exactly as it is, torn tail included, for `open` once the run is claimed."""
    new = StepJournal(tmp_path / "new")
    assert new.create() and new.is_open and new.last_seq == 0
    new.append({"seq": 1, "complete": [], "fail": [], "start": []})
    new.close()
    assert [r["seq"] for r in new.records()] == [1]

    path = tmp_path / "other" / "checkpoints" / JOURNAL_NAME
    path.parent.mkdir(parents=True)
    body = b'{"seq": 1, "complete": [], "fail": [], "start": []}\n{"seq": 2, "comp'
    path.write_bytes(body)
    other = StepJournal(tmp_path / "other")
    assert other.create() is False and not other.is_open
    assert path.read_bytes() == body
    assert other.open() == 1 and path.read_bytes() == body.split(b"\n")[0] + b"\n"
    other.close()


def test_journal_sync_and_context_files_are_run_settings_checked_where_they_come_in(engine_home: Path):
    from cmbagent_jupyter.api import create_run
    from cmbagent_jupyter.core import InvalidInput

    store = open_store(engine_home)
    try:
        ss = store.session(store.create_session("settings").id)
        plan = {"sub_tasks": [{"key": "a", "sub_task": "one", "sub_task_agent": "engineer"}]}
        with pytest.raises(InvalidInput, match="run setting journal_sync"):
            create_run(ss, "bad sync", mode="control", plan=plan, journal_sync="sometimes")
        assert ss.list_runs() == [], "nothing is created on bad input"
        run, _ = create_run(ss, "boundary", mode="control", plan=plan, journal_sync="boundary", context_files=True)
        assert run.config["journal_sync"] == "boundary" and run.config["context_files"] is True
    finally:
        store.close()


def test_a_resent_claim_whose_first_try_was_applied_is_answered_not_refused(engine_home: Path):
    """The claim's reply (the steps) stays out of the request ledger: a resend of an applied
    claim (the connection was lost before its reply) finds the run moved by the same owner."""
    store = open_store(engine_home)
    try:
        ss = store.session(store.create_session("claim").id)
        run = ss.create_run("claim", mode="control")
        ss.put_plan(run.id, [{"key": "s1", "description": "one"}])
        args = {"session_id": ss.session_id, "run_id": run.id, "to": "executing", "owner_pid": os.getpid(),
                "allowed_from": ["draft"]}
        first = store.client._call("engine.claim", args, None, "0123456789abcdef0123456789abcdef", False)
        again = store.client._call("engine.claim", args, None, "0123456789abcdef0123456789abcdef", True)
        assert again["run"]["status"] == first["run"]["status"] == "executing"
        assert [s["id"] for s in again["steps"]] == [s["id"] for s in first["steps"]]
        assert [h.to_state for h in ss.history(run.id)].count("executing") == 1
        with pytest.raises(Conflict, match="owned by process"):
            store.client._call("engine.claim", args, None, "fedcba9876543210fedcba9876543210", False)
    finally:
        store.close()


def test_a_resent_settle_whose_first_try_was_applied_is_answered_and_another_owner_is_refused(executing_run):
    """The settle stays out of the request ledger too: a resend of an applied settle (its
    checkpoint went in with the first try) finds the run moved; a process that does not own
    the run cannot settle it."""
    store, ss, run, (s1, _s2) = executing_run
    with pytest.raises(Conflict, match="now executed by process"):
        ss.settle(run_id=run.id, to="paused", owner_pid=os.getpid() + 1)
    args = {"session_id": ss.session_id, "run_id": run.id, "to": "paused", "owner_pid": os.getpid(),
            "records": [{"seq": 1, "at": _at(1), "start": [s1.id]}],
            "checkpoint": {"id": "ckp_00000000000000000009", "kind": "manual", "context": {"why": "pause"}}}
    first = store.client._call("engine.settle", args, None, "00112233445566778899aabbccddeeff", False)
    again = store.client._call("engine.settle", args, None, "00112233445566778899aabbccddeeff", True)
    assert again["run"]["status"] == first["run"]["status"] == "paused"
    assert [c.id for c in ss.list_checkpoints(run.id)] == ["ckp_00000000000000000009"]
    assert [h.to_state for h in ss.history(run.id)].count("paused") == 1
    assert [h.to_state for h in ss.history(s1.id)] == ["running"]


def test_a_draft_whose_plan_changed_after_it_was_handed_over_runs_the_stored_plan(engine_home: Path):
    """The claim of a new draft builds its steps from the run it was handed while the store
    answers; when the store's draft has another plan by then, the stored one is executed."""
    import asyncio

    from cmbagent_jupyter.api import create_run
    from cmbagent_jupyter.engine.dag import plan_from_data
    from cmbagent_jupyter.engine.runner import RunEngine, plan_request

    ran: list[str] = []

    async def step(s, ctx):
        ran.append(s.key)
        return {"summary": f"{s.key} done", "files": [], "figures": []}

    store = open_store(engine_home)
    try:
        ss = store.session(store.create_session("stale").id)
        first = [{"key": k, "sub_task": k, "sub_task_agent": "engineer", "depends_on": d}
                 for k, d in (("a", []), ("b", ["a"]), ("c", ["b"]))]
        handed, _ = create_run(ss, "stale draft", mode="control", plan={"sub_tasks": first})
        other = plan_from_data({"sub_tasks": [{"key": "x", "sub_task": "x", "sub_task_agent": "engineer"},
                                              {"key": "y", "sub_task": "y", "sub_task_agent": "engineer",
                                               "depends_on": ["x"]}]}, agents=["engineer"])
        ss.plan_ready(run_id=handed.id, start=False, **plan_request(other))
        assert set(handed.config["step_ids"]) == {"a", "b", "c"}, "the object handed over keeps the first plan"
        out = asyncio.run(RunEngine(store, handed, step_runner=step).execute())
        assert out.status.value == "completed"
        assert ran == ["x", "y"]
        assert {s.key: s.status.value for s in ss.list_steps(handed.id)} == {"x": "completed", "y": "completed"}
    finally:
        store.close()
