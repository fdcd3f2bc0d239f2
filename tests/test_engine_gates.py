"""Approval gates inside runs: the run waits in the store, a decision from anywhere moves it on."""

from __future__ import annotations

from pathlib import Path

from cmbagent_jupyter import open_session
from cmbagent_jupyter.core import ApprovalRequest, RunStatus
from fixtures.cli import cmbagent
from fixtures.engine import (  # noqa: F401 - fixture
    control_scenario,
    counting_code,
    engine_home,
    executions,
    plan_json,
    wait_event,
    write_scenario,
)


def _next_approval(handle, kind: str, seen: set[str]) -> ApprovalRequest:
    ev = wait_event(handle.ss, handle.id, lambda e: e["type"] == "approval.requested"
                    and e["payload"]["kind"] == kind and e["payload"]["approval_id"] not in seen,
                    what=f"a {kind} approval")
    seen.add(ev["payload"]["approval_id"])
    return ApprovalRequest.model_validate(handle.ss.get_approval(approval_id=ev["payload"]["approval_id"]))


def test_after_planning_the_run_waits_and_a_modification_goes_back_to_the_planner(engine_home: Path, tmp_path: Path):
    one = plan_json([{"key": "a", "sub_task": "first", "sub_task_agent": "engineer", "depends_on": []}])
    two = plan_json([{"key": "a", "sub_task": "first", "sub_task_agent": "engineer", "depends_on": []},
                     {"key": "b", "sub_task": "second", "sub_task_agent": "engineer", "depends_on": ["a"]}])
    scenario = write_scenario(tmp_path / "gate.yaml", [
        {"agent": "planner", "turn": 1, "content": one},
        {"agent": "planner", "turn": 2, "content": two},
        {"agent": "engineer", "step": "a", "content": counting_code("a")},
        {"agent": "engineer", "step": "b", "content": counting_code("b")},
    ])
    handle = open_session(home=engine_home).run("gated", scenario=str(scenario), n_plan_reviews=0,
                                                 approval_mode="after_planning", quiet=True)
    seen: set[str] = set()
    assert handle.wait_for_approval(60).kind == "after_planning"
    first = _next_approval(handle, "after_planning", seen)
    assert handle.status().status == RunStatus.waiting_approval
    assert [a.id for a in handle.approvals()] == [first.id]
    assert [s["key"] for s in first.request["plan"]["sub_tasks"]] == ["a"] and handle.steps() == []
    handle.ss.resolve_approval(first.id, "modify", feedback="Add a second step that checks the first.")
    second = _next_approval(handle, "after_planning", seen)
    assert [s["key"] for s in second.request["plan"]["sub_tasks"]] == ["a", "b"]
    planner = [c for c in handle._engine.model.config.calls if c.agent == "planner"]
    assert "Add a second step that checks the first." in planner[1].messages[-1]["text"]
    out = cmbagent(engine_home, "approve", second.id)
    assert out.returncode == 0, out.stderr
    run = handle.wait(60)
    assert run.status == RunStatus.completed, run.error
    assert executions(run.path) == ["a", "b"]
    decisions = [a.decision for a in handle.ss.list_approvals(run_id=run.id, pending_only=False)]
    assert decisions == ["modify", "approve"]


def test_a_gated_step_waits_and_a_rejection_with_feedback_runs_it_with_that_guidance(engine_home: Path,
                                                                                      tmp_path: Path):
    steps = [{"key": "s1", "depends_on": []}, {"key": "s2", "depends_on": ["s1"]}]
    scenario, plan = control_scenario(tmp_path / "steps.yaml", steps)
    handle = open_session(home=engine_home).run("two", mode="control", plan=plan, scenario=str(scenario),
                                                 approval_steps=["s2"], quiet=True)
    gate = _next_approval(handle, "before_each_step", set())
    by_key = {s.key: s for s in handle.steps()}
    assert gate.step_id == by_key["s2"].id and by_key["s1"].status.value == "completed"
    assert gate.options == ["approve", "reject", "modify", "abort"]
    assert executions(handle.status().path) == ["s1"], "s2 has not run before its approval"
    handle.ss.resolve_approval(gate.id, "reject", feedback="bin the spectrum more coarsely")
    run = handle.wait(60)
    assert run.status == RunStatus.completed, run.error
    assert executions(run.path) == ["s1", "s2"]
    engineer = [c for c in handle._engine.model.config.calls if c.agent == "engineer"]
    assert "bin the spectrum more coarsely" in engineer[-1].messages[-1]["text"]
    assert "bin the spectrum more coarsely" not in engineer[0].messages[-1]["text"]


def test_aborting_a_gated_step_fails_the_run_until_it_is_resumed(engine_home: Path, tmp_path: Path):
    steps = [{"key": "s1", "depends_on": []}, {"key": "s2", "depends_on": ["s1"]}]
    scenario, plan = control_scenario(tmp_path / "steps.yaml", steps)
    handle = open_session(home=engine_home).run("two", mode="control", plan=plan, scenario=str(scenario),
                                                 approval_steps=["s2"], quiet=True)
    seen: set[str] = set()
    gate = _next_approval(handle, "before_each_step", seen)
    handle.ss.resolve_approval(gate.id, "abort", feedback="not now")
    run = handle.wait(60)
    assert run.status == RunStatus.failed and "step 2 (s2) was rejected: not now" in run.error
    assert executions(run.path) == ["s1"]
    handle.resume()
    again = _next_approval(handle, "before_each_step", seen)
    handle.ss.resolve_approval(again.id, "approve")
    assert handle.wait(60).status == RunStatus.completed
    assert executions(run.path) == ["s1", "s2"]


def test_on_error_the_user_may_skip_the_failed_step(engine_home: Path, tmp_path: Path):
    scenario = write_scenario(tmp_path / "err.yaml", [
        {"agent": "engineer", "step": "bad", "content": counting_code("bad", fail=True)},
        {"agent": "engineer", "step": "next", "content": counting_code("next")}])
    plan = {"sub_tasks": [{"key": "bad", "sub_task": "breaks", "sub_task_agent": "engineer", "depends_on": []},
                          {"key": "next", "sub_task": "after", "sub_task_agent": "engineer", "depends_on": ["bad"]}]}
    handle = open_session(home=engine_home).run("t", mode="control", plan=plan, scenario=str(scenario),
                                                 max_n_attempts=1, approval_mode="on_error", quiet=True)
    gate = _next_approval(handle, "on_error", set())
    assert gate.options == ["retry", "modify", "skip", "abort"] and "ZeroDivisionError" in gate.request["error"]
    handle.ss.resolve_approval(gate.id, "skip")
    run = handle.wait(60)
    assert run.status == RunStatus.completed, run.error
    outputs = {s.key: s.outputs for s in handle.steps()}
    assert outputs["bad"]["skipped"] and executions(run.path) == ["next"]


def test_code_is_shown_before_it_runs(engine_home: Path, tmp_path: Path):
    scenario, plan = control_scenario(tmp_path / "code.yaml", [{"key": "only", "depends_on": []}])
    handle = open_session(home=engine_home).run("t", mode="control", plan=plan, scenario=str(scenario),
                                                 approval_mode="before_code_execution", quiet=True)
    gate = _next_approval(handle, "before_code_execution", set())
    assert "data/only.txt" in gate.request["code"] and executions(handle.status().path) == []
    handle.ss.resolve_approval(gate.id, "approve")
    assert handle.wait(60).status == RunStatus.completed
    assert executions(handle.status().path) == ["only"]
