"""Approval gates as a user meets them: decided from another process, rejected with feedback,
timed out, waited on without CPU, and surviving the death of the process that waits."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import psutil

from cmbagent_jupyter import open_session
from cmbagent_jupyter.core import ApprovalRequest, RunStatus
from fixtures.cli import cli_env, cmbagent, cmbagent_command
from fixtures.engine import (  # noqa: F401 - fixture
    control_scenario,
    counting_code,
    engine_home,
    executions,
    plan_json,
    wait_event,
    write_scenario,
)
from fixtures.waiting import wait_with_deadline as wait_for


def _approval(handle, kind: str, seen: set[str] = frozenset()) -> ApprovalRequest:
    ev = wait_event(handle.ss, handle.id, lambda e: e["type"] == "approval.requested"
                    and e["payload"]["kind"] == kind and e["payload"]["approval_id"] not in seen,
                    what=f"a {kind} approval")
    return ApprovalRequest.model_validate(handle.ss.get_approval(approval_id=ev["payload"]["approval_id"]))


def test_an_approval_from_another_process_moves_the_run_on_within_a_second(engine_home: Path, tmp_path: Path):
    scenario, plan = control_scenario(tmp_path / "two.yaml", [{"key": "s1", "depends_on": []},
                                                              {"key": "s2", "depends_on": ["s1"]}])
    handle = open_session(home=engine_home).run("t", mode="control", plan=plan, scenario=str(scenario),
                                                 approval_steps=["s2"], quiet=True)
    gate = _approval(handle, "before_each_step")
    assert handle.status().status == RunStatus.waiting_approval and executions(handle.status().path) == ["s1"]
    sub = handle.ss.subscribe(run_id=handle.id, types=["workflow.state_changed", "step.started"])
    try:
        out = cmbagent(engine_home, "approve", gate.id, "--feedback", "go ahead")
        approved_at = time.monotonic()
        assert out.returncode == 0, out.stderr
        moved = None
        while moved is None and time.monotonic() - approved_at < 10:
            ev = sub.get(timeout=0.5)
            if ev is not None and (ev["type"] == "step.started" or ev["payload"].get("to") == "executing"):
                moved = time.monotonic()
    finally:
        sub.close()
    assert moved is not None, "the run did not move on"
    assert moved - approved_at < 1.0, f"the run moved {moved - approved_at:.2f} s after the approval"
    run = handle.wait(60)
    assert run.status == RunStatus.completed and executions(run.path) == ["s1", "s2"]
    done = ApprovalRequest.model_validate(handle.ss.get_approval(approval_id=gate.id))
    assert (done.status.value, done.resolved_by, done.feedback) == ("approved", "cli", "go ahead")
    assert done.resolved_at is not None and done.request["step"] == "s2"


def test_a_rejected_plan_is_redone_with_the_feedback_in_the_planners_prompt(engine_home: Path, tmp_path: Path):
    first = plan_json([{"key": "a", "sub_task": "guess", "sub_task_agent": "engineer"}])
    second = plan_json([{"key": "a", "sub_task": "measure", "sub_task_agent": "engineer"}])
    scenario = write_scenario(tmp_path / "plan.yaml", [
        {"agent": "planner", "turn": 1, "content": first}, {"agent": "planner", "turn": 2, "content": second},
        {"agent": "engineer", "step": "a", "content": counting_code("a")}])
    handle = open_session(home=engine_home).run("t", scenario=str(scenario), n_plan_reviews=0,
                                                 approval_mode="after_planning", quiet=True)
    gate = _approval(handle, "after_planning")
    assert gate.request["plan"]["sub_tasks"][0]["sub_task"] == "guess" and gate.options == ["approve", "reject",
                                                                                            "modify"]
    out = cmbagent(engine_home, "reject", gate.id, "--feedback", "Do not guess: measure it from the data.")
    assert out.returncode == 0, out.stderr
    again = _approval(handle, "after_planning", {gate.id})
    assert again.request["plan"]["sub_tasks"][0]["sub_task"] == "measure"
    planner = [c for c in handle._engine.model.config.calls if c.agent == "planner"]
    assert "Do not guess: measure it from the data." in planner[1].messages[-1]["text"]
    assert "rejected" in planner[1].messages[-1]["text"]
    handle.ss.resolve_approval(again.id, "approve")
    assert handle.wait(60).status == RunStatus.completed


def test_rejected_code_is_rewritten_with_the_feedback_before_it_runs(engine_home: Path, tmp_path: Path):
    scenario = write_scenario(tmp_path / "code.yaml", [
        {"agent": "engineer", "step": "only", "turn": 1, "content": counting_code("only", value="v1")},
        {"agent": "engineer", "step": "only", "turn": 2, "content": counting_code("only", value="v2")}])
    plan = {"sub_tasks": [{"key": "only", "sub_task": "write it", "sub_task_agent": "engineer"}]}
    handle = open_session(home=engine_home).run("t", mode="control", plan=plan, scenario=str(scenario),
                                                 approval_mode="before_code_execution", quiet=True)
    gate = _approval(handle, "before_code_execution")
    assert "v1" in gate.request["code"] and "abort" in gate.options
    handle.ss.resolve_approval(gate.id, "reject", feedback="Write v2, not v1.")
    second = _approval(handle, "before_code_execution", {gate.id})
    assert "v2" in second.request["code"] and executions(handle.status().path) == []
    engineer = [c for c in handle._engine.model.config.calls if c.agent == "engineer"]
    assert "Write v2, not v1." in engineer[1].messages[-1]["text"]
    handle.ss.resolve_approval(second.id, "approve")
    run = handle.wait(60)
    assert run.status == RunStatus.completed
    assert (Path(run.path) / "control" / "data" / "only.txt").read_text() == "v2"


def test_an_unanswered_approval_takes_its_default_action_at_the_timeout(engine_home: Path, tmp_path: Path):
    scenario, plan = control_scenario(tmp_path / "t.yaml", [{"key": "s1", "depends_on": []},
                                                            {"key": "s2", "depends_on": ["s1"]}])
    session = open_session(home=engine_home)
    approved = session.run("t", mode="control", plan=plan, scenario=str(scenario), approval_mode="before_each_step",
                           approval_timeout_s=0.5, approval_default_action="approve", quiet=True)
    run = approved.wait(60)
    assert run.status == RunStatus.completed and executions(run.path) == ["s1", "s2"]
    rows = [ApprovalRequest.model_validate(r) for r in approved.ss.list_approvals(run_id=run.id,
                                                                        pending_only=False)]
    assert [(a.status.value, a.decision, a.resolved_by) for a in rows] == [("expired", "approve", "timeout")] * 2
    assert all(0.4 < (a.resolved_at - a.created_at).total_seconds() < 5 for a in rows)

    refused = session.run("t", mode="control", plan=plan, scenario=str(scenario), approval_mode="before_each_step",
                          approval_timeout_s=0.3, approval_default_action="reject", quiet=True)
    run = refused.wait(60)
    assert run.status == RunStatus.failed and "rejected: timed out; default action reject" in run.error
    assert executions(run.path) == []


def test_a_waiting_run_uses_no_cpu_and_survives_a_restart_of_its_process(engine_home: Path, tmp_path: Path):
    scenario, plan = control_scenario(tmp_path / "gate.yaml", [{"key": "s1", "depends_on": []},
                                                               {"key": "s2", "depends_on": ["s1"]}])
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(json.dumps(plan))
    ss = open_session(home=engine_home).ss
    args = ["run", "gated", "--mode", "control", "--plan", str(plan_file), "--scenario", str(scenario),
            "--approval-steps", "s2"]
    first = subprocess.Popen([*cmbagent_command(), *args], env=cli_env(engine_home), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, cwd=str(tmp_path))
    resumed = None
    try:
        pending = wait_for(lambda: ss.list_approvals(), 60, "the run to ask for approval")
        (gate,) = pending
        run_id = gate.run_id
        proc = psutil.Process(first.pid)
        cpu = lambda: sum(proc.cpu_times()[:2])  # noqa: E731
        before, t0 = cpu(), time.monotonic()
        time.sleep(2.0)  # measuring, not synchronising: CPU used over two seconds of waiting
        used = cpu() - before
        assert time.monotonic() - t0 >= 2.0 and used < 0.2, f"the waiting process used {used:.3f} s of CPU"
        assert ss.get_run(run_id).status == RunStatus.waiting_approval

        first.kill()
        first.wait(10)
        resumed = subprocess.Popen([*cmbagent_command(), "resume", run_id], env=cli_env(engine_home),
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(tmp_path))
        wait_for(lambda: ss.get_run(run_id).owner_pid == resumed.pid, 60, "the resumed process to own the run")
        wait_for(lambda: ss.get_run(run_id).status == RunStatus.waiting_approval, 30, "the run to wait again")
        everything = ss.list_approvals(run_id=run_id, pending_only=False)
        assert [a.id for a in everything] == [gate.id], "still the same approval, not a second one"
        assert executions(ss.get_run(run_id).path) == ["s1"]

        assert cmbagent(engine_home, "approve", gate.id).returncode == 0
        out, err = resumed.communicate(timeout=60)
        assert resumed.returncode == 0, out + err
    finally:
        for p in (first, resumed):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait(10)
    run = ss.get_run(run_id)
    assert run.status == RunStatus.completed and executions(run.path) == ["s1", "s2"]
