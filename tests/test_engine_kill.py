"""SIGKILL a run's process at random points, many times; resume each in a new process.

Every run must complete; a step recorded as completed before the kill must never run
again (each execution that runs to its end appends the step's key to the run's
executions.log); only a step in flight at the kill may run twice; and the outputs
must be identical to those of a run that was never interrupted.

CMBAGENT_KILL_TRIALS (default 20) sets the number of trials, CMBAGENT_KILL_SEED the seed.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from cmbagent_jupyter.store import StorePort, open_store
from fixtures.cli import cli_env, cmbagent, cmbagent_command
from fixtures.engine import control_scenario, engine_home, executions, run_dir  # noqa: F401 - fixture
from fixtures.waiting import wait_with_deadline as wait_for

TRIALS = int(os.environ.get("CMBAGENT_KILL_TRIALS", "20"))
LANES = 2
STEPS = [
    {"key": "theory", "depends_on": []},
    {"key": "noise", "depends_on": []},
    {"key": "simulate", "depends_on": ["theory", "noise"]},
    {"key": "fit", "depends_on": ["simulate"]},
    {"key": "plot", "depends_on": ["simulate"]},
    {"key": "report", "depends_on": ["fit", "plot"]},
]
STEP_EVENTS = ["step.started", "step.completed"]


def _start(home: Path, plan_file: Path, scenario: Path, session: str) -> subprocess.Popen:
    return subprocess.Popen([*cmbagent_command(), "run", "kill me", "--mode", "control", "--plan", str(plan_file),
                             "--scenario", str(scenario), "--session", session, "--max-parallel", "2", "--json"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=cli_env(home))


def _outputs(store: StorePort, run_id: str) -> dict[str, dict]:
    run = store.find_run(run_id)
    steps = store.session(run.session_id).list_steps(run_id)
    return {s.key: s.outputs for s in steps}


def _data_files(home: Path, run_id: str) -> dict[str, str]:
    data = run_dir(home, run_id) / "control" / "data"
    return {p.name: p.read_text() for p in sorted(data.glob("*.txt"))}


def test_sigkill_at_random_points_and_resume_in_a_new_process(engine_home: Path, tmp_path: Path):
    seed = int(os.environ.get("CMBAGENT_KILL_SEED", str(time.time_ns() % 1_000_000)))
    scenario, plan = control_scenario(tmp_path / "kill.yaml", STEPS, sleep_s=0.15)
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(json.dumps(plan))
    store = open_store(engine_home)
    try:
        reference = _start(engine_home, plan_file, scenario, "reference")
        assert reference.wait(timeout=120) == 0, reference.stderr.read()
        ref_session = store.resolve_session("reference")
        ref_run = store.session(ref_session.id).list_runs()[0]
        ref_outputs = _outputs(store, ref_run.id)
        ref_files = _data_files(engine_home, ref_run.id)
        assert len(ref_files) == len(STEPS) and executions(Path(ref_run.path)) != []

        def trial(number: int) -> tuple[int, int, list[str]]:
            rng = random.Random(seed * 1000 + number)
            name = f"trial-{number}"
            proc = _start(engine_home, plan_file, scenario, name)
            sid = wait_for(lambda: _session_id(store, name), 60, f"session {name}")
            ss = store.session(sid)
            sub = ss.subscribe(types=STEP_EVENTS, since_gseq=0)
            try:
                # kill at a random step event (a step starting or just recorded), a little after it
                target = rng.randrange(1, 2 * len(STEPS))
                seen = 0
                deadline = time.monotonic() + 90
                while seen < target:
                    assert time.monotonic() < deadline, f"trial {number}: only {seen} step events (seed {seed})"
                    if sub.get(timeout=1.0) is not None:
                        seen += 1
                try:
                    proc.wait(timeout=rng.uniform(0.0, 0.2))
                except subprocess.TimeoutExpired:
                    pass
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
            finally:
                sub.close()
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            run = ss.list_runs()[0]
            at_kill = {s.key: s.status.value for s in ss.list_steps(run.id)}
            done_before = {k for k, v in at_kill.items() if v == "completed"}
            in_flight = {k for k, v in at_kill.items() if v == "running"}
            if run.status.value != "completed":
                resumed = cmbagent(engine_home, "resume", run.id, "--json", timeout=180)
                assert resumed.returncode == 0, f"trial {number} (seed {seed}): {resumed.stderr[-2000:]}"
            assert ss.get_run(run.id).status.value == "completed", f"trial {number} (seed {seed})"
            counts = Counter(executions(Path(run.path)))
            for key in at_kill:
                if key in done_before:
                    assert counts[key] == 1, f"trial {number} (seed {seed}): completed step {key} ran again: {counts}"
                elif key in in_flight:
                    assert 1 <= counts[key] <= 2, f"trial {number} (seed {seed}): in-flight {key}: {counts}"
                else:
                    assert counts[key] == 1, f"trial {number} (seed {seed}): {key}: {counts}"
            assert _outputs(store, run.id) == ref_outputs, f"trial {number} (seed {seed}): outputs differ"
            assert _data_files(engine_home, run.id) == ref_files, f"trial {number} (seed {seed}): files differ"
            return target, len(done_before), sorted(in_flight)

        # two lanes of trials at once: each run's process is mostly waiting on its steps and the store
        with ThreadPoolExecutor(max_workers=LANES) as lanes:
            kills = list(lanes.map(trial, range(TRIALS)))
        interrupted = [k for k in kills if k[1] < len(STEPS)]
        assert len(interrupted) >= TRIALS * 3 // 4, f"most kills land mid-run: {kills} (seed {seed})"
        assert any(k[2] for k in kills), f"some kills land while a step is in flight: {kills} (seed {seed})"
    finally:
        store.close()


def _session_id(store: StorePort, name: str) -> str | None:
    from cmbagent_jupyter.core.errors import NotFound

    try:
        return store.resolve_session(name).id
    except NotFound:
        return None
