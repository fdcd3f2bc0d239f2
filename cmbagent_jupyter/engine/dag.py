"""Plans and their DAG: the planner's JSON validated into steps with `depends_on`.

`parse_plan` turns model text into a `Plan` or raises `PlanError` with a message meant
to be shown to the planner so it can fix its plan (malformed JSON, an empty plan,
unknown agents or dependencies, cycles). `PlanDAG` is the networkx graph of a valid
plan: topological order, levels of steps that can run together, Mermaid and JSON.

A plan in CMBAgent's format (no `depends_on` anywhere) runs its steps in order.
"""

from __future__ import annotations

import json
import re
import weakref
from typing import Any, Iterable

import networkx as nx
from pydantic import ValidationError

from cmbagent_jupyter.core import InvalidInput
from cmbagent_jupyter.core.plan import Plan, SubTask

KEY_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_\-]{0,63}$")
_FENCE_RE = re.compile(r"```(?:json|JSON)?\s*\n(.*?)```", re.S)


class PlanError(InvalidInput):
    """A plan the engine cannot run; the message says what is wrong and what is expected."""


def extract_json(text: str) -> Any:
    """The JSON object in a model reply: a fenced block, the whole text, or the outermost braces."""
    if not isinstance(text, str) or not text.strip():
        raise PlanError("the plan is empty: reply with a JSON object {\"sub_tasks\": [...]}")
    candidates = [m.group(1) for m in _FENCE_RE.finditer(text)] + [text]
    first, last = text.find("{"), text.rfind("}")
    if 0 <= first < last:
        candidates.append(text[first:last + 1])
    error: json.JSONDecodeError | None = None
    for c in candidates:
        try:
            return json.loads(c)
        except json.JSONDecodeError as exc:
            error = error or exc
    assert error is not None
    raise PlanError(f"the plan is not valid JSON ({error.msg} at line {error.lineno} column {error.colno}); "
                    f"reply with one JSON object {{\"sub_tasks\": [...]}} and nothing else")


def plan_from_data(data: Any, *, agents: Iterable[str], max_steps: int | None = None) -> Plan:
    """Validate plan data (already decoded) into a `Plan` whose DAG is sound."""
    agents = sorted(set(agents))
    if isinstance(data, list):
        data = {"sub_tasks": data}
    if not isinstance(data, dict):
        raise PlanError(f"the plan must be a JSON object with a `sub_tasks` list, not a {type(data).__name__}")
    raw_steps = data.get("sub_tasks", data.get("steps"))
    if raw_steps is None:
        raise PlanError("the plan has no `sub_tasks` list: expected {\"sub_tasks\": [{\"sub_task\": ..., "
                        "\"sub_task_agent\": ..., \"depends_on\": [...]}]}")
    if not isinstance(raw_steps, list):
        raise PlanError("`sub_tasks` must be a list of steps")
    if not raw_steps:
        raise PlanError("the plan is empty: it needs at least one step in `sub_tasks`")
    if max_steps is not None and len(raw_steps) > max_steps:
        raise PlanError(f"the plan has {len(raw_steps)} steps; at most {max_steps} are allowed: merge some steps")
    sequential = not any(isinstance(s, dict) and "depends_on" in s for s in raw_steps)
    steps: list[SubTask] = []
    numbers: dict[int, str] = {}
    seen: set[str] = set()
    for i, raw in enumerate(raw_steps, start=1):
        if not isinstance(raw, dict):
            raise PlanError(f"step {i} must be an object with sub_task, sub_task_agent and depends_on")
        item = dict(raw)
        item.setdefault("sub_task", item.get("description") or item.get("task"))
        item.setdefault("sub_task_agent", item.get("agent"))
        key = str(item.get("key") or f"step_{i}")
        if not KEY_RE.match(key):
            raise PlanError(f"step {i} has key {key!r}; keys are letters, digits, '_' or '-', starting with a letter")
        item["key"], item["number"] = key, i
        if sequential:
            item["depends_on"] = [steps[-1].key] if steps else []
        else:
            deps = item.get("depends_on") or []
            if not isinstance(deps, list):
                deps = [deps]
            item["depends_on"] = [str(d) for d in deps]
        try:
            step = SubTask.model_validate(item)
        except ValidationError as exc:
            err = exc.errors()[0]
            field = ".".join(str(x) for x in err["loc"])
            raise PlanError(f"step {i} ({key}): {field}: {err['msg']}") from None
        if step.sub_task_agent not in agents:
            raise PlanError(f"step {i} ({key}) is given to agent {step.sub_task_agent!r}; "
                            f"sub_task_agent must be one of {', '.join(agents)}")
        if key in seen:
            raise PlanError(f"two steps have the key {key!r}; every step needs its own key")
        seen.add(key)
        numbers[i] = key
        steps.append(step)
    keys = {s.key for s in steps}
    for s in steps:
        resolved = []
        for d in s.depends_on:
            ref = numbers.get(int(d)) if d.isdigit() else d
            if ref not in keys:
                raise PlanError(f"step {s.number} ({s.key}) depends on unknown step {d!r}; "
                                f"known steps: {', '.join(s2.key for s2 in steps)}")
            if ref == s.key:
                raise PlanError(f"step {s.number} ({s.key}) depends on itself")
            if ref not in resolved:
                resolved.append(ref)
        s.depends_on = resolved
    plan = Plan(sub_tasks=steps)
    PlanDAG.of(plan)
    return plan


def parse_plan(text: str, *, agents: Iterable[str], max_steps: int | None = None) -> Plan:
    return plan_from_data(extract_json(text), agents=agents, max_steps=max_steps)


_DAGS: "weakref.WeakValueDictionary[int, PlanDAG]" = weakref.WeakValueDictionary()


