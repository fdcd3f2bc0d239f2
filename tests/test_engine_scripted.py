"""The scripted model through AG2's real agent loop: scenarios, tool calls, usage, recording."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from ag2 import Agent

from cmbagent_jupyter.llm.recording import RecordingModelConfig
from cmbagent_jupyter.llm.scenario import ScenarioError, load_scenario
from cmbagent_jupyter.llm.scope import SCOPE_KEY, ModelScope
from cmbagent_jupyter.llm.scripted import ScriptedModelConfig
from fixtures.engine import write_scenario


def ask(agent: Agent, text: str, scope: ModelScope):
    async def go():
        reply = await agent.ask(text, dependencies={SCOPE_KEY: scope})
        return reply, await reply.usage()
    return asyncio.run(go())


def test_scripted_answers_per_agent_and_step_and_reports_usage(tmp_path: Path):
    path = write_scenario(tmp_path / "s.yaml", [
        {"agent": "planner", "turn": 1, "content": "plan v1"},
        {"agent": "planner", "turn": 2, "content": "plan v2", "usage": {"prompt_tokens": 7, "completion_tokens": 3}},
        {"agent": "engineer", "step": "step_2", "content": "code for step 2"},
    ])
    model = ScriptedModelConfig(path)
    planner = Agent("planner", "You plan.", config=model)
    scope = ModelScope(agent="planner", run_id=None)
    reply, usage = ask(planner, "Make a plan", scope)
    assert reply.body == "plan v1"
    assert usage.total.prompt_tokens > 0 and usage.total.completion_tokens == 2, "estimated at ~4 chars a token"
    assert usage.records[0].model == "scripted/s" and usage.records[0].provider == "scripted"
    reply, usage = ask(planner, "Again", scope)
    assert reply.body == "plan v2" and usage.total.prompt_tokens == 7 and usage.total.completion_tokens == 3
    engineer = Agent("engineer", "You code.", config=model)
    reply, _ = ask(engineer, "Step 2 please", ModelScope(agent="engineer", step="step_2"))
    assert reply.body == "code for step 2"
    sent = [c for c in model.calls if c.agent == "planner"]
    assert [c.turn for c in sent] == [1, 2]
    assert "You plan." in sent[0].sent_text and "Make a plan" in sent[0].sent_text


def test_a_fresh_scope_starts_again_at_turn_one(tmp_path: Path):
    """A step run again (a retry after a crash) gets the same scripted answers."""
    model = ScriptedModelConfig(write_scenario(tmp_path / "s.yaml", [
        {"agent": "engineer", "step": "step_1", "content": "first"},
        {"agent": "engineer", "step": "step_1", "content": "second"}]))
    engineer = Agent("engineer", "You code.", config=model)
    scope = ModelScope(agent="engineer", step="step_1")
    assert ask(engineer, "go", scope)[0].body == "first"
    assert ask(engineer, "go", scope)[0].body == "second"
    assert ask(engineer, "go", ModelScope(agent="engineer", step="step_1"))[0].body == "first"


def test_executor_default_turns_call_the_tool_with_the_step_file(tmp_path: Path):
    model = ScriptedModelConfig(write_scenario(tmp_path / "s.yaml", []))
    ran = []

    async def run_python(filename: str) -> str:
        """Run a file."""
        ran.append(filename)
        return f"ran {filename}: exit 0"

    executor = Agent("executor", "You run code.", config=model, tools=[run_python])
    reply, usage = ask(executor, "Run it", ModelScope(agent="executor", step="step_3", code_file="step_3.py"))
    assert ran == ["step_3.py"]
    assert reply.body == "Ran step_3.py."
    assert len(usage.records) == 2, "one usage record per model call: the tool call, then the answer"


def test_a_turn_the_scenario_lacks_is_a_clear_error(tmp_path: Path):
    model = ScriptedModelConfig(write_scenario(tmp_path / "s.yaml", [{"agent": "planner", "content": "only one"}]))
    planner = Agent("planner", "You plan.", config=model)
    scope = ModelScope(agent="planner")
    ask(planner, "one", scope)
    with pytest.raises(ScenarioError, match="scripts 1 turn\\(s\\) for agent 'planner' in planning; turn 2"):
        ask(planner, "two", scope)
    with pytest.raises(ScenarioError, match="no response for agent 'researcher'"):
        ask(Agent("researcher", "r", config=model), "x", ModelScope(agent="researcher", step="step_1"))


def test_bad_scenario_files_are_refused_with_where_and_what(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nturns:\n  - agent: planner\n")
    with pytest.raises(ScenarioError, match="needs `content` or `tool_calls`"):
        load_scenario(bad)
    with pytest.raises(ScenarioError, match="no scenario named 'nope'; shipped scenarios: cmb_power_spectrum"):
        load_scenario("nope")


def test_shipped_scenario_is_a_valid_six_step_plan_with_a_parallel_level():
    from cmbagent_jupyter.engine.dag import PlanDAG, parse_plan

    sc = load_scenario("cmb_power_spectrum")
    final = [t for t in sc.turns if t.agent == "planner"][-1]
    dag = PlanDAG(parse_plan(final.content, agents=["engineer", "researcher"]))
    assert len(dag.plan.sub_tasks) == 6 and dag.levels()[0] == ["step_1", "step_2"]
    assert sc.price is not None and sc.price.input_per_mtok == 0


def test_recording_a_run_gives_a_scenario_that_replays_the_same_answers(tmp_path: Path):
    source = ScriptedModelConfig(write_scenario(tmp_path / "s.yaml", [
        {"agent": "planner", "content": "the plan"},
        {"agent": "engineer", "step": "step_1", "content": "print(1)",
         "usage": {"prompt_tokens": 11, "completion_tokens": 5}}]))
    recorder = RecordingModelConfig(source, tmp_path / "recorded.yaml", task="t")
    ask(Agent("planner", "p", config=recorder), "plan it", ModelScope(agent="planner"))
    ask(Agent("engineer", "e", config=recorder), "code it", ModelScope(agent="engineer", step="step_1"))
    replay = ScriptedModelConfig(tmp_path / "recorded.yaml")
    assert replay.scenario.task == "t"
    reply, usage = ask(Agent("engineer", "e", config=replay), "code it", ModelScope(agent="engineer", step="step_1"))
    assert reply.body == "print(1)" and usage.total.prompt_tokens == 11 and usage.total.completion_tokens == 5
    assert ask(Agent("planner", "p", config=replay), "x", ModelScope(agent="planner"))[0].body == "the plan"
    assert json.loads(json.dumps(replay.scenario.model_dump(mode="json")))["price"] == {
        "input_per_mtok": 0.0, "output_per_mtok": 0.0}


def test_transient_provider_errors_are_retried_with_backoff_and_others_are_not(tmp_path: Path):
    from cmbagent_jupyter.llm.retrying import RetryingModelConfig

    model = ScriptedModelConfig(write_scenario(tmp_path / "s.yaml", [{"agent": "planner", "content": "a plan"}]))

    class Flaky:
        """A provider that drops the connection twice, then answers."""

        provider, model_name = "flaky", "flaky-1"
        failures = [ConnectionError("connection reset by peer"), TimeoutError("read timed out")]

        @property
        def model(self):
            return self.model_name

        def copy(self):
            return self

        def create(self):
            inner = model.create()

            async def call(messages, context, **kw):
                if Flaky.failures:
                    raise Flaky.failures.pop(0)
                return await inner(messages, context, **kw)
            return call

    backoffs = []
    retrying = RetryingModelConfig(Flaky(), initial_s=0.01, cap_s=0.05,
                                   on_backoff=lambda scope, n, delay, exc: backoffs.append((scope.agent, n,
                                                                                            type(exc).__name__)))
    reply, _ = ask(Agent("planner", "p", config=retrying), "plan", ModelScope(agent="planner"))
    assert reply.body == "a plan"
    assert backoffs == [("planner", 1, "ConnectionError"), ("planner", 2, "TimeoutError")]
    with pytest.raises(ScenarioError):
        ask(Agent("planner", "p", config=RetryingModelConfig(model, initial_s=0.01)), "again",
            ModelScope(agent="planner", step="nowhere"))
