"""Starting a run: everything it needs is checked, then it is created, then executed.

Nothing is created on bad input (an unknown mode, a plan that does not parse, a model
without its key), so a refusal leaves no half-made run behind.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from cmbagent_jupyter.actions.executors import Execution, Executor
from cmbagent_jupyter.actions.guards import check_room
from cmbagent_jupyter.core import EventType, InvalidInput, Run, RunMode
from cmbagent_jupyter.engine.plans import given_plan, plan_request
from cmbagent_jupyter.engine.settings import RunSettings
from cmbagent_jupyter.llm.providers import ModelChoice, resolve_model
from cmbagent_jupyter.store import SessionPort, StorePort


class Started(BaseModel):
    """A new run: its record as created, the model it uses (said once to the user) and where it executes."""

    run: Run
    model: str
    announcement: str
    execution: Execution | None = None


def _plan_file(plan: Any) -> Any:
    """A plan given as the path of a JSON file, read; any other plan as it is."""
    if not isinstance(plan, (str, Path)) or Path(str(plan)).suffix != ".json":
        return plan
    path = Path(plan).expanduser()
    if not path.is_file():
        raise InvalidInput(f"no plan file at {path}")
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise InvalidInput(f"{path} is not valid JSON: {exc}") from None


def create_run(ss: SessionPort, task: str, *, mode: str = "deep_research", model: str | None = None,
               max_parallel: int | None = None, scenario: str | None = None, plan: Any = None,
               record: str | os.PathLike | None = None, checkpoint_interval_s: float | None = None,
               actor: str | None = None, **settings: Any) -> tuple[Run, ModelChoice]:
    """Validate everything a run needs, then create it (a draft). `settings`: the run settings
    (`RunSettings`: agent, approval_mode, n_plan_reviews, ...)."""
    if not isinstance(task, str) or not task.strip():
        raise InvalidInput("a run needs a task: describe what to do")
    try:
        mode_v = RunMode(mode)
    except ValueError:
        raise InvalidInput(f"unknown mode {mode!r}; expected one of {', '.join(m.value for m in RunMode)}") from None
    if mode_v == RunMode.planning_and_control:
        mode_v = RunMode.deep_research
    values = dict(settings)
    values.update(max_parallel=max_parallel, plan=_plan_file(plan),
                  record=str(Path(record).expanduser().resolve()) if record else None)
    run_settings = RunSettings.parse(values)
    if mode_v == RunMode.control and run_settings.plan is None:
        raise InvalidInput("a control run executes a given plan: pass one (--plan FILE.json, or plan= in Python)")
    # a plan not made by the agents is known now: checked before anything is created, stored with the draft
    given = given_plan(mode_v, run_settings, task=task) if mode_v != RunMode.deep_research else None
    if mode_v != RunMode.control and run_settings.plan is not None:
        raise InvalidInput(f"a plan is given only to control runs, not {mode_v.value}")
    choice = resolve_model(model, scenario=scenario, home=ss.home)
    extra: dict[str, Any] = {}
    if checkpoint_interval_s is not None:
        if checkpoint_interval_s <= 0:
            raise InvalidInput("checkpoint_interval_s must be positive")
        extra["checkpoint_interval_s"] = float(checkpoint_interval_s)
    config = run_settings.to_config()
    if choice.scripted:
        config["scenario"] = choice.scenario
    run = ss.create_run(task, mode=mode_v.value, model=choice.ref, config=config, actor=actor, **extra)
    if given is not None:  # its steps and DAG show before it starts
        run = ss.plan_ready(run.id, start=False, actor=actor, **plan_request(given)).run
    ss.emit(EventType.log.value, run.id, level="info", message=choice.announcement, model=choice.ref)
    return run, choice


def start_run(store: StorePort, session_id: str, task: str, *, executor: Executor | None,
              actor: str | None = None, max_parallel: int | None = None, **options: Any) -> Started:
    """Create a run in the session and hand it to `executor` (none: it stays a draft).
    `options`: what `create_run` takes besides the task."""
    ss = store.session(session_id)
    if executor is not None:
        check_room(ss)
    run, choice = create_run(ss, task, max_parallel=max_parallel, actor=actor, **options)
    execution = executor.execute(store, run, choice=choice) if executor is not None else None
    return Started(run=run, model=choice.ref, announcement=choice.announcement, execution=execution)
