"""Runs in a process through the Python API: planning, DAG execution, control from outside."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

from cmbagent_jupyter import open_session
from cmbagent_jupyter.llm.transcript import read_transcript
from cmbagent_jupyter.core import InvalidInput, RunStatus
from cmbagent_jupyter.store.checkpoints import read_checkpoint_file, read_cmbagent_context
from fixtures.cli import cmbagent
from fixtures.engine import (  # noqa: F401 - fixture
    control_scenario,
    counting_code,
    engine_home,
    executions,
    plan_json,
    python_reply,
    wait_event,
    write_scenario,
)


def test_deep_research_with_the_shipped_scenario_keeps_cmbagent_layout_and_records_everything(engine_home: Path):
    session = open_session("analysis", home=engine_home)
    handle = session.run("Analyse a toy CMB power spectrum", quiet=True)
    assert handle.announcement == "using the scripted offline model (scenario cmb_power_spectrum)"
    run = handle.wait(240)
    assert run.status == RunStatus.completed, run.error
    steps = handle.steps()
    assert [s.status.value for s in steps] == ["completed"] * 6 and all(s.attempts == 1 for s in steps)
    root = Path(run.path)
    final_plan = json.loads((root / "planning" / "final_plan.json").read_text())
    assert [s["key"] for s in final_plan["sub_tasks"]] == [s.key for s in steps]
    assert sorted(p.name for p in (root / "control" / "codebase").glob("*.py")) == [f"step_{i}.py" for i in range(1, 6)]
    png = root / "control" / "data" / "cmb_power_spectrum.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (root / "control" / "data" / "report_step_6.md").read_text()
    assert report.startswith("# Toy CMB temperature power spectrum")
    assert steps[4].outputs["figures"] == ["data/cmb_power_spectrum.png"]
    assert json.loads((root / "control" / "data" / "fit_results.json").read_text())["n_bins"] == 49
    # CMBAgent's context pickle after the last step, and our checkpoint file, both readable
    ctx = read_cmbagent_context(root / "context" / "context_step_6.pkl")
    assert ctx["main_task"] == "Analyse a toy CMB power spectrum" and ctx["number_of_steps_in_plan"] == 6
    assert "Step 4 (engineer)" in ctx["previous_steps_execution_summary"]
    checkpoints = handle.ss.list_checkpoints(run.id)
    assert len([c for c in checkpoints if c.kind.value == "step_complete"]) >= 5
    doc = read_checkpoint_file(Path(checkpoints[-1].pickle_path), engine_home)
    assert doc["run"]["id"] == run.id and len(doc["steps"]) == 6
    # costs: every model call, by agent, run and step
    records = handle.ss.cost_records(run.id)
    assert {r.agent for r in records} == {"planner", "plan_reviewer", "engineer", "executor", "researcher"}
    assert all(r.model == "scripted/cmb_power_spectrum" and r.priced and r.cost_usd == 0 for r in records)
    assert {r.step_id for r in records if r.agent == "engineer"} == {s.id for s in steps[:5]}
    assert sum(r.prompt_tokens for r in records) > 1000
    types = [e.type.value for e in handle.events()]
    assert "dag.created" in types and types[-1] == "workflow.completed"
    assert (root / "planning" / "chats" / "planner.jsonl").exists()
    assert (root / "control" / "chats" / "executor.jsonl").exists()


def test_run_returns_at_once_and_steps_at_one_level_run_in_parallel(engine_home: Path, tmp_path: Path):
    steps = [{"key": f"q{i}", "sub_task_agent": "researcher", "depends_on": []} for i in range(4)]
    scenario, plan = control_scenario(tmp_path / "par.yaml", steps, latency_s=0.4)
    session = open_session(home=engine_home)
    handle = session.run("four questions", mode="control", plan=plan, scenario=str(scenario), max_parallel=4,
                         quiet=True)
    assert handle.running_here and handle.status().status in (RunStatus.draft, RunStatus.executing), \
        "run() returned before the run finished"
    assert handle.wait(60).status == RunStatus.completed
    order = [(e.type.value, e.payload["key"]) for e in handle.events(types=["step.started", "step.completed"])]
    first_done = next(i for i, (t, _) in enumerate(order) if t == "step.completed")
    assert first_done == 4, f"all four started before any finished: {order}"

    handle = session.run("four questions, one at a time", mode="control", plan=plan, scenario=str(scenario),
                         max_parallel=1, quiet=True)
    assert handle.wait(60).status == RunStatus.completed
    order = [e.type.value for e in handle.events(types=["step.started", "step.completed"])]
    assert order == ["step.started", "step.completed"] * 4


def test_a_malformed_plan_goes_back_to_the_planner_with_the_error(engine_home: Path, tmp_path: Path):
    good = plan_json([{"key": "step_1", "sub_task": "compute", "sub_task_agent": "engineer", "depends_on": []}])
    scenario = write_scenario(tmp_path / "replan.yaml", [
        {"agent": "planner", "turn": 1, "content": "Sure! {\"sub_tasks\": [{\"sub_task\": \"compute\","},
        {"agent": "planner", "turn": 2, "content": plan_json([
            {"key": "step_1", "sub_task": "compute", "sub_task_agent": "engineer", "depends_on": ["step_0"]}])},
        {"agent": "planner", "turn": 3, "content": good},
        {"agent": "engineer", "step": "step_1", "content": counting_code("step_1")},
    ])
    handle = open_session(home=engine_home).run("compute", scenario=str(scenario), n_plan_reviews=0, quiet=True)
    run = handle.wait(60)
    assert run.status == RunStatus.completed, run.error
    calls = [c for c in handle._engine.model.config.calls if c.agent == "planner"]
    assert [c.turn for c in calls] == [1, 2, 3]
    second, third = calls[1], calls[2]
    assert second.messages[-1]["role"] == "user"
    assert "Your plan cannot be used: the plan is not valid JSON" in second.messages[-1]["text"]
    assert "depends on unknown step 'step_0'; known steps: step_1" in third.messages[-1]["text"]
    # the same is on disk, in the planner's chat transcript
    chats = read_transcript(Path(run.path) / "planning" / "chats" / "planner.jsonl")
    assert "not valid JSON" in chats[1]["messages"][-1]["text"]
    attempts = run.config["plans"]
    assert [a["valid"] for a in attempts] == [False, False, True]


def test_a_planner_that_never_gets_it_right_fails_the_run_with_the_last_error(engine_home: Path, tmp_path: Path):
    scenario = write_scenario(tmp_path / "bad.yaml", [{"agent": "planner", "content": "no idea"}] * 3)
    handle = open_session(home=engine_home).run("t", scenario=str(scenario), n_plan_reviews=0, max_plan_tries=3,
                                                 quiet=True)
    run = handle.wait(60)
    assert run.status == RunStatus.failed
    assert "no valid plan in 3 tries" in run.error and "not valid JSON" in run.error


def test_failed_code_goes_back_to_the_engineer_with_the_traceback(engine_home: Path, tmp_path: Path):
    scenario = write_scenario(tmp_path / "retry.yaml", [
        {"agent": "engineer", "step": "step_1", "turn": 1, "content": counting_code("step_1", fail=True)},
        {"agent": "engineer", "step": "step_1", "turn": 2, "content": counting_code("step_1")},
    ])
    plan = {"sub_tasks": [{"key": "step_1", "sub_task": "divide", "sub_task_agent": "engineer"}]}
    handle = open_session(home=engine_home).run("divide", mode="control", plan=plan, scenario=str(scenario),
                                                 quiet=True)
    run = handle.wait(60)
    assert run.status == RunStatus.completed, run.error
    step = handle.steps()[0]
    assert step.outputs["attempts"] == 2 and step.outputs["files"] == ["data/step_1.txt"]
    retry = [c for c in handle._engine.model.config.calls if c.agent == "engineer"][1]
    assert "ZeroDivisionError" in retry.messages[-1]["text"] and "Attempt 1 failed" in retry.messages[-1]["text"]
    assert executions(run.path) == ["step_1"]


def test_pause_from_another_process_takes_effect_at_the_next_step_boundary(engine_home: Path, tmp_path: Path):
    steps = [{"key": f"s{i}", "depends_on": [f"s{i - 1}"] if i else []} for i in range(4)]
    _, plan = control_scenario(tmp_path / "plan.yaml", steps)
    # s1 holds until the test releases it, so the pause is asked for while s1 is in flight; the
    # engine hears of it with the store's answer to the boundary after s1 (while s2, a second
    # long, runs) or sooner, so the run pauses after s1 or s2 and never reaches s3
    held = python_reply(
        "import pathlib, time\n"
        "deadline = time.monotonic() + 120\n"
        "while not pathlib.Path('../release').exists() and time.monotonic() < deadline:\n"
        "    time.sleep(0.02)\n"
        "with open('../executions.log', 'a') as f:\n    f.write('s1\\n')")
    scenario = write_scenario(tmp_path / "seq.yaml", [
        {"agent": "engineer", "step": s["key"],
         "content": held if s["key"] == "s1" else counting_code(s["key"], sleep_s=1.0 if s["key"] == "s2" else 0)}
        for s in steps])
    handle = open_session(home=engine_home).run("four in a row", mode="control", plan=plan, scenario=str(scenario),
                                                 quiet=True)
    wait_event(handle.ss, handle.id, lambda e: e["type"] == "step.started" and e["payload"]["key"] == "s1",
               what="step s1 to start")
    out = cmbagent(engine_home, "pause", handle.id)
    assert out.returncode == 0, out.stderr
    assert "pause requested" in out.stdout
    (Path(handle.status().path) / "release").touch()
    run = handle.wait(60)
    assert run.status == RunStatus.paused
    done = [s.key for s in handle.steps() if s.status.value == "completed"]
    assert done in (["s0", "s1"], ["s0", "s1", "s2"]), done
    assert executions(run.path) == done, "the steps in flight finished, nothing new started"
    assert handle.resume(wait=True).status().status == RunStatus.completed
    assert executions(run.path) == ["s0", "s1", "s2", "s3"], "each step executed exactly once"


def test_interrupt_checkpoints_and_a_resume_skips_what_was_done(engine_home: Path, tmp_path: Path):
    steps = [{"key": "a", "depends_on": []}, {"key": "b", "depends_on": ["a"]}, {"key": "c", "depends_on": ["b"]}]
    scenario, plan = control_scenario(tmp_path / "int.yaml", steps, sleep_s=0.5)
    handle = open_session(home=engine_home).run("three", mode="control", plan=plan, scenario=str(scenario),
                                                 quiet=True)
    wait_event(handle.ss, handle.id, lambda e: e["type"] == "step.started" and e["payload"]["key"] == "b",
               what="step b to start")
    handle.interrupt("SIGTERM received")
    run = handle.wait(60)
    assert run.status == RunStatus.interrupted
    by_key = {s.key: s for s in handle.steps()}
    assert by_key["a"].status.value == "completed" and by_key["b"].status.value == "pending"
    assert handle.ss.latest_checkpoint(run.id).kind.value == "emergency"
    assert executions(run.path) == ["a"], "the killed step's process did not finish"
    handle.resume(wait=True)
    assert handle.status().status == RunStatus.completed
    assert executions(run.path) == ["a", "b", "c"]
    assert by_key["a"].outputs == {s.key: s for s in handle.steps()}["a"].outputs


def test_cancel_from_another_process_stops_the_running_step(engine_home: Path, tmp_path: Path):
    steps = [{"key": "long", "depends_on": []}, {"key": "after", "depends_on": ["long"]}]
    scenario, plan = control_scenario(tmp_path / "cancel.yaml", steps, sleep_s=30)
    handle = open_session(home=engine_home).run("cancel me", mode="control", plan=plan, scenario=str(scenario),
                                                 heartbeat_interval_s=0.2, quiet=True)
    wait_event(handle.ss, handle.id, lambda e: e["type"] == "step.started", what="the first step to start")
    beat = handle.status().last_heartbeat_at
    out = cmbagent(engine_home, "cancel", handle.id)
    assert out.returncode == 0 and "is cancelled" in out.stdout, out.stderr
    run = handle.wait(30)
    assert run.status == RunStatus.cancelled
    assert run.last_heartbeat_at > beat, "the owner kept beating while its step ran"
    assert [s.status.value for s in handle.steps()] == ["cancelled", "pending"], "the step's process was stopped"
    assert executions(run.path) == []
    with pytest.raises(InvalidInput, match="only a paused, interrupted, failed or stalled run can be resumed"):
        handle.resume()


def test_timed_checkpoints_are_written_inside_a_long_step(engine_home: Path, tmp_path: Path):
    scenario, plan = control_scenario(tmp_path / "long.yaml", [{"key": "slow", "depends_on": []}], sleep_s=1.5)
    handle = open_session(home=engine_home).run("slow", mode="control", plan=plan, scenario=str(scenario),
                                                 checkpoint_interval_s=0.3, quiet=True)
    run = handle.wait(60)
    assert run.status == RunStatus.completed
    timed = [c for c in handle.ss.list_checkpoints(run.id) if c.kind.value == "timed"]
    assert len(timed) >= 2
    doc = read_checkpoint_file(Path(timed[0].pickle_path), engine_home)
    assert doc["context"]["running_steps"] == ["slow"] and doc["checkpoint"]["kind"] == "timed"


def test_a_failing_step_fails_the_run_and_resume_reruns_only_that_step(engine_home: Path, tmp_path: Path):
    scenario = write_scenario(tmp_path / "fail.yaml", [
        {"agent": "engineer", "step": "ok", "content": counting_code("ok")},
        {"agent": "engineer", "step": "bad", "content": counting_code("bad", fail=True)},
    ])
    plan = {"sub_tasks": [{"key": "ok", "sub_task": "fine", "sub_task_agent": "engineer", "depends_on": []},
                          {"key": "bad", "sub_task": "broken", "sub_task_agent": "engineer", "depends_on": ["ok"]}]}
    handle = open_session(home=engine_home).run("t", mode="control", plan=plan, scenario=str(scenario),
                                                 max_n_attempts=1, quiet=True)
    run = handle.wait(60)
    assert run.status == RunStatus.failed
    assert "step 2 (bad) failed after 1 attempt(s)" in run.error and "ZeroDivisionError" in run.error
    handle.resume(wait=True)
    steps = {s.key: s for s in handle.steps()}
    assert steps["ok"].attempts == 1 and steps["bad"].attempts == 2
    assert executions(run.path) == ["ok"]


def test_one_shot_and_bad_input_are_checked_before_anything_is_created(engine_home: Path, tmp_path: Path):
    scenario = write_scenario(tmp_path / "one.yaml", [
        {"agent": "researcher", "step": "step_1", "content": "```markdown\n# Answer\n42\n```"}])
    session = open_session(home=engine_home)
    handle = session.run("What is the answer?", mode="one_shot", agent="researcher", scenario=str(scenario),
                         quiet=True)
    run = handle.wait(60)
    assert run.status == RunStatus.completed
    assert (Path(run.path) / "control" / "data" / "report_step_1.md").read_text() == "# Answer\n42\n"
    before = len(session.runs())
    with pytest.raises(InvalidInput, match="depends on unknown step"):
        session.run("x", mode="control", plan={"sub_tasks": [{"sub_task": "a", "sub_task_agent": "engineer",
                                                               "depends_on": ["zz"]}]}, quiet=True)
    with pytest.raises(InvalidInput, match="unknown mode 'fast'"):
        session.run("x", mode="fast", quiet=True)
    with pytest.raises(InvalidInput, match="max_parallel: Input should be greater than or equal to 1"):
        session.run("x", max_parallel=0, quiet=True)
    with pytest.raises(InvalidInput, match="needs an API key: set OPENAI_API_KEY"):
        session.run("x", model="openai/gpt-4o-mini", quiet=True)
    assert len(session.runs()) == before, "no half-made run is left behind"


def test_a_step_sees_its_dependencies_results_and_not_those_of_unrelated_steps(engine_home: Path, tmp_path: Path):
    steps = [{"key": "left", "depends_on": []}, {"key": "right", "depends_on": []},
             {"key": "merge", "sub_task_agent": "researcher", "depends_on": ["left"]}]
    scenario, plan = control_scenario(tmp_path / "ctx.yaml", steps)
    handle = open_session(home=engine_home).run("t", mode="control", plan=plan, scenario=str(scenario),
                                                 max_parallel=1, quiet=True)
    run = handle.wait(60)
    assert run.status == RunStatus.completed
    sent = [c for c in handle._engine.model.config.calls if c.agent == "researcher"][0].messages[-1]["text"]
    assert "computed left" in sent and "computed right" not in sent
    ctx = pickle.loads((Path(run.path) / "context" / "context_step_3.pkl").read_bytes())
    assert set(ctx["step_outputs"]) == {"left", "right", "merge"}


def _noop_runner(calls: list[str]):
    async def run_step(step, ctx):
        calls.append(step.key)
        return {"summary": f"{step.key} done", "files": [], "figures": []}
    return run_step


def test_a_control_run_shows_its_steps_and_dag_before_it_starts_and_a_custom_runner_writes_no_cmbagent_pickles(
        engine_home: Path):
    import asyncio

    from cmbagent_jupyter.api import RunHandle, create_run
    from cmbagent_jupyter.engine.runner import RunEngine
    from cmbagent_jupyter.store import open_store

    plan = {"sub_tasks": [{"key": "a", "sub_task": "one", "sub_task_agent": "engineer"},
                          {"key": "b", "sub_task": "two", "sub_task_agent": "engineer", "depends_on": ["a"]}]}
    store = open_store(engine_home)
    try:
        ss = store.session(store.create_session("draft plan").id)
        run, _ = create_run(ss, "two steps", mode="control", plan=plan)
        assert run.status == RunStatus.draft
        assert [(s.key, s.status.value) for s in ss.list_steps(run.id)] == [("a", "pending"), ("b", "pending")]
        handle = RunHandle(store, ss.session_id, run.id)
        assert "s_a --> s_b" in handle.dag()
        assert [e.type.value for e in ss.events(run.id) if e.type.value == "dag.created"] == ["dag.created"]

        calls: list[str] = []
        done = asyncio.run(RunEngine(store, run, step_runner=_noop_runner(calls)).execute())
        assert done.status == RunStatus.completed and calls == ["a", "b"]
        assert not list((Path(run.path) / "context").glob("context_step_*.pkl")), \
            "a custom runner's steps are not CMBAgent's"
        again, _ = create_run(ss, "with pickles", mode="control", plan=plan, context_files=True)
        asyncio.run(RunEngine(store, again, step_runner=_noop_runner([])).execute())
        ctx = pickle.loads((Path(again.path) / "context" / "context_step_2.pkl").read_bytes())
        assert ctx["completed_steps"] == ["a", "b"]
    finally:
        store.close()


def test_a_finished_run_leaves_no_reference_cycles_behind(engine_home: Path):
    """What a run held (plan, DAG, ledger, carried context) goes when the run is done, not at
    the next full garbage collection (which would pause a kernel for a long plan)."""
    import asyncio
    import gc

    from cmbagent_jupyter.api import create_run
    from cmbagent_jupyter.engine.runner import RunEngine
    from cmbagent_jupyter.store import open_store

    plan = {"sub_tasks": [{"key": f"s{i}", "sub_task": f"step {i}", "sub_task_agent": "engineer",
                           "depends_on": [f"s{i - 1}"] if i else []} for i in range(60)]}
    store = open_store(engine_home)
    try:
        ss = store.session(store.create_session("cycles").id)
        run, _ = create_run(ss, "chain", mode="control", plan=plan)
        gc.collect()
        gc.disable()
        try:
            done = asyncio.run(RunEngine(store, run, step_runner=_noop_runner([])).execute())
            found = gc.collect()
        finally:
            gc.enable()
        assert done.status == RunStatus.completed
        # a 60-step run used to leave thousands of objects in cycles (about 60 per step)
        assert found < 600, f"{found} objects were left in reference cycles"
    finally:
        store.close()
