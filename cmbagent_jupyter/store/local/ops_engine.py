"""Store operations of the planning-and-control engine: few calls, each one transaction.

A run's hot path is `engine.advance_many`: it applies the step-journal records the engine
wrote (steps finished with their outputs, failed, started), a batch per transaction,
each record once: the steps' status, and one event per move, which is also the move's
history entry and names the checkpoint of the record's completions (and its snapshot
file, if one was written). Concurrent calls share the service's group commit.
`engine.plan_ready` stores a validated plan, its DAG and the run's move to executing at
once; `engine.claim` hands a run to the
process that will execute it (compare-and-swap on the previous owner); `engine.settle`
ends or suspends a run with its last checkpoint.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Callable

from cmbagent_jupyter.core.states import RUNNING_RUN_STATES, IllegalTransition, check_step_transition
from cmbagent_jupyter.core import CheckpointKind, EventType, RunMode, RunStatus, StepStatus, new_id, utcnow
from cmbagent_jupyter.store.local.database import dumps, from_db_time, to_db_time
from cmbagent_jupyter.core.errors import Conflict, Invalid, StoreError
from cmbagent_jupyter.store.local.ops import (
    OpContext,
    StaleSteps,
    _arg,
    _history,
    _run_row,
    _session_row,
    checkpoint_put,
    known_quota_row,
    op,
    move_run,
    put_steps,
    quota_columns,
    quota_row,
    row_guard,
    steps_of,
)

ACTIVE = frozenset(s.value for s in RUNNING_RUN_STATES)


def _checkpoint_rows(sid: str, rid: str, items: list[tuple[str | None, dict[str, Any]]], now) -> list[tuple]:
    rows = []
    for step_id, cp in items:
        try:
            kind = CheckpointKind(cp.get("kind") or "step_complete").value
        except ValueError:
            raise Invalid(f"unknown checkpoint kind {cp.get('kind')!r}") from None
        rows.append((cp.get("id") or new_id("checkpoint"), sid, rid, step_id, kind, dumps(cp.get("context") or {}),
                     cp.get("pickle_path"), now))
    return rows


_VALUE = {s: s.value for s in StepStatus}
_COMPLETED, _FAILED = StepStatus.completed.value, StepStatus.failed.value
_STEP_COMPLETE = CheckpointKind.step_complete.value
_STEP_EVENTS = {StepStatus.completed: EventType.step_completed.value, StepStatus.failed: EventType.step_failed.value,
                StepStatus.running: EventType.step_started.value}
_CHECKPOINT_SAVED = EventType.checkpoint_saved.value
CHECKPOINT_COLUMNS = ("id", "session_id", "run_id", "step_id", "kind", "context", "pickle_path", "created_at")


JOURNAL_STEP_COLUMNS = ("unnest(?::VARCHAR[]) AS id, unnest(?::VARCHAR[]) AS st, unnest(?::VARCHAR[]) AS o, "
                        "unnest(?::TIMESTAMP[]) AS ca, unnest(?::TIMESTAMP[]) AS sa, unnest(?::INTEGER[]) AS inc, "
                        "unnest(?::VARCHAR[]) AS err, unnest(?::DOUBLE[]) AS pr, unnest(?::VARCHAR[]) AS was")
_PROGRESS = {_COMPLETED: 1.0, StepStatus.running.value: 0.0}


def _named(record: dict[str, Any]) -> list[Any]:
    """The step ids a journal record names (completed, failed, started)."""
    return [*(c.get("step_id") for c in record.get("complete") or []),
            *(f.get("step_id") for f in record.get("fail") or []), *(record.get("start") or [])]


@op("engine.advance_many", write=True)
def engine_advance_many(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """Apply step-journal records (the engine's write-behind of `advance`) in one transaction.

    args: run_id; owner_pid; records: [{seq, at, complete: [{step_id, outputs, checkpoint}],
    fail: [{step_id, error}], start: [step_id]}] in journal order; replay (bool). A record
    whose seq is not above the run's `journal_seq` was applied already and is skipped, so
    sending the same records again changes nothing. Every record is checked against the
    step states the earlier ones leave; all of them cost a read of the run (and of the
    steps they name that the service does not remember, see `SeqAllocator`), one
    multi-row update of the steps and one multi-row insert of events (and of checkpoint
    rows, for snapshots).
    `replay` (recovery, resume in a new process) applies what the journal proves happened
    whatever the run's state and owner are now, never moving a completed step back.
    Returns the run signal (run_status, pause_requested) and `journal_seq`.
    """
    return _apply_records(ctx, _arg(args, "session_id", "session"), _arg(args, "run_id", "run"), args)


def _apply_records(ctx: OpContext, sid: str, rid: str, args: dict[str, Any],
                   run: dict[str, Any] | None = None) -> dict[str, Any]:
    """`engine.advance_many`. A caller that has read the run in this transaction (`run`, with
    its `journal_seq`) saves reading it again, and writes the returned `journal_seq` itself."""
    records = args.get("records") or []
    replay = bool(args.get("replay"))
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise Invalid("records must be a list of journal records")
    for r in records:
        for part in ("complete", "fail", "start"):
            if not isinstance(r.get(part) or [], list):
                raise Invalid("complete, fail and start must be lists")
    # one read: the run's state and every step the records name
    wanted = sorted({i for r in records for i in _named(r)}, key=str)
    for i in wanted:
        _arg({"id": i}, "id", "step")
    # what the service remembers of the run (its claim or last batch left it so) is not read again:
    # the run's update below checks it, and anything it refuses for is asked of the database
    kept = ctx.seqs.known_head(sid, rid) if run is None and ctx.remembered_steps and not replay else None
    if kept is not None:
        head = dict(zip(("run_status", "pause_requested", "owner_pid", "journal_seq"), kept))
    elif run is None:
        head = ctx.db.fetchone(
            "SELECT status AS run_status, coalesce(pause_requested, false) AS pause_requested, owner_pid, "
            "coalesce(journal_seq, 0) AS journal_seq FROM runs WHERE id = ? AND session_id = ?", [rid, sid])
        if head is None:
            _run_row(ctx, sid, rid)
    else:
        head = {"run_status": run["status"], "pause_requested": run["pause_requested"], "owner_pid": run["owner_pid"],
                "journal_seq": run["journal_seq"]}
    # what the service remembers of these steps from the run's last journal batch is not read again
    known = ctx.seqs.known_steps(rid) if ctx.remembered_steps and not replay else None
    missing = wanted if known is None else [i for i in wanted if i not in known]
    # the ids as one list parameter (a parameter per id binds far slower)
    rows = ctx.db.fetch("SELECT id, key, number, agent, status FROM steps WHERE run_id = ? AND "
                        "list_contains(?::VARCHAR[], id)", [rid, missing]) if missing else []
    remembered: set[str] = set()
    if known is not None:
        rows += [{"id": i, "key": k[0], "number": k[1], "agent": k[2], "status": k[3]}
                 for i in wanted if (k := known.get(i)) is not None]
        remembered = set(wanted) - set(missing)
    status, applied = head["run_status"], int(head["journal_seq"])
    ctx.ledger = False  # idempotent by the journal seq itself

    def signal(seq: int) -> dict[str, Any]:
        return {"run_status": status, "pause_requested": bool(head["pause_requested"]), "journal_seq": seq,
                "applied": 0}

    todo = []
    for r in records:
        try:
            seq = int(r.get("seq"))
        except (TypeError, ValueError):
            raise Invalid("every journal record needs an integer seq") from None
        if seq > applied:
            todo.append((seq, r))
    todo.sort(key=lambda item: item[0])
    if kept is not None and (not todo or todo[0][0] != applied + 1 or status not in ACTIVE
                             or not _same_owner(head["owner_pid"], args.get("owner_pid"))):
        raise StaleSteps(rid)  # an answer that rests on the memory alone: the database gives it
    if not todo:
        return signal(applied)
    if len({s for s, _ in todo}) != len(todo):
        raise Invalid("a journal seq appears twice")
    if not replay and todo[0][0] != applied + 1:
        # a batch lost on its way would leave a hole: the engine resends from the journal instead
        raise Conflict(f"journal records of run {rid} arrive out of order: the store has up to seq {applied}, "
                       f"this batch starts at {todo[0][0]}")
    if not replay:
        if status not in ACTIVE:
            raise Conflict(f"run {rid} is {status}; its steps are not recorded any more")
        _refuse_other_owner(rid, head["owner_pid"], args.get("owner_pid"))
    elif status in (RunStatus.completed.value, RunStatus.cancelled.value):
        return signal(applied)  # nothing is recorded on a run that ended; a resume refuses it too
    steps = {r["id"]: r for r in rows}
    before = {i: r["status"] for i, r in steps.items()}
    unknown = sorted({i for _, r in todo for i in _named(r) if i not in steps})
    if unknown:
        raise Invalid(f"step(s) {', '.join(unknown)} are not steps of run {rid}")
    checkpoints: list[tuple] = []
    # per step, what the records leave: status, outputs, times, attempts added, error
    final: dict[str, dict[str, Any]] = {}
    actor = args.get("actor")

    events: list[tuple[str, dict[str, Any], datetime]] = []  # the moves' events, emitted together

    def at_of(r: dict[str, Any]) -> Any:
        try:
            return to_db_time(datetime.fromisoformat(str(r.get("at"))))
        except ValueError:
            return to_db_time(utcnow())

    def move(step: dict[str, Any], dst: StepStatus, reason: str, at: Any, ts: Any, seq: int,
             extra: dict[str, Any] | None = None) -> bool:
        src, to = step["status"], _VALUE[dst]
        if src == _COMPLETED and (replay or to == _COMPLETED):
            if replay:
                return False
            if step["id"] in remembered:  # perhaps only the memory of it is out of date
                raise StaleSteps(rid)
            raise Conflict(f"step {step['key']} of run {rid} is completed already; a completed step is never "
                           f"recorded twice")
        if src != to and not replay:
            try:
                check_step_transition(step["id"], src, to)
            except IllegalTransition as exc:
                if step["id"] in remembered:
                    raise StaleSteps(rid) from None
                raise Conflict(str(exc)) from None
        # the event is the move's history entry too (history.list shows it): the journal record
        # that made it, the reason and the actor go with it
        payload = {"step_id": step["id"], "key": step["key"], "number": step["number"], "agent": step["agent"],
                   "from": src, "to": to, "reason": reason, "journal_seq": seq}
        if actor is not None:
            payload["actor"] = actor
        if extra:
            payload.update(extra)
        if to == _FAILED:
            payload["error"] = str(final.get(step["id"], {}).get("err") or "")[:2000]
        events.append((_STEP_EVENTS[dst], payload, ts))
        step["status"] = to
        return True

    for seq, r in todo:
        at = at_of(r)
        ts = from_db_time(at)
        done = r.get("complete") or []
        # the checkpoint of a record's completions: one given with a context of its own is a row;
        # otherwise what it changed is those completions, and their step_completed events, which
        # carry its id (and the first its snapshot file, if one was written), are the record of it
        # (checkpoint.list and .latest show it from them)
        cp = done[0].get("checkpoint") if done else None
        in_events = bool(cp) and "context" not in cp and bool(cp.get("id")) and \
            (cp.get("kind") or _STEP_COMPLETE) == _STEP_COMPLETE
        snapshot = cp.get("pickle_path") if in_events else None
        for c in done:
            step = steps[c["step_id"]]
            f = final.setdefault(step["id"], {"inc": 0})
            own = c.get("checkpoint")
            extra = None
            if in_events:
                extra = {"checkpoint_id": cp["id"]}
                if snapshot:
                    extra["pickle_path"] = snapshot
            if move(step, StepStatus.completed, "step finished", at, ts, seq, extra):
                f.update(st="completed", o=dumps(c.get("outputs") or {}), ca=at, err=None)
                if own and not in_events:
                    if "context" not in own:  # what changed is the record's completions
                        own = {**own, "context": {"completed": [steps[x["step_id"]]["key"] for x in done]}}
                    checkpoints += _checkpoint_rows(sid, rid, [(step["id"], own)], at)
                elif snapshot:
                    # checkpoint.saved announces a snapshot written to disk
                    events.append((_CHECKPOINT_SAVED, {"checkpoint_id": cp["id"], "kind": _STEP_COMPLETE,
                                                       "step_id": step["id"], "pickle_path": snapshot}, ts))
                    snapshot = None
        for x in r.get("fail") or []:
            step = steps[x["step_id"]]
            f = final.setdefault(step["id"], {"inc": 0})
            f_err = str(x.get("error") or "")
            prev_err, f["err"] = f.get("err"), f_err
            if move(step, StepStatus.failed, "step failed", at, ts, seq):
                f.update(st="failed")
            else:
                f["err"] = prev_err
        for i in r.get("start") or []:
            step = steps[i]
            f = final.setdefault(step["id"], {"inc": 0})
            reason = "step started" if step["status"] != "running" else "re-run of a step in flight at a crash"
            if move(step, StepStatus.running, reason, at, ts, seq):
                f.update(st="running", sa=at, err=None)
                f["inc"] += 1
    ctx.emit_many(sid, rid, events)
    last = todo[-1][0]
    changed = [(step_id, f["st"], f.get("o"), f.get("ca"), f.get("sa"), f["inc"], f.get("err"), _PROGRESS.get(f["st"]),
                before[step_id]) for step_id, f in final.items() if "st" in f]
    if changed:
        # one list parameter per column (a parameter per value of a VALUES list binds far slower); a
        # NULL leaves the column as it was (outputs only change with a completion). A step is only
        # updated from the status these records were checked against.
        count = ctx.db.execute_count(
            "UPDATE steps SET status = v.st, outputs = coalesce(v.o, steps.outputs), "
            "completed_at = coalesce(v.ca, steps.completed_at), progress = coalesce(v.pr, steps.progress), "
            "started_at = coalesce(v.sa, steps.started_at), attempts = steps.attempts + v.inc, error = v.err "
            f"FROM (SELECT {JOURNAL_STEP_COLUMNS}) AS v WHERE steps.id = v.id AND steps.status = v.was "
            "AND steps.run_id = ?", [*(list(c) for c in zip(*changed)), rid])
        if count != len(changed):
            if remembered:
                raise StaleSteps(rid)
            raise Conflict(f"steps of run {rid} changed while its journal records were applied")
    if not replay:
        ctx.seqs.learn_steps(rid, {**(known or {}), **{
            i: (r["key"], r["number"], r["agent"], r["status"]) for i, r in steps.items()}})
    if run is None and kept is not None:
        # only a run still as remembered: one changed since (paused, moved, taken over) is read
        if ctx.db.execute_count(
                "UPDATE runs SET journal_seq = ? WHERE id = ? AND status = ? AND coalesce(pause_requested, false) = ? "
                "AND owner_pid IS NOT DISTINCT FROM ? AND coalesce(journal_seq, 0) = ?",
                [last, rid, status, bool(head["pause_requested"]), head["owner_pid"], applied]) != 1:
            raise StaleSteps(rid)
    elif run is None:
        ctx.db.execute("UPDATE runs SET journal_seq = ? WHERE id = ?", [last, rid])
    if run is None and not replay:
        ctx.seqs.learn_head(sid, rid, status, head["pause_requested"], head["owner_pid"], last)
    if checkpoints and replay:
        # `cmbagent recover` may have imported a row already from its snapshot file
        have = {r["id"] for r in ctx.db.fetch(
            f"SELECT id FROM checkpoints WHERE id IN ({', '.join('?' * len(checkpoints))})", [c[0] for c in checkpoints])}
        checkpoints = [c for c in checkpoints if c[0] not in have]
    if checkpoints:
        ctx.db.insert_rows("checkpoints", CHECKPOINT_COLUMNS, checkpoints)
        for r in checkpoints:
            # a step's own checkpoint (what it changed) is named by its step_completed event;
            # checkpoint.saved announces a snapshot written to disk
            if r[6]:
                ctx.emit(EventType.checkpoint_saved, sid, rid, {"checkpoint_id": r[0], "kind": r[4], "step_id": r[3],
                                                                "pickle_path": r[6]})
    out = signal(last)
    out["applied"] = len(todo)
    return out


@op("engine.plan_ready", write=True)
def engine_plan_ready(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """Store a validated plan with its DAG, note it in the run's config, checkpoint, and start executing.

    With `start` false the run stays draft (a control or one_shot run's plan stored when the
    run is created, so its steps and DAG show before it starts; `engine.claim` starts it).
    Returns the run and its steps; with `return_steps` false (the caller chose every step's
    id) the steps are not read back: `stored` says how many went in, `kept` which completed
    ones stayed."""
    sid = _arg(args, "session_id", "session")
    rid = _arg(args, "run_id", "run")
    run = _run_row(ctx, sid, rid)
    start = args.get("start", True) is not False
    if run["status"] not in (RunStatus.draft.value, RunStatus.planning.value, RunStatus.waiting_approval.value):
        raise Conflict(f"run {rid} is {run['status']}; a plan is stored while it is draft or planning")
    if not start and run["status"] != RunStatus.draft.value:
        raise Conflict(f"run {rid} is {run['status']}; a plan is stored without starting only on a draft run")
    compact = args.get("return_steps", True) is False
    if compact and not all(isinstance(s, dict) and s.get("id") for s in args.get("steps") or []):
        raise Invalid("return_steps=false needs an id for every step")
    steps = put_steps(ctx, sid, rid, args.get("steps"), return_steps=not compact)
    config = dict(run["config"])
    config.update(args.get("config") or {})
    config.pop("step_ids", None)
    if compact and not steps["kept"]:
        # every step is new, with the id its caller chose: a claim of the draft need not send them back
        config["step_ids"] = {str(st.get("key")): st["id"] for st in args["steps"]}
    ctx.db.execute("UPDATE runs SET config = ? WHERE id = ?", [dumps(config), rid])
    dag = args.get("dag") or {}
    had = ctx.db.fetchone("SELECT (SELECT count(*) FROM dag_nodes WHERE run_id = ?) AS nodes, "
                          "(SELECT count(*) FROM dag_edges WHERE run_id = ?) AS edges", [rid, rid])
    if had["nodes"]:
        ctx.db.execute("DELETE FROM dag_nodes WHERE run_id = ?", [rid])
    if had["edges"]:
        ctx.db.execute("DELETE FROM dag_edges WHERE run_id = ?", [rid])
    ctx.db.insert_rows("dag_nodes", ("session_id", "run_id", "node_id", "kind", "label", "status", "level"),
                       [(sid, rid, n["id"], n.get("kind") or "agent", str(n.get("label") or "")[:500],
                         n.get("status"), n.get("level")) for n in dag.get("nodes") or []])
    ctx.db.insert_rows("dag_edges", ("session_id", "run_id", "source", "target", "kind"),
                       [(sid, rid, e["source"], e["target"], e.get("kind") or "sequential")
                        for e in dag.get("edges") or []])
    ctx.emit(EventType.dag_created, sid, rid, {"dag": dag, "mermaid": args.get("mermaid")})
    if args.get("checkpoint"):
        cp = args["checkpoint"]
        checkpoint_put(ctx, {"session_id": sid, "run_id": rid, "kind": cp.get("kind") or "step_complete",
                             "context": cp.get("context"), "pickle_path": cp.get("pickle_path"), "id": cp.get("id")})
    if not start:  # the plan of a draft run, stored when it is created: it starts when it is claimed
        out = _run_row(ctx, sid, rid, ", config::VARCHAR AS config_text")
        text = out.pop("config_text")
        if compact and "step_ids" in config:
            ctx.seqs.learn_row(sid, rid, out, text)  # its claim need not read it again
        return {"run": out, **steps} if compact else {"run": out, "steps": steps}
    out = move_run(ctx, run, {"to": RunStatus.executing.value, "reason": args.get("reason") or "plan ready",
                              "actor": args.get("actor"), "owner_pid": args.get("owner_pid"),
                              "expected_from": [RunStatus.draft.value, RunStatus.planning.value,
                                                RunStatus.waiting_approval.value]})
    if compact:
        return {"run": out, **steps}
    return {"run": out, "steps": steps}


@op("engine.claim", write=True)
def engine_claim(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """Hand a run to the calling process (`owner_pid`) and move it to `to`: planning,
    executing, or `auto` (executing once the run has a plan, planning a deep_research run
    that has none). Returns the run, its steps, the last step-journal record the store has
    (`journal_seq`) and, with `with_session`, the run's session. With `return_steps` false,
    the steps of a draft whose plan was stored with the ids its caller chose (its config's
    `step_ids`) are not sent back (`steps` is None).

    A run still marked active is only taken over when its owner is the one the caller
    found dead (`stale_owner_pid`); it is first recorded as interrupted, so the history
    shows the crash. Two processes racing to resume: one wins, the other gets Conflict.
    """
    sid = _arg(args, "session_id", "session")
    rid = _arg(args, "run_id", "run")
    # a new draft the service remembers as its plan left it is not read again: the move checks
    # the row is still so (anything else is applied again, reading it)
    kept = ctx.seqs.known_row(sid, rid) if ctx.remembered_steps and not ctx.retry and \
        args.get("allowed_from") == [RunStatus.draft.value] else None
    if kept is not None and kept[0]["status"] == RunStatus.draft.value:
        return _remembered(rid, _claim, ctx, args, sid, rid, kept)
    return _claim(ctx, args, sid, rid, None)


def _remembered(rid: str, apply: Callable[..., dict[str, Any]], *a: Any) -> dict[str, Any]:
    """`apply` on what the service remembers of run `rid`: a refusal may rest on that alone,
    so it is given by the database instead (the transaction is applied again, reading it)."""
    try:
        return apply(*a)
    except StoreError as exc:
        raise StaleSteps(rid) from exc


def _claim(ctx: OpContext, args: dict[str, Any], sid: str, rid: str, kept: tuple[dict[str, Any], str] | None
           ) -> dict[str, Any]:
    """`engine.claim` of the run as read, or as remembered (`kept`: its row and config's text)."""
    seen: dict[str, Any] = {}
    guard = text = None
    if kept is not None:
        run, text = kept
        seen["quota_row"] = known_quota_row(ctx, sid)
        if seen["quota_row"] is None:
            cols, params = quota_columns(ctx, sid, rid)
            seen["quota_row"] = quota_row(ctx, sid, ctx.db.fetchone(f"SELECT {cols}", params))
        seq = 0
        guard = row_guard(run, text, seq)
    else:
        run = _run_with_seq(ctx, sid, rid, seen)
        seq = run.pop("journal_seq")
    to = args.get("to")
    if to == "auto":
        planned = bool(run["config"].get("final_plan"))
        if not planned and run["mode"] != RunMode.deep_research.value:
            raise Invalid(f"run {rid} ({run['mode']}) has no plan to execute")
        to = RunStatus.executing.value if planned else RunStatus.planning.value
    if to not in (RunStatus.planning.value, RunStatus.executing.value):
        raise Invalid("a run is claimed to plan or to execute")
    allowed = list(args.get("allowed_from") or [])
    status = run["status"]
    # idempotent by its own state (its reply, the steps, is too big for the request ledger): a resend
    # whose first try was applied finds the run already moved to `to` by the same owner
    ctx.ledger = False
    resent = ctx.retry and status == to and args.get("owner_pid") is not None and run["owner_pid"] is not None \
        and int(run["owner_pid"]) == int(args["owner_pid"])
    # a draft whose steps all have the ids its plan_ready caller chose (config step_ids): with
    # `return_steps` false, the caller builds them from its plan and only their number is read
    known = args.get("return_steps") is False and status == RunStatus.draft.value and bool(run["config"].get("step_ids"))
    if resent:
        steps, out = steps_of(ctx, sid, rid), run
    else:
        steps, out = _claim_move(ctx, run, to, allowed, args, read_steps=not known, seen=seen, guard=guard)
    if out["status"] == RunStatus.executing.value:  # its journal batches and settle need not read the run
        ctx.seqs.learn_head(sid, rid, out["status"], out["pause_requested"], out["owner_pid"], seq)
        if text is not None:
            ctx.seqs.learn_row(sid, rid, out, text)
    reply = {"run": out, "steps": None if known else steps, "journal_seq": seq}
    if args.get("with_session"):
        reply["session"] = seen.get("session") or _session_row(ctx, sid)
    return reply


def _claim_move(ctx: OpContext, run: dict[str, Any], to: str, allowed: list[str], args: dict[str, Any], *,
                read_steps: bool = True, seen: dict[str, Any] | None = None, guard: tuple[str, list[Any]] | None = None
                ) -> tuple[list[dict[str, Any]] | None, dict[str, Any]]:
    """The claim's move: a dead owner's run recorded interrupted first; the steps (or, without
    `read_steps`, None: a draft whose config lists its step ids) and the moved row."""
    sid, rid, status = run["session_id"], run["id"], run["status"]
    if status in ACTIVE:
        stale = args.get("stale_owner_pid")
        if stale is None or run["owner_pid"] is None or int(run["owner_pid"]) != int(stale):
            raise Conflict(f"run {rid} is {status} and owned by process {run['owner_pid']}; it can be resumed once "
                           f"that process is gone")
        run = move_run(ctx, run, {"to": RunStatus.interrupted.value, "reason": f"owner process {stale} is gone",
                                  "actor": args.get("actor")})
        status = RunStatus.interrupted.value
        allowed.append(status)
    if allowed and status not in allowed:
        raise Conflict(f"run {rid} is {status}; expected one of {', '.join(allowed)}")
    # the draft's steps went in with its config's step_ids, in one transaction
    steps = steps_of(ctx, sid, rid) if read_steps else None
    count = len(steps) if steps is not None else len(run["config"]["step_ids"])
    if to == RunStatus.executing.value and not count:
        raise Invalid(f"run {rid} ({run['mode']}) has no steps to execute")
    reason = args.get("reason")
    if reason is None and status != RunStatus.draft.value:
        reason = "resumed"
    return steps, move_run(ctx, run, {"to": to, "reason": reason, "actor": args.get("actor"),
                                      "owner_pid": args.get("owner_pid"), "expected_from": [status]},
                           step_count=count, seen=seen, guard=guard if status == RunStatus.draft.value else None)


@op("engine.settle", write=True)
def engine_settle(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """End or suspend a run: the step-journal records the store still lacks (`records`, as
    `engine.advance_many` takes them), its last checkpoint, in-flight steps set back, and
    the move, in one transaction.

    Idempotent by its own state (its reply, the run, stays out of the request ledger): a
    resend whose first try was applied finds the run moved to `to` already. A settle that
    names its process (`owner_pid`) is refused once another process owns the run."""
    sid = _arg(args, "session_id", "session")
    rid = _arg(args, "run_id", "run")
    to = _arg(args, "to")
    # the run as its claim and journal batches left it, if the service remembers that: the move
    # checks the row is still so (anything else is applied again, reading it)
    kept = ctx.seqs.known_row(sid, rid) if ctx.remembered_steps and not ctx.retry else None
    head = ctx.seqs.known_head(sid, rid) if kept is not None else None
    if kept is not None and head is not None and kept[0]["status"] == head[0] != to:
        return _remembered(rid, _settle, ctx, args, sid, rid, to, (kept[0], kept[1], head[3]))
    return _settle(ctx, args, sid, rid, to, None)


def _settle(ctx: OpContext, args: dict[str, Any], sid: str, rid: str, to: str,
            kept: tuple[dict[str, Any], str, int] | None) -> dict[str, Any]:
    """`engine.settle` of the run as read, or as remembered (`kept`: its row, config's text and journal seq)."""
    guard = None
    if kept is not None:
        run, text, seq = kept
        guard = row_guard(run, text, seq)
    else:
        run = _run_with_seq(ctx, sid, rid)
        seq = run.pop("journal_seq")
    ctx.ledger = False
    if ctx.retry and run["status"] == to:
        return {"run": run}
    owner = args.get("owner_pid")
    _refuse_other_owner(rid, run["owner_pid"], owner)
    applied = None  # the journal seq the records bring, written with the move
    if args.get("records"):
        out = _apply_records(ctx, sid, rid, {"records": args["records"], "owner_pid": owner},
                             run={**run, "journal_seq": seq})
        if out["applied"]:
            applied = out["journal_seq"]
    if run["status"] != to and run["status"] in (RunStatus.completed.value, RunStatus.cancelled.value):
        raise Conflict(f"run {rid} is {run['status']} already")
    reset_to = args.get("reset_to") or StepStatus.pending.value
    if reset_to not in (StepStatus.pending.value, StepStatus.cancelled.value, StepStatus.failed.value):
        raise Invalid("in-flight steps are set back to pending, cancelled or failed")
    ctx.seqs.forget_steps(rid)  # the run leaves its journal (and reset steps change below)
    for step_id in args.get("reset_steps") or []:
        row = ctx.db.fetchone("SELECT id, key, number, agent, status FROM steps WHERE id = ? AND run_id = ?",
                              [_arg({"id": step_id}, "id", "step"), rid])
        if row and row["status"] == StepStatus.running.value:
            ctx.db.execute("UPDATE steps SET status = ? WHERE id = ?", [reset_to, step_id])
            _history(ctx, sid, "step", step_id, "running", reset_to, args.get("reason"), args.get("actor"))
            ctx.emit(EventType.step_state_changed, sid, rid,
                     {"step_id": step_id, "key": row["key"], "number": row["number"], "agent": row["agent"],
                      "from": "running", "to": reset_to})
    cp = args.get("checkpoint")
    # a resend finds its checkpoint stored already
    if cp and not (cp.get("id") and ctx.db.scalar("SELECT count(*) FROM checkpoints WHERE id = ? AND run_id = ?",
                                                  [_arg(cp, "id", "checkpoint"), rid])):
        checkpoint_put(ctx, {"session_id": sid, "run_id": rid, "kind": cp.get("kind") or "manual",
                             "context": cp.get("context"), "pickle_path": cp.get("pickle_path"), "id": cp.get("id"),
                             "step_id": cp.get("step_id")})
    if run["status"] == to:
        if applied is not None:
            ctx.db.execute("UPDATE runs SET journal_seq = ? WHERE id = ?", [applied, rid])
        return {"run": run}
    fields: dict[str, Any] = {"to": to, "reason": args.get("reason"), "actor": args.get("actor")}
    if args.get("error") is not None:
        fields["error"] = args["error"]
    if args.get("expected_from"):
        fields["expected_from"] = args["expected_from"]
    return {"run": move_run(ctx, run, fields, also={"journal_seq": applied} if applied is not None else None,
                            guard=guard)}


def _refuse_other_owner(rid: str, owner_now: Any, owner: Any) -> None:
    """Conflict if the caller names its process (`owner`) and another one owns the run now."""
    if not _same_owner(owner_now, owner):
        raise Conflict(f"run {rid} is now executed by process {owner_now}, not {owner}")


def _same_owner(owner_now: Any, owner: Any) -> bool:
    return owner is None or owner_now is None or int(owner_now) == int(owner)


def _run_with_seq(ctx: OpContext, sid: str, rid: str, seen: dict[str, Any] | None = None) -> dict[str, Any]:
    """The run (as `_run_row` has it) with the store's `journal_seq`, in one read; with `seen`,
    also its session and what the session uses (for the quota check of a run starting), put
    in `seen["quota_row"]` as `move_run` takes it."""
    extra, params = ", coalesce(journal_seq, 0) AS journal_seq", []
    if seen is not None:
        cols, params = quota_columns(ctx, sid, rid)
        extra += ", " + cols
    run = _run_row(ctx, sid, rid, extra, params)
    if seen is not None:
        seen["quota_row"] = quota_row(ctx, sid, run)
    run["journal_seq"] = int(run["journal_seq"] or 0)
    return run


@op("engine.runs", write=False)
def engine_runs(ctx: OpContext, args: dict[str, Any]) -> list[dict[str, Any]]:
    """Runs with their session's name and step counts, for `cmbagent status` (all sessions by default)."""
    params: list[Any] = []
    where = ["s.status != 'deleted'"]
    if args.get("session_id"):
        where.append("r.session_id = ?")
        params.append(_arg(args, "session_id", "session"))
    if args.get("status"):
        statuses = args["status"] if isinstance(args["status"], list) else [args["status"]]
        where.append(f"r.status IN ({', '.join('?' * len(statuses))})")
        params += statuses
    limit = min(int(args.get("limit") or 200), 10_000)
    rows = ctx.db.fetch(
        "SELECT r.id, r.session_id, s.name AS session_name, r.task, r.mode, r.status, r.model, r.created_at, "
        "r.started_at, r.completed_at, r.last_heartbeat_at, r.owner_pid, coalesce(r.pause_requested, false) AS "
        "pause_requested, r.error, r.path, "
        "(SELECT count(*) FROM steps t WHERE t.run_id = r.id) AS steps_total, "
        "(SELECT count(*) FROM steps t WHERE t.run_id = r.id AND t.status = 'completed') AS steps_completed, "
        "(SELECT count(*) FROM steps t WHERE t.run_id = r.id AND t.status = 'running') AS steps_running, "
        "(SELECT coalesce(sum(cost_usd), 0) FROM cost_records c WHERE c.run_id = r.id) AS cost_usd "
        f"FROM runs r JOIN sessions s ON s.id = r.session_id WHERE {' AND '.join(where)} "
        f"ORDER BY r.created_at DESC LIMIT {limit}", params)
    out = []
    for r in rows:
        r = dict(r)
        for k in ("created_at", "started_at", "completed_at", "last_heartbeat_at"):
            if r[k] is not None:
                r[k] = from_db_time(r[k]).isoformat()
        for k in ("steps_total", "steps_completed", "steps_running"):
            r[k] = int(r[k] or 0)
        r["cost_usd"] = float(r["cost_usd"] or 0.0)
        out.append(r)
    return out
