"""The store port: the one typed interface to durable state.

Everything outside `store/` reaches sessions, runs, steps, the step journal, approvals,
events, checkpoints, costs, files and metrics through these two classes and nothing
else: `StorePort` for what spans a user's home (sessions, finding a record by its id,
the all-sessions views a dashboard shows) and `SessionPort`, from `store.session(id)`,
whose every call is bound to one session, so that no call made through it can read or
change another session's rows.

Arguments are plain typed values or the pydantic models below; results are records
of `cmbagent_jupyter.core` or models below, never raw rows. A backend (the local
DuckDB one behind its store service, the in-memory reference one, a server database)
is correct when it passes the conformance suite in `tests/conformance/`, which is
written against this module only. Refusals are the errors of `core.errors`:
NotFound, Invalid, Conflict, QuotaExceeded, each with a message that names what was
wrong.

Every method is blocking. `port.aio` gives the same methods as coroutines: a backend
with its own asynchronous transport (the local one) sends them without a thread, in
the order they were called; the default runs each in a worker thread.
"""

from __future__ import annotations

import abc
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Sequence

from pydantic import BaseModel, ConfigDict, Field

from cmbagent_jupyter.core import (
    ApprovalRequest,
    Branch,
    Checkpoint,
    CheckpointKind,
    CostRecord,
    CostRow,
    Event,
    JournalRecord,
    Quotas,
    Run,
    RunOverview,
    Session,
    StateTransition,
    Step,
    StepAttempt,
    StepStatus,
    Usage,
)
from cmbagent_jupyter.core.threads import in_thread
from cmbagent_jupyter.core.views import Snapshot


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---------------------------------------------------------------- arguments


class PlanStep(Model):
    """A step of a plan as the store takes it (`put_plan`, `plan_ready`)."""

    id: str | None = None
    key: str
    number: int | None = None
    agent: str = "engineer"
    description: str = ""
    depends_on: list[str] = Field(default_factory=list)
    inputs: dict[str, Any] = Field(default_factory=dict)


class NewCheckpoint(Model):
    kind: CheckpointKind = CheckpointKind.manual
    context: dict[str, Any] = Field(default_factory=dict)
    step_id: str | None = None
    pickle_path: str | None = None
    id: str | None = None


class NewCost(Model):
    """One model call's usage, priced (or not: `priced` false, cost 0)."""

    id: str | None = None
    run_id: str | None = None
    step_id: str | None = None
    agent: str | None = None
    model: str = "unknown"
    prompt_tokens: int = Field(0, ge=0)
    completion_tokens: int = Field(0, ge=0)
    total_tokens: int = Field(0, ge=0)
    cost_usd: float = Field(0.0, ge=0)
    priced: bool = True


class NewEvent(Model):
    """An event a client records: its type's payload model checks the payload."""

    type: str
    run_id: str | None = None
    payload: dict[str, Any] = Field(default_factory=dict)
    id: str | None = None
    ts: datetime | None = None


class NewFile(Model):
    path: str
    kind: Literal["code", "data", "plot", "log", "other"] = "other"
    size: int | None = Field(None, ge=0)
    run_id: str | None = None
    step_id: str | None = None


class NewMetric(Model):
    name: str
    value: float
    run_id: str | None = None
    at: datetime | None = None


# ---------------------------------------------------------------- results


class StoreInfo(Model):
    pong: bool = True
    version: int
    pid: int | None = None
    gseq: int = 0


class EventRef(Model):
    id: str
    seq: int
    gseq: int


class Heartbeat(Model):
    last_heartbeat_at: datetime
    pause_requested: bool
    status: str


class PlanStored(Model):
    """`plan_ready`'s reply: the run, and its steps (None when the caller chose every step's id
    and asked not to have them back: `stored` says how many went in, `kept` which completed
    ones stayed)."""

    run: Run
    steps: list[Step] | None = None
    stored: int | None = None
    kept: list[str] = Field(default_factory=list)


class Claimed(Model):
    run: Run
    steps: list[Step] | None = None
    journal_seq: int = 0
    session: Session | None = None


class JournalApplied(Model):
    """What the store says of a run after applying step-journal records: its status, whether a
    pause was asked for, the last record it has, and how many records this call applied."""

    run_status: str
    pause_requested: bool
    journal_seq: int
    applied: int = 0


