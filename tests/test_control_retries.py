"""Retries that learn: provider hiccups backed off, code errors retried with their traceback,
and a failed run retried from the terminal with feedback; every attempt kept with its cost."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from cmbagent_jupyter import open_session
from cmbagent_jupyter.llm.transcript import read_transcript
from cmbagent_jupyter.core import RunStatus, StepAttempt
from fixtures.cli import cmbagent
from fixtures.engine import counting_code, engine_home, executions  # noqa: F401 - fixture

PRICED = {"input_per_mtok": 1000.0, "output_per_mtok": 2000.0}
EXECUTOR = {"executor": [{"tool_calls": [{"name": "run_python", "arguments": {"filename": "{code_file}"}}]},
                         {"content": "Ran {code_file}."}]}


def _scenario(path: Path, turns: list[dict]) -> Path:
    path.write_text(yaml.safe_dump({"name": path.stem, "price": PRICED, "turns": turns, "defaults": EXECUTOR}))
    return path


def _plan(*keys: str) -> dict:
    return {"sub_tasks": [{"key": k, "sub_task": f"do {k}", "sub_task_agent": "engineer",
                           "depends_on": [keys[i - 1]] if i else []} for i, k in enumerate(keys)]}


def _attempts(handle, key: str) -> list[StepAttempt]:
    step = handle.step(key)
    return [StepAttempt.model_validate(r) for r in handle.ss.list_attempts(step_id=step.id)]


def test_rate_limits_are_backed_off_and_the_run_completes(engine_home: Path, tmp_path: Path):
    scenario = _scenario(tmp_path / "flaky.yaml", [
        {"agent": "engineer", "step": "s1", "turn": 1, "raise": "rate_limit"},
        {"agent": "engineer", "step": "s1", "turn": 2, "raise": "rate_limit"},
        {"agent": "engineer", "step": "s1", "turn": 3, "content": counting_code("s1")}])
    handle = open_session(home=engine_home).run("t", mode="control", plan=_plan("s1"), scenario=str(scenario),
                                                 quiet=True)
    run = handle.wait(60)
    assert run.status == RunStatus.completed, run.error
    backoffs = [e.payload for e in handle.events(types=["retry.backoff"])]
    assert [(b["agent"], b["step"], b["attempt"]) for b in backoffs] == [("engineer", "s1", 1), ("engineer", "s1", 2)]
    assert all("RateLimitError" in b["error"] and b["delay_s"] > 0 for b in backoffs)
    assert backoffs[1]["delay_s"] >= 2.0 > backoffs[0]["delay_s"] - 1.0, "exponential: 1 s then 2 s, plus jitter"
    assert executions(run.path) == ["s1"]
    (attempt,) = _attempts(handle, "s1")
    assert attempt.status.value == "completed" and attempt.error is None


def test_a_code_error_is_retried_with_its_traceback_and_both_attempts_are_kept(engine_home: Path, tmp_path: Path):
    scenario = _scenario(tmp_path / "bug.yaml", [
        {"agent": "engineer", "step": "s1", "turn": 1, "content": counting_code("s1", fail=True)},
        {"agent": "engineer", "step": "s1", "turn": 2, "content": counting_code("s1")}])
    handle = open_session(home=engine_home).run("t", mode="control", plan=_plan("s1"), scenario=str(scenario),
                                                 quiet=True)
    run = handle.wait(60)
    assert run.status == RunStatus.completed, run.error
    second = [c for c in handle._engine.model.config.calls if c.agent == "engineer"][1].messages[-1]["text"]
    assert "ZeroDivisionError" in second and "Traceback" in second and "Guard the division against zero" in second
    failed, ok = _attempts(handle, "s1")
    assert (failed.attempt, failed.status.value, failed.error_type) == (1, "failed", "ZeroDivisionError")
    assert "1 / 0" in failed.traceback and failed.cost_usd > 0
    assert (ok.attempt, ok.status.value) == (2, "completed") and ok.cost_usd > 0
    assert [e.payload["attempt"] for e in handle.events(types=["retry.succeeded"])] == [2]


def test_cmbagent_retry_gives_a_failed_step_feedback_and_the_run_completes(engine_home: Path, tmp_path: Path):
    fixed = "read the calibration from data/calibration.txt"
    scenario = _scenario(tmp_path / "retry.yaml", [
        {"agent": "engineer", "step": "s1", "content": counting_code("s1")},
        {"agent": "engineer", "step": "s2", "turn": 1, "content": counting_code("s2", fail=True)},
        {"agent": "engineer", "step": "s2", "when": fixed, "content": counting_code("s2", value="calibrated")},
        {"agent": "engineer", "step": "s3", "content": counting_code("s3")}])
    handle = open_session(home=engine_home).run("t", mode="control", plan=_plan("s1", "s2", "s3"),
                                                 scenario=str(scenario), max_n_attempts=1, quiet=True)
    run = handle.wait(60)
    assert run.status == RunStatus.failed and executions(run.path) == ["s1"]
    step = handle.step("s2")

    out = cmbagent(engine_home, "retry", step.id, "--feedback", fixed, "--wait")
    assert out.returncode == 0, out.stdout + out.stderr

    run = handle.status()
    assert run.status == RunStatus.completed, run.error
    assert executions(run.path) == ["s1", "s2", "s3"], "s1 kept, s2 retried, s3 after it"
    assert (Path(run.path) / "control" / "data" / "s2.txt").read_text() == "calibrated"
    sent = [c for c in read_transcript(Path(run.path) / "control" / "chats" / "engineer.jsonl") if c["step"] == "s2"]
    assert len(sent) == 2
    prompt = sent[1]["messages"][-1]["text"]
    assert fixed in prompt, "the feedback reaches the engineer"
    assert "ZeroDivisionError" in prompt, "and so does the earlier attempt's error"
    failed, ok = _attempts(handle, "s2")
    assert (failed.status.value, failed.error_type, failed.feedback) == ("failed", "ZeroDivisionError", None)
    assert (ok.status.value, ok.feedback) == ("completed", fixed)
    assert failed.cost_usd > 0 and ok.cost_usd > 0
    listed = json.loads(cmbagent(engine_home, "approvals", "--all", "--json").stdout)
    assert [(a["kind"], a["decision"], a["feedback"], a["resolved_by"]) for a in listed] == [
        ("retry_feedback", "retry", fixed, "cli")]


def test_retry_refuses_a_step_that_did_not_fail(engine_home: Path, tmp_path: Path):
    scenario = _scenario(tmp_path / "ok.yaml", [{"agent": "engineer", "step": "s1", "content": counting_code("s1")}])
    handle = open_session(home=engine_home).run("t", mode="control", plan=_plan("s1"), scenario=str(scenario),
                                                 quiet=True, wait=True)
    out = cmbagent(engine_home, "retry", handle.step(1).id, "--feedback", "again")
    assert out.returncode == 2 and "only a failed step is retried" in out.stderr
