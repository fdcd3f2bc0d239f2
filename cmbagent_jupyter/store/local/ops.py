"""Operations the store service runs against its database, by name.

Each operation receives an `OpContext` (the database, the home, an event emitter) and
validated arguments. Write operations run inside the service's group-commit
transaction; the events they emit are inserted with the same commit and pushed to
subscribers after it. Every operation on session data takes `session_id` and filters
by it, so one session never reads another's rows.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

from cmbagent_jupyter.core import codec
from cmbagent_jupyter.core.states import (
    ACTIVE_RUN_STATES,
    IllegalTransition,
    check_run_transition,
    check_step_transition,
    needs_counts,
)
from cmbagent_jupyter.core.home import dir_size_mb, run_dir, session_dir
from cmbagent_jupyter.core.events import check_payload
from cmbagent_jupyter.core import (
    CheckpointKind,
    EventType,
    InvalidInput,
    Quotas,
    RunMode,
    RunStatus,
    SessionStatus,
    StepStatus,
    check_id,
    new_id,
    new_ids,
    utcnow,
    validate_name,
)
from cmbagent_jupyter.store.local.database import Database, dumps, from_db_time, loads, to_db_time
from cmbagent_jupyter.core.errors import Conflict, Invalid, NotFound, QuotaExceeded

OpFunc = Callable[["OpContext", dict[str, Any]], Any]


@dataclass
class OpSpec:
    name: str
    func: OpFunc
    write: bool


OPS: dict[str, OpSpec] = {}


def op(name: str, *, write: bool) -> Callable[[OpFunc], OpFunc]:
    def register(func: OpFunc) -> OpFunc:
        OPS[name] = OpSpec(name, func, write)
        return func

    return register


log = logging.getLogger("cmbagent.store")

RUNS_WITH_STEPS_KEPT = 64


class SeqAllocator:
    """Per-run (and per-session) event sequence numbers and the store-wide order.

    Values handed out inside a batch are tentative until the batch commits. It also
    remembers the scope facts the hot path checks on every call (session S is live,
    run R belongs to session S), so appending an event costs no lookup statements: a
    run never changes session and runs are never deleted; a session's status changes
    only through `session.set_status`, which forgets it. Facts learned in a batch
    count only once it commits.

    It also keeps what the quota check of a run starting reads: each session's row and
    what it has spent (forgotten when `session.set_status`, `session.set_quotas` or a cost
    record changes them), and the size of its folder as last measured (with the time).

    And, for the runs whose step journal it applied last, each step's key, number, agent and
    status as that left them, so a journal batch need not read them: the batch's update
    only touches a step still in the status remembered, and when one is not (another
    writer changed it) the transaction is applied again without this memory (`StaleSteps`).
    Likewise the run's own head (status, pause request, owner, journal seq) as its claim or
    last batch left it: the batch's update of the run only takes a run still so. And a run's
    row as its plan (a new draft) or its claim left it, with its config's text: the claim's or
    the settle's move only takes a run still so in every column that can change (`row_guard`);
    a claim in a session whose row and spending are remembered counts the session's other
    active runs in that update too (`known_quota_row`), and is applied again reading them if
    the update refuses.
    """

    def __init__(self, db: Database):
        self.db = db
        self.committed: dict[tuple[str, str], int] = {}
        self.pending: dict[tuple[str, str], int] = {}
        self.gseq_committed = int(db.scalar("SELECT coalesce(max(gseq), 0) FROM events") or 0)
        self.gseq_pending = self.gseq_committed
        self.live_sessions: set[str] = set()
        self.run_sessions: dict[str, str] = {}
        self._learned_sessions: set[str] = set()
        self._learned_runs: dict[str, str] = {}
        self.session_rows: dict[str, tuple[dict[str, Any], float]] = {}  # row, spend
        self._learned_rows: dict[str, tuple[dict[str, Any], float]] = {}
        self.disk: dict[str, tuple[float, float]] = {}  # folder -> (monotonic time measured, MB)
        self.run_steps: dict[str, dict[str, tuple]] = {}  # run -> step id -> (key, number, agent, status)
        self._learned_steps: dict[str, dict[str, tuple]] = {}
        self.run_heads: dict[str, tuple] = {}  # run -> (session, status, pause_requested, owner_pid, journal_seq)
        self._learned_heads: dict[str, tuple] = {}
        self.run_rows: dict[str, tuple[str, dict[str, Any], str]] = {}  # run -> (session, row, config's text)
        self._learned_rows_of_runs: dict[str, tuple[str, dict[str, Any], str]] = {}

    def knows_session(self, session_id: str) -> bool:
        return session_id in self.live_sessions or session_id in self._learned_sessions

    def knows_run(self, session_id: str, run_id: str) -> bool:
        return (self.run_sessions.get(run_id) or self._learned_runs.get(run_id)) == session_id

    def learn_session(self, session_id: str) -> None:
        self._learned_sessions.add(session_id)

    def learn_run(self, session_id: str, run_id: str) -> None:
        self._learned_runs[run_id] = session_id

    def forget_session(self, session_id: str) -> None:
        self.live_sessions.discard(session_id)
        self._learned_sessions.discard(session_id)
        self.forget_quota_facts(session_id)

    def quota_facts(self, session_id: str) -> tuple[dict[str, Any], float] | None:
        """The session's row and what it has spent, if known."""
        return self._learned_rows.get(session_id) or self.session_rows.get(session_id)

    def learn_quota_facts(self, session_id: str, row: dict[str, Any], spend: float) -> None:
        self._learned_rows[session_id] = (row, spend)

    def known_steps(self, run_id: str) -> dict[str, tuple] | None:
        return self._learned_steps.get(run_id) or self.run_steps.get(run_id)

    def learn_steps(self, run_id: str, steps: dict[str, tuple]) -> None:
        self._learned_steps[run_id] = steps

    def forget_steps(self, run_id: str) -> None:
        self.run_steps.pop(run_id, None)
        self._learned_steps.pop(run_id, None)

    def known_head(self, session_id: str, run_id: str) -> tuple | None:
        """The run's (status, pause_requested, owner_pid, journal_seq), if remembered (and it is
        a run of that session)."""
        head = self._learned_heads.get(run_id) or self.run_heads.get(run_id)
        return head[1:] if head is not None and head[0] == session_id else None

    def learn_head(self, session_id: str, run_id: str, status: str, pause_requested: bool, owner_pid: Any,
                   journal_seq: int) -> None:
        self._learned_heads[run_id] = (session_id, status, bool(pause_requested), owner_pid, int(journal_seq))

    def forget_head(self, run_id: str) -> None:
        """The run's row changed: its head and its row are read again next time."""
        self.run_heads.pop(run_id, None)
        self._learned_heads.pop(run_id, None)
        self.run_rows.pop(run_id, None)
        self._learned_rows_of_runs.pop(run_id, None)

    def known_row(self, session_id: str, run_id: str) -> tuple[dict[str, Any], str] | None:
        """A run's row (a copy) and its config's text, as the service last wrote them, if remembered."""
        kept = self._learned_rows_of_runs.get(run_id) or self.run_rows.get(run_id)
        if kept is None or kept[0] != session_id:
            return None
        return dict(kept[1]), kept[2]

    def learn_row(self, session_id: str, run_id: str, row: dict[str, Any], config_text: str) -> None:
        self._learned_rows_of_runs[run_id] = (session_id, dict(row), config_text)

    def forget_quota_facts(self, session_id: str) -> None:
        """The session's row or its spending changed: read them again next time."""
        self.session_rows.pop(session_id, None)
        self._learned_rows.pop(session_id, None)

    def next(self, session_id: str, run_id: str | None, n: int = 1) -> tuple[int, int]:
        """The seq and gseq of the next event (with `n`, the first of the next n, numbered on)."""
        # a run's events are numbered per run, whatever session asked: one counter per run id
        key = ("run", run_id) if run_id else ("session", session_id)
        if key in self.pending:
            cur = self.pending[key]
        elif key in self.committed:
            cur = self.committed[key]
        else:
            if run_id:
                cur = self.db.scalar("SELECT coalesce(max(seq), 0) FROM events WHERE run_id = ?", [run_id])
            else:
                cur = self.db.scalar(
                    "SELECT coalesce(max(seq), 0) FROM events WHERE session_id = ? AND run_id IS NULL", [session_id]
                )
            cur = int(cur or 0)
        self.pending[key] = cur + n
        self.gseq_pending += n
        return cur + 1, self.gseq_pending - n + 1

    def commit(self) -> None:
        self.committed.update(self.pending)
        self.pending.clear()
        self.gseq_committed = self.gseq_pending
        self.live_sessions |= self._learned_sessions
        self.run_sessions.update(self._learned_runs)
        self.session_rows.update(self._learned_rows)
        for run_id, steps in self._learned_steps.items():
            self.run_steps.pop(run_id, None)
            self.run_steps[run_id] = steps  # the most recent last
        while len(self.run_steps) > RUNS_WITH_STEPS_KEPT:
            self.run_steps.pop(next(iter(self.run_steps)))
        for run_id, head in self._learned_heads.items():
            self.run_heads.pop(run_id, None)
            self.run_heads[run_id] = head
        while len(self.run_heads) > RUNS_WITH_STEPS_KEPT:
            self.run_heads.pop(next(iter(self.run_heads)))
        self.run_rows.update(self._learned_rows_of_runs)
        while len(self.run_rows) > RUNS_WITH_STEPS_KEPT:
            self.run_rows.pop(next(iter(self.run_rows)))
        self._learned_sessions.clear()
        self._learned_runs.clear()
        self._learned_rows.clear()
        self._learned_steps.clear()
        self._learned_heads.clear()
        self._learned_rows_of_runs.clear()

    def rollback(self) -> None:
        self.pending.clear()
        self.gseq_pending = self.gseq_committed
        self._learned_sessions.clear()
        self._learned_runs.clear()
        self._learned_rows.clear()
        self._learned_steps.clear()
        self._learned_heads.clear()
        self._learned_rows_of_runs.clear()


