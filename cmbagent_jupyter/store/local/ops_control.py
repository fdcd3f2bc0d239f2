"""Store operations for execution control: approvals, step attempts, branches, replays.

Every decision is a write here, so it can come from any process (kernel, CLI, the
Jupyter server, MCP) and the waiting run hears of it through the event stream.
"""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any

import networkx as nx

from cmbagent_jupyter.core import EventType, RunStatus, StepStatus, new_id, utcnow
from cmbagent_jupyter.core.states import APPROVAL_DECISIONS
from cmbagent_jupyter.store.local.database import dumps, to_db_time
from cmbagent_jupyter.core.errors import Conflict, Invalid, NotFound
from cmbagent_jupyter.store.local.ops import (
    STEP_COLUMNS,
    OpContext,
    _arg,
    _fix_step,
    _history,
    _row,
    _run_row,
    _step_row,
    op,
    run_create,
    session_of,
)

APPROVAL_JSON = ("request", "options")
APPROVAL_TIMES = ("created_at", "resolved_at", "timeout_at")


def _approval_row(ctx: OpContext, session_id: str, approval_id: str) -> dict[str, Any]:
    row = ctx.db.fetchone("SELECT * FROM approvals WHERE id = ? AND session_id = ?", [approval_id, session_id])
    if row is None:
        raise NotFound(f"approval {approval_id} does not exist in session {session_id}")
    return _fix_approval(row)


def _fix_approval(row: dict[str, Any]) -> dict[str, Any]:
    out = _row(row, APPROVAL_JSON, APPROVAL_TIMES)
    out["request"] = out["request"] or {}
    out["options"] = out["options"] or ["approve", "reject", "modify"]
    return out


