"""The session, its runs and their steps: the state machine's moves with their guards and quotas."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from pydantic import ValidationError

from cmbagent_jupyter.core import (
    ACTIVE_RUN_STATES,
    CheckpointKind,
    Checkpoint,
    EventType,
    Quotas,
    Run,
    RunMode,
    RunStatus,
    Session,
    SessionStatus,
    Step,
    StepStatus,
    Usage,
    new_id,
    utcnow,
)
from cmbagent_jupyter.core.errors import Conflict, Invalid, QuotaExceeded
from cmbagent_jupyter.core.home import dir_size_mb, run_dir
from cmbagent_jupyter.core.states import (
    TERMINAL_RUN_STATES,
    IllegalTransition,
    check_run_transition,
    check_step_transition,
    needs_counts,
)
from cmbagent_jupyter.store.memory.state import State, Tx, as_json, check
from cmbagent_jupyter.store.port import Heartbeat, PlanStep

KEEP: Any = object()  # an argument left out: the field keeps its value
RUN_FOLDERS = ("planning", "control/codebase", "control/data", "context", "checkpoints")
MAX_TASK = 200_000

_RUN_EVENT = {RunStatus.paused: EventType.workflow_paused, RunStatus.completed: EventType.workflow_completed,
              RunStatus.failed: EventType.workflow_failed}
_STEP_EVENT = {StepStatus.running: EventType.step_started, StepStatus.completed: EventType.step_completed,
               StepStatus.failed: EventType.step_failed}


def step_payload(step: Step, src: str, dst: str) -> dict[str, Any]:
    return {"step_id": step.id, "key": step.key, "number": step.number, "agent": step.agent, "from": src, "to": dst}


class RunOps:
    """The session's own record, its runs and its steps."""

    _st: State
    session_id: str

    # -- the session -------------------------------------------------------------

    def info(self) -> Session:
        with self._st.read():
            return self._st.session(self.session_id).model_copy(deep=True)

    def usage(self) -> Usage:
        with self._st.read():
            session = self._st.session(self.session_id)
            return Usage(active_runs=self._active_runs(), cost_usd=self._st.spent(self.session_id),
                         disk_mb=self._disk_mb(session))

    def set_quotas(self, **quotas: Any) -> Session:
        with self._st.write() as tx:
            session = self._st.session(self.session_id)
            try:
                merged = Quotas.model_validate({**session.quotas.model_dump(), **quotas})
            except ValidationError as exc:
                raise Invalid(str(exc)) from None
            out = tx.put(self._st.sessions, session.id, session.model_copy(update={"quotas": merged}))
            return out.model_copy(deep=True)

    def set_status(self, status: str, *, reason: str | None = None, actor: str | None = None) -> Session:
        try:
            to = SessionStatus(status)
        except ValueError:
            raise Invalid(f"unknown session status {status!r}; expected active, archived or deleted") from None
        with self._st.write() as tx:
            session = self._st.session(self.session_id)
            if to in (SessionStatus.archived, SessionStatus.deleted):
                # a paused run may sleep in an archived session; deleting one needs every run stopped
                blocking = ACTIVE_RUN_STATES if to == SessionStatus.deleted else ACTIVE_RUN_STATES - {RunStatus.paused}
                active = sum(r.status in blocking for r in self._runs())
                if active:
                    advice = "cancel them before deleting it" if to == SessionStatus.deleted else \
                        "pause or cancel them before archiving it"
                    raise Conflict(f"session {session.id} has {active} active run(s); {advice}")
            out = tx.put(self._st.sessions, session.id, session.model_copy(update={"status": to,
                                                                                     "updated_at": utcnow()}))
            tx.history(session.id, "session", session.id, session.status.value, to.value, reason, actor)
            tx.emit(session.id, None, EventType.session_state_changed, {"from": session.status.value, "to": to.value})
            return out.model_copy(deep=True)

    def _runs(self) -> list[Run]:
        return [r for r in self._st.runs.values() if r.session_id == self.session_id]

    def _active_runs(self, but: str | None = None) -> int:
        return sum(r.status in ACTIVE_RUN_STATES and r.id != but for r in self._runs())

    @staticmethod
    def _disk_mb(session: Session) -> float:
        path = Path(session.path)
        return dir_size_mb(path) if path.exists() else 0.0

    # -- runs ---------------------------------------------------------------------

    def create_run(self, task: str, *, mode: str = "deep_research", model: str | None = None,
                   config: dict[str, Any] | None = None, parent_run_id: str | None = None,
                   branch_from_step: int | None = None, checkpoint_interval_s: float | None = None,
                   run_id: str | None = None, actor: str | None = None) -> Run:
        with self._st.write() as tx:
            return self._create_run(tx, task, mode=mode, model=model, config=config, parent_run_id=parent_run_id,
                                    branch_from_step=branch_from_step, checkpoint_interval_s=checkpoint_interval_s,
                                    run_id=run_id, actor=actor).model_copy(deep=True)

    def _create_run(self, tx: Tx, task: Any, *, mode: Any, model: str | None, config: Any, parent_run_id: str | None,
                    branch_from_step: int | None, checkpoint_interval_s: float | None, run_id: str | None,
                    actor: str | None) -> Run:
        sid = self.session_id
        session = self._st.session(sid)
        if session.status != SessionStatus.active:
            raise Conflict(f"session {sid} is {session.status.value}; only active sessions start runs")
        if not isinstance(task, str):
            raise Invalid("task must be text")
        if len(task) > MAX_TASK:
            raise Invalid(f"task is {len(task)} characters long; at most {MAX_TASK} are allowed")
        try:
            run_mode = RunMode(mode or RunMode.deep_research.value)
        except ValueError:
            raise Invalid(f"unknown mode {mode!r}; expected one of {', '.join(m.value for m in RunMode)}") from None
        rid = check("run", run_id) if run_id is not None else new_id("run")
        if rid in self._st.runs:
            raise Conflict(f"run {rid} already exists")
        if parent_run_id is not None:
            self._st.run(sid, parent_run_id)
        interval = float(checkpoint_interval_s or 600.0)
        if interval <= 0:
            raise Invalid("checkpoint_interval_s must be positive")
        if config is not None and not isinstance(config, dict):
            raise Invalid("config must be an object")
        path = run_dir(self._st.home, sid, rid)
        for sub in RUN_FOLDERS:
            (path / sub).mkdir(parents=True, exist_ok=True)
        run = Run(id=rid, session_id=sid, task=task, mode=run_mode, model=model, config=as_json(config or {}),
                  parent_run_id=parent_run_id, branch_from_step=branch_from_step, created_at=utcnow(),
                  checkpoint_interval_s=interval, path=str(path))
        tx.put(self._st.runs, rid, run)
        tx.history(sid, "run", rid, None, RunStatus.draft.value, "created", actor)
        tx.emit(sid, rid, EventType.workflow_created, {"task": task[:500], "mode": run_mode.value})
        return run

    def get_run(self, run_id: str) -> Run:
        with self._st.read():
            return self._st.run(self.session_id, run_id).model_copy(deep=True)

    def list_runs(self, status: str | list[str] | None = None) -> list[Run]:
        with self._st.read():
            self._st.session(self.session_id, allow_deleted=True)
            wanted = None if not status else set(status if isinstance(status, list) else [status])
            runs = [r for r in self._runs() if wanted is None or r.status.value in wanted]
            return [r.model_copy(deep=True) for r in sorted(runs, key=lambda r: r.created_at)]

    def transition_run(self, run_id: str, to: str, *, reason: str | None = None, actor: str | None = None,
                       error: str | None = None, owner_pid: int | None = None,
                       expected_from: list[str] | None = None) -> Run:
        with self._st.write() as tx:
            run = self._st.run(self.session_id, run_id)
            return self._move_run(tx, run, to, reason=reason, actor=actor, expected_from=expected_from,
                                  error=KEEP if error is None else error,
                                  owner_pid=KEEP if owner_pid is None else owner_pid).model_copy(deep=True)

    def _move_run(self, tx: Tx, run: Run, to: Any, *, reason: str | None = None, actor: str | None = None,
                  error: Any = KEEP, owner_pid: Any = KEEP, expected_from: Any = None,
                  also: dict[str, Any] | None = None) -> Run:
        """Move a run as the state machine allows: its guards, and the quotas when it starts."""
        try:
            dst = RunStatus(to)
        except ValueError:
            raise Invalid(f"unknown run state {to!r}") from None
        src = RunStatus(run.status)
        if expected_from is not None:
            allowed = expected_from if isinstance(expected_from, list) else [expected_from]
            if src.value not in allowed:
                raise Conflict(f"run {run.id} is {src.value!r}, not {expected_from!r}")
        if src == dst:
            return run
        facts: dict[str, Any] = {"task": run.task, "mode": run.mode.value}
        if needs_counts(src, dst):
            facts["step_count"] = sum(s.run_id == run.id for s in self._st.steps.values())
            facts["pending_approvals"] = sum(a.run_id == run.id and a.status.value == "pending"
                                             for a in self._st.approvals.values())
        try:
            check_run_transition(run.id, src.value, dst.value, facts)
        except IllegalTransition as exc:
            raise Invalid(str(exc)) from None
        starting = dst in ACTIVE_RUN_STATES and src not in ACTIVE_RUN_STATES
        if starting:
            self._enforce_quotas(run.id)
        now = utcnow()
        changes: dict[str, Any] = {"status": dst, **(also or {})}
        if starting:
            changes["last_heartbeat_at"] = now
            if run.started_at is None:
                changes["started_at"] = now
        if dst in TERMINAL_RUN_STATES:
            changes["completed_at"] = now
        if dst in (RunStatus.executing, RunStatus.planning):
            changes["pause_requested"] = False
        if error is not KEEP:
            changes["error"] = error
        if owner_pid is not KEEP:
            changes["owner_pid"] = owner_pid
        out = tx.put(self._st.runs, run.id, run.model_copy(update=changes))
        if src == RunStatus.draft:
            kind = EventType.workflow_started
        elif src in (RunStatus.paused, RunStatus.interrupted) and dst in ACTIVE_RUN_STATES:
            kind = EventType.workflow_resumed
        else:
            kind = _RUN_EVENT.get(dst, EventType.workflow_state_changed)
        payload: dict[str, Any] = {"from": src.value, "to": dst.value, "reason": reason, "history": True}
        if actor is not None:
            payload["actor"] = actor
        if error is not KEEP and error:
            payload["error"] = error
        tx.emit(run.session_id, run.id, kind, payload, ts=now)
        tx.history(run.session_id, "run", run.id, src.value, dst.value, reason, actor, at=now)
        return out

    def _enforce_quotas(self, run_id: str) -> None:
        """QuotaExceeded if the session may not have one more active run."""
        session = self._st.session(self.session_id)
        q, sid = session.quotas, session.id
        active, spent = self._active_runs(but=run_id), self._st.spent(sid)
        if active >= q.max_concurrent_runs:
            raise QuotaExceeded(
                f"quota max_concurrent_runs reached: session {sid} already has {active} active run(s) and its "
                f"quota allows {q.max_concurrent_runs} at once (raise max_concurrent_runs or wait for one to finish)")
        if spent >= q.max_cost_usd:
            raise QuotaExceeded(f"quota max_cost_usd reached: session {sid} has spent ${spent:.4f} of its "
                                f"${q.max_cost_usd:.2f} (raise max_cost_usd to start more runs)")
        disk = self._disk_mb(session)
        if disk >= q.max_disk_mb:
            raise QuotaExceeded(f"quota max_disk_mb reached: session {sid} uses {disk:.1f} MB on disk of its "
                                f"{q.max_disk_mb:.1f} MB (free space in {session.path} or raise max_disk_mb)")

    def heartbeat(self, run_id: str, owner_pid: int | None = None) -> Heartbeat:
        with self._st.write() as tx:
            run = self._st.run(self.session_id, run_id)
            now = utcnow()
            changes: dict[str, Any] = {"last_heartbeat_at": now}
            if owner_pid is not None:
                changes["owner_pid"] = owner_pid
            tx.put(self._st.runs, run.id, run.model_copy(update=changes))
            return Heartbeat(last_heartbeat_at=now, pause_requested=run.pause_requested, status=run.status.value)

    def request_pause(self, run_id: str) -> Run:
        with self._st.write() as tx:
            run = self._st.run(self.session_id, run_id)
            if run.status not in (RunStatus.planning, RunStatus.executing, RunStatus.waiting_approval):
                raise Conflict(f"run {run.id} is {run.status.value!r}; only a running run can be paused")
            out = tx.put(self._st.runs, run.id, run.model_copy(update={"pause_requested": True}))
            tx.emit(self.session_id, run.id, EventType.workflow_state_changed,
                    {"pause_requested": True, "from": run.status.value, "to": run.status.value})
            return out.model_copy(deep=True)

    def update_run(self, run_id: str, *, config: dict[str, Any] | None = None, model: str | None = None,
                   task: str | None = None) -> Run:
        with self._st.write() as tx:
            run = self._st.run(self.session_id, run_id)
            changes: dict[str, Any] = {}
            if config is not None:
                if not isinstance(config, dict):
                    raise Invalid("config must be an object")
                changes["config"] = {**run.config, **as_json(config)}
            if model is not None:
                changes["model"] = model
            if task is not None:
                changes["task"] = str(task)
            return tx.put(self._st.runs, run.id, run.model_copy(update=changes)).model_copy(deep=True)

    # -- steps --------------------------------------------------------------------

    def put_plan(self, run_id: str, steps: Sequence[PlanStep | dict[str, Any]]) -> list[Step]:
        with self._st.write() as tx:
            run = self._st.run(self.session_id, run_id)
            self._put_steps(tx, run, steps)
            return [s.model_copy(deep=True) for s in self._st.steps_of(run.id)]

    def _put_steps(self, tx: Tx, run: Run, steps: Any) -> tuple[list[Step], list[str]]:
        """Replace the run's steps that are not completed; returns the new steps and the keys kept."""
        if not isinstance(steps, (list, tuple)):
            raise Invalid("steps must be a list")
        plan = [self._plan_step(s, i) for i, s in enumerate(steps, start=1)]
        existing = self._st.steps_of(run.id)
        keep = {s.key for s in existing if s.status == StepStatus.completed}
        for s in existing:
            if s.status != StepStatus.completed:
                tx.drop(self._st.steps, s.id)
        added = []
        for i, p in enumerate(plan, start=1):
            if p.key in keep:
                continue
            sid = check("step", p.id) if p.id is not None else new_id("step")
            if sid in self._st.steps:
                raise Conflict(f"step {sid} already exists")
            step = Step(id=sid, session_id=run.session_id, run_id=run.id, number=p.number or i, key=p.key,
                        agent=p.agent or "engineer", description=p.description, depends_on=list(p.depends_on),
                        inputs=as_json(p.inputs))
            added.append(tx.put(self._st.steps, sid, step))
        return added, sorted(keep)

    @staticmethod
    def _plan_step(item: Any, i: int) -> PlanStep:
        if isinstance(item, PlanStep):
            return item
        if not isinstance(item, dict):
            raise Invalid(f"step {i} of the plan must be an object")
        try:
            return PlanStep.model_validate({**item, "key": str(item.get("key") or f"step_{i}")})
        except ValidationError as exc:
            first = exc.errors()[0]
            raise Invalid(f"step {i} of the plan: {'.'.join(map(str, first['loc']))}: {first['msg']}") from None

    def list_steps(self, run_id: str) -> list[Step]:
        with self._st.read():
            run = self._st.run(self.session_id, run_id)
            return [s.model_copy(deep=True) for s in self._st.steps_of(run.id)]

    def get_step(self, step_id: str) -> Step:
        with self._st.read():
            return self._st.step(self.session_id, step_id).model_copy(deep=True)

    def transition_step(self, step_id: str, to: str, *, outputs: dict[str, Any] | None = None,
                        error: str | None = None, description: str | None = None, reason: str | None = None,
                        actor: str | None = None) -> Step:
        with self._st.write() as tx:
            step = self._st.step(self.session_id, step_id)
            try:
                dst = StepStatus(to)
            except ValueError:
                raise Invalid(f"unknown step state {to!r}") from None
            src = StepStatus(step.status)
            if src != dst:
                try:
                    check_step_transition(step.id, src.value, dst.value)
                except IllegalTransition as exc:
                    raise Invalid(str(exc)) from None
            now = utcnow()
            changes: dict[str, Any] = {"status": dst}
            if dst == StepStatus.running and src != StepStatus.running:
                changes.update(started_at=now, attempts=step.attempts + 1, error=None)
            if dst == StepStatus.completed:
                changes.update(completed_at=now, progress=1.0)
            if dst == StepStatus.pending:
                changes.update(completed_at=None, progress=0.0, outputs={})
            if outputs is not None:
                changes["outputs"] = as_json(outputs)
            if error is not None:
                changes["error"] = error
            if description is not None:
                changes["description"] = str(description)
            out = tx.put(self._st.steps, step.id, step.model_copy(update=changes))
            if src != dst:
                tx.history(self.session_id, "step", step.id, src.value, dst.value, reason, actor, at=now)
            payload = step_payload(step, src.value, dst.value)
            if error:
                payload["error"] = str(error)[:2000]
            tx.emit(self.session_id, step.run_id, _STEP_EVENT.get(dst, EventType.step_state_changed), payload)
            return out.model_copy(deep=True)

    def step_progress(self, step_id: str, progress: float, message: str | None = None) -> float:
        with self._st.write() as tx:
            step = self._st.step(self.session_id, step_id)
            value = float(progress or 0.0)
            if not 0.0 <= value <= 1.0:
                raise Invalid("progress must be between 0 and 1")
            tx.put(self._st.steps, step.id, step.model_copy(update={"progress": value}))
            tx.emit(self.session_id, step.run_id, EventType.step_progress,
                    {"step_id": step.id, "progress": value, "message": message})
            return value

    # -- checkpoints (written by several calls) ---------------------------------------

    def _put_checkpoint(self, tx: Tx, run: Run, *, kind: Any, context: Any = None, step_id: str | None = None,
                        pickle_path: str | None = None, checkpoint_id: str | None = None) -> Checkpoint:
        try:
            kind = CheckpointKind(kind)
        except ValueError:
            raise Invalid(f"unknown checkpoint kind {kind!r}") from None
        if step_id is not None:
            self._st.step(self.session_id, step_id)
        cid = check("checkpoint", checkpoint_id) if checkpoint_id is not None else new_id("checkpoint")
        if cid in self._st.checkpoints:
            raise Conflict(f"checkpoint {cid} already exists")
        if context is not None and not isinstance(context, dict):
            raise Invalid("context must be an object")
        cp = Checkpoint(id=cid, session_id=run.session_id, run_id=run.id, step_id=step_id, kind=kind,
                        context=as_json(context or {}), pickle_path=pickle_path, created_at=utcnow())
        tx.put(self._st.checkpoints, cid, cp)
        tx.emit(run.session_id, run.id, EventType.checkpoint_saved,
                {"checkpoint_id": cid, "kind": kind.value, "step_id": step_id})
        return cp
