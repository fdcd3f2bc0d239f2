"""Sessions isolate: nothing of session A can be read, listed, changed or followed via B.

The test walks the op registry, so an op added later is checked too: called as session
B with every id of session A, it must refuse (NotFound), or answer without any of A's ids
and without changing A or pointing B at A. Ops that span sessions on purpose are named
in HOME_WIDE.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import uuid
from dataclasses import dataclass
from typing import Any

import pytest

from cmbagent_jupyter.core.errors import NotFound, StoreError
from cmbagent_jupyter.store.local.ops import OPS

# Ops that look across sessions by design (a home-wide listing, or a lookup of a global
# id whose answer says which session it belongs to). Everything else is session-scoped.
HOME_WIDE = {"session.list", "session.resolve", "run.find", "approval.find", "step.find", "recovery.import_session"}

FLAGS = re.compile(r"^(include_|allow_|all_|pending_only$|interrupt_active$|expired$|reset_attempts$)")
ARG_NAMES = re.compile(r"""(?:_arg|_object)\(\s*args,\s*["'](\w+)|args\.get\(["'](\w+)|args\[["'](\w+)["']\]|["'](\w+)["'] in args""")


@dataclass
class World:
    a: dict[str, Any]
    b: dict[str, Any]


def build_world(store) -> World:
    """Session A with one of everything; session B with a run of its own."""
    tag = uuid.uuid4().hex[:6]
    sa = store.create_session(f"A {tag}")
    sb = store.create_session(f"B {tag}")
    a, b = store.session(sa.id), store.session(sb.id)
    run = a.create_run("A's secret task")
    steps = a.put_plan(run.id, [{"key": "step_1", "description": "one"},
                                {"key": "step_2", "description": "two", "depends_on": ["step_1"]}])
    cp = a.put_checkpoint(run.id, kind="manual", context={"secret": 1}, step_id=steps[0].id)
    ev = a.emit("log", run.id, note="A only")
    a.add_costs([{"model": "m", "cost_usd": 0.25, "run_id": run.id, "step_id": steps[0].id}])
    approval = a.create_approval(run_id=run.id, kind="after_planning", step_id=steps[0].id)
    attempt = a.start_attempt(step_id=steps[0].id)
    run_b = b.create_run("B's task")
    ids_a = {"session_id": sa.id, "run_id": run.id, "step_id": steps[0].id, "step2_id": steps[1].id,
             "checkpoint_id": cp.id, "event_id": ev.id, "approval_id": approval.id,
             "attempt_id": attempt.id}
    return World(
        a={**ids_a, "session": sa.model_dump(mode="json"), "run": run.model_dump(mode="json"),
           "steps": [s.model_dump(mode="json") for s in steps], "name": sa.name, "_ids": set(ids_a.values())},
        b={"session_id": sb.id, "run_id": run_b.id},
    )


def arg_names(op_name: str) -> list[str]:
    src = inspect.getsource(OPS[op_name].func)
    return sorted({n for groups in ARG_NAMES.findall(src) for n in groups if n})


def arguments(op_name: str, a: dict[str, Any]) -> dict[str, Any]:
    """Every argument the op reads, filled with A's ids and plausible values."""
    values: dict[str, Any] = {
        "run_id": a["run_id"], "parent_run_id": a["run_id"], "entity_id": a["run_id"], "step_id": a["step_id"],
        "approval_id": a["approval_id"], "attempt_id": a["attempt_id"], "checkpoint_id": a["checkpoint_id"],
        "events": [{"type": "log", "run_id": a["run_id"], "payload": {}}],
        "records": [{"model": "m", "cost_usd": 0.5, "run_id": a["run_id"], "step_id": a["step_id"]}],
        "files": [{"path": "control/codebase/x.py", "kind": "code", "run_id": a["run_id"], "step_id": a["step_id"]}],
        "points": [{"name": "chi2", "value": 1.5, "run_id": a["run_id"]}],
        "steps": [{"id": a["step_id"], "key": "step_1", "description": "redo"}],
        "start": [a["step_id"]], "reset_steps": [a["step_id"]], "complete": [], "fail": [],
        "session": a["session"], "run": a["run"], "ref": a["name"],
        "name": f"n {uuid.uuid4().hex[:6]}", "task": "t", "model": "m", "config": {"k": 1},
        "quotas": {"max_cost_usd": 1.0}, "context": {"x": 1}, "progress": 0.5, "message": "m",
        "decision": "approve", "from_step": 1, "outputs": {"r": 1}, "error": "e", "error_type": "E",
        "traceback": "tb", "output": "o", "cost_usd": 0.1, "description": "d", "reason": "r", "actor": "test",
        "feedback": "f", "instructions": "i", "hypothesis": "h", "owner_pid": os.getpid(),
    }
    per_op: dict[str, dict[str, Any]] = {
        "run.transition": {"to": "cancelled"}, "step.transition": {"to": "skipped"},
        "engine.claim": {"to": "planning"}, "engine.settle": {"to": "cancelled"},
        "session.set_status": {"status": "archived"}, "attempt.finish": {"status": "completed"},
        "checkpoint.put": {"kind": "manual"}, "approval.create": {"kind": "before_step"},
        "recovery.import_checkpoint": {"checkpoint": {"id": a["checkpoint_id"], "kind": "manual"}},
    }
    out = {}
    for name in arg_names(op_name):
        if name == "session_id" or FLAGS.match(name):
            continue
        if name in per_op.get(op_name, {}):
            out[name] = per_op[op_name][name]
        elif name in values:
            out[name] = values[name]
    return out


def snapshot(store, sid: str, run_id: str) -> str:
    """Everything a session shows through its own scoped reads, as one JSON text."""
    calls = {
        "session": ("session.get", {}), "runs": ("run.list", {}), "steps": ("step.list", {"run_id": run_id}),
        "events": ("event.list", {}), "checkpoints": ("checkpoint.list", {"run_id": run_id}),
        "costs": ("cost.records", {}), "history": ("history.list", {}),
        "approvals": ("approval.list", {"pending_only": False}), "attempts": ("attempt.list", {"run_id": run_id}),
        "branches": ("branch.list", {}), "files": ("file.list", {}), "metrics": ("metric.list", {}),
    }
    return json.dumps({k: store.client.call(op, {"session_id": sid, **args}) for k, (op, args) in calls.items()
                       if op in OPS}, sort_keys=True)


def leaked(text: str, ids: set[str]) -> list[str]:
    return sorted(i for i in ids if i in text)


def test_no_op_reaches_another_sessions_records(store):
    checked, not_exercised, failures = [], [], []
    for op_name in sorted(OPS):
        if op_name in HOME_WIDE:
            continue
        world = build_world(store)
        a, b = world.a, world.b
        args = arguments(op_name, a)
        before_a = snapshot(store, a["session_id"], a["run_id"])
        try:
            result = store.client.call(op_name, {**args, "session_id": b["session_id"]})
            error = None
        except StoreError as exc:
            result, error = None, exc
        after_a = snapshot(store, a["session_id"], a["run_id"])
        seen_by_b = snapshot(store, b["session_id"], b["run_id"])
        if after_a != before_a:
            failures.append(f"{op_name} as session B changed session A")
        if leaked(seen_by_b, a["_ids"]):
            failures.append(f"{op_name} as session B left references to A in B: {leaked(seen_by_b, a['_ids'])}")
        if error is None:
            text = json.dumps(result, default=str)
            if leaked(text, a["_ids"]):
                failures.append(f"{op_name} as session B answered with A's ids {leaked(text, a['_ids'])}")
            checked.append(op_name)
            continue
        if isinstance(error, NotFound):
            checked.append(op_name)
            continue
        # refused for another reason: only telling if A, with the same arguments, is not refused alike
        try:
            store.client.call(op_name, {**args, "session_id": a["session_id"]})
            checked.append(op_name)
        except StoreError as own:
            if type(own) is type(error):
                not_exercised.append(f"{op_name}: {error.message}")
            else:
                checked.append(op_name)
    assert not failures, "\n".join(failures)
    assert not not_exercised, (
        "these ops refused both sessions alike, so isolation was not tested; give them arguments in "
        "tests/test_store_isolation.py::arguments:\n" + "\n".join(not_exercised))
    assert len(checked) == len(OPS) - len(HOME_WIDE & set(OPS))


def test_reads_with_foreign_ids_are_not_found(store):
    world = build_world(store)
    a, b = world.a, store.session(world.b["session_id"])
    for op_name, args in [("run.get", {"run_id": a["run_id"]}), ("step.get", {"step_id": a["step_id"]}),
                          ("step.list", {"run_id": a["run_id"]}), ("checkpoint.latest", {"run_id": a["run_id"]}),
                          ("checkpoint.list", {"run_id": a["run_id"]}),
                          ("approval.get", {"approval_id": a["approval_id"]}),
                          ("run.transition", {"run_id": a["run_id"], "to": "planning"})]:
        with pytest.raises(NotFound, match="does not exist in session " + b.session_id):
            store.client.call(op_name, {"session_id": b.session_id, **args})
    assert b.events(run_id=a["run_id"]) == []
    assert b.cost_records(run_id=a["run_id"]) == []
    assert b.history(a["run_id"]) == []


def test_a_subscription_of_session_b_never_sees_session_a(store):
    world = build_world(store)
    a, b = store.session(world.a["session_id"]), store.session(world.b["session_id"])
    foreign_run = b.subscribe(run_id=world.a["run_id"], since_gseq=0)
    whole_b = b.subscribe(since_gseq=0)
    own = a.subscribe()

    a.emit("log", world.a["run_id"], note="after subscribing")
    b.emit("log", world.b["run_id"], note="B's own")

    assert own.get(timeout=10)["payload"] == {"note": "after subscribing"}
    seen = []
    while (ev := whole_b.get(timeout=2)) is not None:
        seen.append(ev)
        if ev["payload"].get("note") == "B's own":
            break
    assert seen and {e["session_id"] for e in seen} == {b.session_id}
    assert foreign_run.get(timeout=0.5) is None
