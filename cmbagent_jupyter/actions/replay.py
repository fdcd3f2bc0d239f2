"""Playing a run again from one of its steps, in place or as a new run (a branch).

Play-from resets the step and exactly what depends on it; every other step keeps its
result. A branch is a new run that keeps the results before the fork step (copied, not
executed again) and executes from there, the fork step with changed instructions.
"""

from __future__ import annotations

from pydantic import BaseModel

from cmbagent_jupyter.actions.executors import Execution, Executor
from cmbagent_jupyter.actions.guards import ensure_stopped, text
from cmbagent_jupyter.actions.lookup import run_in, step_in
from cmbagent_jupyter.actions.resuming import resume
from cmbagent_jupyter.core import Run, Step
from cmbagent_jupyter.store import StorePort


class Replayed(BaseModel):
    """A run set back from `step`: the keys of the steps reset (in plan order)."""

    run_id: str
    step: Step
    reset: list[str]
    execution: Execution | None = None


class Branched(BaseModel):
    """A new run branched from `parent_run_id` at step `from_step`. `kept_steps`: the steps
    before the fork (those in `incomplete_before_fork` had no result to keep and run again)."""

    branch_id: str
    run: Run
    parent_run_id: str
    from_step: int
    kept_steps: list[int]
    incomplete_before_fork: list[int]
    execution: Execution | None = None

    @property
    def reused_steps(self) -> list[int]:
        """The steps whose results the branch keeps (no model call, not executed again)."""
        return [n for n in self.kept_steps if n not in self.incomplete_before_fork]


def play_from(store: StorePort, run_id: str, step: int | str, instructions: str | None = None, *, actor: str,
              session_id: str | None = None, executor: Executor | None = None,
              max_parallel: int | None = None) -> Replayed:
    """Re-run `step` (with new instructions, if given) and what depends on it; the run must be stopped."""
    ss, run = run_in(store, run_id, session_id)
    target = step_in(ss, run, step)
    ensure_stopped(run, "play from a step")
    reset = set(ss.reset_from(target.id, instructions=text(instructions), actor=actor).reset)
    keys = [s.key for s in ss.list_steps(run.id) if s.key in reset]
    execution = None
    if executor is not None:
        execution = resume(store, run.id, executor=executor, session_id=run.session_id,
                           max_parallel=max_parallel).execution
    return Replayed(run_id=run.id, step=target, reset=keys, execution=execution)


def branch(store: StorePort, run_id: str, from_step: int | str, *, actor: str, name: str | None = None,
           instructions: str | None = None, hypothesis: str | None = None, session_id: str | None = None,
           executor: Executor | None = None, max_parallel: int | None = None) -> Branched:
    """A new run that keeps this run's results before `from_step` (number, key or id) and executes from there."""
    ss, parent = run_in(store, run_id, session_id)
    number = step_in(ss, parent, from_step).number
    made = ss.create_branch(parent.id, number, name=text(name), instructions=text(instructions),
                            hypothesis=text(hypothesis), actor=actor)
    execution = None
    if executor is not None:
        execution = resume(store, made.run.id, executor=executor, session_id=parent.session_id,
                           max_parallel=max_parallel).execution
    return Branched(branch_id=made.branch_id, run=made.run, parent_run_id=parent.id, from_step=number,
                    kept_steps=made.kept_steps, incomplete_before_fork=made.incomplete_before_fork,
                    execution=execution)
