"""`cmbagent run / status / pause / resume / cancel / cost` in real subprocesses."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import threading
from pathlib import Path

import pytest

from cmbagent_jupyter.store import StorePort, open_store
from fixtures.cli import cli_env, cmbagent, cmbagent_command
from fixtures.engine import control_scenario, engine_home, executions, run_dir, wait_event  # noqa: F401 - fixture


def _offline_prefix() -> list[str]:
    """Run in a network namespace of its own (no interface up) when the system allows it."""
    unshare = shutil.which("unshare")
    if unshare and subprocess.run([unshare, "-rn", "true"], capture_output=True).returncode == 0:
        return [unshare, "-rn"]
    return []


def test_cmbagent_run_on_a_fresh_machine_without_key_or_network(engine_home: Path):
    prefix = _offline_prefix()
    proc = subprocess.run([*prefix, *cmbagent_command(), "run", "Analyse a toy CMB temperature power spectrum"],
                          capture_output=True, text=True, timeout=300, env=cli_env(engine_home))
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    lines = out.splitlines()
    assert lines[0] == "using the scripted offline model (scenario cmb_power_spectrum)"
    # the plan and its DAG
    assert "plan" in out and "Model the instrument: white noise and a Gaussian beam" in out
    assert "level 1: step_1, step_2" in out and "level 5: step_6" in out
    # every step completed, live and in the summary
    for n in range(1, 7):
        assert f"step {n} step_{n} " in out and any(
            line.startswith(f"│ {n} │ step_{n}") and "completed" in line for line in lines), n
    assert "run completed (all steps completed)" in out
    assert "6/6 steps completed" in out
    # the plot and the report exist where the output says
    run_id = lines[1].split()[1]
    root = run_dir(engine_home, run_id)
    png = root / "control" / "data" / "cmb_power_spectrum.png"
    report = root / "control" / "data" / "report_step_6.md"
    assert str(png) in out and str(report) in out
    assert png.read_bytes()[:4] == b"\x89PNG" and "Fitted amplitude A" in report.read_text()
    # costs printed: a row per agent and the total
    cost_rows = [line for line in lines if line.startswith("│ ") and "scripted/cmb_power_spectrum" in line]
    assert {row.split("│")[1].strip() for row in cost_rows} == {
        "engineer", "executor", "plan_reviewer", "planner", "researcher"}
    assert any(line.startswith("│ Total") for line in lines)
    if prefix:
        assert "network" not in proc.stderr.lower()

    status = json.loads(cmbagent(engine_home, "status", "--json", check=True).stdout)
    assert [(r["id"], r["state"], r["steps_completed"], r["steps_total"]) for r in status] == [
        (run_id, "completed", 6, 6)]
    detail = json.loads(cmbagent(engine_home, "status", run_id, "--json", check=True).stdout)
    assert detail["run"]["status"] == "completed" and not detail["resumable"]
    costs = json.loads(cmbagent(engine_home, "cost", "--run", run_id, "--json", check=True).stdout)
    assert {r["agent"] for r in costs} == {"engineer", "executor", "plan_reviewer", "planner", "researcher"}
    assert sum(r["calls"] for r in costs) == 19 and all(r["priced"] for r in costs)


def test_the_live_display_shows_the_events_still_on_their_way_when_the_run_finished(engine_home: Path, capsys):
    from cmbagent_jupyter.cli.runs import RunMonitor

    store = open_store(engine_home)
    try:
        ss = store.session(store.create_session("monitor").id)
        run = ss.create_run("monitored", mode="control")
        ss.append_events(events=[{"type": "workflow.completed", "run_id": run.id, "payload": {
            "from": "executing", "to": "completed", "reason": "all steps completed"}}])
        monitor = RunMonitor(ss, run.id, live=False)
        monitor.close()  # as if the store's push of these events had not arrived yet
        while not monitor.events.empty():
            monitor.events.get_nowait()
        finished = threading.Event()
        finished.set()
        monitor.follow(finished)
    finally:
        store.close()
    out = capsys.readouterr().out
    assert "run completed (all steps completed)" in out
    assert out.count("run completed") == 1


def test_sigterm_leaves_the_run_interrupted_and_resume_finishes_it(engine_home: Path, tmp_path: Path):
    steps = [{"key": "a", "depends_on": []}, {"key": "b", "depends_on": ["a"]}, {"key": "c", "depends_on": ["b"]}]
    scenario, plan = control_scenario(tmp_path / "s.yaml", steps, sleep_s=1.0)
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(json.dumps(plan))
    proc = subprocess.Popen([*cmbagent_command(), "run", "three steps", "--mode", "control", "--plan", str(plan_file),
                             "--scenario", str(scenario), "--session", "sig"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env(engine_home))
    store = open_store(engine_home)
    try:
        ss = store.session(_wait_session(store, "sig"))
        run_id = _wait_run(ss)
        wait_event(ss, run_id, lambda e: e["type"] == "step.started" and e["payload"]["key"] == "b",
                   what="step b to start")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 128 + signal.SIGTERM, out + err
        assert "SIGTERM: writing an emergency checkpoint" in err
        assert f"continue with: cmbagent resume {run_id}" in out
        run = ss.get_run(run_id)
        assert run.status.value == "interrupted"
        assert ss.latest_checkpoint(run_id).kind.value == "emergency"
        assert executions(run_dir(engine_home, run_id)) == ["a"]

        status = json.loads(cmbagent(engine_home, "status", "--json", check=True).stdout)
        assert status[0]["state"] == "interrupted" and status[0]["resumable"]
        resumed = cmbagent(engine_home, "resume", run_id, timeout=120)
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        assert "1 step(s) already completed" in resumed.stdout
        assert ss.get_run(run_id).status.value == "completed"
        assert executions(run_dir(engine_home, run_id)) == ["a", "b", "c"]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        store.close()


def test_status_shows_a_run_whose_process_died_as_resumable(engine_home: Path, tmp_path: Path):
    steps = [{"key": "a", "depends_on": []}, {"key": "b", "depends_on": ["a"]}]
    scenario, plan = control_scenario(tmp_path / "s.yaml", steps, sleep_s=1.0)
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(json.dumps(plan))
    proc = subprocess.Popen([*cmbagent_command(), "run", "two steps", "--mode", "control", "--plan", str(plan_file),
                             "--scenario", str(scenario), "--session", "dies"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=cli_env(engine_home))
    store = open_store(engine_home)
    try:
        ss = store.session(_wait_session(store, "dies"))
        run_id = _wait_run(ss)
        wait_event(ss, run_id, lambda e: e["type"] == "step.started", what="a step to start")
        proc.kill()
        proc.wait(timeout=30)
        rows = json.loads(cmbagent(engine_home, "status", "--json", check=True).stdout)
        row = next(r for r in rows if r["id"] == run_id)
        assert row["status"] == "executing" and row["state"] in ("orphaned", "stalled")
        assert row["resumable"] and not row["owner_alive"]
        table = cmbagent(engine_home, "status", check=True).stdout
        assert f"cmbagent resume {run_id}" in table
        refused = cmbagent(engine_home, "cancel", "run_00000000000000000000")
        assert refused.returncode == 2 and "does not exist" in refused.stderr
        assert cmbagent(engine_home, "resume", run_id, timeout=120).returncode == 0
        assert ss.get_run(run_id).status.value == "completed"
        assert executions(run_dir(engine_home, run_id)) == ["a", "b"]
        again = cmbagent(engine_home, "resume", run_id)
        assert again.returncode == 2 and "only a paused, interrupted, failed or stalled run" in again.stderr
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        store.close()


def test_cost_lists_every_session_and_warns_about_unpriced_models(engine_home: Path):
    store = open_store(engine_home)
    try:
        ss = store.session(store.create_session("costs").id)
        run = ss.create_run("t", mode="one_shot")
        ss.add_costs([{"run_id": run.id, "agent": "engineer", "model": "gpt-4o-mini", "prompt_tokens": 1000,
                       "completion_tokens": 100, "cost_usd": 0.00021, "priced": True},
                      {"run_id": run.id, "agent": "engineer", "model": "my-local-llm", "prompt_tokens": 10,
                       "completion_tokens": 5, "cost_usd": 0.0, "priced": False}])
    finally:
        store.close()
    out = cmbagent(engine_home, "cost", check=True)
    assert "gpt-4o-mini" in out.stdout and "0.000210" in out.stdout and "(unpriced)" in out.stdout
    assert "no price known for my-local-llm" in out.stderr
    rows = json.loads(cmbagent(engine_home, "cost", "--by", "model", "--json", check=True).stdout)
    assert {r["model"]: r["cost_usd"] for r in rows} == {"gpt-4o-mini": pytest.approx(0.00021),
                                                        "my-local-llm": 0.0}


def _wait_session(store: StorePort, name: str) -> str:
    from cmbagent_jupyter.core.errors import NotFound
    from fixtures.waiting import wait_with_deadline as wait_for

    def found():
        try:
            return store.resolve_session(name).id
        except NotFound:
            return None
    return wait_for(found, 60, f"session {name} to be created")


def _wait_run(ss) -> str:
    from fixtures.waiting import wait_with_deadline as wait_for

    return wait_for(lambda: (ss.list_runs() or [None])[0] and ss.list_runs()[0].id, 60, "the run to be created")
