"""Read operations for the Jupyter server: one round trip for what a dashboard shows.

The sidebar and the event WebSocket need the state of many sessions at once; asking
session by session would cost a store call per session and per run. These reads
return it in one statement group, consistent with one committed `gseq`.
"""

from __future__ import annotations

from typing import Any

from cmbagent_jupyter.core.states import ACTIVE_RUN_STATES
from cmbagent_jupyter.store.local.ops import (
    RUN_JSON,
    RUN_TIMES,
    SESSION_JSON,
    SESSION_TIMES,
    OpContext,
    _arg,
    _row,
    _run_row,
    _session_row,
    op,
    step_list,
)
from cmbagent_jupyter.store.local.ops_control import _fix_approval

SNAPSHOT_RUN_LIMIT = 500
TASK_PREVIEW = 300


def _session_scope(ctx: OpContext, args: dict[str, Any]) -> tuple[str, str, list[Any]]:
    """WHERE clauses for the sessions table and for rows with a `session_id` column:
    the one session named, else every session that is not deleted."""
    if args.get("session_id") is not None:
        sid = _arg(args, "session_id", "session")
        _session_row(ctx, sid)
        return "id = ?", "session_id = ?", [sid]
    return "status != 'deleted'", "session_id IN (SELECT id FROM sessions WHERE status != 'deleted')", []


@op("metrics.workflows", write=False)
def metrics_workflows(ctx: OpContext, args: dict[str, Any]) -> list[dict[str, Any]]:
    """Per session: runs by status, mean duration of finished runs, total cost."""
    own, where, params = _session_scope(ctx, args)
    sessions = ctx.db.fetch(
        f"SELECT id, name, status FROM sessions WHERE {own} ORDER BY created_at",
        params,
    )
    counts = ctx.db.fetch(
        f"SELECT session_id, status, count(*) AS n FROM runs WHERE {where} GROUP BY session_id, status", params)
    durations = ctx.db.fetch(
        f"SELECT session_id, avg(epoch(completed_at) - epoch(started_at)) AS mean_s, count(*) AS n FROM runs "
        f"WHERE {where} AND started_at IS NOT NULL AND completed_at IS NOT NULL GROUP BY session_id", params)
    costs = ctx.db.fetch(
        f"SELECT session_id, sum(cost_usd) AS cost FROM cost_records WHERE {where} GROUP BY session_id", params)
    by_status: dict[str, dict[str, int]] = {}
    for r in counts:
        by_status.setdefault(r["session_id"], {})[r["status"]] = int(r["n"])
    mean = {r["session_id"]: (float(r["mean_s"]), int(r["n"])) for r in durations}
    cost = {r["session_id"]: float(r["cost"] or 0.0) for r in costs}
    out = []
    for s in sessions:
        runs = by_status.get(s["id"], {})
        mean_s, finished = mean.get(s["id"], (None, 0))
        out.append({
            "session_id": s["id"], "name": s["name"], "status": s["status"],
            "runs_by_status": runs, "total_runs": sum(runs.values()),
            "active_runs": sum(n for st, n in runs.items() if st in {a.value for a in ACTIVE_RUN_STATES}),
            "finished_runs": finished, "mean_duration_s": mean_s, "total_cost_usd": cost.get(s["id"], 0.0),
        })
    return out


def _run_summary(row: dict[str, Any]) -> dict[str, Any]:
    out = _row(row, RUN_JSON, RUN_TIMES)
    out["config"] = out["config"] or {}
    if len(out["task"]) > TASK_PREVIEW:
        out["task"] = out["task"][:TASK_PREVIEW] + "..."
    return out


@op("server.snapshot", write=False)
def server_snapshot(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """What a client shows on connect: sessions with their cost, their latest runs,
    pending approvals, and the store-wide `gseq` this picture is consistent with."""
    own, where, params = _session_scope(ctx, args)
    sessions = [_row(r, SESSION_JSON, SESSION_TIMES) for r in ctx.db.fetch(
        f"SELECT * FROM sessions WHERE {own} ORDER BY created_at", params)]
    cost = {r["session_id"]: float(r["cost"] or 0.0) for r in ctx.db.fetch(
        f"SELECT session_id, sum(cost_usd) AS cost FROM cost_records WHERE {where} GROUP BY session_id", params)}
    for s in sessions:
        s["cost_usd"] = cost.get(s["id"], 0.0)
    run_cols = ("id, session_id, task, mode, status, model, config, parent_run_id, branch_from_step, created_at, "
                "started_at, completed_at, last_heartbeat_at, checkpoint_interval_s, error, owner_pid, "
                "coalesce(pause_requested, false) AS pause_requested, path")
    runs = [_run_summary(r) for r in ctx.db.fetch(
        f"SELECT {run_cols} FROM (SELECT * FROM runs WHERE {where} ORDER BY created_at DESC, id LIMIT "
        f"{SNAPSHOT_RUN_LIMIT}) ORDER BY created_at, id", params)]
    run_cost = {r["run_id"]: float(r["cost"] or 0.0) for r in ctx.db.fetch(
        f"SELECT run_id, sum(cost_usd) AS cost FROM cost_records WHERE {where} AND run_id IS NOT NULL "
        f"GROUP BY run_id", params)}
    for r in runs:
        r["cost_usd"] = run_cost.get(r["id"], 0.0)
    approvals = [_fix_approval(r) for r in ctx.db.fetch(
        f"SELECT * FROM approvals WHERE {where} AND status = 'pending' ORDER BY created_at", params)]
    out: dict[str, Any] = {"sessions": sessions, "runs": runs, "approvals": approvals,
                           "gseq": ctx.seqs.gseq_committed}
    if args.get("run_id") is not None:
        sid = _arg(args, "session_id", "session")
        run = _run_row(ctx, sid, _arg(args, "run_id", "run"))
        out["run"] = run
        out["steps"] = step_list(ctx, {"session_id": sid, "run_id": run["id"]})
    return out
