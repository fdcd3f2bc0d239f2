"""A run recorded into a scenario file replays offline to the same results; liveness of owners."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

from cmbagent_jupyter import open_session
from cmbagent_jupyter.engine.liveness import liveness, owner_alive
from cmbagent_jupyter.llm.scenario import load_scenario
from cmbagent_jupyter.core import RunStatus, utcnow
from fixtures.engine import counting_code, engine_home, plan_json, write_scenario  # noqa: F401 - fixture


def test_a_recorded_run_replays_offline_with_the_same_outputs(engine_home: Path, tmp_path: Path):
    plan = plan_json([{"key": "step_1", "sub_task": "one", "sub_task_agent": "engineer", "depends_on": []},
                      {"key": "step_2", "sub_task": "two", "sub_task_agent": "researcher", "depends_on": ["step_1"]}])
    source = write_scenario(tmp_path / "source.yaml", [
        {"agent": "planner", "content": plan},
        {"agent": "plan_reviewer", "content": "1. Looks fine."},
        {"agent": "planner", "content": plan},
        {"agent": "engineer", "step": "step_1", "content": counting_code("step_1", value="42")},
        {"agent": "researcher", "step": "step_2", "content": "# Result\nThe value is 42."},
    ])
    recording = tmp_path / "recorded.yaml"
    session = open_session(home=engine_home)
    first = session.run("compute 42", scenario=str(source), record=str(recording), quiet=True)
    assert first.wait(60).status == RunStatus.completed
    recorded = load_scenario(recording)
    assert [(t.agent, t.step, t.turn) for t in recorded.turns] == [
        ("plan_reviewer", None, 1), ("planner", None, 1), ("planner", None, 2),
        ("engineer", "step_1", 1), ("executor", "step_1", 1), ("executor", "step_1", 2),
        ("researcher", "step_2", 1)]
    assert recorded.turns[4].tool_calls[0].arguments == {"filename": "step_1.py"}, "placeholders recorded filled in"
    assert all(t.usage and t.usage.prompt_tokens > 0 for t in recorded.turns)

    replay = session.run("compute 42", scenario=str(recording), quiet=True)
    assert replay.announcement == "using the scripted offline model (scenario recorded)"
    assert replay.wait(60).status == RunStatus.completed
    assert {s.key: s.outputs for s in replay.steps()} == {s.key: s.outputs for s in first.steps()}
    tokens = lambda h: sorted((r.agent, r.prompt_tokens, r.completion_tokens) for r in h.ss.cost_records(h.id))  # noqa: E731
    assert tokens(replay) == tokens(first), "the replay reports the recorded token usage"


def test_owner_liveness_tells_running_orphaned_and_stalled_runs_apart():
    me = os.getpid()
    assert owner_alive(me)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    assert not owner_alive(dead.pid)
    now = utcnow()
    base = {"status": "executing", "owner_pid": me, "last_heartbeat_at": now.isoformat()}
    assert liveness(base).state == "running" and not liveness(base).resumable
    fresh_but_dead = {**base, "owner_pid": dead.pid}
    assert (liveness(fresh_but_dead).state, liveness(fresh_but_dead).resumable) == ("orphaned", True)
    old_and_dead = {**fresh_but_dead, "last_heartbeat_at": (now - timedelta(minutes=5)).isoformat()}
    assert liveness(old_and_dead).state == "stalled" and liveness(old_and_dead).heartbeat_age_s > 290
    assert liveness({**base, "status": "paused"}).resumable
    assert not liveness({**base, "status": "completed"}).resumable
    later = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        assert owner_alive(later.pid, utcnow())
        assert not owner_alive(later.pid, now - timedelta(seconds=30)), \
            "a process younger than the run's last heartbeat is a reused pid, not the owner"
    finally:
        later.kill()
        later.wait()
