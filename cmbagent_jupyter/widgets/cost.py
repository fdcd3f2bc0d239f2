"""The cost chart: a run's (or any set of) cost records, totalled and grouped."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import traitlets

from cmbagent_jupyter.core import CostRecord, Step
from cmbagent_jupyter.core.views import CostBar
from cmbagent_jupyter.widgets.base import FeedWidget, bundle_path

MAX_POINTS = 200


def group_costs(records: Iterable[CostRecord], key: Any) -> list[dict[str, Any]]:
    """The records summed by `key`, dearest first, as the chart's bars (the front end's CostBar type)."""
    rows: dict[str, dict[str, Any]] = {}
    for r in records:
        label = key(r)
        row = rows.setdefault(label, {"label": label, "cost_usd": 0.0, "tokens": 0, "calls": 0})
        row["cost_usd"] += r.cost_usd
        row["tokens"] += r.total_tokens
        row["calls"] += 1
    ordered = sorted(rows.values(), key=lambda row: (-row["cost_usd"], -row["tokens"], row["label"]))
    return [CostBar(**row).model_dump() for row in ordered]


def timeline(records: list[CostRecord], max_points: int = MAX_POINTS) -> list[list[float]]:
    """[seconds since the first record, cumulative dollars, cumulative tokens], at most `max_points`."""
    if not records:
        return []
    ordered = sorted(records, key=lambda r: r.at)
    t0 = ordered[0].at
    points, usd, tokens = [], 0.0, 0
    for r in ordered:
        usd += r.cost_usd
        tokens += r.total_tokens
        points.append([round((r.at - t0).total_seconds(), 3), round(usd, 6), tokens])
    if len(points) > max_points:
        stride = len(points) / max_points
        points = [points[int(i * stride)] for i in range(max_points - 1)] + [points[-1]]
    return points


class CostWidget(FeedWidget):
    """Total cost and tokens, bars by agent / model / step, and cost over time.

    Follows a run (`CostWidget("run_...")`) or shows records given to `show()`,
    e.g. a whole session's for a dashboard.
    """

    _esm = bundle_path("cost")
    total_usd = traitlets.Float(0.0).tag(sync=True)
    total_tokens = traitlets.Int(0).tag(sync=True)
    calls = traitlets.Int(0).tag(sync=True)
    priced = traitlets.Bool(True).tag(sync=True)
    by_agent = traitlets.List(traitlets.Dict()).tag(sync=True)
    by_model = traitlets.List(traitlets.Dict()).tag(sync=True)
    by_step = traitlets.List(traitlets.Dict()).tag(sync=True)
    timeline = traitlets.List(traitlets.List()).tag(sync=True)
    group = traitlets.Enum(["agent", "model", "step"], "agent").tag(sync=True)

    def update_from_feed(self, feed: Any, events: list[dict[str, Any]], parts: frozenset[str]) -> None:
        if parts & {"costs", "steps"}:
            self.show(feed.costs, feed.steps)

    def show(self, records: list[CostRecord], steps: list[Step] = (), step_label: Any = None) -> None:
        """Show these records (steps name the by-step bars: "3. engineer")."""
        names = {s.id: f"{s.number}. {s.agent}" for s in steps}

        def by_step(r: CostRecord) -> str:
            if step_label is not None:
                return step_label(r)
            if r.step_id is None:
                return "planning" if r.agent in ("planner", "plan_reviewer", None) else f"({r.agent})"
            return names.get(r.step_id, r.step_id)

        with self.hold_sync():
            self.total_usd = round(sum(r.cost_usd for r in records), 6)
            self.total_tokens = sum(r.total_tokens for r in records)
            self.calls = len(records)
            self.priced = all(r.priced for r in records)
            self.by_agent = group_costs(records, lambda r: r.agent or "unknown")
            self.by_model = group_costs(records, lambda r: r.model)
            self.by_step = group_costs(records, by_step)
            self.timeline = timeline(list(records))
