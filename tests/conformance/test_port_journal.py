"""The engine's calls: plan_ready, claim, advance (the step journal) and settle.

Journal records are applied in seq order and each once; a hole is refused unless it is a
replay; a completed step is never recorded twice; a process that does not own the run is
refused; a claim takes a run over only from an owner found dead, recording the crash first,
and of two claims racing one wins; a settle applies what the store lacks with the move, and
sending it again changes nothing.
"""

from __future__ import annotations

import threading
from collections import Counter

import pytest

from cmbagent_jupyter.core import Conflict, Invalid, NotFound, RunStatus, StepStatus
from cmbagent_jupyter.store.port import NewCheckpoint, PlanStep
from porttools import OTHER_PID, PID, at, chain, executing, record, unknown


def state(ss, run_id: str):
    """What a journal batch changes: the steps, the events by type, checkpoints and history."""
    steps = {s.key: (s.status.value, s.attempts, s.outputs) for s in ss.list_steps(run_id)}
    kinds = Counter(e.type.value for e in ss.events(run_id))
    return steps, kinds, [c.id for c in ss.list_checkpoints(run_id)], len(ss.history())


# ---------------------------------------------------------------- advance


def test_records_are_applied_once_each_by_their_seq(ss):
    run, (s1, s2) = executing(ss)
    records = [record(1, start=[s1.id]),
               record(2, complete=[{"step_id": s1.id, "outputs": {"summary": "one"},
                                    "checkpoint": {"id": "ckp_0123456789abcdef", "context": {"d": 1}}}],
                      start=[s2.id])]
    first = ss.advance(run.id, records, owner_pid=PID)
    assert (first.applied, first.journal_seq, first.run_status, first.pause_requested) == (2, 2, "executing", False)
    after = state(ss, run.id)
    assert after[0] == {"s1": ("completed", 1, {"summary": "one"}), "s2": ("running", 1, {})}
    assert (after[1]["step.completed"], after[1]["step.started"]) == (1, 2) and after[2] == ["ckp_0123456789abcdef"]
    again = ss.advance(run.id, records, owner_pid=PID)
    assert (again.applied, again.journal_seq) == (0, 2)
    assert ss.advance(run.id, records, replay=True).applied == 0
    assert state(ss, run.id) == after, "the same records sent again change nothing"
    more = ss.advance(run.id, records + [record(3, complete=[(s2.id, {"summary": "two"})])], owner_pid=PID)
    assert (more.applied, more.journal_seq) == (1, 3)
    steps = {s.key: s for s in ss.list_steps(run.id)}
    assert {k: s.status for k, s in steps.items()} == {"s1": StepStatus.completed, "s2": StepStatus.completed}
    assert steps["s1"].completed_at == at(2) and steps["s2"].started_at == at(2), "the journal's times"
    assert (steps["s1"].progress, steps["s1"].error) == (1.0, None)


def test_a_step_move_of_the_journal_is_an_event_naming_its_record_and_a_history_entry(ss):
    run, (s1, _) = executing(ss)
    ss.advance(run.id, [record(1, start=[s1.id]), record(2, fail=[(s1.id, "it broke")])], actor="engine")
    started, failed = ss.events(run.id, types=["step.started", "step.failed"])
    assert (started.payload["journal_seq"], started.payload["from"], started.payload["to"]) == (1, "pending",
                                                                                                "running")
    assert (failed.payload["journal_seq"], failed.payload["error"], failed.payload["actor"]) == (2, "it broke",
                                                                                                "engine")
    assert failed.seq == started.seq + 1
    history = ss.history(s1.id)
    assert [(h.from_state, h.to_state, h.at, h.actor) for h in history] == [
        ("pending", "running", at(1), "engine"), ("running", "failed", at(2), "engine")]
    assert ss.get_step(s1.id).error == "it broke"


