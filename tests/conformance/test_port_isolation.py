"""Sessions isolate: called through session B with any id of session A, every method of the
session port refuses (NotFound), or answers without any of A's ids; and A is left as it was.

The table below has one entry per method of `SessionPort`: a method added to the port fails
`test_every_session_method_is_checked` until it is given one here.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass
from typing import Any, Callable

import pytest

from cmbagent_jupyter.core import Conflict, NotFound
from cmbagent_jupyter.store.port import NewCost, NewEvent, NewFile, NewMetric, SessionPort
from porttools import PID, executing, record


@dataclass
class World:
    a: SessionPort
    b: SessionPort
    run: str
    step: str
    step2: str
    approval: str
    attempt: str
    checkpoint: str
    b_run: str
    ids: set[str]


def build(port) -> World:
    """Session A with one of everything; session B with a run of its own."""
    a = port.session(port.create_session("A").id)
    b = port.session(port.create_session("B").id)
    run, (s1, s2) = executing(a)
    a.advance(run.id, [record(1, start=[s1.id])], owner_pid=PID)
    cp = a.put_checkpoint(run.id, context={"secret": 1}, step_id=s1.id)
    a.emit("log", run.id, message="A only")
    a.add_costs([{"model": "m", "cost_usd": 0.25, "run_id": run.id, "step_id": s1.id}])
    a.record_files([NewFile(path="secret.py", run_id=run.id, step_id=s1.id)])
    a.record_metrics([NewMetric(name="chi2", value=1.0, run_id=run.id)])
    attempt = a.start_attempt(s1.id)
    approval = a.create_approval(run.id, "before_step", step_id=s2.id)
    b_run = b.create_run("B's own", mode="control")
    b.put_plan(b_run.id, [{"key": "b1"}])
    ids = {a.session_id, run.id, s1.id, s2.id, cp.id, approval.id, attempt.id}
    return World(a, b, run.id, s1.id, s2.id, approval.id, attempt.id, cp.id, b_run.id, ids)


def seen_by(ss: SessionPort, run_id: str) -> str:
    """Everything a session shows through its own reads, as one text."""
    views = {
        "session": ss.info(), "runs": ss.list_runs(), "steps": ss.list_steps(run_id), "events": ss.events(),
        "checkpoints": ss.list_checkpoints(run_id), "latest": ss.latest_checkpoint(run_id),
        "history": ss.history(), "approvals": ss.list_approvals(pending_only=False),
        "attempts": ss.list_attempts(run_id=run_id), "branches": ss.list_branches(), "costs": ss.cost_records(),
        "summary": ss.cost_summary(group_by=["run_id", "step_id"]), "files": ss.list_files(),
        "metrics": ss.list_metrics(),
    }
    return json.dumps({k: [v.model_dump(mode="json") for v in vs] if isinstance(vs, list) else
                       (vs.model_dump(mode="json") if vs is not None else None) for k, vs in views.items()},
                      sort_keys=True)


# method -> calls made through B with A's ids; each refuses with NotFound unless it answers
# without A's ids (reads of B's own), or names the error it may give instead
Call = Callable[[World], Any]
CALLS: dict[str, list[Call]] = {
    "info": [lambda w: w.b.info()],
    "usage": [lambda w: w.b.usage()],
    "set_quotas": [lambda w: w.b.set_quotas(max_cost_usd=50)],
    "set_status": [lambda w: w.b.set_status("active")],
    "create_run": [lambda w: w.b.create_run("child", parent_run_id=w.run)],
    "get_run": [lambda w: w.b.get_run(w.run)],
    "list_runs": [lambda w: w.b.list_runs()],
    "transition_run": [lambda w: w.b.transition_run(w.run, "cancelled")],
    "heartbeat": [lambda w: w.b.heartbeat(w.run, owner_pid=PID + 1)],
    "request_pause": [lambda w: w.b.request_pause(w.run)],
    "update_run": [lambda w: w.b.update_run(w.run, task="stolen")],
    "put_plan": [lambda w: w.b.put_plan(w.run, [{"key": "x"}])],
    "list_steps": [lambda w: w.b.list_steps(w.run)],
    "get_step": [lambda w: w.b.get_step(w.step)],
    "transition_step": [lambda w: w.b.transition_step(w.step2, "skipped")],
    "step_progress": [lambda w: w.b.step_progress(w.step, 0.5)],
    "plan_ready": [lambda w: w.b.plan_ready(w.run, [{"key": "x"}])],
    "claim": [lambda w: w.b.claim(w.run, to="executing", owner_pid=PID + 1, stale_owner_pid=PID)],
    "advance": [lambda w: w.b.advance(w.run, [record(2, complete=[w.step])], replay=True)],
    "settle": [lambda w: w.b.settle(w.run, "cancelled", reset_steps=[w.step])],
    "append_events": [lambda w: w.b.append_events([NewEvent(type="log", run_id=w.run)])],
    "emit": [lambda w: w.b.emit("log", w.run, message="into A")],
    "events": [lambda w: w.b.events(w.run), lambda w: w.b.events(since_gseq=0)],
    "subscribe": [lambda w: w.b.subscribe(run_id=w.run)],
    "put_checkpoint": [lambda w: w.b.put_checkpoint(w.run), lambda w: w.b.put_checkpoint(w.b_run, step_id=w.step)],
    "latest_checkpoint": [lambda w: w.b.latest_checkpoint(w.run)],
    "list_checkpoints": [lambda w: w.b.list_checkpoints(w.run)],
    "history": [lambda w: w.b.history(w.run), lambda w: w.b.history()],
    "create_approval": [lambda w: w.b.create_approval(w.run, "k"),
                        lambda w: w.b.create_approval(w.b_run, "k", step_id=w.step)],
    "resolve_approval": [lambda w: w.b.resolve_approval(w.approval, "approve")],
    "get_approval": [lambda w: w.b.get_approval(w.approval)],
    "list_approvals": [lambda w: w.b.list_approvals(w.run, pending_only=False)],
    "start_attempt": [lambda w: w.b.start_attempt(w.step)],
    "finish_attempt": [lambda w: w.b.finish_attempt(w.attempt, "completed")],
    "list_attempts": [lambda w: w.b.list_attempts(step_id=w.step), lambda w: w.b.list_attempts(run_id=w.run)],
    "reset_from": [lambda w: w.b.reset_from(w.step)],
    "create_branch": [lambda w: w.b.create_branch(w.run, 1)],
    "list_branches": [lambda w: w.b.list_branches(w.run)],
    "add_costs": [lambda w: w.b.add_costs([NewCost(run_id=w.run, cost_usd=1)]),
                  lambda w: w.b.add_costs([NewCost(run_id=w.b_run, step_id=w.step, cost_usd=1)])],
    "cost_records": [lambda w: w.b.cost_records(w.run)],
    "cost_summary": [lambda w: w.b.cost_summary(w.run, group_by=["step_id"])],
    "record_files": [lambda w: w.b.record_files([NewFile(path="x.py", step_id=w.step)])],
    "list_files": [lambda w: w.b.list_files(w.run)],
    "record_metrics": [lambda w: w.b.record_metrics([NewMetric(name="m", value=1, run_id=w.run)])],
    "list_metrics": [lambda w: w.b.list_metrics(run_id=w.run)],
    "import_run": [lambda w: w.b.import_run({"id": w.run, "task": "stolen", "status": "paused"})],
    "import_steps": [lambda w: w.b.import_steps(w.run, [{"id": w.step, "key": "s1"}])],
    "import_checkpoint": [lambda w: w.b.import_checkpoint(w.run, {"id": w.checkpoint}, {})],
}
# what a call may answer instead of NotFound: a run id is one store-wide, so putting back
# A's run into B is a conflict, not a lookup
OTHER_REFUSALS = {"import_run": Conflict}


def test_every_session_method_is_checked():
    methods = {name for name, member in inspect.getmembers(SessionPort, inspect.isfunction)
               if not name.startswith("_")}
    assert methods == set(CALLS), sorted(methods ^ set(CALLS))


def test_no_method_of_session_b_reaches_session_a(port):
    w = build(port)
    failures = []
    for name, calls in CALLS.items():
        for call in calls:
            before = seen_by(w.a, w.run)
            try:
                result = call(w)
            except (NotFound, OTHER_REFUSALS.get(name, NotFound)):
                result = None
            if hasattr(result, "close"):
                result.close()
            if seen_by(w.a, w.run) != before:
                failures.append(f"{name}: changed session A")
            answer = json.dumps(result, default=lambda v: v.model_dump(mode="json") if hasattr(v, "model_dump")
                                else str(v))
            leaked = sorted(i for i in w.ids if i in answer)
            if leaked:
                failures.append(f"{name}: answered with A's ids {leaked}")
            shown = seen_by(w.b, w.b_run)
            if any(i in shown for i in w.ids):
                failures.append(f"{name}: left A's ids in what B shows")
    assert not failures, "\n".join(failures)


def test_a_foreign_id_is_not_found_and_the_message_names_the_session_asked(port):
    w = build(port)
    for lookup, args in (("get_run", (w.run,)), ("get_step", (w.step,)), ("get_approval", (w.approval,)),
                         ("list_steps", (w.run,)), ("transition_run", (w.run, "paused")),
                         ("latest_checkpoint", (w.run,))):
        with pytest.raises(NotFound, match=f"does not exist in session {w.b.session_id}"):
            getattr(w.b, lookup)(*args)
