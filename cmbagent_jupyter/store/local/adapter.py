"""The store port on the local backend: each method is one request to this home's store service.

Every method names its operation, its arguments and how to read the reply, once; the
transport decides how the request travels. The blocking transport waits for the reply;
the one behind `.aio` sends from the calling event loop's thread (so the requests of one
loop reach the service in the order they were made) and awaits it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Sequence

from cmbagent_jupyter.core import (
    ApprovalRequest,
    Branch,
    Checkpoint,
    CheckpointKind,
    CostRecord,
    CostRow,
    Event,
    Invalid,
    InvalidInput,
    JournalRecord,
    Quotas,
    Run,
    RunOverview,
    Session,
    StateTransition,
    Step,
    StepAttempt,
    Usage,
    check_id,
)
from cmbagent_jupyter.core.views import Snapshot
from cmbagent_jupyter.store.local.client import StoreClient
from cmbagent_jupyter.store.port import (
    BranchCreated,
    Claimed,
    EventCallback,
    EventRef,
    FileRecord,
    Heartbeat,
    Imported,
    JournalApplied,
    MetricPoint,
    NewCheckpoint,
    NewCost,
    NewEvent,
    NewFile,
    NewMetric,
    PlanStep,
    PlanStored,
    ReplayReset,
    SessionPort,
    SessionMetrics,
    Settled,
    StartedAttempt,
    StoreInfo,
    StorePort,
    Subscription,
)

Parse = Callable[[Any], Any]


class _Blocking:
    def __init__(self, client: StoreClient):
        self.client = client

    def __call__(self, op: str, args: dict[str, Any], parse: Parse) -> Any:
        return parse(self.client.call(op, args))


class _Awaiting:
    def __init__(self, client: StoreClient):
        self.client = client

    async def _call(self, op: str, args: dict[str, Any], parse: Parse) -> Any:
        return parse(await self.client.acall(op, args))

    def __call__(self, op: str, args: dict[str, Any], parse: Parse) -> Any:
        return self._call(op, args, parse)


def _one(model: type) -> Parse:
    return model.model_validate


def _many(model: type) -> Parse:
    validate = model.model_validate
    return lambda rows: [validate(r) for r in rows]


def _maybe(model: type) -> Parse:
    return lambda row: None if row is None else model.model_validate(row)


def _dump(items: Sequence[Any]) -> list[Any]:
    """Models as the JSON objects they are on the wire; mappings as they are."""
    return [i.model_dump(mode="json", exclude_none=True) if hasattr(i, "model_dump") else i for i in items]


def _itself(value: Any) -> Any:
    return value


class LocalStore(StorePort):
    """The store of one CMBAGENT_HOME, through its store service (started when none runs)."""

    def __init__(self, home: str | os.PathLike | None = None, *, client: StoreClient | None = None,
                 **client_kw: Any):
        self.client = client or StoreClient(home, **client_kw)
        self.home: Path = self.client.home
        self._send: Any = _Blocking(self.client)

    @property
    def aio(self) -> "LocalStore":
        view = object.__new__(LocalStore)
        view.client, view.home, view._send = self.client, self.home, _Awaiting(self.client)
        return view

    def _do(self, op: str, parse: Parse, **args: Any) -> Any:
        return self._send(op, args, parse)

    @property
    def closed(self) -> bool:
        return self.client._closed

    def close(self) -> None:
        self.client.close()

    def session(self, session_id: str) -> "LocalSessionStore":
        try:
            return LocalSessionStore(self, check_id("session", session_id))
        except InvalidInput as exc:
            raise Invalid(str(exc)) from None

    def ping(self) -> StoreInfo:
        return self._do("store.ping", _one(StoreInfo))

    def create_session(self, name: str, quotas: Quotas | dict[str, Any] | None = None, *,
                       actor: str | None = None) -> Session:
        q = quotas.model_dump() if isinstance(quotas, Quotas) else (quotas or {})
        return self._do("session.create", _one(Session), name=name, quotas=q, actor=actor)

    def list_sessions(self, *, include_archived: bool = False, include_deleted: bool = False) -> list[Session]:
        return self._do("session.list", _many(Session), include_archived=include_archived,
                        include_deleted=include_deleted)

    def get_session(self, session_id: str) -> Session:
        return self._do("session.get", _one(Session), session_id=session_id)

    def resolve_session(self, ref: str) -> Session:
        return self._do("session.resolve", _one(Session), ref=ref)

    def find_run(self, run_id: str) -> Run:
        return self._do("run.find", _one(Run), run_id=run_id)

    def find_step(self, step_id: str) -> Step:
        return self._do("step.find", _one(Step), step_id=step_id)

    def find_approval(self, approval_id: str) -> ApprovalRequest:
        return self._do("approval.find", _one(ApprovalRequest), approval_id=approval_id)

    def pending_approvals(self) -> list[ApprovalRequest]:
        return self.list_approvals(pending_only=True)

    def list_approvals(self, *, pending_only: bool = True) -> list[ApprovalRequest]:
        return self._do("approval.list", _many(ApprovalRequest), all_sessions=True, pending_only=pending_only)

    def runs_overview(self, *, session_id: str | None = None, status: str | list[str] | None = None,
                      limit: int = 200) -> list[RunOverview]:
        return self._do("engine.runs", _many(RunOverview), session_id=session_id, status=status, limit=limit)

    def session_metrics(self, session_id: str | None = None) -> list[SessionMetrics]:
        return self._do("metrics.workflows", _many(SessionMetrics), session_id=session_id)

    def cost_summary(self, group_by: list[str] | None = None) -> list[CostRow]:
        return self._do("cost.summary", _many(CostRow), all_sessions=True, group_by=group_by)

    def snapshot(self, *, session_id: str | None = None, run_id: str | None = None) -> Snapshot:
        return self._do("server.snapshot", _one(Snapshot), session_id=session_id, run_id=run_id)

    def events_all(self, *, since_gseq: int = 0, run_id: str | None = None, limit: int = 10_000) -> list[Event]:
        return self._do("event.list", _many(Event), all_sessions=True, since_gseq=since_gseq, run_id=run_id,
                        limit=limit)

    def subscribe_all(self, *, run_id: str | None = None, since_gseq: int | None = None,
                      callback: EventCallback | None = None) -> Subscription:
        return self.client.subscribe(all_sessions=True, run_id=run_id, since_gseq=since_gseq, callback=callback)

    def import_session(self, session: dict[str, Any]) -> Imported:
        return self._do("recovery.import_session", _one(Imported), session=session)


class LocalSessionStore(SessionPort):
    def __init__(self, store: LocalStore, session_id: str):
        self.store = store
        self.home = store.home
        self.session_id = session_id

    @property
    def aio(self) -> "LocalSessionStore":
        return LocalSessionStore(self.store.aio, self.session_id)

    def _do(self, op: str, parse: Parse, **args: Any) -> Any:
        return self.store._send(op, {"session_id": self.session_id, **args}, parse)

    # -- the session -------------------------------------------------------------

    def info(self) -> Session:
        return self._do("session.get", _one(Session))

    def usage(self) -> Usage:
        return self._do("session.usage", _one(Usage))

    def set_quotas(self, **quotas: Any) -> Session:
        return self._do("session.set_quotas", _one(Session), quotas=quotas)

    def set_status(self, status: str, *, reason: str | None = None, actor: str | None = None) -> Session:
        return self._do("session.set_status", _one(Session), status=status, reason=reason, actor=actor)

    # -- runs ---------------------------------------------------------------------

    def create_run(self, task: str, *, mode: str = "deep_research", model: str | None = None,
                   config: dict[str, Any] | None = None, parent_run_id: str | None = None,
                   branch_from_step: int | None = None, checkpoint_interval_s: float | None = None,
                   run_id: str | None = None, actor: str | None = None) -> Run:
        return self._do("run.create", _one(Run), task=task, mode=mode, model=model, config=config or {},
                        parent_run_id=parent_run_id, branch_from_step=branch_from_step,
                        checkpoint_interval_s=checkpoint_interval_s, id=run_id, actor=actor)

    def get_run(self, run_id: str) -> Run:
        return self._do("run.get", _one(Run), run_id=run_id)

    def list_runs(self, status: str | list[str] | None = None) -> list[Run]:
        return self._do("run.list", _many(Run), status=status)

    def transition_run(self, run_id: str, to: str, *, reason: str | None = None, actor: str | None = None,
                       error: str | None = None, owner_pid: int | None = None,
                       expected_from: list[str] | None = None) -> Run:
        args: dict[str, Any] = {"run_id": run_id, "to": to, "reason": reason, "actor": actor}
        if error is not None:
            args["error"] = error
        if owner_pid is not None:
            args["owner_pid"] = owner_pid
        if expected_from is not None:
            args["expected_from"] = expected_from
        return self._do("run.transition", _one(Run), **args)

    def heartbeat(self, run_id: str, owner_pid: int | None = None) -> Heartbeat:
        return self._do("run.heartbeat", _one(Heartbeat), run_id=run_id, owner_pid=owner_pid)

    def request_pause(self, run_id: str) -> Run:
        return self._do("run.request_pause", _one(Run), run_id=run_id)

    def update_run(self, run_id: str, *, config: dict[str, Any] | None = None, model: str | None = None,
                   task: str | None = None) -> Run:
        changes = {k: v for k, v in (("config", config), ("model", model), ("task", task)) if v is not None}
        return self._do("run.update", _one(Run), run_id=run_id, **changes)

    # -- steps --------------------------------------------------------------------

    def put_plan(self, run_id: str, steps: Sequence[PlanStep | dict[str, Any]]) -> list[Step]:
        return self._do("step.put_plan", _many(Step), run_id=run_id, steps=_dump(steps))

    def list_steps(self, run_id: str) -> list[Step]:
        return self._do("step.list", _many(Step), run_id=run_id)

    def get_step(self, step_id: str) -> Step:
        return self._do("step.get", _one(Step), step_id=step_id)

    def transition_step(self, step_id: str, to: str, *, outputs: dict[str, Any] | None = None,
                        error: str | None = None, description: str | None = None, reason: str | None = None,
                        actor: str | None = None) -> Step:
        args: dict[str, Any] = {"step_id": step_id, "to": to, "reason": reason, "actor": actor}
        for name, value in (("outputs", outputs), ("error", error), ("description", description)):
            if value is not None:
                args[name] = value
        return self._do("step.transition", _one(Step), **args)

    def step_progress(self, step_id: str, progress: float, message: str | None = None) -> float:
        return self._do("step.progress", lambda r: float(r["progress"]), step_id=step_id, progress=progress,
                        message=message)

    # -- the engine's calls --------------------------------------------------------

    def plan_ready(self, run_id: str, steps: Sequence[PlanStep | dict[str, Any]], *,
                   config: dict[str, Any] | None = None, dag: dict[str, Any] | None = None,
                   mermaid: str | None = None, start: bool = True, return_steps: bool = True,
                   owner_pid: int | None = None, reason: str | None = None, actor: str | None = None,
                   checkpoint: NewCheckpoint | None = None) -> PlanStored:
        return self._do("engine.plan_ready", _one(PlanStored), run_id=run_id, steps=_dump(steps),
                        config=config or {}, dag=dag or {}, mermaid=mermaid, start=start, return_steps=return_steps,
                        owner_pid=owner_pid, reason=reason, actor=actor,
                        checkpoint=checkpoint.model_dump(mode="json") if checkpoint else None)

    def claim(self, run_id: str, *, to: str = "auto", owner_pid: int | None = None,
              allowed_from: list[str] | None = None, stale_owner_pid: int | None = None, reason: str | None = None,
              actor: str | None = None, with_session: bool = False, return_steps: bool = True) -> Claimed:
        return self._do("engine.claim", _one(Claimed), run_id=run_id, to=to, owner_pid=owner_pid,
                        allowed_from=allowed_from, stale_owner_pid=stale_owner_pid, reason=reason, actor=actor,
                        with_session=with_session, return_steps=return_steps)

    def advance(self, run_id: str, records: Sequence[JournalRecord | dict[str, Any]], *,
                owner_pid: int | None = None, replay: bool = False, actor: str | None = None) -> JournalApplied:
        return self._do("engine.advance_many", _one(JournalApplied), run_id=run_id, records=_dump(records),
                        owner_pid=owner_pid, replay=replay, actor=actor)

    def settle(self, run_id: str, to: str, *, owner_pid: int | None = None,
               records: Sequence[JournalRecord | dict[str, Any]] = (), checkpoint: NewCheckpoint | None = None,
               reset_steps: Sequence[str] = (), reset_to: str = "pending", reason: str | None = None,
               actor: str | None = None, error: str | None = None,
               expected_from: list[str] | None = None) -> Settled:
        return self._do("engine.settle", _one(Settled), run_id=run_id, to=to, owner_pid=owner_pid,
                        records=_dump(records), checkpoint=checkpoint.model_dump(mode="json") if checkpoint else None,
                        reset_steps=list(reset_steps), reset_to=reset_to, reason=reason, actor=actor, error=error,
                        expected_from=expected_from)

    # -- events -----------------------------------------------------------------

    def append_events(self, events: Sequence[NewEvent | dict[str, Any]]) -> list[EventRef]:
        return self._do("event.append", _many(EventRef), events=_dump(events))

    def emit(self, type: str, run_id: str | None = None, **payload: Any) -> EventRef:
        # one request whose reply is read here, so that `.aio.emit` is a coroutine too
        return self._do("event.append", lambda rows: EventRef.model_validate(rows[0]),
                        events=_dump([NewEvent(type=type, run_id=run_id, payload=payload)]))

    def events(self, run_id: str | None = None, *, since_gseq: int | None = None, since_seq: int | None = None,
               types: list[str] | None = None, limit: int = 10_000) -> list[Event]:
        return self._do("event.list", _many(Event), run_id=run_id, since_gseq=since_gseq, since_seq=since_seq,
                        types=types, limit=limit)

    def subscribe(self, *, run_id: str | None = None, types: list[str] | None = None,
                  since_gseq: int | None = None, callback: EventCallback | None = None) -> Subscription:
        return self.store.client.subscribe(session_id=self.session_id, run_id=run_id, types=types,
                                           since_gseq=since_gseq, callback=callback)

    # -- checkpoints and history ------------------------------------------------------

    def put_checkpoint(self, run_id: str, *, kind: CheckpointKind | str = CheckpointKind.manual,
                       context: dict[str, Any] | None = None, step_id: str | None = None,
                       pickle_path: str | None = None, checkpoint_id: str | None = None) -> Checkpoint:
        kind = kind.value if isinstance(kind, CheckpointKind) else kind  # the service checks it
        return self._do("checkpoint.put", _one(Checkpoint), run_id=run_id, kind=kind,
                        context=context or {}, step_id=step_id, pickle_path=pickle_path, id=checkpoint_id)

    def latest_checkpoint(self, run_id: str) -> Checkpoint | None:
        return self._do("checkpoint.latest", _maybe(Checkpoint), run_id=run_id)

    def list_checkpoints(self, run_id: str) -> list[Checkpoint]:
        return self._do("checkpoint.list", _many(Checkpoint), run_id=run_id)

    def history(self, entity_id: str | None = None) -> list[StateTransition]:
        return self._do("history.list", _many(StateTransition), entity_id=entity_id)

    # -- approvals --------------------------------------------------------------------

    def create_approval(self, run_id: str, kind: str, *, request: dict[str, Any] | None = None,
                        step_id: str | None = None, options: list[str] | None = None,
                        timeout_s: float | None = None, default_action: str | None = None,
                        actor: str | None = None) -> ApprovalRequest:
        return self._do("approval.create", _one(ApprovalRequest), run_id=run_id, kind=kind, request=request,
                        step_id=step_id, options=options, timeout_s=timeout_s, default_action=default_action,
                        actor=actor)

    def resolve_approval(self, approval_id: str, decision: str, *, feedback: str | None = None,
                         actor: str | None = None, expired: bool = False,
                         allow_empty_feedback: bool = False) -> ApprovalRequest:
        return self._do("approval.resolve", _one(ApprovalRequest), approval_id=approval_id, decision=decision,
                        feedback=feedback, actor=actor, expired=expired, allow_empty_feedback=allow_empty_feedback)

    def get_approval(self, approval_id: str) -> ApprovalRequest:
        return self._do("approval.get", _one(ApprovalRequest), approval_id=approval_id)

    def list_approvals(self, run_id: str | None = None, *, pending_only: bool = True) -> list[ApprovalRequest]:
        return self._do("approval.list", _many(ApprovalRequest), run_id=run_id, pending_only=pending_only)

    # -- attempts, replays, branches -----------------------------------------------------

    def start_attempt(self, step_id: str, feedback: str | None = None) -> StartedAttempt:
        return self._do("attempt.start", _one(StartedAttempt), step_id=step_id, feedback=feedback)

    def finish_attempt(self, attempt_id: str, status: str, *, error_type: str | None = None,
                       error: str | None = None, traceback: str | None = None, output: str | None = None,
                       cost_usd: float = 0.0) -> StepAttempt:
        return self._do("attempt.finish", _one(StepAttempt), attempt_id=attempt_id, status=status,
                        error_type=error_type, error=error, traceback=traceback, output=output, cost_usd=cost_usd)

    def list_attempts(self, *, step_id: str | None = None, run_id: str | None = None) -> list[StepAttempt]:
        return self._do("attempt.list", _many(StepAttempt), step_id=step_id, run_id=run_id)

    def reset_from(self, step_id: str, *, instructions: str | None = None, description: str | None = None,
                   actor: str | None = None) -> ReplayReset:
        return self._do("step.reset_from", _one(ReplayReset), step_id=step_id, instructions=instructions,
                        description=description, actor=actor)

    def create_branch(self, run_id: str, from_step: int, *, name: str | None = None,
                      instructions: str | None = None, hypothesis: str | None = None,
                      actor: str | None = None) -> BranchCreated:
        return self._do("branch.create", _one(BranchCreated), run_id=run_id, from_step=from_step, name=name,
                        instructions=instructions, hypothesis=hypothesis, actor=actor)

    def list_branches(self, run_id: str | None = None) -> list[Branch]:
        return self._do("branch.list", _many(Branch), run_id=run_id)

    # -- costs, files, metrics -------------------------------------------------------------

    def add_costs(self, records: Sequence[NewCost | dict[str, Any]]) -> float:
        return self._do("cost.add", lambda r: float(r["cost_usd"]), records=_dump(records))

    def cost_records(self, run_id: str | None = None) -> list[CostRecord]:
        return self._do("cost.records", _many(CostRecord), run_id=run_id)

    def cost_summary(self, run_id: str | None = None, group_by: list[str] | None = None) -> list[CostRow]:
        return self._do("cost.summary", _many(CostRow), run_id=run_id, group_by=group_by)

    def record_files(self, files: Sequence[NewFile]) -> list[FileRecord]:
        return self._do("file.add", _many(FileRecord), files=_dump(files))

    def list_files(self, run_id: str | None = None) -> list[FileRecord]:
        return self._do("file.list", _many(FileRecord), run_id=run_id)

    def record_metrics(self, points: Sequence[NewMetric]) -> int:
        return self._do("metric.add", lambda r: int(r["count"]), points=_dump(points))

    def list_metrics(self, *, run_id: str | None = None, name: str | None = None) -> list[MetricPoint]:
        return self._do("metric.list", _many(MetricPoint), run_id=run_id, name=name)

    # -- recovery -----------------------------------------------------------------------------

    def import_run(self, run: dict[str, Any], *, interrupt_active: bool = True) -> Imported:
        return self._do("recovery.import_run", _one(Imported), run=run, interrupt_active=interrupt_active)

    def import_steps(self, run_id: str, steps: Sequence[dict[str, Any]]) -> Imported:
        return self._do("recovery.import_steps", _one(Imported), run_id=run_id, steps=list(steps))

    def import_checkpoint(self, run_id: str, checkpoint: dict[str, Any], context: dict[str, Any]) -> Imported:
        return self._do("recovery.import_checkpoint", _one(Imported), run_id=run_id, checkpoint=checkpoint,
                        context=context)