def test_a_completed_step_is_never_recorded_twice_and_another_process_is_refused(ss):
    run, (s1, s2) = executing(ss)
    ss.advance(run.id, [record(1, start=[s1.id]), record(2, complete=[(s1.id, {})])])
    before = state(ss, run.id)
    with pytest.raises(Conflict, match="completed already"):
        ss.advance(run.id, [record(3, complete=[(s1.id, {"x": 1})])])
    with pytest.raises(Conflict, match="executed by process"):
        ss.advance(run.id, [record(3, start=[s2.id])], owner_pid=OTHER_PID)
    with pytest.raises(Conflict, match="cannot move from 'completed' to 'running'"):
        ss.advance(run.id, [record(3, start=[s1.id])])
    assert state(ss, run.id) == before and ss.advance(run.id, []).journal_seq == 2


def test_a_hole_in_the_journal_is_refused_unless_it_is_a_replay(ss):
    run, (s1, _) = executing(ss)
    later = [record(2, start=[s1.id])]
    with pytest.raises(Conflict, match="out of order: the store has up to seq 0, this batch starts at 2"):
        ss.advance(run.id, later, owner_pid=PID)
    assert ss.advance(run.id, []).journal_seq == 0 and ss.get_step(s1.id).status == StepStatus.pending
    replayed = ss.advance(run.id, later, replay=True)
    assert (replayed.applied, replayed.journal_seq) == (1, 2) and ss.get_step(s1.id).status == StepStatus.running


def test_a_batch_is_applied_whole_or_not_at_all(ss):
    run, (s1, s2) = executing(ss)
    before = state(ss, run.id)
    bad = [record(1, start=[s1.id]), record(2, complete=[(s2.id, {})])]  # s2 never started
    with pytest.raises(Conflict, match="cannot move from 'pending' to 'completed'"):
        ss.advance(run.id, bad)
    assert state(ss, run.id) == before and ss.advance(run.id, []).journal_seq == 0
    with pytest.raises(Invalid, match="appears twice"):
        ss.advance(run.id, [record(1, start=[s1.id]), record(1, start=[s2.id])])
    assert state(ss, run.id) == before


def test_records_of_a_run_that_is_not_running_are_refused_and_a_replay_never_undoes_a_completion(ss):
    run, (s1, s2) = executing(ss)
    ss.advance(run.id, [record(1, start=[s1.id]), record(2, complete=[(s1.id, {"v": 1})])])
    ss.transition_run(run.id, "paused")
    with pytest.raises(Conflict, match="not recorded any more"):
        ss.advance(run.id, [record(3, start=[s2.id])])
    # a replay applies what a journal proves, whatever the run's state; a completed step stays so
    out = ss.advance(run.id, [record(3, start=[s1.id, s2.id]), record(4, fail=[(s1.id, "late")])], replay=True)
    assert (out.applied, out.journal_seq, out.run_status) == (2, 4, "paused")
    assert {s.key: (s.status.value, s.outputs) for s in ss.list_steps(run.id)} == {
        "s1": ("completed", {"v": 1}), "s2": ("running", {})}
    ss.transition_run(run.id, "cancelled")
    assert ss.advance(run.id, [record(5, complete=[(s2.id, {})])], replay=True).applied == 0
    assert ss.get_step(s2.id).status == StepStatus.running, "nothing is recorded on a run that ended"


def test_records_naming_steps_outside_the_run_or_malformed_are_invalid(ss):
    run, _ = executing(ss)
    other, (o1, _) = executing(ss, "x1", "x2")
    with pytest.raises(Invalid, match="not steps of run"):
        ss.advance(run.id, [record(1, start=[o1.id])])
    with pytest.raises(Invalid):
        ss.advance(run.id, [record(1, start=["stp_nope"])])
    assert ss.advance(run.id, []).journal_seq == 0 and ss.get_step(o1.id).status == StepStatus.pending


def test_without_records_advance_is_the_runs_signal(ss):
    run, _ = executing(ss)
    ss.request_pause(run.id)
    signal = ss.advance(run.id, [])
    assert (signal.run_status, signal.pause_requested, signal.journal_seq, signal.applied) == (
        "executing", True, 0, 0)