class StaleSteps(Exception):
    """A journal batch found the run or a step no longer as the service remembered it: the
    transaction is applied again, reading them (see `SeqAllocator`)."""

    def __init__(self, run_id: str):
        super().__init__(f"run {run_id} or its steps changed since its journal was last applied")
        self.run_id = run_id


EVENT_COLUMNS = ("id", "session_id", "run_id", "seq", "gseq", "type", "ts", "payload")
HISTORY_COLUMNS = ("id", "session_id", "entity_type", "entity_id", "from_state", "to_state", "reason", "actor", "at")


@dataclass
class OpContext:
    db: Database
    home: Path
    seqs: SeqAllocator
    events: list[dict[str, Any]] = field(default_factory=list)
    _times: list[datetime] = field(default_factory=list)  # each event's time, as emit had it
    _last_ts: datetime | None = None  # the last time emit wrote out, and how
    _last_iso: str = ""
    # state_history rows of the transaction, inserted with its events by `flush` (one statement)
    history_rows: list[tuple] = field(default_factory=list)
    # the request being applied: its idempotency id, whether it is a resend, and whether
    # the service must record it in the applied_requests ledger (an op that is idempotent
    # by its own ids clears `ledger` and saves that statement)
    rid: str | None = None
    retry: bool = False
    ledger: bool = True
    # False when the transaction is applied again after `StaleSteps`: read everything
    remembered_steps: bool = True
    # files that mirror rows (run.json), written once the transaction committed and its
    # replies went out (`write_files`); the last write of a path wins
    files: dict[Path, dict[str, Any]] = field(default_factory=dict)

    def emit(
        self,
        type: str | EventType,
        session_id: str,
        run_id: str | None = None,
        payload: dict[str, Any] | None = None,
        *,
        event_id: str | None = None,
        ts: datetime | None = None,
    ) -> dict[str, Any]:
        kind = type.value if isinstance(type, EventType) else str(type)
        self.emit_many(session_id, run_id, [(kind, payload or {}, ts or utcnow())],
                       ids=[event_id] if event_id else None)
        return self.events[-1]

    def emit_many(self, session_id: str, run_id: str | None, items: list[tuple[str, dict[str, Any], datetime]],
                  *, ids: list[str] | None = None) -> None:
        """Events of one run (or of the session, with no run), each given as (type, payload,
        time), in that order; `ids`, their ids if not new ones."""
        if not items:
            return
        seq, gseq = self.seqs.next(session_id, run_id, len(items))
        # the events of one journal record share their time: it is written out once
        events, times, last, iso = self.events, self._times, self._last_ts, self._last_iso
        for i, (ident, (kind, payload, ts)) in enumerate(zip(ids or new_ids("event", len(items)), items)):
            if ts is not last:
                last, iso = ts, ts.isoformat()
            events.append({"schema_version": 1, "id": ident, "type": kind, "session_id": session_id,
                           "run_id": run_id, "seq": seq + i, "gseq": gseq + i, "ts": iso, "payload": payload})
            times.append(ts)
        self._last_ts, self._last_iso = last, iso

    def write_files(self) -> None:
        """Write the mirror files of a committed transaction."""
        files, self.files = self.files, {}
        for path, data in files.items():
            try:
                _write_json(path, data)
            except OSError as exc:  # the row is the truth; `cmbagent recover` says what it cannot read
                log.warning("%s not written: %s", path, exc)

    def flush(self) -> None:
        """Insert the transaction's history rows and events (before its commit)."""
        if self.history_rows:
            self.db.insert_rows("state_history", HISTORY_COLUMNS, self.history_rows)
            self.history_rows = []
        if not self.events:
            return
        events = self.events
        times = self._times if len(self._times) == len(events) else [datetime.fromisoformat(e["ts"]) for e in events]
        ats, last, at = [], None, None
        for t in times:
            if t is not last:
                last, at = t, to_db_time(t)
            ats.append(at)
        dumps_ = codec.dumps
        # a list per column (EVENT_COLUMNS), each of one type: no row-by-row inspection
        self.db.insert_columns("events", EVENT_COLUMNS, [
            [e["id"] for e in events], [e["session_id"] for e in events], [e["run_id"] for e in events],
            [e["seq"] for e in events], [e["gseq"] for e in events], [e["type"] for e in events], ats,
            [dumps_(e["payload"]) for e in events]])


# ---------------------------------------------------------------- helpers


def _arg(args: dict[str, Any], name: str, kind: str | None = None, required: bool = True) -> Any:
    if name not in args or args[name] is None:
        if required:
            raise Invalid(f"missing argument {name!r}")
        return None
    value = args[name]
    if kind:
        try:
            check_id(kind, value)
        except InvalidInput as exc:
            raise Invalid(str(exc)) from None
    return value


def _row(row: dict[str, Any] | None, json_cols: tuple[str, ...] = (), time_cols: tuple[str, ...] = ()) -> dict[str, Any] | None:
    if row is None:
        return None
    out = dict(row)
    for c in json_cols:
        if c in out:
            out[c] = loads(out[c])
    for c in time_cols:
        if c in out and out[c] is not None:
            out[c] = from_db_time(out[c]).isoformat()
    return out


SESSION_JSON = ("quotas",)
SESSION_TIMES = ("created_at", "updated_at")
RUN_JSON = ("config",)
RUN_TIMES = ("created_at", "started_at", "completed_at", "last_heartbeat_at")
RUN_COLUMNS = (
    "id, session_id, task, mode, status, model, config, parent_run_id, branch_from_step, created_at, "
    "started_at, completed_at, last_heartbeat_at, checkpoint_interval_s, error, owner_pid, "
    "coalesce(pause_requested, false) AS pause_requested, path"
)
STEP_JSON = ("depends_on", "inputs", "outputs")
STEP_TIMES = ("started_at", "completed_at")
STEP_COLUMNS = (
    "id, session_id, run_id, number, key, agent, status, description, depends_on, progress, inputs, "
    "outputs, error, attempts, started_at, completed_at"
)