@op("approval.create", write=True)
def approval_create(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """Open an approval gate; an active run moves to waiting_approval in the same commit."""
    sid = _arg(args, "session_id", "session")
    rid = _arg(args, "run_id", "run")
    run = _run_row(ctx, sid, rid)
    step_id = args.get("step_id")
    if step_id is not None:
        _step_row(ctx, sid, _arg(args, "step_id", "step"))
    kind = str(_arg(args, "kind"))
    options = args.get("options") or ["approve", "reject", "modify"]
    bad = [o for o in options if o not in APPROVAL_DECISIONS]
    if bad:
        raise Invalid(f"unknown approval option(s) {bad}; expected some of {', '.join(APPROVAL_DECISIONS)}")
    timeout_s = args.get("timeout_s")
    default_action = args.get("default_action")
    if default_action is not None and default_action not in options:
        raise Invalid(f"default_action {default_action!r} must be one of the options {options}")
    aid = args.get("id") or new_id("approval")
    now = utcnow()
    timeout_at = now + timedelta(seconds=float(timeout_s)) if timeout_s else None
    ctx.db.execute(
        "INSERT INTO approvals (id, session_id, run_id, step_id, kind, status, request, options, created_at, "
        "timeout_at, default_action) VALUES (?, ?, ?, ?, ?, 'pending', ?, ?, ?, ?, ?)",
        [aid, sid, rid, step_id, kind, dumps(args.get("request") or {}), dumps(options), to_db_time(now),
         to_db_time(timeout_at), default_action],
    )
    if run["status"] in (RunStatus.executing.value, RunStatus.planning.value):
        ctx.db.execute("UPDATE runs SET status = 'waiting_approval' WHERE id = ?", [rid])
        ctx.seqs.forget_head(rid)
        _history(ctx, sid, "run", rid, run["status"], RunStatus.waiting_approval.value, f"approval {aid} ({kind})",
                 args.get("actor"))
        ctx.emit(EventType.workflow_state_changed, sid, rid,
                 {"from": run["status"], "to": RunStatus.waiting_approval.value, "reason": f"approval {kind}"})
    ctx.emit(EventType.approval_requested, sid, rid, {
        "approval_id": aid, "kind": kind, "step_id": step_id, "options": options,
        "request": args.get("request") or {}, "timeout_at": timeout_at.isoformat() if timeout_at else None,
        "resume_status": run["status"],
    })
    return _approval_row(ctx, sid, aid)


@op("approval.resolve", write=True)
def approval_resolve(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    sid = _arg(args, "session_id", "session")
    aid = _arg(args, "approval_id", "approval")
    row = _approval_row(ctx, sid, aid)
    decision = args.get("decision")
    if decision not in row["options"]:
        raise Invalid(f"decision {decision!r} is not an option of approval {aid}; choose one of {row['options']}")
    if row["status"] != "pending":
        raise Conflict(f"approval {aid} was already resolved ({row['status']} by {row['resolved_by'] or 'unknown'})")
    feedback = args.get("feedback")
    if decision in ("reject", "modify") and not (feedback or "").strip() and not args.get("allow_empty_feedback"):
        raise Invalid(f"{decision} needs feedback that says what to change")
    if feedback is not None and len(str(feedback)) > 100_000:
        raise Invalid("feedback is longer than 100000 characters")
    status = {"approve": "approved", "reject": "rejected", "modify": "modified", "abort": "rejected"}.get(
        decision, "approved")
    if args.get("expired"):
        status = "expired"
    now = utcnow()
    actor = str(args.get("actor") or "user")[:200]
    ctx.db.execute(
        "UPDATE approvals SET status = ?, decision = ?, feedback = ?, resolved_by = ?, resolved_at = ? WHERE id = ?",
        [status, decision, feedback, actor, to_db_time(now), aid],
    )
    ctx.emit(EventType.approval_received, sid, row["run_id"], {
        "approval_id": aid, "decision": decision, "status": status, "feedback": feedback, "resolved_by": actor,
        "kind": row["kind"], "step_id": row["step_id"],
    })
    return _approval_row(ctx, sid, aid)


@op("approval.get", write=False)
def approval_get(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    return _approval_row(ctx, _arg(args, "session_id", "session"), _arg(args, "approval_id", "approval"))


@op("approval.find", write=False)
def approval_find(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """The session of an approval id: what `cmbagent approve ID` needs first."""
    aid = _arg(args, "approval_id", "approval")
    return _approval_row(ctx, session_of(ctx, "approvals", "approval", aid), aid)


@op("approval.list", write=False)
def approval_list(ctx: OpContext, args: dict[str, Any]) -> list[dict[str, Any]]:
    params: list[Any] = []
    where = []
    if not args.get("all_sessions"):
        where.append("a.session_id = ?")
        params.append(_arg(args, "session_id", "session"))
    where.append("s.status != 'deleted'")
    if args.get("run_id"):
        where.append("a.run_id = ?")
        params.append(_arg(args, "run_id", "run"))
    if args.get("pending_only", True):
        where.append("a.status = 'pending'")
    rows = ctx.db.fetch(
        "SELECT a.* FROM approvals a JOIN sessions s ON s.id = a.session_id WHERE " + " AND ".join(where)
        + " ORDER BY a.created_at", params)
    return [_fix_approval(r) for r in rows]


# ---------------------------------------------------------------- attempts


ATTEMPT_TIMES = ("started_at", "ended_at")


@op("attempt.start", write=True)
def attempt_start(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    sid = _arg(args, "session_id", "session")
    step = _step_row(ctx, sid, _arg(args, "step_id", "step"))
    n = int(ctx.db.scalar("SELECT coalesce(max(attempt), 0) FROM step_attempts WHERE step_id = ?", [step["id"]])) + 1
    aid = new_id("attempt")
    now = utcnow()
    ctx.db.execute(
        "INSERT INTO step_attempts (id, session_id, run_id, step_id, attempt, status, feedback, started_at) "
        "VALUES (?, ?, ?, ?, ?, 'running', ?, ?)",
        [aid, sid, step["run_id"], step["id"], n, args.get("feedback"), to_db_time(now)],
    )
    if n > 1:
        ctx.emit(EventType.retry_started, sid, step["run_id"], {"step_id": step["id"], "attempt": n,
                                                               "feedback": args.get("feedback")})
    return {"id": aid, "attempt": n, "started_at": now.isoformat()}


@op("attempt.finish", write=True)
def attempt_finish(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    sid = _arg(args, "session_id", "session")
    aid = _arg(args, "attempt_id", "attempt")
    row = ctx.db.fetchone("SELECT * FROM step_attempts WHERE id = ? AND session_id = ?", [aid, sid])
    if row is None:
        raise NotFound(f"attempt {aid} does not exist in session {sid}")
    status = str(args.get("status") or "completed")
    if status not in (StepStatus.completed.value, StepStatus.failed.value, StepStatus.cancelled.value):
        raise Invalid(f"an attempt ends completed, failed or cancelled, not {status!r}")
    ctx.db.execute(
        "UPDATE step_attempts SET status = ?, error_type = ?, error = ?, traceback = ?, output = ?, cost_usd = ?, "
        "ended_at = ? WHERE id = ?",
        [status, args.get("error_type"), _clip(args.get("error")), _clip(args.get("traceback")),
         _clip(args.get("output")), float(args.get("cost_usd") or 0.0), to_db_time(utcnow()), aid],
    )
    if status == "completed" and row["attempt"] > 1:
        ctx.emit(EventType.retry_succeeded, sid, row["run_id"], {"step_id": row["step_id"], "attempt": row["attempt"]})
    return _row(ctx.db.fetchone("SELECT * FROM step_attempts WHERE id = ?", [aid]), (), ATTEMPT_TIMES)


def _clip(text: Any, limit: int = 200_000) -> str | None:
    if text is None:
        return None
    text = str(text)
    return text if len(text) <= limit else text[: limit // 2] + "\n...[clipped]...\n" + text[-limit // 2:]


@op("attempt.list", write=False)
def attempt_list(ctx: OpContext, args: dict[str, Any]) -> list[dict[str, Any]]:
    sid = _arg(args, "session_id", "session")
    params: list[Any] = [sid]
    sql = "SELECT * FROM step_attempts WHERE session_id = ?"
    if args.get("step_id"):
        sql += " AND step_id = ?"
        params.append(_arg(args, "step_id", "step"))
    elif args.get("run_id"):
        sql += " AND run_id = ?"
        params.append(_arg(args, "run_id", "run"))
    else:
        raise Invalid("attempt.list needs step_id or run_id")
    return [_row(r, (), ATTEMPT_TIMES) for r in ctx.db.fetch(sql + " ORDER BY started_at, attempt", params)]


# ---------------------------------------------------------------- branches and replays


def _descendants(steps: list[dict[str, Any]], key: str) -> set[str]:
    g = nx.DiGraph()
    for s in steps:
        g.add_node(s["key"])
        for d in s["depends_on"]:
            g.add_edge(d, s["key"])
    if key not in g:
        raise NotFound(f"no step {key!r} in this run")
    return nx.descendants(g, key) | {key}


@op("step.find", write=False)
def step_find(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """A step by id in any live session: what `cmbagent retry STEP_ID` and `play-from` need first."""
    step_id = _arg(args, "step_id", "step")
    return _step_row(ctx, session_of(ctx, "steps", "step", step_id), step_id)


def _plan_description(run: dict[str, Any], key: str) -> str | None:
    """A step's words in the run's plan (sub-task and bullet points), before any change."""
    for s in (run["config"].get("final_plan") or {}).get("sub_tasks", []):
        if s.get("key") == key:
            bullets = s.get("bullet_points") or []
            return str(s.get("sub_task") or "") + "".join(f"\n- {b}" for b in bullets)
    return None


@op("step.reset_from", write=True)
def step_reset_from(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """Play from a node: that step (optionally with new instructions) and exactly its
    descendants go back to pending; every other step keeps its result. A completed run
    becomes paused, so that it can be resumed."""
    sid = _arg(args, "session_id", "session")
    step = _step_row(ctx, sid, _arg(args, "step_id", "step"))
    run = _run_row(ctx, sid, step["run_id"])
    if run["status"] in (RunStatus.executing.value, RunStatus.planning.value, RunStatus.waiting_approval.value,
                         RunStatus.draft.value):
        raise Conflict(f"run {run['id']} is {run['status']}; pause it before replaying a step")
    if run["status"] == RunStatus.cancelled.value:
        raise Conflict(f"run {run['id']} is cancelled; branch it instead (cmbagent branch)")
    description = args.get("description")
    if args.get("instructions"):
        base = _plan_description(run, step["key"]) or step["description"]
        description = f"{base}\n\nChanged instructions (follow these):\n{str(args['instructions']).strip()}"
    rows = [_fix_step(r) for r in ctx.db.fetch(f"SELECT {STEP_COLUMNS} FROM steps WHERE run_id = ?", [run["id"]])]
    reset = _descendants(rows, step["key"])
    if run["status"] == RunStatus.completed.value:
        ctx.db.execute("UPDATE runs SET status = 'paused', completed_at = NULL WHERE id = ?", [run["id"]])
        ctx.seqs.forget_head(run["id"])
        _history(ctx, sid, "run", run["id"], run["status"], RunStatus.paused.value, f"replay from {step['key']}",
                 args.get("actor"))
        ctx.emit(EventType.workflow_state_changed, sid, run["id"],
                 {"from": run["status"], "to": RunStatus.paused.value, "reason": f"replay from {step['key']}"})
    ctx.seqs.forget_steps(run["id"])
    for s in rows:
        if s["key"] not in reset:
            continue
        sets = ["status = 'pending'", "outputs = ?", "error = NULL", "progress = 0.0", "completed_at = NULL"]
        params: list[Any] = [dumps({})]
        if s["id"] == step["id"] and description is not None:
            sets.append("description = ?")
            params.append(str(description))
        ctx.db.execute(f"UPDATE steps SET {', '.join(sets)} WHERE id = ?", [*params, s["id"]])
        if s["status"] != StepStatus.pending.value:
            _history(ctx, sid, "step", s["id"], s["status"], "pending", f"replay from {step['key']}", args.get("actor"))
        ctx.emit(EventType.dag_node_status_changed, sid, run["id"],
                 {"step_id": s["id"], "key": s["key"], "from": s["status"], "to": "pending"})
    return {"run_id": run["id"], "reset": sorted(reset), "description": description}


@op("branch.create", write=True)
def branch_create(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """A new run that keeps the parent's results before step `from_step` (no re-execution)
    and re-executes from there, with changed instructions if given."""
    sid = _arg(args, "session_id", "session")
    parent = _run_row(ctx, sid, _arg(args, "run_id", "run"))
    try:
        from_step = int(_arg(args, "from_step"))
    except (TypeError, ValueError):
        raise Invalid("from_step must be a step number") from None
    steps = [_fix_step(r) for r in ctx.db.fetch(
        f"SELECT {STEP_COLUMNS} FROM steps WHERE run_id = ? ORDER BY number", [parent["id"]])]
    numbers = [s["number"] for s in steps]
    if from_step not in numbers:
        raise Invalid(f"run {parent['id']} has no step {from_step}; its steps are {numbers}")
    fork = next(s for s in steps if s["number"] == from_step)
    redo = _descendants(steps, fork["key"])
    missing = [s["number"] for s in steps if s["key"] not in redo and s["status"] != StepStatus.completed.value]
    name = str(args.get("name") or f"branch of {parent['id']} at step {from_step}")[:200]
    config = dict(parent["config"])
    config["branch"] = {"parent_run_id": parent["id"], "from_step": from_step, "name": name,
                        "instructions": args.get("instructions"), "hypothesis": args.get("hypothesis")}
    child = run_create(ctx, {"session_id": sid, "task": parent["task"], "mode": parent["mode"],
                             "model": parent["model"], "config": config, "parent_run_id": parent["id"],
                             "branch_from_step": from_step, "actor": args.get("actor"),
                             "checkpoint_interval_s": parent["checkpoint_interval_s"]})
    now = to_db_time(utcnow())
    rows = []
    for s in steps:
        kept = s["key"] not in redo and s["status"] == StepStatus.completed.value
        desc = s["description"]
        if s["key"] == fork["key"] and args.get("instructions"):
            desc = f"{desc}\n\nChanged instructions for this branch:\n{args['instructions']}"
        rows.append((new_id("step"), sid, child["id"], s["number"], s["key"], s["agent"],
                     StepStatus.completed.value if kept else StepStatus.pending.value, desc, dumps(s["depends_on"]),
                     1.0 if kept else 0.0, dumps(s["inputs"]), dumps(s["outputs"] if kept else {}), None, 0,
                     now if kept else None, now if kept else None))
    ctx.db.insert_rows("steps", ("id", "session_id", "run_id", "number", "key", "agent", "status", "description",
                                 "depends_on", "progress", "inputs", "outputs", "error", "attempts", "started_at",
                                 "completed_at"), rows)
    # ready to execute (resumable like a paused run), with the parent's files for the kept steps
    ctx.db.execute("UPDATE runs SET status = 'paused' WHERE id = ?", [child["id"]])
    ctx.seqs.forget_head(child["id"])
    _history(ctx, sid, "run", child["id"], RunStatus.draft.value, RunStatus.paused.value,
             f"branch of {parent['id']} at step {from_step}, ready to run", args.get("actor"))
    child["status"] = RunStatus.paused.value
    _copy_outputs(Path(parent["path"]), Path(child["path"]))
    bid = new_id("branch")
    ctx.db.execute("INSERT INTO branches VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                   [bid, sid, parent["id"], from_step, child["id"], name, args.get("hypothesis"), now])
    ctx.emit(EventType.dag_created, sid, child["id"], {"branch_of": parent["id"], "from_step": from_step})
    return {"branch_id": bid, "run": child, "kept_steps": sorted(s["number"] for s in steps if s["key"] not in redo),
            "incomplete_before_fork": missing}


def _copy_outputs(parent: Path, child: Path) -> None:
    """The parent's control folder (code, data, figures) without its chats, into the branch."""
    src = parent / "control"
    if not src.is_dir():
        return
    shutil.copytree(src, child / "control", dirs_exist_ok=True, ignore=shutil.ignore_patterns("chats"))


@op("branch.list", write=False)
def branch_list(ctx: OpContext, args: dict[str, Any]) -> list[dict[str, Any]]:
    sid = _arg(args, "session_id", "session")
    params: list[Any] = [sid]
    sql = "SELECT * FROM branches WHERE session_id = ?"
    if args.get("run_id"):
        sql += " AND (parent_run_id = ? OR child_run_id = ?)"
        rid = _arg(args, "run_id", "run")
        params += [rid, rid]
    return [_row(r, (), ("created_at",)) for r in ctx.db.fetch(sql + " ORDER BY created_at", params)]