def test_the_checkpoint_of_a_records_completions_is_listed_with_what_it_completed(ss):
    run, (s1, s2) = executing(ss)
    snapshot = f"{run.path}/checkpoints/snapshot.pkl"
    ss.advance(run.id, [record(1, start=[s1.id, s2.id]), record(2, complete=[
        {"step_id": s1.id, "outputs": {"a": 1}, "checkpoint": {"id": "ckp_00000000000000000002",
                                                                "kind": "step_complete", "pickle_path": snapshot}},
        {"step_id": s2.id, "outputs": {"b": 2}}])])
    [cp] = ss.list_checkpoints(run.id)
    latest = ss.latest_checkpoint(run.id)
    assert (cp.id, cp.pickle_path, cp.step_id, cp.created_at) == ("ckp_00000000000000000002", snapshot, s1.id, at(2))
    assert (latest.id, latest.context) == (cp.id, {"completed": ["s1", "s2"]})
    completed = ss.events(run.id, types=["step.completed"])
    assert [e.payload.get("checkpoint_id") for e in completed] == [cp.id, cp.id]
    saved = [e.payload for e in ss.events(run.id, types=["checkpoint.saved"])]
    assert saved == [{"checkpoint_id": cp.id, "kind": "step_complete", "step_id": s1.id, "pickle_path": snapshot}]


# ---------------------------------------------------------------- plan_ready


def _plan_config(*keys: str) -> dict:
    return {"final_plan": {"sub_tasks": [{"key": k, "sub_task": f"do {k}"} for k in keys]}}


def test_a_draft_gets_its_plan_without_starting_and_a_claim_starts_it(ss):
    run = ss.create_run("given plan", mode="control", config={"kept": True})
    out = ss.plan_ready(run.id, chain("a", "b"), config=_plan_config("a", "b"), dag={"nodes": [{"id": "a"}]},
                        mermaid="graph TD", start=False)
    assert out.run.status == RunStatus.draft and [s.key for s in out.steps] == ["a", "b"]
    assert out.run.config["kept"] is True and out.run.config["final_plan"] == _plan_config("a", "b")["final_plan"]
    [dag] = ss.events(run.id, types=["dag.created"])
    assert dag.payload == {"dag": {"nodes": [{"id": "a"}]}, "mermaid": "graph TD"}
    claimed = ss.claim(run.id, owner_pid=PID, allowed_from=["draft"], with_session=True)
    assert (claimed.run.status, claimed.run.owner_pid, claimed.journal_seq) == (RunStatus.executing, PID, 0)
    assert [s.key for s in claimed.steps] == ["a", "b"] and claimed.session.id == ss.session_id


def test_a_plan_with_every_step_id_chosen_is_not_sent_back_and_neither_is_the_drafts_claim(ss):
    run = ss.create_run("given plan", mode="control")
    ids = [unknown("step"), unknown("step")]
    with pytest.raises(Invalid, match="needs an id for every step"):
        ss.plan_ready(run.id, chain("a", "b"), config=_plan_config("a", "b"), start=False, return_steps=False)
    plan = [PlanStep(id=i, **s) for i, s in zip(ids, chain("a", "b"))]
    out = ss.plan_ready(run.id, plan, config=_plan_config("a", "b"), start=False, return_steps=False)
    assert (out.steps, out.stored, out.kept) == (None, 2, [])
    assert [s.id for s in ss.list_steps(run.id)] == ids
    claimed = ss.claim(run.id, owner_pid=PID, allowed_from=["draft"], return_steps=False)
    assert claimed.steps is None and claimed.run.status == RunStatus.executing


def test_a_plan_made_while_planning_starts_the_run_and_a_new_plan_keeps_the_completed_steps(ss):
    run = ss.create_run("research", mode="deep_research")
    assert ss.claim(run.id, owner_pid=PID).run.status == RunStatus.planning
    out = ss.plan_ready(run.id, chain("a", "b"), config=_plan_config("a", "b"), owner_pid=PID, reason="planned",
                        checkpoint=NewCheckpoint(kind="step_complete", context={"plan": 1}))
    assert (out.run.status, out.run.owner_pid) == (RunStatus.executing, PID)
    assert ss.latest_checkpoint(run.id).context == {"plan": 1}
    a = out.steps[0]
    ss.advance(run.id, [record(1, start=[a.id]), record(2, complete=[(a.id, {"done": 1})])], owner_pid=PID)
    ss.transition_run(run.id, "planning", reason="re-plan")
    replanned = ss.plan_ready(run.id, [PlanStep(id=unknown("step"), **s) for s in chain("a", "c")],
                              config=_plan_config("a", "c"), owner_pid=PID, return_steps=False)
    assert (replanned.stored, replanned.kept) == (1, ["a"]) and replanned.run.status == RunStatus.executing
    steps = {s.key: s for s in ss.list_steps(run.id)}
    assert set(steps) == {"a", "c"} and steps["a"].id == a.id and steps["a"].outputs == {"done": 1}


