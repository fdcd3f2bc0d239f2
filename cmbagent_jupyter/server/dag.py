"""A run's DAG as the front ends draw it, built from its stored steps.

Same shape as the DAG widget's `graph` trait: a planning node first, one node per
step with its status, a terminator last, and `depends_on` as edges.
"""

from __future__ import annotations

from typing import Any

PLANNING_DONE = {"executing", "waiting_approval", "paused", "completed", "interrupted"}


def dag_from_steps(run_status: str, steps: list[dict[str, Any]]) -> dict[str, Any]:
    keys = {s["key"] for s in steps}
    planning = "completed" if steps and run_status in PLANNING_DONE else (
        "running" if run_status == "planning" else "pending")
    nodes: list[dict[str, Any]] = [{"id": "planning", "kind": "planning", "label": "plan", "status": planning}]
    edges: list[dict[str, str]] = []
    has_dependents: set[str] = set()
    for s in steps:
        label = f"{s['number']}. {s['agent']}"
        nodes.append({"id": s["key"], "kind": "agent", "label": label, "status": s["status"], "number": s["number"],
                      "agent": s["agent"], "description": s.get("description") or "", "step_id": s["id"]})
        deps = [d for d in s.get("depends_on") or [] if d in keys]
        for d in deps or ["planning"]:
            edges.append({"source": d, "target": s["key"]})
            has_dependents.add(d)
    end = "completed" if run_status == "completed" else ("failed" if run_status == "failed" else "pending")
    nodes.append({"id": "end", "kind": "terminator", "label": "done", "status": end})
    for s in steps:
        if s["key"] not in has_dependents:
            edges.append({"source": s["key"], "target": "end"})
    if not steps:
        edges.append({"source": "planning", "target": "end"})
    return {"nodes": nodes, "edges": edges}