class Settled(Model):
    run: Run


class StartedAttempt(Model):
    id: str
    attempt: int
    started_at: datetime


class ReplayReset(Model):
    run_id: str
    reset: list[str]
    description: str | None = None


class BranchCreated(Model):
    branch_id: str
    run: Run
    kept_steps: list[int]
    incomplete_before_fork: list[int]


class SessionMetrics(Model):
    session_id: str
    name: str
    status: str
    runs_by_status: dict[str, int] = Field(default_factory=dict)
    total_runs: int = 0
    active_runs: int = 0
    finished_runs: int = 0
    mean_duration_s: float | None = None
    total_cost_usd: float = 0.0


class FileRecord(Model):
    id: str
    session_id: str
    run_id: str | None = None
    step_id: str | None = None
    path: str
    kind: str
    size: int | None = None
    at: datetime


class MetricPoint(Model):
    session_id: str
    run_id: str | None = None
    name: str
    value: float
    at: datetime


class Imported(Model):
    """A record put back by recovery: whether it was absent (and how many rows went in)."""

    id: str
    created: bool
    count: int = 0
    status: str | None = None
    was: str | None = None
    name: str | None = None


# ---------------------------------------------------------------- subscriptions


class Subscription(abc.ABC):
    """Events pushed as they commit, in store order (`gseq`), never one twice; iterate, or `get(timeout)`.

    With a callback, each event goes to it instead (on the backend's thread: keep it short)."""

    last_gseq: int | None

    @abc.abstractmethod
    def get(self, timeout: float | None = None) -> dict[str, Any] | None:
        """The next event (its wire form), or None after `timeout` seconds."""

    @abc.abstractmethod
    def close(self) -> None: ...

    def __iter__(self) -> Iterator[dict[str, Any]]:
        while not getattr(self, "closed", False):
            ev = self.get(timeout=0.5)
            if ev is not None:
                yield ev

    def __enter__(self) -> "Subscription":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


EventCallback = Callable[[dict[str, Any]], None]


# ---------------------------------------------------------------- the port


class _Async:
    """The coroutine view of a port: each method run in a worker thread."""

    def __init__(self, port: Any):
        self._port = port

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._port, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            return await in_thread(method, *args, **kwargs)

        return call


