"""Branching and play-from-node: what is kept is not executed again, what is redone gets the
changed instructions, and the tree of runs can be listed and compared."""

from __future__ import annotations

import json
from pathlib import Path

import psutil
import pytest

from cmbagent_jupyter import open_session
from cmbagent_jupyter.llm.transcript import read_transcript
from cmbagent_jupyter.core import InvalidInput, RunStatus
from fixtures.cli import cmbagent
from fixtures.engine import control_scenario, engine_home, executions  # noqa: F401 - fixture
from fixtures.waiting import wait_with_deadline as wait_for


def _engineer_calls(run_path: str) -> list[dict]:
    return read_transcript(Path(run_path) / "control" / "chats" / "engineer.jsonl")


def test_a_branch_from_step_4_reuses_steps_1_to_3_and_reexecutes_4_to_6(engine_home: Path, tmp_path: Path):
    keys = [f"s{i}" for i in range(1, 7)]
    steps = [{"key": k, "depends_on": [keys[i - 1]] if i else []} for i, k in enumerate(keys)]
    scenario, plan = control_scenario(tmp_path / "six.yaml", steps)
    parent = open_session(home=engine_home).run("six steps", mode="control", plan=plan, scenario=str(scenario),
                                                 quiet=True, wait=True)
    assert parent.status().status == RunStatus.completed and executions(parent.status().path) == keys

    out = cmbagent(engine_home, "branch", parent.id, "--from-step", "4", "--name", "finer",
                   "--instructions", "Use bins of width 10.", "--hypothesis", "finer bins lower the error", "--wait")
    assert out.returncode == 0, out.stdout + out.stderr
    (tree_child,) = parent.branches()["children"]
    child = parent.ss.get_run(tree_child["run_id"])
    assert child.status == RunStatus.completed and child.parent_run_id == parent.id and child.branch_from_step == 4
    assert tree_child["name"] == "finer" and tree_child["from_step"] == 4

    calls = _engineer_calls(child.path)
    assert not [c for c in calls if c["step"] in ("s1", "s2", "s3")], "no model call for the kept steps"
    assert [c["step"] for c in calls] == ["s4", "s5", "s6"]
    assert executions(child.path) == ["s4", "s5", "s6"], "only 4-6 executed in the branch"
    fork_prompt = calls[0]["messages"][-1]["text"]
    assert "Use bins of width 10." in fork_prompt and "finer bins lower the error" in fork_prompt
    assert "Use bins of width 10." not in calls[1]["messages"][-1]["text"]
    assert "result of s3" in (Path(child.path) / "control" / "data" / "s3.txt").read_text()
    kept = {s.key: s for s in parent.ss.list_steps(child.id)}
    assert kept["s1"].outputs == parent.step("s1").outputs

    tree = json.loads(cmbagent(engine_home, "branches", child.id, "--json").stdout)
    assert tree["run_id"] == parent.id and [c["run_id"] for c in tree["children"]] == [child.id]
    text = cmbagent(engine_home, "branches", parent.id).stdout
    assert child.id in text and "finer" in text and "from step 4" in text
    compared = json.loads(cmbagent(engine_home, "compare", parent.id, child.id, "--json").stdout)
    same = {r["key"]: r["same_output"] for r in compared["steps"]}
    assert [same[k] for k in keys[:3]] == [True] * 3
    assert compared["a_status"] == compared["b_status"] == "completed" and len(compared["steps"]) == 6
    assert "total cost" in cmbagent(engine_home, "compare", parent.id, child.id).stdout


def _diamond(engine_home: Path, tmp_path: Path):
    # a -> b -> d, a -> c, e alone
    steps = [{"key": "a", "depends_on": []}, {"key": "b", "depends_on": ["a"]}, {"key": "c", "depends_on": ["a"]},
             {"key": "d", "depends_on": ["b"]}, {"key": "e", "depends_on": []}]
    scenario, plan = control_scenario(tmp_path / "dag.yaml", steps)
    handle = open_session(home=engine_home).run("dag", mode="control", plan=plan, scenario=str(scenario),
                                                 max_parallel=1, quiet=True, wait=True)
    assert handle.status().status == RunStatus.completed
    return handle


def test_play_from_a_node_reruns_exactly_it_and_its_descendants(engine_home: Path, tmp_path: Path):
    handle = _diamond(engine_home, tmp_path)
    path = handle.status().path
    before = executions(path)
    kept = {s.key: s.outputs for s in handle.steps() if s.key in ("a", "c", "e")}
    calls_before = len(_engineer_calls(path))

    run = handle.play_from("b", instructions="Double-check the normalisation.", wait=True).status()

    assert run.status == RunStatus.completed, run.error
    rerun = executions(path)[len(before):]
    assert set(rerun) == {"b", "d"} and len(rerun) == 2
    assert {s.key: s.outputs for s in handle.steps() if s.key in kept} == kept
    new_calls = _engineer_calls(path)[calls_before:]
    assert {c["step"] for c in new_calls} == {"b", "d"}
    prompt_b = next(c for c in new_calls if c["step"] == "b")["messages"][-1]["text"]
    assert "Double-check the normalisation." in prompt_b and "do b" in prompt_b
    assert "Double-check" not in next(c for c in new_calls if c["step"] == "d")["messages"][-1]["text"]


def test_play_from_on_the_command_line_and_its_refusals(engine_home: Path, tmp_path: Path):
    handle = _diamond(engine_home, tmp_path)
    path = handle.status().path
    before = executions(path)
    out = cmbagent(engine_home, "play-from", handle.step("c").id, "--wait")
    assert out.returncode == 0, out.stdout + out.stderr
    assert executions(path)[len(before):] == ["c"] and handle.status().status == RunStatus.completed

    with pytest.raises(InvalidInput, match="no step 'zz'"):
        handle.play_from("zz")
    child = handle.branch(2, instructions="x", start=False)
    assert child.status().status == RunStatus.paused
    assert {s.key for s in child.steps() if s.status.value == "completed"} == {"a", "c", "e"}
    assert child.step("b").description.endswith("Changed instructions for this branch:\nx")


def test_play_from_without_wait_continues_in_a_detached_process(engine_home: Path, tmp_path: Path):
    handle = _diamond(engine_home, tmp_path)
    path = handle.status().path
    before = executions(path)
    out = cmbagent(engine_home, "play-from", handle.step("d").id, "--instructions", "plot it too", "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    started = json.loads(out.stdout)
    try:
        wait_for(lambda: handle.status().status == RunStatus.completed and executions(path)[len(before):] == ["d"],
                 60, "the detached resume to finish the replay")
        wait_for(lambda: not psutil.pid_exists(started["resumed_by_pid"])
                 or psutil.Process(started["resumed_by_pid"]).status() == psutil.STATUS_ZOMBIE,
                 30, "the detached process to exit")
    finally:
        if psutil.pid_exists(started["resumed_by_pid"]):
            proc = psutil.Process(started["resumed_by_pid"])
            if proc.status() != psutil.STATUS_ZOMBIE:
                proc.kill()
    assert "resuming run" in Path(started["log"]).read_text()
