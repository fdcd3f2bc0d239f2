"""The Python API: sessions and runs from a notebook, a script or another tool.

    from cmbagent_jupyter import open_session
    s = open_session("Project X")
    run = s.run("Fit the CMB power spectrum", max_parallel=4)   # returns at once
    run.status(); run.steps(); run.pause(); run.resume(); run.wait(600)
    run.retry("step_3", "read the map from data/"); run.play_from(4, "use 50 bins")
    other = run.branch(4, name="fine bins", instructions="use 50 bins", hypothesis="...")

A run executes on this process's engine thread (never the caller's, so a Jupyter
kernel stays responsive). Every handle method reads or writes the store through the
actions every front end shares (`cmbagent_jupyter.actions`), so a run started elsewhere
(the CLI, another kernel) is controlled the same way; `resume()` continues any stopped
run in this process, from its last checkpoint.
"""

from __future__ import annotations

import concurrent.futures
import os
import time
from pathlib import Path
from typing import Any

from cmbagent_jupyter import actions
from cmbagent_jupyter.actions import InProcess, executing_here
from cmbagent_jupyter.actions.executors import PROCESS_STORES, Execution, process_store
from cmbagent_jupyter.actions.start import create_run
from cmbagent_jupyter.core import UNSETTLED_RUN_STATES, Event, EventType, InvalidInput, Run, Session, Step
from cmbagent_jupyter.engine.dag import Plan, PlanDAG
from cmbagent_jupyter.store import StorePort

ACTOR = "python"
_WAKE_TYPES = [EventType.workflow_state_changed.value, EventType.workflow_paused.value,
               EventType.workflow_completed.value, EventType.workflow_failed.value,
               EventType.workflow_resumed.value, EventType.workflow_started.value]

__all__ = ["RunHandle", "SessionHandle", "create_run", "get_run", "open_session"]
_STORES = PROCESS_STORES  # this process's client of each home, shared with runs executing here


def _store(home: str | os.PathLike | None = None) -> StorePort:
    return process_store(home)


def open_session(name_or_id: str | None = None, create: bool = True,
                 home: str | os.PathLike | None = None) -> "SessionHandle":
    """A session by name or id (created when missing and `create`); none named: the default one."""
    store = _store(home)
    session = actions.session_for(store, name_or_id, create=create, choose="open_session(NAME_OR_ID) chooses one")
    return SessionHandle(store, session)


def get_run(run_id: str, home: str | os.PathLike | None = None) -> "RunHandle":
    """A handle on any run by id, whichever session and process it belongs to."""
    store = _store(home)
    run = store.find_run(run_id)
    return RunHandle(store, run.session_id, run.id)


class SessionHandle:
    def __init__(self, store: Any, session: Session):
        self.store = store
        self.session = session
        self.ss = store.session(session.id)

    @property
    def id(self) -> str:
        return self.session.id

    @property
    def name(self) -> str:
        return self.session.name

    @property
    def path(self) -> Path:
        return Path(self.session.path)

    def __repr__(self) -> str:
        return f"<cmbagent session {self.name!r} ({self.id})>"

    def run(self, task: str, *, mode: str = "deep_research", model: str | None = None,
            max_parallel: int | None = None, wait: bool = False, scenario: str | None = None,
            plan: Any = None, record: str | os.PathLike | None = None, checkpoint_interval_s: float | None = None,
            quiet: bool = False, **settings: Any) -> "RunHandle":
        """Start a run and return its handle at once (`wait=True` blocks until it stops).

        mode: deep_research (plan, review, execute), control (execute `plan`), one_shot
        (one agent, one task). model: `provider/model`, or `scripted[:SCENARIO]`; with no
        key configured the scripted offline model is used and announced.
        """
        started = actions.start_run(self.store, self.id, task, executor=InProcess(), actor=ACTOR, mode=mode,
                                    model=model, max_parallel=max_parallel, scenario=scenario, plan=plan,
                                    record=record, checkpoint_interval_s=checkpoint_interval_s, **settings)
        handle = RunHandle(self.store, self.id, started.run.id, announcement=started.announcement)
        handle._execution = started.execution
        if not quiet:
            print(f"cmbagent: {started.announcement}; run {started.run.id}")
        if wait:
            handle.wait()
        return handle

    def runs(self, status: str | list[str] | None = None) -> list["RunHandle"]:
        return [RunHandle(self.store, self.id, r.id) for r in self.ss.list_runs(status)]

    def get_run(self, run_id: str) -> "RunHandle":
        run = self.ss.get_run(run_id)
        return RunHandle(self.store, self.id, run.id)

    def cost(self, run_id: str | None = None, group_by: list[str] | None = None) -> list[Any]:
        return actions.costs(self.store, session_id=self.id, run_id=run_id, group_by=group_by).rows


