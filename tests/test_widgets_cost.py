"""CostWidget: totals, groups by agent / model / step, and cost over time."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from fixtures.store import planned_run
from fixtures.waiting import wait_for

from cmbagent_jupyter.core import CostRecord
from cmbagent_jupyter.widgets import CostWidget
from cmbagent_jupyter.widgets.cost import timeline


def record(i: int, cost: float, tokens: int = 10, **kw) -> CostRecord:
    at = datetime(2026, 1, 1, tzinfo=timezone.utc) + timedelta(seconds=i)
    return CostRecord(id=f"cst_{i:012x}", session_id="ses_000000000000", model=kw.pop("model", "m"),
                      cost_usd=cost, total_tokens=tokens, at=at, **kw)


def test_costs_are_totalled_and_grouped_by_agent_model_and_step(store, wire):
    ss, run, steps = planned_run(store, 2)
    ss.add_costs([
        {"run_id": run.id, "agent": "planner", "model": "gpt-a", "prompt_tokens": 100, "completion_tokens": 50,
         "cost_usd": 0.01},
        {"run_id": run.id, "step_id": steps[0].id, "agent": "engineer", "model": "gpt-b", "prompt_tokens": 10,
         "completion_tokens": 5, "cost_usd": 0.002},
        {"run_id": run.id, "step_id": steps[0].id, "agent": "engineer", "model": "gpt-b", "prompt_tokens": 10,
         "completion_tokens": 5, "cost_usd": 0.003},
        {"run_id": run.id, "step_id": steps[1].id, "agent": "executor", "model": "gpt-a", "prompt_tokens": 1,
         "completion_tokens": 1, "cost_usd": 0.0, "priced": False},
    ])
    cost = CostWidget(run.id, store=store, live=False)
    wire(cost)
    assert cost.total_usd == 0.015 and cost.total_tokens == 182 and cost.calls == 4
    assert cost.priced is False
    assert [(r["label"], round(r["cost_usd"], 4), r["calls"]) for r in cost.by_agent] == [
        ("planner", 0.01, 1), ("engineer", 0.005, 2), ("executor", 0.0, 1)]
    assert [r["label"] for r in cost.by_model] == ["gpt-a", "gpt-b"]
    assert [r["label"] for r in cost.by_step] == ["planning", "1. engineer", "2. engineer"]
    assert [p[1] for p in cost.timeline] == sorted(p[1] for p in cost.timeline)
    assert cost.timeline[-1][1:] == [0.015, 182]


def test_new_cost_records_update_the_chart_live(store, wire):
    ss, run, steps = planned_run(store, 1)
    cost = CostWidget(run.id, store=store)
    wire(cost)
    assert cost.calls == 0
    ss.add_costs([{"run_id": run.id, "step_id": steps[0].id, "agent": "engineer", "model": "gpt-b",
                   "prompt_tokens": 7, "completion_tokens": 3, "cost_usd": 0.25}])
    wait_for(lambda: cost.calls == 1, what="the new cost record in the chart")
    assert cost.total_usd == 0.25 and cost.by_agent[0]["label"] == "engineer"


def test_the_timeline_is_cumulative_and_bounded():
    records = [record(i, 0.001) for i in range(1000)]
    points = timeline(records, max_points=200)
    assert len(points) == 200
    assert points[0] == [0.0, 0.001, 10]
    assert points[-1] == [999.0, 1.0, 10_000]
    assert all(a[0] <= b[0] and a[1] <= b[1] for a, b in zip(points, points[1:]))


def test_a_chart_can_show_any_records_for_a_dashboard(wire):
    cost = CostWidget()
    wire(cost)
    cost.show([record(1, 0.5, agent="engineer", run_id=None), record(2, 0.25, model="other", agent="researcher")],
              step_label=lambda r: r.model)
    assert cost.total_usd == 0.75 and [r["label"] for r in cost.by_step] == ["m", "other"]
