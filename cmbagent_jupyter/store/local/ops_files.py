"""Store operations for the files a run writes and the metrics it reports, per session."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from cmbagent_jupyter.core import EventType, new_id, utcnow
from cmbagent_jupyter.core.errors import Invalid
from cmbagent_jupyter.store.local.database import from_db_time, to_db_time
from cmbagent_jupyter.store.local.ops import OpContext, _arg, _require_run, _require_session, _row, _step_row, op

FILE_KINDS = ("code", "data", "plot", "log", "other")
FILE_COLUMNS = ("id", "session_id", "run_id", "step_id", "path", "kind", "size", "at")
METRIC_COLUMNS = ("session_id", "run_id", "name", "value", "at")
MAX_ITEMS = 10_000


def _items(items: Any, name: str) -> list[dict[str, Any]]:
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise Invalid(f"{name} must be a list of objects")
    if len(items) > MAX_ITEMS:
        raise Invalid(f"{len(items)} {name} in one call; at most {MAX_ITEMS} are allowed")
    return items


def _scope(ctx: OpContext, sid: str, item: dict[str, Any], known: set[tuple[str, str]]) -> None:
    """A run and step an item names must be this session's."""
    for kind, key in (("run", "run_id"), ("step", "step_id")):
        ref = item.get(key)
        if ref is not None and (kind, ref) not in known:
            (_require_run if kind == "run" else _step_row)(ctx, sid, _arg(item, key, kind))
            known.add((kind, ref))


@op("file.add", write=True)
def file_add(ctx: OpContext, args: dict[str, Any]) -> list[dict[str, Any]]:
    sid = _arg(args, "session_id", "session")
    _require_session(ctx, sid)
    items, known, rows = _items(args.get("files"), "files"), set(), []
    now = to_db_time(utcnow())
    for f in items:
        _scope(ctx, sid, f, known)
        path, kind, size = f.get("path"), f.get("kind") or "other", f.get("size")
        if not isinstance(path, str) or not path.strip() or len(path) > 4096:
            raise Invalid("a file needs its path (text, at most 4096 characters)")
        if kind not in FILE_KINDS:
            raise Invalid(f"unknown file kind {kind!r}; expected one of {', '.join(FILE_KINDS)}")
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
            raise Invalid(f"size must be a non-negative integer, not {size!r}")
        rows.append((new_id("file"), sid, f.get("run_id"), f.get("step_id"), path, kind, size, now))
    ctx.db.insert_rows("files", FILE_COLUMNS, rows)
    for r in rows:
        ctx.emit(EventType.file_created, sid, r[2], {"path": r[4], "kind": r[5], "size": r[6], "step_id": r[3]})
    return [dict(zip(FILE_COLUMNS, (*r[:7], from_db_time(now).isoformat()))) for r in rows]


@op("file.list", write=False)
def file_list(ctx: OpContext, args: dict[str, Any]) -> list[dict[str, Any]]:
    sid = _arg(args, "session_id", "session")
    sql, params = "SELECT * FROM files WHERE session_id = ?", [sid]
    if args.get("run_id"):
        sql += " AND run_id = ?"
        params.append(_arg(args, "run_id", "run"))
    return [_row(r, (), ("at",)) for r in ctx.db.fetch(sql + ' ORDER BY "at", rowid', params)]


@op("metric.add", write=True)
def metric_add(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    sid = _arg(args, "session_id", "session")
    _require_session(ctx, sid)
    items, known, rows = _items(args.get("points"), "points"), set(), []
    for m in items:
        _scope(ctx, sid, m, known)
        name, value = m.get("name"), m.get("value")
        if not isinstance(name, str) or not name.strip() or len(name) > 200:
            raise Invalid("a metric needs a name (text, at most 200 characters)")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
            raise Invalid(f"metric {name!r}: value must be a number, not {value!r}")
        try:
            at = datetime.fromisoformat(m["at"]) if m.get("at") else utcnow()
        except ValueError:
            raise Invalid(f"metric {name!r}: at {m.get('at')!r} is not an ISO date-time") from None
        rows.append((sid, m.get("run_id"), name, float(value), to_db_time(at)))
    ctx.db.insert_rows("metrics", METRIC_COLUMNS, rows)
    for r in rows:
        ctx.emit(EventType.metric_update, sid, r[1], {"name": r[2], "value": r[3]})
    return {"count": len(rows)}


@op("metric.list", write=False)
def metric_list(ctx: OpContext, args: dict[str, Any]) -> list[dict[str, Any]]:
    sid = _arg(args, "session_id", "session")
    sql, params = "SELECT * FROM metrics WHERE session_id = ?", [sid]
    if args.get("run_id"):
        sql += " AND run_id = ?"
        params.append(_arg(args, "run_id", "run"))
    if args.get("name"):
        sql += " AND name = ?"
        params.append(str(args["name"]))
    return [_row(r, (), ("at",)) for r in ctx.db.fetch(sql + ' ORDER BY "at", rowid', params)]
