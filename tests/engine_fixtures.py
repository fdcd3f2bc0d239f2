"""Fixtures and helpers of the engine tests (imported by tests/test_engine_*.py and test_cli_run*.py).

Every test gets its own CMBAGENT_HOME, no provider keys in its environment, and the
store service it started is stopped at the end.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
KEY_VARS = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY", "MISTRAL_API_KEY",
            "CMBAGENT_MODEL", "CMBAGENT_SCENARIO", "OPENAI_BASE_URL")


@pytest.fixture
def engine_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh CMBAGENT_HOME with no model keys; the store service is stopped afterwards."""
    from cmbagent_jupyter import api
    from cmbagent_jupyter.store.local import stop_service

    home = tmp_path / "cmbagent-home"
    monkeypatch.setenv("CMBAGENT_HOME", str(home))
    for var in KEY_VARS:
        monkeypatch.delenv(var, raising=False)
    try:
        yield home
    finally:
        store = api._STORES.pop(str(home.resolve()), None)
        if store is not None:
            store.close()
        stop_service(home)


def cli_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment of a `cmbagent` subprocess: this home, no keys, this checkout importable."""
    env = {k: v for k, v in os.environ.items() if k not in KEY_VARS}
    env.update(CMBAGENT_HOME=str(home), PYTHONPATH=os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH"))
                                                                    if p),
               COLUMNS="200", NO_COLOR="1", PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def cmbagent_command() -> list[str]:
    """The venv's `cmbagent` console script when installed, else the same entry point via -c."""
    script = Path(sys.executable).parent / "cmbagent"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from cmbagent_jupyter.cli import main; sys.exit(main())"]


def cmbagent(home: Path, *args: str, timeout: float = 180, check: bool = False, **extra_env: str
             ) -> subprocess.CompletedProcess:
    proc = subprocess.run([*cmbagent_command(), *args], capture_output=True, text=True,
                          timeout=timeout, env=cli_env(home, **extra_env), cwd=str(home.parent))
    if check and proc.returncode != 0:
        raise AssertionError(f"cmbagent {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def write_scenario(path: Path, turns: list[dict[str, Any]], *, name: str | None = None, price: bool = True,
                   latency_s: float = 0.0, executor_defaults: bool = True) -> Path:
    """A scenario file for a test; the executor runs the step's file by default."""
    doc: dict[str, Any] = {"name": name or path.stem, "turns": turns}
    if price:
        doc["price"] = {"input_per_mtok": 0, "output_per_mtok": 0}
    if latency_s:
        doc["latency_s"] = latency_s
    if executor_defaults:
        doc["defaults"] = {"executor": [
            {"tool_calls": [{"name": "run_python", "arguments": {"filename": "{code_file}"}}]},
            {"content": "Ran {code_file}."},
        ]}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def python_reply(code: str) -> str:
    return f"```python\n{code.strip()}\n```\n"


def plan_json(steps: list[dict[str, Any]]) -> str:
    return json.dumps({"sub_tasks": steps})


def wait_for(predicate, timeout: float, what: str, interval_event=None):
    """Wait for a condition with a deadline; `interval_event` (a threading.Event or a
    subscription's get) is what the wait blocks on between checks."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        if interval_event is not None:
            interval_event(min(left, 0.5))
        else:
            time.sleep(min(left, 0.05))


def run_dir(home: Path, run_id: str) -> Path:
    matches = list((home / "sessions").glob(f"*/runs/{run_id}"))
    assert len(matches) == 1, matches
    return matches[0]


def counting_code(key: str, *, sleep_s: float = 0.0, value: str | None = None, fail: bool = False) -> str:
    """A step script that works a little, writes data/<key>.txt and then appends its key to the
    run's executions.log: one line per execution that ran to its end."""
    body = [
        "import pathlib, time",
        f"time.sleep({sleep_s})" if sleep_s else "",
        "1 / 0" if fail else "",
        f"pathlib.Path('data/{key}.txt').write_text({(value or f'result of {key}')!r})",
        f"print('computed {key}')",
        f"with open('../executions.log', 'a') as f:\n    f.write('{key}\\n')",
    ]
    return python_reply("\n".join(line for line in body if line))


def control_scenario(path: Path, steps: list[dict[str, Any]], *, sleep_s: float = 0.0, latency_s: float = 0.0
                     ) -> tuple[Path, dict[str, Any]]:
    """A plan of engineer/researcher steps and a scenario scripting each: (scenario file, plan)."""
    turns = []
    for s in steps:
        if s.get("sub_task_agent", "engineer") == "engineer":
            turns.append({"agent": "engineer", "step": s["key"], "content": counting_code(s["key"], sleep_s=sleep_s)})
        else:
            turns.append({"agent": s["sub_task_agent"], "step": s["key"], "content": f"# Notes for {s['key']}\nDone."})
    plan = {"sub_tasks": [{"sub_task_agent": "engineer", "sub_task": f"do {s['key']}", **s} for s in steps]}
    return write_scenario(path, turns, latency_s=latency_s), plan


def executions(run_path: Path) -> list[str]:
    log = Path(run_path) / "executions.log"
    return log.read_text().split() if log.exists() else []


def wait_event(ss: Any, run_id: str, predicate, timeout: float = 60.0, what: str = "an event") -> dict:
    """Block on the store's event push until an event of the run matches (replaying earlier ones)."""
    sub = ss.subscribe(run_id=run_id, since_gseq=0)
    try:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}")
            ev = sub.get(timeout=min(left, 1.0))
            if ev is not None and predicate(ev):
                return ev
    finally:
        sub.close()
