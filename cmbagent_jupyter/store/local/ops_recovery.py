"""Write operations that put records rebuilt from files back into the store.

`cmbagent recover` reads session.json, run.json and checkpoint pickles and sends what it
found here. Each operation inserts with the ids it is given and only what is absent, so
recovering twice changes nothing the second time, and a store that still has a record
keeps its own copy.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from cmbagent_jupyter.core.states import ACTIVE_RUN_STATES
from cmbagent_jupyter.core.home import run_dir, session_dir
from cmbagent_jupyter.core import (
    CheckpointKind,
    EventType,
    InvalidInput,
    Quotas,
    RunMode,
    RunStatus,
    SessionStatus,
    StepStatus,
    utcnow,
    validate_name,
)
from cmbagent_jupyter.store.local.database import dumps, to_db_time
from cmbagent_jupyter.core.errors import Conflict, Invalid
from cmbagent_jupyter.store.local.ops import (
    OpContext,
    _arg,
    _history,
    _run_row,
    _session_row,
    _write_json,
    op,
)

RECOVERED = "recovered from files"


def _time(value: Any, what: str) -> datetime | None:
    if value in (None, ""):
        return None
    try:
        return to_db_time(datetime.fromisoformat(str(value)))
    except ValueError:
        raise Invalid(f"{what} {value!r} is not an ISO date-time") from None


def _object(args: dict[str, Any], name: str) -> dict[str, Any]:
    value = args.get(name)
    if not isinstance(value, dict):
        raise Invalid(f"{name} must be an object")
    return value


@op("recovery.import_session", write=True)
def import_session(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """A session from its session.json; a name taken meanwhile gets a suffix."""
    doc = _object(args, "session")
    sid = _arg(doc, "id", "session")
    if ctx.db.scalar("SELECT count(*) FROM sessions WHERE id = ?", [sid]):
        return {"id": sid, "created": False}
    try:
        name = validate_name(doc.get("name"), "session name")
        status = SessionStatus(doc.get("status") or SessionStatus.active.value)
        quotas = Quotas.model_validate(doc.get("quotas") or {})
    except (InvalidInput, ValueError) as exc:
        raise Invalid(f"session.json of {sid}: {exc}") from None
    if ctx.db.scalar("SELECT count(*) FROM sessions WHERE name = ? AND status != 'deleted'", [name]):
        name = f"{name[:100]} (recovered {sid[-6:]})"
    now = to_db_time(utcnow())
    created = _time(doc.get("created_at"), "created_at") or now
    path = session_dir(ctx.home, sid)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    ctx.db.execute(
        "INSERT INTO sessions VALUES (?, ?, ?, ?, ?, ?, ?)",
        [sid, name, status.value, dumps(quotas.model_dump()), created, now, str(path)],
    )
    _history(ctx, sid, "session", sid, None, status.value, RECOVERED, args.get("actor"))
    ctx.emit(EventType.session_created, sid, None, {"name": name, "recovered": True})
    row = _session_row(ctx, sid, allow_deleted=True)
    _write_json(path / "session.json", row)
    return {"id": sid, "created": True, "count": 1, "name": name}


@op("recovery.import_run", write=True)
def import_run(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """A run from its run.json (or its latest checkpoint). A run that was active when the
    store was lost cannot be running now: it becomes interrupted, which `resume` accepts."""
    sid = _arg(args, "session_id", "session")
    _session_row(ctx, sid, allow_deleted=True)
    doc = _object(args, "run")
    rid = _arg(doc, "id", "run")
    owner = ctx.db.scalar("SELECT session_id FROM runs WHERE id = ?", [rid])
    if owner == sid:
        return {"id": rid, "created": False, "status": _run_row(ctx, sid, rid)["status"]}
    if owner is not None:
        raise Conflict(f"run {rid} already exists in another session")
    if doc.get("session_id", sid) != sid:
        raise Invalid(f"run {rid} belongs to session {doc.get('session_id')}, not {sid}")
    try:
        status = RunStatus(doc.get("status") or RunStatus.draft.value)
        mode = RunMode(doc.get("mode") or RunMode.deep_research.value)
    except ValueError as exc:
        raise Invalid(f"run.json of {rid}: {exc}") from None
    config = doc.get("config") or {}
    if not isinstance(config, dict):
        raise Invalid(f"run.json of {rid}: config must be an object")
    final = status
    if status in ACTIVE_RUN_STATES and status != RunStatus.paused and args.get("interrupt_active", True):
        final = RunStatus.interrupted
    path = run_dir(ctx.home, sid, rid)
    path.mkdir(parents=True, exist_ok=True)
    now = to_db_time(utcnow())
    ctx.db.execute(
        "INSERT INTO runs (id, session_id, task, mode, status, model, config, parent_run_id, branch_from_step, "
        "created_at, started_at, completed_at, last_heartbeat_at, checkpoint_interval_s, error, path, "
        "pause_requested) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, false)",
        [rid, sid, str(doc.get("task") or ""), mode.value, final.value, doc.get("model"), dumps(config),
         doc.get("parent_run_id"), doc.get("branch_from_step"), _time(doc.get("created_at"), "created_at") or now,
         _time(doc.get("started_at"), "started_at"), _time(doc.get("completed_at"), "completed_at"),
         _time(doc.get("last_heartbeat_at"), "last_heartbeat_at"),
         float(doc.get("checkpoint_interval_s") or 600.0), doc.get("error"), str(path)],
    )
    _history(ctx, sid, "run", rid, None, status.value, RECOVERED, args.get("actor"))
    if final != status:
        reason = f"{RECOVERED}: the run was {status.value} when the store was lost"
        _history(ctx, sid, "run", rid, status.value, final.value, reason, args.get("actor"))
        ctx.emit(EventType.workflow_state_changed, sid, rid,
                 {"from": status.value, "to": final.value, "reason": reason})
    out = _run_row(ctx, sid, rid)
    _write_json(path / "run.json", out)
    return {"id": rid, "created": True, "count": 1, "status": final.value, "was": status.value}


STEP_COLUMNS = ("id", "session_id", "run_id", "number", "key", "agent", "status", "description", "depends_on",
                "progress", "inputs", "outputs", "error", "attempts", "started_at", "completed_at")


@op("recovery.import_steps", write=True)
def import_steps(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """A run's steps as its latest checkpoint saw them; steps already stored are kept."""
    sid = _arg(args, "session_id", "session")
    rid = _arg(args, "run_id", "run")
    _run_row(ctx, sid, rid)
    steps = args.get("steps")
    if not isinstance(steps, list):
        raise Invalid("steps must be a list")
    present = {r["id"] for r in ctx.db.fetch("SELECT id FROM steps WHERE run_id = ?", [rid])}
    keys = {r["key"] for r in ctx.db.fetch("SELECT key FROM steps WHERE run_id = ?", [rid])}
    rows = []
    for i, s in enumerate(steps, start=1):
        if not isinstance(s, dict):
            raise Invalid("each step must be an object")
        step_id = _arg(s, "id", "step")
        if step_id in present or s.get("key") in keys:
            continue
        if ctx.db.scalar("SELECT count(*) FROM steps WHERE id = ?", [step_id]):
            raise Conflict(f"step {step_id} already exists in another run")
        try:
            status = StepStatus(s.get("status") or StepStatus.pending.value)
        except ValueError as exc:
            raise Invalid(f"step {step_id}: {exc}") from None
        rows.append((
            step_id, sid, rid, int(s.get("number") or i), str(s.get("key") or f"step_{i}"),
            str(s.get("agent") or "engineer"), status.value, str(s.get("description") or ""),
            dumps(list(s.get("depends_on") or [])), float(s.get("progress") or 0.0), dumps(s.get("inputs") or {}),
            dumps(s.get("outputs") or {}), s.get("error"), int(s.get("attempts") or 0),
            _time(s.get("started_at"), "started_at"), _time(s.get("completed_at"), "completed_at"),
        ))
        present.add(step_id)
        keys.add(rows[-1][4])
    ctx.db.insert_rows("steps", STEP_COLUMNS, rows)
    return {"id": rid, "created": bool(rows), "count": len(rows)}


