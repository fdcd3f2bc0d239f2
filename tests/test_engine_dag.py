"""Plan -> DAG: what the planner writes becomes steps with dependencies, or a clear error."""

from __future__ import annotations

import json

import pytest

from cmbagent_jupyter.engine.dag import PlanDAG, PlanError, parse_plan, plan_from_data

AGENTS = ["engineer", "researcher"]


def step(task: str, agent: str = "engineer", deps=None, key: str | None = None) -> dict:
    out = {"sub_task": task, "sub_task_agent": agent}
    if deps is not None:
        out["depends_on"] = deps
    if key:
        out["key"] = key
    return out


def test_plan_in_a_fenced_reply_becomes_a_dag_with_levels_of_parallel_steps():
    text = "Here is the plan:\n```json\n" + json.dumps({"sub_tasks": [
        step("theory", deps=[]), step("noise", deps=[]), step("simulate", deps=["step_1", "step_2"]),
        step("report", "researcher", deps=[3])]}) + "\n```\nGood luck."
    plan = parse_plan(text, agents=AGENTS)
    dag = PlanDAG(plan)
    assert plan.keys == ["step_1", "step_2", "step_3", "step_4"]
    assert plan.step("step_4").depends_on == ["step_3"], "a dependency given by number is resolved to its key"
    assert dag.levels() == [["step_1", "step_2"], ["step_3"], ["step_4"]]
    assert dag.ancestors("step_4") == ["step_1", "step_2", "step_3"]
    assert dag.order()[:2] == ["step_1", "step_2"]


def test_cmbagent_plan_without_dependencies_runs_in_order():
    plan = plan_from_data({"sub_tasks": [step("a"), step("b"), step("c", "researcher")]}, agents=AGENTS)
    assert [s.depends_on for s in plan.sub_tasks] == [[], ["step_1"], ["step_2"]]
    assert PlanDAG(plan).levels() == [["step_1"], ["step_2"], ["step_3"]]


@pytest.mark.parametrize("text, message", [
    ("", "the plan is empty"),
    ("{\"sub_tasks\": [", "not valid JSON"),
    ("{\"sub_tasks\": []}", "at least one step"),
    ("{\"steps_list\": []}", "no `sub_tasks` list"),
    (json.dumps({"sub_tasks": [step("a", deps=["step_9"])]}), "depends on unknown step 'step_9'"),
    (json.dumps({"sub_tasks": [step("a", deps=["step_2"]), step("b", deps=["step_1"])]}), "form a cycle"),
    (json.dumps({"sub_tasks": [step("a", deps=["step_1"])]}), "depends on itself"),
    (json.dumps({"sub_tasks": [step("a", "wizard", deps=[])]}), "sub_task_agent must be one of engineer"),
    (json.dumps({"sub_tasks": [step("a", key="x"), step("b", key="x")]}), "two steps have the key 'x'"),
    (json.dumps({"sub_tasks": [{"sub_task_agent": "engineer"}]}), "step 1 (step_1): sub_task"),
])
def test_bad_plans_get_an_error_that_says_what_to_fix(text, message):
    with pytest.raises(PlanError) as err:
        parse_plan(text, agents=AGENTS)
    assert message in str(err.value)


def test_plan_longer_than_allowed_is_refused():
    with pytest.raises(PlanError, match="at most 2 are allowed"):
        plan_from_data({"sub_tasks": [step("a"), step("b"), step("c")]}, agents=AGENTS, max_steps=2)


def test_mermaid_and_json_exports_have_a_planning_node_first_and_a_terminator_last():
    plan = plan_from_data({"sub_tasks": [step("theory <fast>", deps=[]), step("noise", deps=[]),
                                         step("fit", deps=["step_1", "step_2"])]}, agents=AGENTS)
    dag = PlanDAG(plan)
    mermaid = dag.to_mermaid({"step_1": "completed", "step_3": "running"})
    assert mermaid.splitlines()[0] == "flowchart TD"
    assert "planning --> s_step_1" in mermaid and "planning --> s_step_2" in mermaid
    assert "s_step_1 --> s_step_3" in mermaid and "s_step_3 --> end_node" in mermaid
    assert "class s_step_1 completed" in mermaid and "<fast>" not in mermaid
    data = dag.to_json({"step_1": "completed"})
    assert data["nodes"][0]["kind"] == "planning" and data["nodes"][-1]["kind"] == "terminator"
    assert {"source": "step_2", "target": "step_3", "kind": "sequential"} in data["edges"]
    assert [n["status"] for n in data["nodes"] if n["kind"] == "agent"] == ["completed", "pending", "pending"]
    assert data["levels"] == [["step_1", "step_2"], ["step_3"]]