def _session_row(ctx: OpContext, session_id: str, *, allow_deleted: bool = False) -> dict[str, Any]:
    row = ctx.db.fetchone("SELECT * FROM sessions WHERE id = ?", [session_id])
    if row is None or (row["status"] == SessionStatus.deleted.value and not allow_deleted):
        raise NotFound(f"session {session_id} does not exist")
    return _row(row, SESSION_JSON, SESSION_TIMES)


def _run_row(ctx: OpContext, session_id: str, run_id: str, extra: str = "", params: list[Any] | tuple = ()
             ) -> dict[str, Any]:
    """The run; `extra`: more columns (", ..." with their `params`) read in the same statement,
    left in the row as they come."""
    row = ctx.db.fetchone(f"SELECT {RUN_COLUMNS}{extra} FROM runs WHERE id = ? AND session_id = ?",
                          [*params, run_id, session_id])
    if row is None:
        raise NotFound(f"run {run_id} does not exist in session {session_id}")
    return _run_of(row)


def _run_of(row: dict[str, Any]) -> dict[str, Any]:
    """A run as the ops return it, from its row (RUN_COLUMNS)."""
    out = _row(row, RUN_JSON, RUN_TIMES)
    out["config"] = out["config"] or {}
    return out


def _require_session(ctx: OpContext, session_id: str) -> None:
    """NotFound unless the session exists and is not deleted; cached (see SeqAllocator)."""
    if not ctx.seqs.knows_session(session_id):
        _session_row(ctx, session_id)
        ctx.seqs.learn_session(session_id)


def _require_run(ctx: OpContext, session_id: str, run_id: str) -> None:
    """NotFound unless the run belongs to the session; cached (see SeqAllocator)."""
    if not ctx.seqs.knows_run(session_id, run_id):
        if not ctx.db.scalar("SELECT count(*) FROM runs WHERE id = ? AND session_id = ?", [run_id, session_id]):
            raise NotFound(f"run {run_id} does not exist in session {session_id}")
        ctx.seqs.learn_run(session_id, run_id)


def _step_row(ctx: OpContext, session_id: str, step_id: str) -> dict[str, Any]:
    row = ctx.db.fetchone(f"SELECT {STEP_COLUMNS} FROM steps WHERE id = ? AND session_id = ?", [step_id, session_id])
    if row is None:
        raise NotFound(f"step {step_id} does not exist in session {session_id}")
    return _fix_step(row)


def _fix_step(row: dict[str, Any]) -> dict[str, Any]:
    out = _row(row, STEP_JSON, STEP_TIMES)
    out["depends_on"] = out["depends_on"] or []
    out["inputs"] = out["inputs"] or {}
    out["outputs"] = out["outputs"] or {}
    out["progress"] = out["progress"] or 0.0
    out["description"] = out["description"] or ""
    return out


def _history(ctx: OpContext, session_id: str, entity_type: str, entity_id: str, src: str | None, dst: str,
             reason: str | None, actor: str | None) -> None:
    ctx.history_rows.append(
        (new_id("transition"), session_id, entity_type, entity_id, src, dst, reason, actor, to_db_time(utcnow())))


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    # one line, compact (an indented dump is far slower on a large plan)
    tmp.write_bytes(codec.dumps_bytes(data) + b"\n")
    os.replace(tmp, path)


# ---------------------------------------------------------------- store