def test_a_plan_is_refused_once_the_run_has_moved_on(ss):
    run, _ = executing(ss)
    with pytest.raises(Conflict, match="a plan is stored while it is draft or planning"):
        ss.plan_ready(run.id, chain("z"))
    research = ss.create_run("research")
    ss.claim(research.id, owner_pid=PID)
    with pytest.raises(Conflict, match="only on a draft run"):
        ss.plan_ready(research.id, chain("z"), start=False)
    assert ss.list_steps(research.id) == []


# ---------------------------------------------------------------- claim


def test_a_claim_plans_a_research_run_executes_a_planned_one_and_refuses_what_it_cannot(ss):
    research = ss.create_run("research")
    assert ss.claim(research.id, to="auto", owner_pid=PID).run.status == RunStatus.planning
    control = ss.create_run("no plan", mode="control")
    with pytest.raises(Invalid, match="has no plan to execute"):
        ss.claim(control.id, owner_pid=PID)
    with pytest.raises(Invalid, match="no steps to execute"):
        ss.claim(control.id, to="executing", owner_pid=PID)
    with pytest.raises(Invalid, match="claimed to plan or to execute"):
        ss.claim(control.id, to="completed", owner_pid=PID)
    ss.put_plan(control.id, chain("a"))
    with pytest.raises(Conflict, match="expected one of paused"):
        ss.claim(control.id, to="executing", owner_pid=PID, allowed_from=["paused"])
    assert ss.get_run(control.id).status == RunStatus.draft
    assert ss.claim(control.id, to="executing", owner_pid=PID).run.status == RunStatus.executing


def test_a_running_run_is_taken_over_only_from_the_owner_found_dead_recording_the_crash(ss):
    run, _ = executing(ss)
    with pytest.raises(Conflict, match=f"owned by process {PID}"):
        ss.claim(run.id, to="executing", owner_pid=OTHER_PID)
    with pytest.raises(Conflict, match=f"owned by process {PID}"):
        ss.claim(run.id, to="executing", owner_pid=OTHER_PID, stale_owner_pid=OTHER_PID + 1)
    taken = ss.claim(run.id, to="executing", owner_pid=OTHER_PID, stale_owner_pid=PID,
                     allowed_from=["paused", "interrupted"])
    assert (taken.run.status, taken.run.owner_pid) == (RunStatus.executing, OTHER_PID)
    moves = [(h.from_state, h.to_state, h.reason) for h in ss.history(run.id)][-2:]
    assert moves == [("executing", "interrupted", f"owner process {PID} is gone"),
                     ("interrupted", "executing", "resumed")]


