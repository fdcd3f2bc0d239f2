"""The Python API: sessions and runs from a notebook, a script or another tool.

    from cmbagent_jupyter import open_session
    s = open_session("Project X")
    run = s.run("Fit the CMB power spectrum", max_parallel=4)   # returns at once
    run.status(); run.steps(); run.pause(); run.resume(); run.wait(600)
    run.retry("step_3", "read the map from data/"); run.play_from(4, "use 50 bins")
    other = run.branch(4, name="fine bins", instructions="use 50 bins", hypothesis="...")

A run executes on this process's engine thread (never the caller's, so a Jupyter
kernel stays responsive). Every handle method reads or writes the store, so a run
started elsewhere (the CLI, another kernel) is controlled the same way; `resume()`
continues any stopped run in this process, from its last checkpoint.
"""

from __future__ import annotations

import concurrent.futures
import os
import threading
import time
from pathlib import Path
from typing import Any

from cmbagent_jupyter.core import UNSETTLED_RUN_STATES, Event, EventType, InvalidInput, Run, RunStatus, Session, Step

_STORES: dict[str, Any] = {}
_STORES_LOCK = threading.Lock()
_WAKE_TYPES = [EventType.workflow_state_changed.value, EventType.workflow_paused.value,
               EventType.workflow_completed.value, EventType.workflow_failed.value,
               EventType.workflow_resumed.value, EventType.workflow_started.value]


def _store(home: str | os.PathLike | None = None):
    from cmbagent_jupyter.core.home import home_path
    from cmbagent_jupyter.store import open_store

    key = str(home_path(home))
    with _STORES_LOCK:
        store = _STORES.get(key)
        if store is None or store.closed:
            store = _STORES[key] = open_store(key)
        return store


def open_session(name_or_id: str | None = None, create: bool = True,
                 home: str | os.PathLike | None = None) -> "SessionHandle":
    """A session by name or id (created when missing and `create`); none named: the default one."""
    from cmbagent_jupyter.core import NotFound

    store = _store(home)
    if name_or_id is None:
        sessions = store.list_sessions()
        session = next((s for s in sessions if s.name == "default"), sessions[0] if len(sessions) == 1 else None)
        if session is None:
            if len(sessions) > 1:
                raise InvalidInput("several sessions exist: open_session(NAME_OR_ID) chooses one")
            session = store.create_session("default")
        return SessionHandle(store, session)
    try:
        return SessionHandle(store, store.resolve_session(name_or_id))
    except NotFound:
        if not create or name_or_id.startswith("ses_"):
            raise
        return SessionHandle(store, store.create_session(name_or_id))


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
        run, choice = create_run(self.ss, task, mode=mode, model=model, max_parallel=max_parallel,
                                 scenario=scenario, plan=plan, record=record,
                                 checkpoint_interval_s=checkpoint_interval_s, **settings)
        handle = RunHandle(self.store, self.id, run.id, announcement=choice.announcement)
        if not quiet:
            print(f"cmbagent: {choice.announcement}; run {run.id}")
        handle._start(choice)
        if wait:
            handle.wait()
        return handle

    def runs(self, status: str | list[str] | None = None) -> list["RunHandle"]:
        return [RunHandle(self.store, self.id, r.id) for r in self.ss.list_runs(status)]

    def get_run(self, run_id: str) -> "RunHandle":
        run = self.ss.get_run(run_id)
        return RunHandle(self.store, self.id, run.id)

    def cost(self, run_id: str | None = None, group_by: list[str] | None = None) -> list[dict[str, Any]]:
        return self.ss.cost_summary(run_id=run_id, group_by=group_by or ["agent", "model"])


def create_run(ss: Any, task: str, *, mode: str = "deep_research", model: str | None = None,
               max_parallel: int | None = None, scenario: str | None = None, plan: Any = None,
               record: str | os.PathLike | None = None, checkpoint_interval_s: float | None = None,
               **settings: Any):
    """Validate everything a run needs, then create it (draft). Nothing is created on bad input."""
    from cmbagent_jupyter.engine.runner import given_plan, plan_request
    from cmbagent_jupyter.engine.settings import RunSettings
    from cmbagent_jupyter.llm.providers import resolve_model
    from cmbagent_jupyter.core import RunMode

    if not isinstance(task, str) or not task.strip():
        raise InvalidInput("a run needs a task: describe what to do")
    try:
        mode_v = RunMode(mode)
    except ValueError:
        raise InvalidInput(f"unknown mode {mode!r}; expected one of {', '.join(m.value for m in RunMode)}") from None
    if mode_v == RunMode.planning_and_control:
        mode_v = RunMode.deep_research
    if isinstance(plan, (str, Path)) and Path(str(plan)).suffix == ".json":
        import json

        p = Path(plan).expanduser()
        if not p.is_file():
            raise InvalidInput(f"no plan file at {p}")
        try:
            plan = json.loads(p.read_text())
        except ValueError as exc:
            raise InvalidInput(f"{p} is not valid JSON: {exc}") from None
    values = dict(settings)
    values.update(max_parallel=max_parallel, plan=plan, record=str(Path(record).expanduser().resolve()) if record else None)
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
    run = ss.create_run(task, mode=mode_v.value, model=choice.ref, config=config, **extra)
    if given is not None:  # its steps and DAG show before it starts
        run = ss.plan_ready(run.id, start=False, **plan_request(given)).run
    ss.emit(EventType.log.value, run.id, level="info", message=choice.announcement, model=choice.ref)
    return run, choice