@op("store.ping", write=False)
def store_ping(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    return {"pong": True, "version": ctx.db.version, "pid": os.getpid(), "gseq": ctx.seqs.gseq_committed}


# ---------------------------------------------------------------- sessions


@op("session.create", write=True)
def session_create(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    try:
        name = validate_name(_arg(args, "name"), "session name")
        quotas = Quotas.model_validate(args.get("quotas") or {})
    except (InvalidInput, ValueError) as exc:
        raise Invalid(str(exc)) from None
    clash = ctx.db.scalar("SELECT id FROM sessions WHERE name = ? AND status != 'deleted'", [name])
    if clash:
        raise Conflict(f"a session named {name!r} already exists ({clash})")
    sid = args.get("id") or new_id("session")
    _arg({"id": sid}, "id", "session")
    if ctx.db.scalar("SELECT count(*) FROM sessions WHERE id = ?", [sid]):
        raise Conflict(f"session {sid} already exists")
    now = utcnow()
    path = session_dir(ctx.home, sid)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    row = {
        "id": sid, "name": name, "status": SessionStatus.active.value, "quotas": quotas.model_dump(),
        "created_at": now.isoformat(), "updated_at": now.isoformat(), "path": str(path),
    }
    ctx.db.execute(
        "INSERT INTO sessions VALUES (?, ?, ?, ?, ?, ?, ?)",
        [sid, name, row["status"], dumps(row["quotas"]), to_db_time(now), to_db_time(now), str(path)],
    )
    _history(ctx, sid, "session", sid, None, "active", "created", args.get("actor"))
    _write_json(path / "session.json", row)
    ctx.emit(EventType.session_created, sid, None, {"name": name})
    return row


@op("session.list", write=False)
def session_list(ctx: OpContext, args: dict[str, Any]) -> list[dict[str, Any]]:
    statuses = ["active"]
    if args.get("include_archived"):
        statuses.append("archived")
    if args.get("include_deleted"):
        statuses.append("deleted")
    rows = ctx.db.fetch(
        f"SELECT * FROM sessions WHERE status IN ({', '.join('?' * len(statuses))}) ORDER BY created_at",
        statuses,
    )
    return [_row(r, SESSION_JSON, SESSION_TIMES) for r in rows]


@op("session.get", write=False)
def session_get(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    return _session_row(ctx, _arg(args, "session_id", "session"), allow_deleted=bool(args.get("allow_deleted")))


@op("session.resolve", write=False)
def session_resolve(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """A session by id or by exact name: what a user types on a command line."""
    ref = _arg(args, "ref")
    if not isinstance(ref, str) or not ref.strip():
        raise Invalid("session reference must be a session id or name")
    if ref.startswith("ses_"):
        try:
            check_id("session", ref)
        except InvalidInput as exc:
            raise Invalid(str(exc)) from None
        return _session_row(ctx, ref)
    rows = ctx.db.fetch("SELECT * FROM sessions WHERE name = ? AND status != 'deleted'", [ref])
    if not rows:
        raise NotFound(f"no session named {ref!r}")
    return _row(rows[0], SESSION_JSON, SESSION_TIMES)


@op("session.set_status", write=True)
def session_set_status(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    sid = _arg(args, "session_id", "session")
    try:
        status = SessionStatus(_arg(args, "status"))
    except ValueError:
        raise Invalid(f"unknown session status {args.get('status')!r}; expected active, archived or deleted") from None
    row = _session_row(ctx, sid)
    if status in (SessionStatus.deleted, SessionStatus.archived):
        # a paused run may sleep in an archived session (restore, then resume it); deleting needs it cancelled
        blocking = [s.value for s in ACTIVE_RUN_STATES if status == SessionStatus.deleted or s != RunStatus.paused]
        active = ctx.db.scalar(
            f"SELECT count(*) FROM runs WHERE session_id = ? AND status IN ({', '.join('?' * len(blocking))})",
            [sid, *blocking],
        )
        if active:
            advice = "cancel them before deleting it" if status == SessionStatus.deleted else \
                "pause or cancel them before archiving it"
            raise Conflict(f"session {sid} has {active} active run(s); {advice}")
    now = utcnow()
    ctx.seqs.forget_session(sid)
    ctx.db.execute("UPDATE sessions SET status = ?, updated_at = ? WHERE id = ?", [status.value, to_db_time(now), sid])
    _history(ctx, sid, "session", sid, row["status"], status.value, args.get("reason"), args.get("actor"))
    ctx.emit(EventType.session_state_changed, sid, None, {"from": row["status"], "to": status.value})
    row.update(status=status.value, updated_at=now.isoformat())
    path = Path(row["path"])
    if path.exists():
        _write_json(path / "session.json", row)
    return row


@op("session.set_quotas", write=True)
def session_set_quotas(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    sid = _arg(args, "session_id", "session")
    row = _session_row(ctx, sid)
    try:
        quotas = Quotas.model_validate({**row["quotas"], **(args.get("quotas") or {})})
    except ValueError as exc:
        raise Invalid(str(exc)) from None
    ctx.seqs.forget_quota_facts(sid)
    ctx.db.execute("UPDATE sessions SET quotas = ? WHERE id = ?", [dumps(quotas.model_dump()), sid])
    row["quotas"] = quotas.model_dump()
    path = Path(row["path"])
    if path.exists():
        _write_json(path / "session.json", row)  # `cmbagent recover` reads quotas from here
    return row


@op("session.usage", write=False)
def session_usage(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    sid = _arg(args, "session_id", "session")
    row = _session_row(ctx, sid)
    return _usage(ctx, sid, Path(row["path"]))


_ACTIVE_RUNS = (
    "(SELECT count(*) FROM runs WHERE session_id = ? AND id != ? AND status IN "
    f"({', '.join('?' * len(ACTIVE_RUN_STATES))}))")
_ACTIVE_RUNS_COLUMN = f"{_ACTIVE_RUNS} AS usage_active_runs"
_SPEND_COLUMN = "(SELECT coalesce(sum(cost_usd), 0) FROM cost_records WHERE session_id = ?) AS usage_cost_usd"
_USAGE_COLUMNS = f"{_ACTIVE_RUNS_COLUMN}, {_SPEND_COLUMN}"
# a folder size measured this recently is used again while it allows a run to start (one over
# the quota is measured again): walking a session of many runs at every start costs too much
DISK_USAGE_MAX_AGE_S = 30.0


def _active_runs_params(sid: str, exclude_run: str | None) -> list[Any]:
    return [sid, exclude_run or "", *[s.value for s in ACTIVE_RUN_STATES]]


def _usage_params(sid: str, exclude_run: str | None) -> list[Any]:
    return [*_active_runs_params(sid, exclude_run), sid]


def _disk_mb(ctx: OpContext, path: Path, limit: float | None = None) -> float:
    """What the session's folder holds, in MB. With `limit`, a figure measured in the last
    DISK_USAGE_MAX_AGE_S seconds that is under it is used again instead of walking the folder."""
    if limit is not None:
        at, mb = ctx.seqs.disk.get(str(path), (None, 0.0))
        if at is not None and time.monotonic() - at < DISK_USAGE_MAX_AGE_S and mb < limit:
            return mb
    mb = dir_size_mb(path) if path.exists() else 0.0
    ctx.seqs.disk[str(path)] = (time.monotonic(), mb)
    return mb


def _usage(ctx: OpContext, sid: str, path: Path, exclude_run: str | None = None) -> dict[str, Any]:
    row = ctx.db.fetchone(f"SELECT {_USAGE_COLUMNS}", _usage_params(sid, exclude_run))
    return {"active_runs": int(row["usage_active_runs"] or 0), "cost_usd": float(row["usage_cost_usd"] or 0.0),
            "disk_mb": _disk_mb(ctx, path)}


def quota_columns(ctx: OpContext, sid: str, rid: str) -> tuple[str, list[Any]]:
    """Columns (and their parameters) a read of run `rid` adds for the quota check of its start:
    the session's other active runs, and its row and spending unless the service knows them."""
    cols, params = [_ACTIVE_RUNS_COLUMN], _active_runs_params(sid, rid)
    if ctx.seqs.quota_facts(sid) is None:
        cols += [_SPEND_COLUMN, "(SELECT s FROM sessions s WHERE s.id = ?) AS quota_session"]
        params += [sid, sid]
    return ", ".join(cols), params


def known_quota_row(ctx: OpContext, sid: str) -> dict[str, Any] | None:
    """The session's row with what it has spent, as `_enforce_quotas` takes it, if the service
    knows them; its count of active runs is left to the move's guarded update (`move_run`)."""
    facts = ctx.seqs.quota_facts(sid)
    if facts is None:
        return None
    return {**facts[0], "usage_active_runs": None, "usage_cost_usd": facts[1]}


def quota_row(ctx: OpContext, sid: str, row: dict[str, Any]) -> dict[str, Any] | None:
    """Takes the `quota_columns` out of `row`: the session's row with its usage, as
    `_enforce_quotas` takes it (None if the session does not exist)."""
    active = row.pop("usage_active_runs")
    if "quota_session" in row:
        session, spend = row.pop("quota_session"), float(row.pop("usage_cost_usd") or 0.0)
        if session is None:
            return None
        ctx.seqs.learn_quota_facts(sid, session, spend)
    else:
        session, spend = ctx.seqs.quota_facts(sid)
    return {**session, "usage_active_runs": active, "usage_cost_usd": spend}


# ---------------------------------------------------------------- runs


@op("run.create", write=True)
def run_create(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    sid = _arg(args, "session_id", "session")
    session = _session_row(ctx, sid)
    if session["status"] != SessionStatus.active.value:
        raise Conflict(f"session {sid} is {session['status']}; only active sessions start runs")
    task = args.get("task")
    if not isinstance(task, str):
        raise Invalid("task must be text")
    if len(task) > 200_000:
        raise Invalid(f"task is {len(task)} characters long; at most 200000 are allowed")
    try:
        mode = RunMode(args.get("mode") or RunMode.deep_research.value)
    except ValueError:
        raise Invalid(f"unknown mode {args.get('mode')!r}; expected one of {', '.join(m.value for m in RunMode)}") from None
    rid = args.get("id") or new_id("run")
    _arg({"id": rid}, "id", "run")
    if ctx.db.scalar("SELECT count(*) FROM runs WHERE id = ?", [rid]):
        raise Conflict(f"run {rid} already exists")
    parent = args.get("parent_run_id")
    if parent is not None:
        _run_row(ctx, sid, _arg(args, "parent_run_id", "run"))
    interval = float(args.get("checkpoint_interval_s") or 600.0)
    if interval <= 0:
        raise Invalid("checkpoint_interval_s must be positive")
    now = utcnow()
    path = run_dir(ctx.home, sid, rid)
    for sub in ("planning", "control/codebase", "control/data", "context", "checkpoints"):
        (path / sub).mkdir(parents=True, exist_ok=True)
    config = args.get("config") or {}
    if not isinstance(config, dict):
        raise Invalid("config must be an object")
    ctx.db.execute(
        "INSERT INTO runs (id, session_id, task, mode, status, model, config, parent_run_id, branch_from_step, "
        "created_at, checkpoint_interval_s, path, pause_requested) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, false)",
        [rid, sid, task, mode.value, RunStatus.draft.value, args.get("model"), dumps(config), parent,
         args.get("branch_from_step"), to_db_time(now), interval, str(path)],
    )
    _history(ctx, sid, "run", rid, None, RunStatus.draft.value, "created", args.get("actor"))
    run = _run_row(ctx, sid, rid)
    _write_json(path / "run.json", run)
    ctx.emit(EventType.workflow_created, sid, rid, {"task": task[:500], "mode": mode.value})
    return run


@op("run.get", write=False)
def run_get(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    return _run_row(ctx, _arg(args, "session_id", "session"), _arg(args, "run_id", "run"))


@op("run.find", write=False)
def run_find(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """Which session a run id belongs to: what `cmbagent resume RUN_ID` needs first."""
    rid = _arg(args, "run_id", "run")
    return _run_row(ctx, session_of(ctx, "runs", "run", rid), rid)


def session_of(ctx: OpContext, table: str, what: str, entity_id: str) -> str:
    """The live session that owns a row, for commands given a bare id (`cmbagent resume RUN_ID`)."""
    row = ctx.db.fetchone(
        f"SELECT t.session_id FROM {table} t JOIN sessions s ON s.id = t.session_id "
        "WHERE t.id = ? AND s.status != 'deleted'", [entity_id])
    if row is None:
        raise NotFound(f"{what} {entity_id} does not exist")
    return row["session_id"]


@op("run.list", write=False)
def run_list(ctx: OpContext, args: dict[str, Any]) -> list[dict[str, Any]]:
    sid = _arg(args, "session_id", "session")
    _session_row(ctx, sid, allow_deleted=True)
    params: list[Any] = [sid]
    sql = f"SELECT {RUN_COLUMNS} FROM runs WHERE session_id = ?"
    if args.get("status"):
        statuses = args["status"] if isinstance(args["status"], list) else [args["status"]]
        sql += f" AND status IN ({', '.join('?' * len(statuses))})"
        params += statuses
    sql += " ORDER BY created_at"
    out = []
    for r in ctx.db.fetch(sql, params):
        row = _row(r, RUN_JSON, RUN_TIMES)
        row["config"] = row["config"] or {}
        out.append(row)
    return out


_RUN_EVENT = {
    RunStatus.paused: EventType.workflow_paused,
    RunStatus.completed: EventType.workflow_completed,
    RunStatus.failed: EventType.workflow_failed,
}


@op("run.transition", write=True)
def run_transition(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    sid = _arg(args, "session_id", "session")
    rid = _arg(args, "run_id", "run")
    return move_run(ctx, _run_row(ctx, sid, rid), args)


def move_run(ctx: OpContext, run: dict[str, Any], args: dict[str, Any], *, step_count: int | None = None,
             also: dict[str, Any] | None = None, seen: dict[str, Any] | None = None,
             guard: tuple[str, list[Any]] | None = None) -> dict[str, Any]:
    """`run.transition` of a run row the caller read in this transaction; returns the row after it.
    A caller that has just read the run's steps passes their number (`step_count`): a guard
    that needs it is not read again. `also`: more columns the same update sets (not returned).
    `seen` receives the session row if the move read it (a run starting checks its quotas); its
    "quota_row", if the caller read the session with its usage already, is used for that check.
    `guard`: conditions (SQL after AND, and their parameters) the row must still meet, for a
    `run` the service remembered rather than read; StaleSteps if it does not."""
    sid, rid = run["session_id"], run["id"]
    try:
        dst = RunStatus(_arg(args, "to"))
    except ValueError:
        raise Invalid(f"unknown run state {args.get('to')!r}") from None
    src = RunStatus(run["status"])
    expected = args.get("expected_from")
    if expected is not None and src.value not in (expected if isinstance(expected, list) else [expected]):
        raise Conflict(f"run {rid} is {src.value!r}, not {expected!r}")
    if src == dst:
        return run
    facts: dict[str, Any] = {"task": run["task"], "mode": run["mode"]}
    if needs_counts(src, dst) and step_count is not None and src != RunStatus.waiting_approval:
        facts.update(step_count=step_count, pending_approvals=0)  # only a move from waiting_approval needs these
    elif needs_counts(src, dst):  # only the guards of this move read them
        facts.update(ctx.db.fetchone(
            "SELECT (SELECT count(*) FROM steps WHERE run_id = ?) AS step_count, "
            "(SELECT count(*) FROM approvals WHERE run_id = ? AND status = 'pending') AS pending_approvals",
            [rid, rid]))
    try:
        check_run_transition(rid, src.value, dst.value, facts)
    except IllegalTransition as exc:
        raise Invalid(str(exc)) from None
    starting = dst in ACTIVE_RUN_STATES and src not in ACTIVE_RUN_STATES
    if starting:
        quota = (seen or {}).get("quota_row")
        session, quotas = _enforce_quotas(ctx, sid, rid, quota)
        if seen is not None:
            seen["session"] = session
        if quota is not None and quota["usage_active_runs"] is None:
            # the session's other active runs are counted by the update itself: one at the quota
            # leaves the row as it was, and the transaction is applied again reading the count
            if guard is None:
                raise ValueError(f"run {rid}: its session's active runs were not counted before its start")
            guard = (f"{guard[0]} AND {_ACTIVE_RUNS} < ?",
                     [*guard[1], *_active_runs_params(sid, rid), quotas.max_concurrent_runs])
    now = to_db_time(utcnow())
    # the row after the move, as the update below leaves it (no second read)
    changes: dict[str, Any] = {"status": dst.value}
    if starting and run["started_at"] is None:
        changes["started_at"] = now
    if dst in (RunStatus.completed, RunStatus.failed, RunStatus.cancelled):
        changes["completed_at"] = now
    if dst in (RunStatus.executing, RunStatus.planning):
        changes["pause_requested"] = False
    if "error" in args:
        changes["error"] = args["error"]
    if "owner_pid" in args:
        changes["owner_pid"] = args["owner_pid"]
    if starting:
        changes["last_heartbeat_at"] = now
    sets = {**changes, **(also or {})}
    sql = f"UPDATE runs SET {', '.join(f'{k} = ?' for k in sets)} WHERE id = ?"
    if guard is None:
        ctx.db.execute(sql, [*sets.values(), rid])
    elif ctx.db.execute_count(f"{sql} AND {guard[0]}", [*sets.values(), rid, *guard[1]]) != 1:
        raise StaleSteps(rid)
    ctx.seqs.forget_head(rid)
    if src == RunStatus.draft:
        etype = EventType.workflow_started
    elif src in (RunStatus.paused, RunStatus.interrupted) and dst in ACTIVE_RUN_STATES:
        etype = EventType.workflow_resumed
    else:
        etype = _RUN_EVENT.get(dst, EventType.workflow_state_changed)
    # the event is the move's history entry too (history.list shows it)
    payload = {"from": src.value, "to": dst.value, "reason": args.get("reason"), "history": True}
    if args.get("actor") is not None:
        payload["actor"] = args["actor"]
    if args.get("error"):
        payload["error"] = args["error"]
    ctx.emit(etype, sid, rid, payload)
    out = {**run, **_row(changes, (), RUN_TIMES)}
    ctx.files[Path(out["path"]) / "run.json"] = out
    return out


def row_guard(row: dict[str, Any], config_text: str, journal_seq: int) -> tuple[str, list[Any]]:
    """`move_run`'s guard for a run row the service remembers (`SeqAllocator.known_row`): every
    column of it that can change still holds what the row says, and the journal seq is `journal_seq`."""
    times = [None if row[c] is None else to_db_time(datetime.fromisoformat(row[c]))
             for c in ("started_at", "completed_at", "last_heartbeat_at")]
    return ("status = ? AND task = ? AND model IS NOT DISTINCT FROM ? AND config::VARCHAR = ? "
            "AND error IS NOT DISTINCT FROM ? AND owner_pid IS NOT DISTINCT FROM ? "
            "AND coalesce(pause_requested, false) = ? AND coalesce(journal_seq, 0) = ? AND started_at IS NOT DISTINCT "
            "FROM ? AND completed_at IS NOT DISTINCT FROM ? AND last_heartbeat_at IS NOT DISTINCT FROM ?",
            [row["status"], row["task"], row["model"], config_text, row["error"], row["owner_pid"],
             bool(row["pause_requested"]), int(journal_seq), *times])


def _enforce_quotas(ctx: OpContext, sid: str, rid: str, row: dict[str, Any] | None = None
                    ) -> tuple[dict[str, Any], Quotas]:
    """QuotaExceeded if the session may not start one more run; returns the session and its quotas. `row`:
    the session's row with its usage columns (`_USAGE_COLUMNS`), if the caller read it already."""
    if row is None:  # the session and what it uses in one read
        row = ctx.db.fetchone(f"SELECT *, {_USAGE_COLUMNS} FROM sessions WHERE id = ?", [*_usage_params(sid, rid), sid])
    if row is None or row["status"] == SessionStatus.deleted.value:
        raise NotFound(f"session {sid} does not exist")
    session = _row(row, SESSION_JSON, SESSION_TIMES)
    active = session.pop("usage_active_runs")  # None: left to the caller's guarded update
    usage = {"active_runs": int(active or 0), "cost_usd": float(session.pop("usage_cost_usd") or 0.0)}
    q = Quotas.model_validate(session["quotas"])
    usage["disk_mb"] = _disk_mb(ctx, Path(session["path"]), limit=q.max_disk_mb)
    if active is not None and usage["active_runs"] >= q.max_concurrent_runs:
        raise QuotaExceeded(
            f"quota max_concurrent_runs reached: session {sid} already has {usage['active_runs']} active run(s) "
            f"and its quota allows {q.max_concurrent_runs} at once (raise max_concurrent_runs or wait for one to finish)"
        )
    if usage["cost_usd"] >= q.max_cost_usd:
        raise QuotaExceeded(
            f"quota max_cost_usd reached: session {sid} has spent ${usage['cost_usd']:.4f} of its "
            f"${q.max_cost_usd:.2f} (raise max_cost_usd to start more runs)"
        )
    if usage["disk_mb"] >= q.max_disk_mb:
        raise QuotaExceeded(
            f"quota max_disk_mb reached: session {sid} uses {usage['disk_mb']:.1f} MB on disk of its "
            f"{q.max_disk_mb:.1f} MB (free space in {session['path']} or raise max_disk_mb)"
        )
    return session, q


@op("run.heartbeat", write=True)
def run_heartbeat(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    sid = _arg(args, "session_id", "session")
    rid = _arg(args, "run_id", "run")
    run = _run_row(ctx, sid, rid)
    now = utcnow()
    ctx.db.execute("UPDATE runs SET last_heartbeat_at = ?, owner_pid = coalesce(?, owner_pid) WHERE id = ?",
                   [to_db_time(now), args.get("owner_pid"), rid])
    ctx.seqs.forget_head(rid)
    return {"last_heartbeat_at": now.isoformat(), "pause_requested": bool(run["pause_requested"]), "status": run["status"]}


@op("run.request_pause", write=True)
def run_request_pause(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    sid = _arg(args, "session_id", "session")
    rid = _arg(args, "run_id", "run")
    run = _run_row(ctx, sid, rid)
    if run["status"] not in (RunStatus.planning.value, RunStatus.executing.value, RunStatus.waiting_approval.value):
        raise Conflict(f"run {rid} is {run['status']!r}; only a running run can be paused")
    ctx.db.execute("UPDATE runs SET pause_requested = true WHERE id = ?", [rid])
    ctx.seqs.forget_head(rid)
    ctx.emit(EventType.workflow_state_changed, sid, rid, {"pause_requested": True, "from": run["status"], "to": run["status"]})
    return _run_row(ctx, sid, rid)


@op("run.update", write=True)
def run_update(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    sid = _arg(args, "session_id", "session")
    rid = _arg(args, "run_id", "run")
    run = _run_row(ctx, sid, rid)
    sets, params = [], []
    if "config" in args:
        if not isinstance(args["config"], dict):
            raise Invalid("config must be an object")
        sets.append("config = ?")
        params.append(dumps({**run["config"], **args["config"]}))
    if "model" in args:
        sets.append("model = ?")
        params.append(args["model"])
    if "task" in args:
        sets.append("task = ?")
        params.append(str(args["task"]))
    if sets:
        ctx.db.execute(f"UPDATE runs SET {', '.join(sets)} WHERE id = ?", [*params, rid])
        ctx.seqs.forget_head(rid)
    return _run_row(ctx, sid, rid)


# ---------------------------------------------------------------- steps


@op("step.put_plan", write=True)
def step_put_plan(ctx: OpContext, args: dict[str, Any]) -> list[dict[str, Any]] | dict[str, Any]:
    """Replace the pending steps of a run with a plan; completed steps are kept.

    Returns the run's steps, or with `return_steps` false only how many were stored (a
    caller that chose the step ids itself knows the rest)."""
    sid = _arg(args, "session_id", "session")
    rid = _arg(args, "run_id", "run")
    _run_row(ctx, sid, rid)
    return put_steps(ctx, sid, rid, args.get("steps"), return_steps=args.get("return_steps", True) is not False)


def put_steps(ctx: OpContext, sid: str, rid: str, steps: Any, *, return_steps: bool = True
              ) -> list[dict[str, Any]] | dict[str, Any]:
    """`step.put_plan` for a run the caller has found in its session."""
    if not isinstance(steps, list):
        raise Invalid("steps must be a list")
    existing = {r["key"]: r for r in ctx.db.fetch("SELECT id, key, number, agent, status FROM steps WHERE run_id = ?",
                                                   [rid])}
    keep = {k for k, r in existing.items() if r["status"] == StepStatus.completed.value}
    if len(keep) < len(existing):
        ctx.db.execute("DELETE FROM steps WHERE run_id = ? AND status != 'completed'", [rid])
    rows = []
    for i, s in enumerate(steps, start=1):
        if not isinstance(s, dict):
            raise Invalid(f"step {i} of the plan must be an object")
        _arg(s, "id", "step", required=False)
        key = str(s.get("key") or f"step_{i}")
        if key in keep:
            continue
        rows.append((
            s.get("id") or new_id("step"), sid, rid, int(s.get("number") or i), key, str(s.get("agent") or "engineer"),
            StepStatus.pending.value, str(s.get("description") or ""), dumps(list(s.get("depends_on") or [])), 0.0,
            dumps(s.get("inputs") or {}), dumps({}), None, 0, None, None,
        ))
    ctx.db.insert_rows(
        "steps",
        ("id", "session_id", "run_id", "number", "key", "agent", "status", "description", "depends_on", "progress",
         "inputs", "outputs", "error", "attempts", "started_at", "completed_at"),
        rows,
    )
    # the run's steps as they are now, for its journal batches (see SeqAllocator)
    ctx.seqs.learn_steps(rid, {**{r["id"]: (k, r["number"], r["agent"], r["status"]) for k, r in existing.items()
                                  if k in keep}, **{r[0]: (r[4], r[3], r[5], r[6]) for r in rows}})
    if not return_steps:
        return {"stored": len(rows), "kept": sorted(keep)}
    return steps_of(ctx, sid, rid)


@op("step.list", write=False)
def step_list(ctx: OpContext, args: dict[str, Any]) -> list[dict[str, Any]]:
    sid = _arg(args, "session_id", "session")
    rid = _arg(args, "run_id", "run")
    _run_row(ctx, sid, rid)
    return steps_of(ctx, sid, rid)


def steps_of(ctx: OpContext, sid: str, rid: str) -> list[dict[str, Any]]:
    """The steps of a run the caller has found in its session, in step order."""
    rows = ctx.db.fetch(f"SELECT {STEP_COLUMNS} FROM steps WHERE run_id = ? AND session_id = ? ORDER BY number", [rid, sid])
    return [_fix_step(r) for r in rows]


@op("step.get", write=False)
def step_get(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    return _step_row(ctx, _arg(args, "session_id", "session"), _arg(args, "step_id", "step"))


_STEP_EVENT = {
    StepStatus.running: EventType.step_started,
    StepStatus.completed: EventType.step_completed,
    StepStatus.failed: EventType.step_failed,
}


@op("step.transition", write=True)
def step_transition(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    sid = _arg(args, "session_id", "session")
    step = _step_row(ctx, sid, _arg(args, "step_id", "step"))
    try:
        dst = StepStatus(_arg(args, "to"))
    except ValueError:
        raise Invalid(f"unknown step state {args.get('to')!r}") from None
    src = StepStatus(step["status"])
    if src != dst:
        try:
            check_step_transition(step["id"], src.value, dst.value)
        except IllegalTransition as exc:
            raise Invalid(str(exc)) from None
    now = to_db_time(utcnow())
    sets, params = ["status = ?"], [dst.value]
    if dst == StepStatus.running and src != StepStatus.running:
        sets += ["started_at = ?", "attempts = attempts + 1", "error = NULL"]
        params.append(now)
    if dst == StepStatus.completed:
        sets += ["completed_at = ?", "progress = 1.0"]
        params.append(now)
    if dst == StepStatus.pending:
        sets += ["completed_at = NULL", "progress = 0.0", "outputs = ?"]
        params.append(dumps({}))
    if "outputs" in args:
        sets.append("outputs = ?")
        params.append(dumps(args["outputs"] or {}))
    if "error" in args:
        sets.append("error = ?")
        params.append(args["error"])
    if "description" in args:
        sets.append("description = ?")
        params.append(str(args["description"]))
    if "reset_attempts" in args:
        sets.append("attempts = 0")
    ctx.seqs.forget_steps(step["run_id"])
    ctx.db.execute(f"UPDATE steps SET {', '.join(sets)} WHERE id = ?", [*params, step["id"]])
    if src != dst:
        _history(ctx, sid, "step", step["id"], src.value, dst.value, args.get("reason"), args.get("actor"))
    payload = {"step_id": step["id"], "key": step["key"], "number": step["number"], "agent": step["agent"],
               "from": src.value, "to": dst.value}
    if args.get("error"):
        payload["error"] = str(args["error"])[:2000]
    ctx.emit(_STEP_EVENT.get(dst, EventType.step_state_changed), sid, step["run_id"], payload)
    return _step_row(ctx, sid, step["id"])


@op("step.progress", write=True)
def step_progress(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    sid = _arg(args, "session_id", "session")
    step = _step_row(ctx, sid, _arg(args, "step_id", "step"))
    progress = float(args.get("progress") or 0.0)
    if not 0.0 <= progress <= 1.0:
        raise Invalid("progress must be between 0 and 1")
    ctx.db.execute("UPDATE steps SET progress = ? WHERE id = ?", [progress, step["id"]])
    ctx.emit(EventType.step_progress, sid, step["run_id"],
             {"step_id": step["id"], "progress": progress, "message": args.get("message")})
    return {"progress": progress}


# ---------------------------------------------------------------- events


@op("event.append", write=True)
def event_append(ctx: OpContext, args: dict[str, Any]) -> list[dict[str, Any]]:
    sid = _arg(args, "session_id", "session")
    events = args.get("events")
    if not isinstance(events, list) or not events:
        raise Invalid("events must be a non-empty list")
    if len(events) > 10_000:
        raise Invalid(f"{len(events)} events in one call; at most 10000 are allowed")
    _require_session(ctx, sid)
    if not all(isinstance(e, dict) for e in events):
        raise Invalid("each event must be an object")
    ids = [_event_id(ctx, e, i) for i, e in enumerate(events)]
    if ctx.rid:
        # the ids are fixed by the request id, so the events themselves show whether a
        # resent request was applied: no ledger row needed
        ctx.ledger = False
        if ctx.retry:
            found = {r["id"]: r for r in ctx.db.fetch(
                f"SELECT id, seq, gseq FROM events WHERE session_id = ? AND id IN ({', '.join('?' * len(ids))})",
                [sid, *ids])}
            if len(found) == len(set(ids)):
                return [{"id": i, "seq": found[i]["seq"], "gseq": found[i]["gseq"]} for i in ids]
    known_runs: set[str] = set()
    out = []
    for e, event_id in zip(events, ids):
        if e.get("session_id", sid) != sid:
            raise Invalid(f"event for session {e.get('session_id')} sent in a call for session {sid}")
        try:
            etype = EventType(e.get("type"))
            check_payload(etype, e.get("payload") or {})
        except ValueError as exc:
            raise Invalid(str(exc) if isinstance(exc, InvalidInput) else f"unknown event type {e.get('type')!r}") from None
        rid = e.get("run_id")
        if rid is not None and rid not in known_runs:
            _require_run(ctx, sid, _arg(e, "run_id", "run"))
            known_runs.add(rid)
        ts = datetime.fromisoformat(e["ts"]) if e.get("ts") else None
        ev = ctx.emit(etype, sid, rid, e.get("payload") or {}, event_id=event_id, ts=ts)
        out.append({"id": ev["id"], "seq": ev["seq"], "gseq": ev["gseq"]})
    return out


def _event_id(ctx: OpContext, event: dict[str, Any], index: int) -> str:
    """The client's id, else one derived from the request id (the same on a resend)."""
    if event.get("id") is not None:
        try:
            return check_id("event", event["id"])
        except InvalidInput as exc:
            raise Invalid(str(exc)) from None
    if ctx.rid:
        return "evt_" + hashlib.sha1(f"{ctx.rid}:{index}".encode()).hexdigest()[:20]
    return new_id("event")


@op("event.list", write=False)
def event_list(ctx: OpContext, args: dict[str, Any]) -> list[dict[str, Any]]:
    """Events in store order after `since_gseq`, for one session (and run) or, with
    `all_sessions`, for the user's whole home (the Jupyter server's stream)."""
    params: list[Any] = []
    where = []
    if not args.get("all_sessions"):
        sid = _arg(args, "session_id", "session")
        where.append("session_id = ?")
        params.append(sid)
    if args.get("run_id"):
        where.append("run_id = ?")
        params.append(_arg(args, "run_id", "run"))
        if args.get("since_seq") is not None:
            where.append("seq > ?")
            params.append(int(args["since_seq"]))
    if args.get("since_gseq") is not None:
        where.append("gseq > ?")
        params.append(int(args["since_gseq"]))
    if args.get("types"):
        where.append(f"type IN ({', '.join('?' * len(args['types']))})")
        params += list(args["types"])
    limit = min(int(args.get("limit") or 10_000), 100_000)
    sql = "SELECT * FROM events"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += f" ORDER BY gseq LIMIT {limit}"
    return [event_row(r) for r in ctx.db.fetch(sql, params)]


def event_row(r: dict[str, Any]) -> dict[str, Any]:
    return {
        "schema_version": 1, "id": r["id"], "type": r["type"], "session_id": r["session_id"], "run_id": r["run_id"],
        "seq": r["seq"], "gseq": r["gseq"], "ts": from_db_time(r["ts"]).isoformat(), "payload": loads(r["payload"]) or {},
    }


# ---------------------------------------------------------------- checkpoints


@op("checkpoint.put", write=True)
def checkpoint_put(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    sid = _arg(args, "session_id", "session")
    rid = _arg(args, "run_id", "run")
    _run_row(ctx, sid, rid)
    try:
        kind = CheckpointKind(args.get("kind") or "step_complete")
    except ValueError:
        raise Invalid(f"unknown checkpoint kind {args.get('kind')!r}") from None
    step_id = args.get("step_id")
    if step_id is not None:
        _step_row(ctx, sid, _arg(args, "step_id", "step"))
    cid = args.get("id") or new_id("checkpoint")
    _arg({"id": cid}, "id", "checkpoint")
    if ctx.db.scalar("SELECT count(*) FROM checkpoints WHERE id = ?", [cid]):
        raise Conflict(f"checkpoint {cid} already exists")
    now = utcnow()
    ctx.db.execute(
        "INSERT INTO checkpoints VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [cid, sid, rid, step_id, kind.value, dumps(args.get("context") or {}), args.get("pickle_path"), to_db_time(now)],
    )
    ctx.emit(EventType.checkpoint_saved, sid, rid, {"checkpoint_id": cid, "kind": kind.value, "step_id": step_id})
    return {"id": cid, "session_id": sid, "run_id": rid, "step_id": step_id, "kind": kind.value,
            "context": args.get("context") or {}, "pickle_path": args.get("pickle_path"), "created_at": now.isoformat()}


def _checkpoint_row(r: dict[str, Any]) -> dict[str, Any]:
    out = _row(r, ("context",), ("created_at",))
    out["context"] = out["context"] or {}
    return out


@op("checkpoint.latest", write=False)
def checkpoint_latest(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any] | None:
    sid = _arg(args, "session_id", "session")
    rid = _arg(args, "run_id", "run")
    _run_row(ctx, sid, rid)
    r = ctx.db.fetchone(f"{_CHECKPOINTS_OF_RUN} ORDER BY created_at DESC, ord DESC LIMIT 1", _checkpoint_params(sid, rid))
    if r is None:
        return None
    r.pop("ord")
    return _checkpoint_row(r)


@op("checkpoint.list", write=False)
def checkpoint_list(ctx: OpContext, args: dict[str, Any]) -> list[dict[str, Any]]:
    sid = _arg(args, "session_id", "session")
    rid = _arg(args, "run_id", "run")
    _run_row(ctx, sid, rid)
    rows = ctx.db.fetch(f"SELECT id, session_id, run_id, step_id, kind, pickle_path, created_at "
                        f"FROM ({_CHECKPOINTS_OF_RUN}) ORDER BY created_at, ord", _checkpoint_params(sid, rid))
    return [_row(r, (), ("created_at",)) | {"context": {}} for r in rows]


# A run's checkpoints: the rows of the checkpoints table, and the checkpoints of step
# completions that the step journal recorded as their step_completed events (each event of
# a journal record's completions carries the record's checkpoint id, and the first the path
# of its snapshot file if one was written; the checkpoint's context is the keys completed).
_CHECKPOINTS_OF_RUN = (
    "SELECT id, session_id, run_id, step_id, kind, context, pickle_path, created_at, rowid AS ord "
    "FROM checkpoints WHERE run_id = ? AND session_id = ? "
    "UNION ALL "
    "SELECT cid, any_value(session_id), any_value(run_id), arg_min(payload->>'step_id', seq), "
    f"'{CheckpointKind.step_complete.value}', "
    "to_json({'completed': list(payload->>'key' ORDER BY seq)}), max(payload->>'pickle_path'), min(ts), min(seq) "
    "FROM (SELECT payload->>'checkpoint_id' AS cid, * FROM events WHERE run_id = ? AND session_id = ? "
    f"AND type = '{EventType.step_completed.value}') AS e "
    "WHERE cid IS NOT NULL AND cid NOT IN (SELECT id FROM checkpoints WHERE run_id = ?) GROUP BY cid")


def _checkpoint_params(sid: str, rid: str) -> list[str]:
    return [rid, sid, rid, sid, rid]


# ---------------------------------------------------------------- history


@op("history.list", write=False)
def history_list(ctx: OpContext, args: dict[str, Any]) -> list[dict[str, Any]]:
    sid = _arg(args, "session_id", "session")
    entity = args.get("entity_id")
    rows = ctx.db.fetch(
        "SELECT id, session_id, entity_type, entity_id, from_state, to_state, reason, actor, \"at\" FROM ("
        "SELECT *, 0 AS src, rowid AS ord FROM state_history WHERE session_id = ? "
        # a step's moves that the step journal recorded, and a run's moves: their events are their history
        "UNION ALL "
        "SELECT id, session_id, 'step', payload->>'step_id', payload->>'from', payload->>'to', payload->>'reason', "
        "payload->>'actor', ts, 1, gseq FROM events WHERE session_id = ? AND type IN "
        f"({', '.join(repr(t.value) for t in _JOURNALED_STEP_EVENTS)}) AND payload->>'journal_seq' IS NOT NULL "
        "AND (payload->>'from') IS DISTINCT FROM (payload->>'to') "
        "UNION ALL "
        "SELECT id, session_id, 'run', run_id, payload->>'from', payload->>'to', payload->>'reason', "
        "payload->>'actor', ts, 1, gseq FROM events WHERE session_id = ? AND run_id IS NOT NULL "
        "AND payload->>'history' = 'true'"
        ') WHERE ? IS NULL OR entity_id = ? ORDER BY "at", src, ord', [sid, sid, sid, entity, entity])
    return [_row(r, (), ("at",)) for r in rows]


_JOURNALED_STEP_EVENTS = (EventType.step_started, EventType.step_completed, EventType.step_failed)


# ---------------------------------------------------------------- costs


COST_COLUMNS = ("id", "session_id", "run_id", "step_id", "agent", "model", "prompt_tokens", "completion_tokens",
                "total_tokens", "cost_usd", "priced", "at")


@op("cost.add", write=True)
def cost_add(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    sid = _arg(args, "session_id", "session")
    _require_session(ctx, sid)
    records = args.get("records")
    if not isinstance(records, list):
        raise Invalid("records must be a list")
    rows = []
    total = 0.0
    known: set[tuple[str, str]] = set()
    for r in records:
        if not isinstance(r, dict):
            raise Invalid("each cost record must be an object")
        # a record names a run and step of this session only: never another session's
        for kind, key in (("run", "run_id"), ("step", "step_id")):
            ref = r.get(key)
            if ref is not None and (kind, ref) not in known:
                (_require_run if kind == "run" else _step_row)(ctx, sid, _arg(r, key, kind))
                known.add((kind, ref))
        cost = _amount(r, "cost_usd", float)
        total += cost
        pt, ct = _amount(r, "prompt_tokens", int), _amount(r, "completion_tokens", int)
        rows.append((r.get("id") or new_id("cost"), sid, r.get("run_id"), r.get("step_id"), r.get("agent"),
                     str(r.get("model") or "unknown"), pt, ct, _amount(r, "total_tokens", int) or pt + ct, cost,
                     bool(r.get("priced", True)), to_db_time(utcnow())))
    ctx.seqs.forget_quota_facts(sid)
    ctx.db.insert_rows("cost_records", COST_COLUMNS, rows)
    by_run: dict[str | None, list[tuple]] = {}
    for row in rows:
        by_run.setdefault(row[2], []).append(row)
    for run_id, rs in by_run.items():
        ctx.emit(EventType.cost_update, sid, run_id, {
            "records": [{"agent": r[4], "model": r[5], "prompt_tokens": r[6], "completion_tokens": r[7],
                         "cost_usd": r[9], "step_id": r[3]} for r in rs],
            "cost_usd": sum(r[9] for r in rs),
        })
    return {"count": len(rows), "cost_usd": total}


def _amount(record: dict[str, Any], name: str, kind: type) -> Any:
    """A non-negative number from a cost record (a negative cost would dodge the cost quota)."""
    value = record.get(name) or 0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or value != value:
        raise Invalid(f"{name} must be a non-negative number, not {value!r}")
    return kind(value)


@op("cost.records", write=False)
def cost_records(ctx: OpContext, args: dict[str, Any]) -> list[dict[str, Any]]:
    sid = _arg(args, "session_id", "session")
    params: list[Any] = [sid]
    sql = "SELECT * FROM cost_records WHERE session_id = ?"
    if args.get("run_id"):
        sql += " AND run_id = ?"
        params.append(_arg(args, "run_id", "run"))
    return [_row(r, (), ("at",)) for r in ctx.db.fetch(sql + ' ORDER BY "at", rowid', params)]


@op("cost.summary", write=False)
def cost_summary(ctx: OpContext, args: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows grouped by `group_by` (any of run_id, step_id, agent, model)."""
    group = args.get("group_by") or ["agent", "model"]
    allowed = {"run_id", "step_id", "agent", "model", "session_id"}
    if not set(group) <= allowed:
        raise Invalid(f"group_by may use {', '.join(sorted(allowed))}")
    params: list[Any] = []
    where = []
    if not args.get("all_sessions"):
        where.append("session_id = ?")
        params.append(_arg(args, "session_id", "session"))
    else:
        where.append("session_id IN (SELECT id FROM sessions WHERE status != 'deleted')")
    if args.get("run_id"):
        where.append("run_id = ?")
        params.append(_arg(args, "run_id", "run"))
    cols = ", ".join(group)
    sql = (f"SELECT {cols}, count(*) AS calls, sum(prompt_tokens) AS prompt_tokens, "
           f"sum(completion_tokens) AS completion_tokens, sum(total_tokens) AS total_tokens, "
           f"sum(cost_usd) AS cost_usd, bool_and(priced) AS priced FROM cost_records")
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += f" GROUP BY {cols} ORDER BY {cols}"
    rows = ctx.db.fetch(sql, params)
    for r in rows:
        for k in ("prompt_tokens", "completion_tokens", "total_tokens", "calls"):
            r[k] = int(r[k] or 0)
        r["cost_usd"] = float(r["cost_usd"] or 0.0)
    return rows


def dispatch(ctx: OpContext, name: str, args: dict[str, Any]) -> Any:
    spec = OPS.get(name)
    if spec is None:
        raise Invalid(f"unknown store operation {name!r}")
    if not isinstance(args, dict):
        raise Invalid("operation arguments must be an object")
    return spec.func(ctx, args)


from cmbagent_jupyter.store.local import ops_control  # noqa: E402,F401
from cmbagent_jupyter.store.local import ops_recovery  # noqa: E402,F401
from cmbagent_jupyter.store.local import ops_engine  # noqa: E402,F401
from cmbagent_jupyter.store.local import ops_server  # noqa: E402,F401
from cmbagent_jupyter.store.local import ops_files  # noqa: E402,F401