def test_of_two_claims_racing_one_wins_and_the_other_gets_conflict(ss):
    for _ in range(3):
        run = ss.create_run("race", mode="control")
        ss.put_plan(run.id, chain("a"))
        barrier = threading.Barrier(2)
        outcomes: dict[int, object] = {}

        def claim(pid: int) -> None:
            barrier.wait()
            try:
                outcomes[pid] = ss.claim(run.id, to="executing", owner_pid=pid, allowed_from=["draft"])
            except Conflict as exc:
                outcomes[pid] = exc

        threads = [threading.Thread(target=claim, args=(pid,)) for pid in (PID, OTHER_PID)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        winners = [pid for pid, out in outcomes.items() if not isinstance(out, Conflict)]
        assert len(outcomes) == 2 and len(winners) == 1, outcomes
        assert ss.get_run(run.id).owner_pid == winners[0]
        assert [h.to_state for h in ss.history(run.id)].count("executing") == 1


# ---------------------------------------------------------------- settle


def test_a_settle_applies_the_last_records_with_the_move_or_nothing_at_all(ss):
    run, (s1, s2) = executing(ss)
    records = [record(1, start=[s1.id]),
               record(2, complete=[{"step_id": s1.id, "outputs": {"summary": "one"},
                                    "checkpoint": {"id": "ckp_00000000000000000001", "kind": "step_complete"}}],
                      start=[s2.id]),
               record(3, complete=[(s2.id, {"summary": "two"})])]
    bad = [*records[:2], record(3, complete=[(s1.id, {})])]
    with pytest.raises(Conflict, match="completed already"):
        ss.settle(run.id, "completed", records=bad, owner_pid=PID)
    assert ss.get_run(run.id).status == RunStatus.executing, "nothing of a refused settle is kept"
    assert {s.status for s in ss.list_steps(run.id)} == {StepStatus.pending}
    out = ss.settle(run.id, "completed", records=records, owner_pid=PID, reason="all steps completed")
    assert out.run.status == RunStatus.completed and out.run.completed_at is not None
    assert {s.key: s.status.value for s in ss.list_steps(run.id)} == {"s1": "completed", "s2": "completed"}
    assert ss.advance(run.id, []).journal_seq == 3
    latest = ss.latest_checkpoint(run.id)
    assert (latest.id, latest.context) == ("ckp_00000000000000000001", {"completed": ["s1"]})
    assert ss.events(run.id)[-1].type.value == "workflow.completed"
    with pytest.raises(Conflict, match="completed already"):
        ss.settle(run.id, "failed")


def test_a_settle_sent_again_changes_nothing_and_another_owner_is_refused(ss):
    run, (s1, _) = executing(ss)
    with pytest.raises(Conflict, match="now executed by process"):
        ss.settle(run.id, "paused", owner_pid=OTHER_PID)
    args = dict(owner_pid=PID, records=[record(1, start=[s1.id])], reason="pause asked",
                checkpoint=NewCheckpoint(id="ckp_00000000000000000009", kind="manual", context={"why": "pause"}))
    first = ss.settle(run.id, "paused", **args)
    second = ss.settle(run.id, "paused", **args)
    assert first.run.status == second.run.status == RunStatus.paused and second.run == ss.get_run(run.id)
    assert [c.id for c in ss.list_checkpoints(run.id)] == ["ckp_00000000000000000009"]
    assert [h.to_state for h in ss.history(run.id)].count("paused") == 1
    assert [h.to_state for h in ss.history(s1.id)] == ["running"]
    assert len(ss.events(run.id, types=["workflow.paused"])) == 1


def test_a_settle_sets_in_flight_steps_back_and_records_the_error(ss):
    run, (s1, s2) = executing(ss)
    ss.advance(run.id, [record(1, start=[s1.id])])
    with pytest.raises(Invalid, match="pending, cancelled or failed"):
        ss.settle(run.id, "failed", reset_steps=[s1.id], reset_to="completed")
    out = ss.settle(run.id, "failed", reset_steps=[s1.id, s2.id], reset_to="failed", error="boom",
                    reason="step s1 failed")
    assert (out.run.status, out.run.error) == (RunStatus.failed, "boom")
    assert {s.key: s.status.value for s in ss.list_steps(run.id)} == {"s1": "failed", "s2": "pending"}
    [reset] = ss.events(run.id, types=["step.state_changed"])
    assert (reset.payload["step_id"], reset.payload["from"], reset.payload["to"]) == (s1.id, "running", "failed")
    assert ss.events(run.id, types=["workflow.failed"])[0].payload["error"] == "boom"
    with pytest.raises(Conflict):
        ss.settle(run.id, "paused", expected_from=["executing"])


def test_the_engines_calls_on_unknown_runs_are_not_found(ss):
    missing = unknown("run")
    for call in (lambda: ss.plan_ready(missing, chain("a")), lambda: ss.claim(missing, owner_pid=PID),
                 lambda: ss.advance(missing, []), lambda: ss.settle(missing, "paused")):
        with pytest.raises(NotFound, match=missing):
            call()
