"""The in-memory backend: the engine runs on it through the port alone, and it is built from
the port and the core only (no database, no service)."""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

import pytest

from cmbagent_jupyter.api import create_run
from cmbagent_jupyter.core import RunStatus, StepStatus
from cmbagent_jupyter.engine.loop import EngineLoop
from cmbagent_jupyter.engine.runner import RunEngine
from cmbagent_jupyter.store.memory import MemoryStore
from fixtures.processes import KEY_VARS

MEMORY_PACKAGE = Path(__file__).resolve().parents[1] / "cmbagent_jupyter" / "store" / "memory"


@pytest.fixture
def memory_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    for var in KEY_VARS:
        monkeypatch.delenv(var, raising=False)
    store = MemoryStore(tmp_path / "home")
    yield store
    store.close()


def test_the_engine_executes_a_control_run_to_completion_on_the_memory_backend(memory_store):
    ss = memory_store.session(memory_store.create_session("engine").id)
    plan = {"sub_tasks": [{"key": "load", "sub_task": "Load the map", "sub_task_agent": "engineer"},
                          {"key": "mask", "sub_task": "Mask the galaxy", "sub_task_agent": "engineer"},
                          {"key": "fit", "sub_task": "Fit the spectrum", "sub_task_agent": "researcher",
                           "depends_on": ["load", "mask"]}]}
    run, _ = create_run(ss, "three steps, the last after the other two", mode="control", model="scripted", plan=plan)
    ran: list[str] = []

    async def runner(step, ctx):
        ran.append(step.key)
        return {"summary": "ok", "files": [], "figures": []}

    engine = RunEngine(memory_store, run, step_runner=runner)
    out = EngineLoop.get().submit(engine.execute()).result(timeout=120)

    assert out.status == RunStatus.completed, out.error
    steps = {s.key: s for s in ss.list_steps(run.id)}
    assert {k: (s.status, s.attempts, s.outputs["summary"]) for k, s in steps.items()} == {
        k: (StepStatus.completed, 1, "ok") for k in ("load", "mask", "fit")}
    assert sorted(ran) == ["fit", "load", "mask"] and ran[-1] == "fit"
    types = [e.type.value for e in ss.events(run.id)]
    assert types[0] == "workflow.created" and types[-1] == "workflow.completed"
    assert types.count("step.started") == types.count("step.completed") == 3 and "dag.created" in types
    assert [h.to_state for h in ss.history(run.id)] == ["draft", "executing", "completed"]
    journal = Path(run.path) / "checkpoints" / "journal.jsonl"
    records = [json.loads(line) for line in journal.read_text().splitlines()]
    assert sum(len(r["complete"]) for r in records) == 3 and ss.advance(run.id, []).journal_seq == records[-1]["seq"]
    seq_of = {(part, i if part == "start" else i["step_id"]): r["seq"] for r in records
              for part in ("start", "complete") for i in r[part]}
    fit, load, mask = (steps[k].id for k in ("fit", "load", "mask"))
    # a record lists the steps it completes before those it starts
    assert seq_of[("start", fit)] >= max(seq_of[("complete", load)], seq_of[("complete", mask)]) > max(
        seq_of[("start", load)], seq_of[("start", mask)]), "the dependent step started once both had finished"
    assert ss.list_checkpoints(run.id), "the step completions' checkpoints"
    home = memory_store.home
    assert not (home / "store.duckdb").exists() and not (home / "run" / "store.json").exists(), \
        "no database and no store service"


def test_the_memory_backend_imports_only_the_core_the_port_and_itself():
    allowed_roots = set(sys.stdlib_module_names) | {"pydantic"}
    for path in sorted(MEMORY_PACKAGE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            for name in names:
                ours = name.startswith("cmbagent_jupyter")
                assert (name.startswith(("cmbagent_jupyter.core", "cmbagent_jupyter.store.port",
                                         "cmbagent_jupyter.store.memory")) if ours
                        else name.split(".")[0] in allowed_roots), f"{path.name} imports {name}"


def test_closing_the_store_it_made_removes_its_folder_and_ends_its_subscriptions():
    store = MemoryStore()
    home = store.home
    sub = store.subscribe_all()
    assert home.is_dir() and (home / "sessions").is_dir()
    store.close()
    assert not home.exists() and sub.closed and store.closed
