"""Comparing runs and walking the tree of branches."""

from __future__ import annotations

import json
from typing import Any

from cmbagent_jupyter.core import InvalidInput
from cmbagent_jupyter.store.port import StorePort


def _cost_by_step(store: StorePort, session_id: str, run_id: str) -> dict[str | None, float]:
    rows = store.session(session_id).cost_summary(run_id=run_id, group_by=["step_id"])
    return {r.step_id: r.cost_usd for r in rows}


def compare_runs(store: StorePort, run_a: str, run_b: str) -> dict[str, Any]:
    a, b = store.find_run(run_a), store.find_run(run_b)
    if a.session_id != b.session_id:
        raise InvalidInput("runs of different sessions are not compared; a session's data stays in that session")
    ss = store.session(a.session_id)
    steps_a = {s.number: s for s in ss.list_steps(a.id)}
    steps_b = {s.number: s for s in ss.list_steps(b.id)}
    cost_a, cost_b = _cost_by_step(store, a.session_id, a.id), _cost_by_step(store, b.session_id, b.id)
    rows = []
    for n in sorted(set(steps_a) | set(steps_b)):
        sa, sb = steps_a.get(n), steps_b.get(n)
        out_a = json.dumps(sa.outputs, sort_keys=True, default=str) if sa else None
        out_b = json.dumps(sb.outputs, sort_keys=True, default=str) if sb else None
        rows.append({
            "number": n, "key": (sa or sb).key, "agent": (sa or sb).agent,
            "a_status": sa.status.value if sa else None, "b_status": sb.status.value if sb else None,
            "same_output": out_a == out_b, "a_outputs": sa.outputs if sa else None, "b_outputs": sb.outputs if sb else None,
            "a_cost": cost_a.get(sa.id, 0.0) if sa else 0.0, "b_cost": cost_b.get(sb.id, 0.0) if sb else 0.0,
        })
    return {"a": a.id, "b": b.id, "steps": rows, "a_cost": sum(cost_a.values()), "b_cost": sum(cost_b.values()),
            "a_status": a.status.value, "b_status": b.status.value}


def branch_tree(store: StorePort, run_id: str) -> dict[str, Any]:
    run = store.find_run(run_id)
    ss = store.session(run.session_id)
    root = run
    while root.parent_run_id:
        root = ss.get_run(root.parent_run_id)
    children: dict[str, list[Any]] = {}
    for b in ss.list_branches():
        children.setdefault(b.parent_run_id, []).append(b)

    def node(r, name: str | None = None, from_step: int | None = None) -> dict[str, Any]:
        return {
            "run_id": r.id, "status": r.status.value, "task": r.task, "name": name or "main", "from_step": from_step,
            "children": [node(ss.get_run(b.child_run_id), b.name, b.parent_step)
                         for b in children.get(r.id, [])],
        }

    return node(root)