class RunHandle:
    """A run, wherever it executes. Methods read and write the store; none blocks except `wait`."""

    def __init__(self, store: Any, session_id: str, run_id: str, *, announcement: str | None = None):
        self.store = store
        self.session_id = session_id
        self.id = run_id
        self.ss = store.session(session_id)
        self.announcement = announcement
        self._engine = None
        self._future: concurrent.futures.Future | None = None

    def __repr__(self) -> str:
        try:
            run = self.status()
            return f"<cmbagent run {self.id} {run.status.value} ({run.mode.value}): {run.task[:60]!r}>"
        except Exception:  # noqa: BLE001
            return f"<cmbagent run {self.id}>"

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        """In a notebook a run shows as its live widget (cmbagent_jupyter.widgets.RunView)."""
        from cmbagent_jupyter.widgets import display_run

        bundle = display_run(self)._repr_mimebundle_(include=include, exclude=exclude)
        bundle["text/plain"] = repr(self)
        return bundle

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

    def cost(self, group_by: list[str] | None = None) -> list[dict[str, Any]]:
        return self.ss.cost_summary(run_id=self.id, group_by=group_by or ["agent", "model"])

    def dag(self, fmt: str = "mermaid") -> Any:
        from cmbagent_jupyter.engine.dag import Plan, PlanDAG

        run = self.status()
        if not run.config.get("final_plan"):
            return None
        dag = PlanDAG(Plan.model_validate(run.config["final_plan"]))
        status = {s.key: s.status.value for s in self.steps()}
        return dag.to_mermaid(status) if fmt == "mermaid" else dag.to_json(status)

    @property
    def running_here(self) -> bool:
        return self._future is not None and not self._future.done()

    # -- control ---------------------------------------------------------------

    def wait(self, timeout: float | None = None) -> Run:
        """Block until the run stops (completed, failed, cancelled, paused, interrupted) or `timeout` passes.

        Raises TimeoutError when it is still going at the deadline.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        if self._future is not None:
            try:
                self._future.result(timeout=timeout)
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

    def approvals(self, pending_only: bool = True) -> list[Any]:
        """The run's approval requests (only those waiting for a decision, by default)."""
        return self.ss.list_approvals(self.id, pending_only=pending_only)

    def wait_for_approval(self, timeout: float | None = None) -> Any:
        """Block until the run asks for a decision and return that request (or the run ends: None)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        ended = object()

        def asked() -> Any:
            pending = self.approvals()
            if pending:
                return pending[0]
            if self.status().status not in UNSETTLED_RUN_STATES or (self._future is not None and self._future.done()):
                return ended
            return None

        found = self._poll(asked, [EventType.approval_requested.value, *_WAKE_TYPES], deadline,
                           lambda: f"run {self.id} asked for no approval within {timeout} s")
        return None if found is ended else found

    def pause(self) -> Run:
        """Ask the run to pause at its next step boundary (it finishes the steps in flight)."""
        from cmbagent_jupyter.engine.liveness import liveness

        run = self.status()
        live = liveness(run)
        if live.state in ("stalled", "orphaned"):
            return self.ss.transition_run(self.id, RunStatus.paused.value, reason="paused while its process was gone",
                                          actor="user")
        return self.ss.request_pause(self.id)

    def cancel(self) -> Run:
        """Cancel the run: it stops at once (running steps are killed) and cannot be resumed."""
        run = self.ss.transition_run(self.id, RunStatus.cancelled.value, reason="cancelled by the user", actor="user")
        if self._engine is not None and self.running_here:
            self._engine.request_stop("cancel", "cancelled by the user")
        return run

    def resume(self, *, wait: bool = False, max_parallel: int | None = None, model: str | None = None) -> "RunHandle":
        """Continue the run in this process from its last checkpoint (completed steps are not run again)."""
        from cmbagent_jupyter.llm.providers import resolve_model

        from cmbagent_jupyter.engine.liveness import check_resumable

        if self.running_here:
            raise InvalidInput(f"run {self.id} is already executing in this process")
        run = self.status()
        check_resumable(run)
        choice = resolve_model(model or run.model, home=self.store.home)
        self._start(choice, max_parallel=max_parallel)
        if wait:
            self.wait()
        return self

    # -- retries, replays, branches -------------------------------------------------

    def step(self, ref: int | str) -> Step:
        """A step of this run by number, key or id."""
        steps = self.steps()
        for s in steps:
            if s.id == ref or s.key == ref or (str(ref).isdigit() and s.number == int(ref)):
                return s
        raise InvalidInput(f"run {self.id} has no step {ref!r}; its steps are "
                           f"{', '.join(f'{s.number} ({s.key})' for s in steps) or 'none yet'}")

    def retry(self, step: int | str, feedback: str, *, start: bool = True, wait: bool = False,
              actor: str = "python") -> "RunHandle":
        """Retry a failed step with feedback for its next attempt.

        The feedback is recorded durably (an approval of kind `retry_feedback`, resolved
        `retry`), which the engine reads when the step next starts, with the earlier attempts'
        errors. A run waiting at the step's error gate is answered `retry`; a stopped run has the
        step (and what depends on it) reset and is resumed here (`start=False`: not resumed).
        """
        from cmbagent_jupyter.engine.step_worker import RETRY_FEEDBACK_KIND

        feedback = (feedback or "").strip()
        if not feedback:
            raise InvalidInput("feedback must say what to do differently")
        target = self.step(step)
        gate = next((a for a in self.approvals() if a.step_id == target.id and "retry" in a.options), None)
        if gate is not None:
            self.ss.resolve_approval(gate.id, "retry", feedback=feedback, actor=actor)
            return self
        if target.status.value != "failed":
            raise InvalidInput(f"step {target.number} ({target.key}) is {target.status.value}; only a failed step is "
                               f"retried (play_from re-runs a completed one)")
        self._check_stopped("retry a step")
        record = self.ss.create_approval(self.id, RETRY_FEEDBACK_KIND, step_id=target.id,
                              request={"title": f"Retry step {target.number} with feedback",
                                       "summary": feedback[:300], "step": target.key, "source": actor},
                              options=["retry"], actor=actor)
        self.ss.resolve_approval(record.id, "retry", feedback=feedback, actor=actor)
        self.ss.reset_from(target.id, actor=actor)
        if start:
            self.resume(wait=wait)
        return self

    def play_from(self, step: int | str, instructions: str | None = None, *, start: bool = True,
                  wait: bool = False, actor: str = "python") -> "RunHandle":
        """Re-run a step (with new instructions, if given) and exactly what depends on it, in place;
        every other step keeps its result. The run must be stopped (paused, failed, completed...)."""
        target = self.step(step)
        self._check_stopped("play from a step")
        self.ss.reset_from(target.id, instructions=(instructions or "").strip() or None,
                     actor=actor)
        if start:
            self.resume(wait=wait)
        return self

    def branch(self, from_step: int, name: str | None = None, instructions: str | None = None,
               hypothesis: str | None = None, *, start: bool = True, wait: bool = False,
               actor: str = "python") -> "RunHandle":
        """A new run that keeps this run's results before step `from_step` (not executed again, no
        model calls) and executes from there, the fork step with `instructions`; started here."""
        number = self.step(from_step).number
        out = self.ss.create_branch(self.id, number, name=name,
                           instructions=(instructions or "").strip() or None, hypothesis=hypothesis, actor=actor)
        child = RunHandle(self.store, self.session_id, out.run.id)
        if start:
            child.resume(wait=wait)
        return child

    def branches(self) -> dict[str, Any]:
        """The tree of branches this run belongs to."""
        from cmbagent_jupyter.engine.compare import branch_tree

        return branch_tree(self.store, self.id)

    def _check_stopped(self, what: str) -> None:
        from cmbagent_jupyter.engine.liveness import liveness

        run = self.status()
        if self.running_here or liveness(run).state == "running":
            raise InvalidInput(f"run {self.id} is {run.status.value}; pause it (and let it stop) before you {what}")

    def interrupt(self, reason: str = "interrupted") -> None:
        """Stop a run executing in this process as a signal would: emergency checkpoint, run interrupted."""
        if self._engine is None or not self.running_here:
            raise InvalidInput(f"run {self.id} is not executing in this process")
        self._engine.request_stop("interrupt", reason)

    def _start(self, choice: Any, max_parallel: int | None = None) -> None:
        from cmbagent_jupyter.engine.loop import EngineLoop
        from cmbagent_jupyter.engine.runner import RunEngine

        self._engine = RunEngine(self.store, self.status(), model=choice, max_parallel=max_parallel)
        self._future = EngineLoop.get().submit(self._engine.execute())

    def result(self) -> Run:
        """The finished run (raises the engine's error if it crashed before settling)."""
        if self._future is not None:
            self._future.result()
        return self.status()