class SessionPort(abc.ABC):
    """Everything a session owns; no call here can reach another session's rows."""

    session_id: str
    home: Path  # its store's CMBAGENT_HOME (run folders, model settings)

    @property
    def aio(self) -> Any:
        """These methods as coroutines (`await ss.aio.advance(...)`)."""
        return _Async(self)

    # -- the session -------------------------------------------------------------

    @abc.abstractmethod
    def info(self) -> Session: ...

    @abc.abstractmethod
    def usage(self) -> Usage: ...

    @abc.abstractmethod
    def set_quotas(self, **quotas: Any) -> Session:
        """Change some quotas (the others keep their values)."""

    @abc.abstractmethod
    def set_status(self, status: str, *, reason: str | None = None, actor: str | None = None) -> Session:
        """Archive (no run may be executing), restore, or delete (no run may be active) the session."""

    # -- runs ---------------------------------------------------------------------

    @abc.abstractmethod
    def create_run(self, task: str, *, mode: str = "deep_research", model: str | None = None,
                   config: dict[str, Any] | None = None, parent_run_id: str | None = None,
                   branch_from_step: int | None = None, checkpoint_interval_s: float | None = None,
                   run_id: str | None = None, actor: str | None = None) -> Run:
        """A draft run, with its folder (CMBAgent's layout) made."""

    @abc.abstractmethod
    def get_run(self, run_id: str) -> Run: ...

    @abc.abstractmethod
    def list_runs(self, status: str | list[str] | None = None) -> list[Run]: ...

    @abc.abstractmethod
    def transition_run(self, run_id: str, to: str, *, reason: str | None = None, actor: str | None = None,
                       error: str | None = None, owner_pid: int | None = None,
                       expected_from: list[str] | None = None) -> Run:
        """Move the run (the state machine's tables and guards decide; a start checks the quotas)."""

    @abc.abstractmethod
    def heartbeat(self, run_id: str, owner_pid: int | None = None) -> Heartbeat: ...

    @abc.abstractmethod
    def request_pause(self, run_id: str) -> Run:
        """Ask a running run to pause at its next step boundary."""

    @abc.abstractmethod
    def update_run(self, run_id: str, *, config: dict[str, Any] | None = None, model: str | None = None,
                   task: str | None = None) -> Run:
        """Merge `config` into the run's; set its model or task."""

    # -- steps --------------------------------------------------------------------

    @abc.abstractmethod
    def put_plan(self, run_id: str, steps: Sequence[PlanStep | dict[str, Any]]) -> list[Step]:
        """Replace the run's steps that are not completed with these (completed ones stay)."""

    @abc.abstractmethod
    def list_steps(self, run_id: str) -> list[Step]: ...

    @abc.abstractmethod
    def get_step(self, step_id: str) -> Step: ...

    @abc.abstractmethod
    def transition_step(self, step_id: str, to: str, *, outputs: dict[str, Any] | None = None,
                        error: str | None = None, description: str | None = None, reason: str | None = None,
                        actor: str | None = None) -> Step: ...

    @abc.abstractmethod
    def step_progress(self, step_id: str, progress: float, message: str | None = None) -> float: ...

    # -- the engine's calls: plan, claim, journal, settle ------------------------------

    @abc.abstractmethod
    def plan_ready(self, run_id: str, steps: Sequence[PlanStep | dict[str, Any]], *,
                   config: dict[str, Any] | None = None, dag: dict[str, Any] | None = None,
                   mermaid: str | None = None, start: bool = True, return_steps: bool = True,
                   owner_pid: int | None = None, reason: str | None = None, actor: str | None = None,
                   checkpoint: NewCheckpoint | None = None) -> PlanStored:
        """Store a validated plan with its DAG, note it in the run's config and (with `start`) move the
        run to executing, in one transaction. With `start` false the run stays a draft (its steps
        and DAG show before it starts); with `return_steps` false every step needs its id."""

    @abc.abstractmethod
    def claim(self, run_id: str, *, to: Literal["planning", "executing", "auto"] = "auto",
              owner_pid: int | None = None, allowed_from: list[str] | None = None,
              stale_owner_pid: int | None = None, reason: str | None = None, actor: str | None = None,
              with_session: bool = False, return_steps: bool = True) -> Claimed:
        """Hand the run to the process `owner_pid` and move it to planning or executing ("auto":
        executing once it has a plan). A run still active is taken over only from the owner the
        caller found dead (`stale_owner_pid`), after recording it interrupted; of two processes
        racing, one wins and the other gets Conflict."""

    @abc.abstractmethod
    def advance(self, run_id: str, records: Sequence[JournalRecord | dict[str, Any]], *,
                owner_pid: int | None = None, replay: bool = False, actor: str | None = None) -> JournalApplied:
        """Apply step-journal records in one transaction, each once (a record whose seq the store
        has already is skipped). Records must follow the store's last one without a gap, for a run
        that is running and owned by `owner_pid`; `replay` (recovery, resume in a new process)
        applies what the journal proves happened whatever the run's state is, never moving a
        completed step back. With no records: the store's signal for the run."""

    @abc.abstractmethod
    def settle(self, run_id: str, to: str, *, owner_pid: int | None = None,
               records: Sequence[JournalRecord | dict[str, Any]] = (), checkpoint: NewCheckpoint | None = None,
               reset_steps: Sequence[str] = (), reset_to: str = StepStatus.pending.value,
               reason: str | None = None, actor: str | None = None, error: str | None = None,
               expected_from: list[str] | None = None) -> Settled:
        """End or suspend the run: the journal records the store lacks, its last checkpoint, its
        in-flight steps set back, and the move, in one transaction. Idempotent: a resend finds
        the run moved already."""

    # -- events -----------------------------------------------------------------

    @abc.abstractmethod
    def append_events(self, events: Sequence[NewEvent | dict[str, Any]]) -> list[EventRef]:
        """Record events of this session (each checked against its type's payload model)."""

    def emit(self, type: str, run_id: str | None = None, **payload: Any) -> EventRef:
        return self.append_events([NewEvent(type=type, run_id=run_id, payload=payload)])[0]

    @abc.abstractmethod
    def events(self, run_id: str | None = None, *, since_gseq: int | None = None, since_seq: int | None = None,
               types: list[str] | None = None, limit: int = 10_000) -> list[Event]: ...

    @abc.abstractmethod
    def subscribe(self, *, run_id: str | None = None, types: list[str] | None = None,
                  since_gseq: int | None = None, callback: EventCallback | None = None) -> Subscription:
        """Events of this session as they commit; with `since_gseq`, those after it first."""

    # -- checkpoints and history ------------------------------------------------------

    @abc.abstractmethod
    def put_checkpoint(self, run_id: str, *, kind: CheckpointKind | str = CheckpointKind.manual,
                       context: dict[str, Any] | None = None, step_id: str | None = None,
                       pickle_path: str | None = None, checkpoint_id: str | None = None) -> Checkpoint: ...

    @abc.abstractmethod
    def latest_checkpoint(self, run_id: str) -> Checkpoint | None: ...

    @abc.abstractmethod
    def list_checkpoints(self, run_id: str) -> list[Checkpoint]:
        """The run's checkpoints, oldest first (their contexts left out)."""

    @abc.abstractmethod
    def history(self, entity_id: str | None = None) -> list[StateTransition]:
        """Every move of the session, its runs and its steps (of one entity, with `entity_id`)."""

    # -- approvals --------------------------------------------------------------------

    @abc.abstractmethod
    def create_approval(self, run_id: str, kind: str, *, request: dict[str, Any] | None = None,
                        step_id: str | None = None, options: list[str] | None = None,
                        timeout_s: float | None = None, default_action: str | None = None,
                        actor: str | None = None) -> ApprovalRequest:
        """Open an approval gate; a running run moves to waiting_approval with it."""

    @abc.abstractmethod
    def resolve_approval(self, approval_id: str, decision: str, *, feedback: str | None = None,
                         actor: str | None = None, expired: bool = False,
                         allow_empty_feedback: bool = False) -> ApprovalRequest:
        """Decide a pending request (reject and modify need feedback); a decided one is a Conflict."""

    @abc.abstractmethod
    def get_approval(self, approval_id: str) -> ApprovalRequest: ...

    @abc.abstractmethod
    def list_approvals(self, run_id: str | None = None, *, pending_only: bool = True) -> list[ApprovalRequest]: ...

    # -- attempts, replays, branches -----------------------------------------------------

    @abc.abstractmethod
    def start_attempt(self, step_id: str, feedback: str | None = None) -> StartedAttempt: ...

    @abc.abstractmethod
    def finish_attempt(self, attempt_id: str, status: str, *, error_type: str | None = None,
                       error: str | None = None, traceback: str | None = None, output: str | None = None,
                       cost_usd: float = 0.0) -> StepAttempt: ...

    @abc.abstractmethod
    def list_attempts(self, *, step_id: str | None = None, run_id: str | None = None) -> list[StepAttempt]: ...

    @abc.abstractmethod
    def reset_from(self, step_id: str, *, instructions: str | None = None, description: str | None = None,
                   actor: str | None = None) -> ReplayReset:
        """Play from a node: the step (with new instructions or description) and exactly its
        descendants go back to pending; a completed run becomes paused, ready to resume."""

    @abc.abstractmethod
    def create_branch(self, run_id: str, from_step: int, *, name: str | None = None,
                      instructions: str | None = None, hypothesis: str | None = None,
                      actor: str | None = None) -> BranchCreated:
        """A new paused run that keeps the parent's results before `from_step` and redoes the rest."""

    @abc.abstractmethod
    def list_branches(self, run_id: str | None = None) -> list[Branch]: ...

    # -- costs, files, metrics -------------------------------------------------------------

    @abc.abstractmethod
    def add_costs(self, records: Sequence[NewCost | dict[str, Any]]) -> float:
        """Record model-call costs; returns their total."""

    @abc.abstractmethod
    def cost_records(self, run_id: str | None = None) -> list[CostRecord]: ...

    @abc.abstractmethod
    def cost_summary(self, run_id: str | None = None, group_by: list[str] | None = None) -> list[CostRow]:
        """Costs summed by some of run_id, step_id, agent, model (default agent, model)."""

    @abc.abstractmethod
    def record_files(self, files: Sequence[NewFile]) -> list[FileRecord]: ...

    @abc.abstractmethod
    def list_files(self, run_id: str | None = None) -> list[FileRecord]: ...

    @abc.abstractmethod
    def record_metrics(self, points: Sequence[NewMetric]) -> int: ...

    @abc.abstractmethod
    def list_metrics(self, *, run_id: str | None = None, name: str | None = None) -> list[MetricPoint]: ...

    # -- recovery: records rebuilt from files put back, each only if absent ------------------

    @abc.abstractmethod
    def import_run(self, run: dict[str, Any], *, interrupt_active: bool = True) -> Imported:
        """A run from its run.json; one that was running when the store was lost becomes interrupted."""

    @abc.abstractmethod
    def import_steps(self, run_id: str, steps: Sequence[dict[str, Any]]) -> Imported:
        """Steps as a snapshot saw them; stored ones (by id or key) are kept."""

    @abc.abstractmethod
    def import_checkpoint(self, run_id: str, checkpoint: dict[str, Any], context: dict[str, Any]) -> Imported: ...