@op("recovery.import_checkpoint", write=True)
def import_checkpoint(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint row for a pickle file found in the run's directory."""
    sid = _arg(args, "session_id", "session")
    rid = _arg(args, "run_id", "run")
    run = _run_row(ctx, sid, rid)
    doc = _object(args, "checkpoint")
    cid = _arg(doc, "id", "checkpoint")
    if ctx.db.scalar("SELECT count(*) FROM checkpoints WHERE id = ?", [cid]):
        return {"id": cid, "created": False}
    try:
        kind = CheckpointKind(doc.get("kind") or CheckpointKind.step_complete.value)
    except ValueError:
        raise Invalid(f"checkpoint {cid}: unknown kind {doc.get('kind')!r}") from None
    pickle_path = doc.get("pickle_path")
    if pickle_path is not None and not Path(pickle_path).resolve().is_relative_to(Path(run["path"]).resolve()):
        raise Invalid(f"checkpoint {cid}: its file {pickle_path} is not inside the run's directory {run['path']}")
    step_id = doc.get("step_id")
    if step_id is not None and not ctx.db.scalar(
            "SELECT count(*) FROM steps WHERE id = ? AND run_id = ? AND session_id = ?", [step_id, rid, sid]):
        step_id = None  # the step was replaced by a later plan: keep the checkpoint, drop the link
    context = args.get("context") or {}
    if not isinstance(context, dict):
        raise Invalid("context must be an object")
    ctx.db.execute(
        "INSERT INTO checkpoints VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [cid, sid, rid, step_id, kind.value, dumps(context), pickle_path,
         _time(doc.get("created_at"), "created_at") or to_db_time(utcnow())],
    )
    return {"id": cid, "created": True, "count": 1}