class RunHandle:
    """A run, wherever it executes. Methods read and write the store; none blocks except `wait`."""

    def __init__(self, store: Any, session_id: str, run_id: str, *, announcement: str | None = None):
        self.store = store
        self.session_id = session_id
        self.id = run_id
        self.ss = store.session(session_id)
        self.announcement = announcement
        self._execution: Execution | None = None

    def __repr__(self) -> str:
        try:
            run = self.status()
            return f"<cmbagent run {self.id} {run.status.value} ({run.mode.value}): {run.task[:60]!r}>"
        except Exception:  # noqa: BLE001
            return f"<cmbagent run {self.id}>"

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        """In a notebook a run shows as its live widget (cmbagent_jupyter.widgets.RunView)."""
        # the widgets (ipywidgets, anywidget, their bundles) load when a run is first shown
        from cmbagent_jupyter.widgets import display_run

        bundle = display_run(self)._repr_mimebundle_(include=include, exclude=exclude)
        bundle["text/plain"] = repr(self)
        return bundle

    # -- where it executes here ----------------------------------------------------

    def _here(self) -> Execution | None:
        """Its execution in this process: the one going on (whoever started it), else the last this handle started."""
        return executing_here(self.id) or self._execution

    @property
    def _engine(self) -> Any:
        here = self._here()
        return here.engine if here is not None else None

    @property
    def _future(self) -> concurrent.futures.Future | None:
        here = self._here()
        return here.future if here is not None else None

    @property
    def running_here(self) -> bool:
        return executing_here(self.id) is not None

    # -- reading ---------------------------------------------------------------

    def status(self) -> Run:
        return self.ss.get_run(self.id)

    @property
    def path(self) -> Path:
        return Path(self.status().path)

    def steps(self) -> list[Step]:
        return self.ss.list_steps(self.id)

    def events(self, since_gseq: int | None = None, types: list[str] | None = None) -> list[Event]:
        return self.ss.events(run_id=self.id, since_gseq=since_gseq, types=types)

    def cost(self, group_by: list[str] | None = None) -> list[Any]:
        return actions.costs(self.store, session_id=self.session_id, run_id=self.id, group_by=group_by).rows

    def dag(self, fmt: str = "mermaid") -> Any:
        run = self.status()
        if not run.config.get("final_plan"):
            return None
        dag = PlanDAG(Plan.model_validate(run.config["final_plan"]))
        status = {s.key: s.status.value for s in self.steps()}
        return dag.to_mermaid(status) if fmt == "mermaid" else dag.to_json(status)

    def step(self, ref: int | str) -> Step:
        """A step of this run by number, key or id."""
        return actions.step_in(self.ss, self.status(), ref)

    def approvals(self, pending_only: bool = True) -> list[Any]:
        """The run's approval requests (only those waiting for a decision, by default)."""
        return self.ss.list_approvals(self.id, pending_only=pending_only)

    def branches(self) -> dict[str, Any]:
        """The tree of branches this run belongs to."""
        return actions.branch_tree(self.store, self.id, session_id=self.session_id).model_dump(mode="json")

    # -- waiting ---------------------------------------------------------------

    def wait(self, timeout: float | None = None) -> Run:
        """Block until the run stops (completed, failed, cancelled, paused, interrupted) or `timeout` passes.

        Raises TimeoutError when it is still going at the deadline.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        future = self._future
        if future is not None:
            try:
                future.result(timeout=timeout)
            except concurrent.futures.TimeoutError:
                raise TimeoutError(f"run {self.id} is still {self.status().status.value} after {timeout} s") from None
            return self.status()

        def stopped() -> Run | None:
            run = self.status()
            return run if run.status not in UNSETTLED_RUN_STATES else None

        return self._poll(stopped, _WAKE_TYPES, deadline,
                          lambda: f"run {self.id} is still {self.status().status.value} after {timeout} s")

    def _poll(self, check: Any, types: list[str], deadline: float | None, late: Any) -> Any:
        """Call `check` until it returns something other than None, waking on the run's `types`
        of events (and every 5 s); TimeoutError with `late()` at the deadline."""
        sub = self.ss.subscribe(run_id=self.id, types=types)
        try:
            while True:
                found = check()
                if found is not None:
                    return found
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError(late())
                sub.get(timeout=min(left if left is not None else 5.0, 5.0))
        finally:
            sub.close()

    def wait_for_approval(self, timeout: float | None = None) -> Any:
        """Block until the run asks for a decision and return that request (or the run ends: None)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        ended = object()

        def asked() -> Any:
            pending = self.approvals()
            if pending:
                return pending[0]
            future = self._future
            if self.status().status not in UNSETTLED_RUN_STATES or (future is not None and future.done()):
                return ended
            return None

        found = self._poll(asked, [EventType.approval_requested.value, *_WAKE_TYPES], deadline,
                           lambda: f"run {self.id} asked for no approval within {timeout} s")
        return None if found is ended else found

    # -- control ---------------------------------------------------------------

    def pause(self) -> Run:
        """Ask the run to pause at its next step boundary (it finishes the steps in flight)."""
        return actions.pause(self.store, self.id, session_id=self.session_id, actor=ACTOR)

    def cancel(self) -> Run:
        """Cancel the run: it stops at once (running steps are killed) and cannot be resumed."""
        return actions.cancel(self.store, self.id, session_id=self.session_id, actor=ACTOR)

    def resume(self, *, wait: bool = False, max_parallel: int | None = None, model: str | None = None) -> "RunHandle":
        """Continue the run in this process from its last checkpoint (completed steps are not run again)."""
        resumed = actions.resume(self.store, self.id, executor=InProcess(), session_id=self.session_id, model=model,
                                 max_parallel=max_parallel)
        return self._continued(resumed.execution, wait)

    def _continued(self, execution: Execution | None, wait: bool) -> "RunHandle":
        if execution is not None:
            self._execution = execution
            if wait:
                self.wait()
        return self

    def interrupt(self, reason: str = "interrupted") -> None:
        """Stop a run executing in this process as a signal would: emergency checkpoint, run interrupted."""
        here = executing_here(self.id)
        if here is None:
            raise InvalidInput(f"run {self.id} is not executing in this process")
        here.engine.request_stop("interrupt", reason)

    def result(self) -> Run:
        """The finished run (raises the engine's error if it crashed before settling)."""
        future = self._future
        if future is not None:
            future.result()
        return self.status()

    # -- retries, replays, branches -------------------------------------------------

    def retry(self, step: int | str, feedback: str, *, start: bool = True, wait: bool = False,
              actor: str = ACTOR) -> "RunHandle":
        """Retry a failed step with feedback for its next attempt.

        The feedback is recorded durably (an approval of kind `retry_feedback`, resolved
        `retry`), which the engine reads when the step next starts, with the earlier attempts'
        errors. A run waiting at the step's error gate is answered `retry`; a stopped run has the
        step (and what depends on it) reset and is resumed here (`start=False`: not resumed).
        """
        retried = actions.retry_step(self.store, self.id, step, feedback, actor=actor, session_id=self.session_id,
                                     executor=InProcess() if start else None)
        return self._continued(retried.execution, wait)

    def play_from(self, step: int | str, instructions: str | None = None, *, start: bool = True,
                  wait: bool = False, actor: str = ACTOR) -> "RunHandle":
        """Re-run a step (with new instructions, if given) and exactly what depends on it, in place;
        every other step keeps its result. The run must be stopped (paused, failed, completed...)."""
        replayed = actions.play_from(self.store, self.id, step, instructions, actor=actor, session_id=self.session_id,
                                     executor=InProcess() if start else None)
        return self._continued(replayed.execution, wait)

    def branch(self, from_step: int | str, name: str | None = None, instructions: str | None = None,
               hypothesis: str | None = None, *, start: bool = True, wait: bool = False,
               actor: str = ACTOR) -> "RunHandle":
        """A new run that keeps this run's results before step `from_step` (not executed again, no
        model calls) and executes from there, the fork step with `instructions`; started here."""
        made = actions.branch(self.store, self.id, from_step, actor=actor, name=name, instructions=instructions,
                              hypothesis=hypothesis, session_id=self.session_id,
                              executor=InProcess() if start else None)
        return RunHandle(self.store, self.session_id, made.run.id)._continued(made.execution, wait)