class StorePort(abc.ABC):
    """A user's whole store: sessions, lookups by bare id, and the all-sessions views."""

    home: Path  # the CMBAGENT_HOME its sessions' and runs' folders are made in

    @property
    def aio(self) -> Any:
        return _Async(self)

    @abc.abstractmethod
    def session(self, session_id: str) -> SessionPort: ...

    @abc.abstractmethod
    def ping(self) -> StoreInfo: ...

    @abc.abstractmethod
    def create_session(self, name: str, quotas: Quotas | dict[str, Any] | None = None, *,
                       actor: str | None = None) -> Session: ...

    @abc.abstractmethod
    def list_sessions(self, *, include_archived: bool = False, include_deleted: bool = False) -> list[Session]: ...

    @abc.abstractmethod
    def get_session(self, session_id: str) -> Session: ...

    @abc.abstractmethod
    def resolve_session(self, ref: str) -> Session:
        """A session by id or exact name (what a user types)."""

    @abc.abstractmethod
    def find_run(self, run_id: str) -> Run:
        """A run of any live session, by its id alone."""

    @abc.abstractmethod
    def find_step(self, step_id: str) -> Step: ...

    @abc.abstractmethod
    def find_approval(self, approval_id: str) -> ApprovalRequest: ...

    @abc.abstractmethod
    def pending_approvals(self) -> list[ApprovalRequest]:
        """Every live session's approvals waiting for a decision."""

    @abc.abstractmethod
    def list_approvals(self, *, pending_only: bool = True) -> list[ApprovalRequest]: ...

    @abc.abstractmethod
    def runs_overview(self, *, session_id: str | None = None, status: str | list[str] | None = None,
                      limit: int = 200) -> list[RunOverview]:
        """Runs (newest first) with their session's name, step counts and cost."""

    @abc.abstractmethod
    def session_metrics(self, session_id: str | None = None) -> list[SessionMetrics]:
        """Per session: its runs by status, the mean duration of its finished runs, what it spent."""

    @abc.abstractmethod
    def cost_summary(self, group_by: list[str] | None = None) -> list[CostRow]:
        """Every live session's costs summed by some of session_id, run_id, step_id, agent, model."""

    @abc.abstractmethod
    def snapshot(self, *, session_id: str | None = None, run_id: str | None = None) -> Snapshot: ...

    @abc.abstractmethod
    def events_all(self, *, since_gseq: int = 0, run_id: str | None = None, limit: int = 10_000) -> list[Event]: ...

    @abc.abstractmethod
    def subscribe_all(self, *, run_id: str | None = None, since_gseq: int | None = None,
                      callback: EventCallback | None = None) -> Subscription: ...

    @abc.abstractmethod
    def import_session(self, session: dict[str, Any]) -> Imported:
        """A session from its session.json; a name taken meanwhile gets a suffix."""

    @property
    def closed(self) -> bool:
        """Whether `close` was called (a closed port answers no more calls)."""
        return False

    def close(self) -> None:
        """Let go of the backend's connections."""

    def __enter__(self) -> "StorePort":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