class PlanDAG:
    """The dependency graph of a plan. Raises `PlanError` on a cycle."""

    @classmethod
    def of(cls, plan: Plan) -> "PlanDAG":
        """The plan's DAG, built once per plan object while someone holds it (plans are not
        changed once validated). Kept by the plan's id, weakly: a DAG holds its plan, so the
        id cannot be reused while the entry lives, and no reference cycle is made."""
        dag = _DAGS.get(id(plan))
        if dag is None or dag.plan is not plan:
            dag = cls(plan)
            _DAGS[id(plan)] = dag
        return dag

    def __init__(self, plan: Plan):
        self.plan = plan
        g = nx.DiGraph()
        for s in plan.sub_tasks:
            g.add_node(s.key)
        for s in plan.sub_tasks:
            for d in s.depends_on:
                g.add_edge(d, s.key)
        number = {s.key: s.number for s in plan.sub_tasks}
        try:
            self._levels = [sorted(gen, key=number.__getitem__) for gen in nx.topological_generations(g)]
        except nx.NetworkXUnfeasible:  # a cycle: find one to name it
            cycle = nx.find_cycle(g)
            path = " -> ".join([u for u, _v in cycle] + [cycle[0][0]])
            raise PlanError(f"the plan's dependencies form a cycle ({path}); a step can only depend on steps "
                            f"that can finish before it starts") from None
        self._order = list(nx.lexicographical_topological_sort(g, key=number.__getitem__))
        self._number = number
        self._ancestors: dict[str, list[str]] | None = None  # built on first use (validation needs none)
        # plain adjacency, not the networkx graph (its cached views refer back to it: a reference
        # cycle that would keep everything a DAG holds alive until a full garbage collection)
        self._deps = {k: sorted(g.predecessors(k), key=number.__getitem__) for k in g.nodes}
        self._dependents = {k: sorted(g.successors(k), key=number.__getitem__) for k in g.nodes}
        g.clear()

    def order(self) -> list[str]:
        """A topological order that prefers lower step numbers."""
        return list(self._order)

    def levels(self) -> list[list[str]]:
        """Steps grouped so that each group only needs steps of earlier groups (they can run together)."""
        return [list(lvl) for lvl in self._levels]

    def dependencies(self, key: str) -> list[str]:
        return list(self._deps[key])

    def ancestors(self, key: str) -> list[str]:
        if self._ancestors is None:
            # sets of positions in step-number order (sorting ints needs no key function: a chain
            # of n steps sorts n^2/2 of them)
            by_number = sorted(self._number, key=self._number.__getitem__)
            rank = {k: i for i, k in enumerate(by_number)}
            ancestors: dict[str, set[int]] = {}
            for k in self._order:
                acc: set[int] = set()
                for d in self._deps[k]:
                    acc.add(rank[d])
                    acc |= ancestors[d]
                ancestors[k] = acc
            self._ancestors = {k: [by_number[i] for i in sorted(v)] for k, v in ancestors.items()}
        return list(self._ancestors[key])

    def dependents(self, key: str) -> list[str]:
        return list(self._dependents[key])

    def to_json(self, status: dict[str, str] | None = None) -> dict[str, Any]:
        """Nodes and edges with a planning node first and a terminator last (for widgets and the store)."""
        status = status or {}
        levels = {k: i + 1 for i, lvl in enumerate(self.levels()) for k in lvl}
        nodes = [{"id": "planning", "kind": "planning", "label": "plan", "level": 0, "status": status.get("planning")}]
        edges = []
        for s in self.plan.sub_tasks:
            nodes.append({"id": s.key, "kind": "agent", "number": s.number, "agent": s.sub_task_agent,
                          "label": s.sub_task, "level": levels[s.key], "status": status.get(s.key, "pending")})
            if not s.depends_on:
                edges.append({"source": "planning", "target": s.key, "kind": "sequential"})
            for d in s.depends_on:
                edges.append({"source": d, "target": s.key, "kind": "sequential"})
        last = max(levels.values(), default=0) + 1
        nodes.append({"id": "end", "kind": "terminator", "label": "done", "level": last, "status": status.get("end")})
        for k in self._order:
            if not self._dependents[k]:
                edges.append({"source": k, "target": "end", "kind": "sequential"})
        return {"nodes": nodes, "edges": edges, "levels": self.levels()}

    def to_mermaid(self, status: dict[str, str] | None = None) -> str:
        status = status or {}
        lines = ["flowchart TD", '    planning(["plan"])']
        for s in self.plan.sub_tasks:
            label = _mermaid_text(f"{s.number}. {s.sub_task_agent}: {s.sub_task}")
            lines.append(f'    {_mid(s.key)}["{label}"]')
        lines.append('    end_node(["done"])')
        for s in self.plan.sub_tasks:
            for d in s.depends_on or ["planning"]:
                src = "planning" if d == "planning" else _mid(d)
                lines.append(f"    {src} --> {_mid(s.key)}")
        for k in self._order:
            if not self._dependents[k]:
                lines.append(f"    {_mid(k)} --> end_node")
        for k, st in status.items():
            if k in self._number and st in ("completed", "running", "failed"):
                lines.append(f"    class {_mid(k)} {st}")
        if status:
            lines += ["    classDef completed fill:#d4f4dd,stroke:#2e7d32",
                      "    classDef running fill:#fff4c2,stroke:#b08800",
                      "    classDef failed fill:#fde0e0,stroke:#c62828"]
        return "\n".join(lines)


def _mid(key: str) -> str:
    return "s_" + re.sub(r"[^A-Za-z0-9_]", "_", key)


def _mermaid_text(text: str, limit: int = 60) -> str:
    text = " ".join(text.split())
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text.replace('"', "'").replace("<", "‹").replace(">", "›")
