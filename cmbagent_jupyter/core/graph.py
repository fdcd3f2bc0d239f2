"""The one projection of a run onto the graph every front end draws.

A planning node first, one node per step (its id is the step's id) coloured by its
state, a terminator last; `depends_on` are the edges, a step with no dependency hangs
off the planning node and a step nothing depends on leads to the terminator. The
anywidget DAG, the sidebar's run view, the REST API and MCP all show this graph.
"""

from __future__ import annotations

from typing import Iterable, Literal

from pydantic import BaseModel, Field

from cmbagent_jupyter.core.records import ApprovalRequest, Run, Step
from cmbagent_jupyter.core.states import ApprovalStatus, RunStatus, StepStatus

PLANNING = "planning"
END = "end"

NodeKind = Literal["planning", "agent", "terminator"]


class GraphNode(BaseModel):
    id: str
    kind: NodeKind
    label: str
    status: str
    key: str | None = None
    number: int | None = None
    agent: str | None = None


class GraphEdge(BaseModel):
    source: str
    target: str


class RunGraph(BaseModel):
    nodes: list[GraphNode] = Field(default_factory=list)
    edges: list[GraphEdge] = Field(default_factory=list)


_END_OF_RUN = {RunStatus.completed: "completed", RunStatus.failed: "failed", RunStatus.cancelled: "cancelled",
               RunStatus.interrupted: "interrupted"}


def planning_status(run: Run, steps: list[Step], approvals: Iterable[ApprovalRequest] = ()) -> str:
    if any(a.status == ApprovalStatus.pending and a.step_id is None for a in approvals):
        return "waiting_approval"
    if run.status == RunStatus.planning:
        return "running"
    if steps:
        return "completed"
    if run.status in (RunStatus.failed, RunStatus.cancelled, RunStatus.interrupted):
        return run.status.value
    return "pending"


def step_label(step: Step) -> str:
    """A step's words in a node: its sub-task's first line (or its description, or its key)."""
    text = str(step.inputs.get("sub_task") or step.description or step.key).strip()
    return (text.splitlines() or [step.key])[0]


def run_graph(run: Run, steps: Iterable[Step], approvals: Iterable[ApprovalRequest] = ()) -> RunGraph:
    steps = sorted(steps, key=lambda s: s.number)
    approvals = list(approvals)
    waiting = {a.step_id for a in approvals if a.status == ApprovalStatus.pending and a.step_id}
    by_key = {s.key: s for s in steps}
    nodes = [GraphNode(id=PLANNING, kind="planning", label="plan", status=planning_status(run, steps, approvals))]
    edges: list[GraphEdge] = []
    has_dependents: set[str] = set()
    for s in steps:
        status = "waiting_approval" if s.id in waiting and s.status == StepStatus.pending else s.status.value
        nodes.append(GraphNode(id=s.id, kind="agent", label=step_label(s), status=status, key=s.key,
                               number=s.number, agent=s.agent))
        deps = [by_key[d] for d in s.depends_on if d in by_key]
        if not deps:
            edges.append(GraphEdge(source=PLANNING, target=s.id))
        for d in deps:
            edges.append(GraphEdge(source=d.id, target=s.id))
            has_dependents.add(d.id)
    nodes.append(GraphNode(id=END, kind="terminator", label="done", status=_END_OF_RUN.get(run.status, "pending")))
    edges += [GraphEdge(source=s.id, target=END) for s in steps if s.id not in has_dependents]
    if not steps:
        edges.append(GraphEdge(source=PLANNING, target=END))
    return RunGraph(nodes=nodes, edges=edges)
