"""Comparing two runs step by step, and the tree of branches a run belongs to."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel

from cmbagent_jupyter.actions.lookup import run_in
from cmbagent_jupyter.core import InvalidInput, Run
from cmbagent_jupyter.store import SessionPort, StorePort


class StepComparison(BaseModel):
    """One step number in two runs: status, output and cost in each (None: the run lacks it)."""

    number: int
    key: str
    agent: str
    a_status: str | None
    b_status: str | None
    same_output: bool
    a_outputs: dict[str, Any] | None
    b_outputs: dict[str, Any] | None
    a_cost: float
    b_cost: float


class Comparison(BaseModel):
    a: str
    b: str
    steps: list[StepComparison]
    a_cost: float
    b_cost: float
    a_status: str
    b_status: str


class BranchNode(BaseModel):
    """A run of a branch tree: the root is the run nothing was branched from (`name` main)."""

    run_id: str
    status: str
    task: str
    name: str
    from_step: int | None
    children: list[BranchNode]


def _cost_by_step(ss: SessionPort, run_id: str) -> dict[str | None, float]:
    return {r.step_id: r.cost_usd for r in ss.cost_summary(run_id=run_id, group_by=["step_id"])}


def _outputs(step: Any) -> str | None:
    return json.dumps(step.outputs, sort_keys=True, default=str) if step else None


def compare_runs(store: StorePort, run_a: str, run_b: str, *, session_id: str | None = None) -> Comparison:
    """Steps, outputs and costs of two runs of one session, side by side by step number."""
    ss, a = run_in(store, run_a, session_id)
    _, b = run_in(store, run_b, session_id)
    if a.session_id != b.session_id:
        raise InvalidInput("runs of different sessions are not compared; a session's data stays in that session")
    steps_a = {s.number: s for s in ss.list_steps(a.id)}
    steps_b = {s.number: s for s in ss.list_steps(b.id)}
    cost_a, cost_b = _cost_by_step(ss, a.id), _cost_by_step(ss, b.id)
    rows = []
    for n in sorted(set(steps_a) | set(steps_b)):
        sa, sb = steps_a.get(n), steps_b.get(n)
        either = sa or sb
        rows.append(StepComparison(
            number=n, key=either.key, agent=either.agent,
            a_status=sa.status.value if sa else None, b_status=sb.status.value if sb else None,
            same_output=_outputs(sa) == _outputs(sb), a_outputs=sa.outputs if sa else None,
            b_outputs=sb.outputs if sb else None, a_cost=cost_a.get(sa.id, 0.0) if sa else 0.0,
            b_cost=cost_b.get(sb.id, 0.0) if sb else 0.0))
    return Comparison(a=a.id, b=b.id, steps=rows, a_cost=sum(cost_a.values()), b_cost=sum(cost_b.values()),
                      a_status=a.status.value, b_status=b.status.value)


def branch_tree(store: StorePort, run_id: str, *, session_id: str | None = None) -> BranchNode:
    """The whole tree of branches the run belongs to, from its root."""
    ss, run = run_in(store, run_id, session_id)
    root = run
    while root.parent_run_id:
        root = ss.get_run(root.parent_run_id)
    children: dict[str, list[Any]] = {}
    for b in ss.list_branches():
        children.setdefault(b.parent_run_id, []).append(b)

    def node(r: Run, name: str | None = None, from_step: int | None = None) -> BranchNode:
        return BranchNode(run_id=r.id, status=r.status.value, task=r.task, name=name or "main", from_step=from_step,
                          children=[node(ss.get_run(b.child_run_id), b.name, b.parent_step)
                                    for b in children.get(r.id, [])])

    return node(root)
