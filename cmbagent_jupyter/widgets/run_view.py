"""What a run shows in a cell: header and controls, approval card, DAG, events, costs."""

from __future__ import annotations

from typing import Any

import ipywidgets
import traitlets

from cmbagent_jupyter import actions
from cmbagent_jupyter.actions import InProcess
from cmbagent_jupyter.core.states import run_controls
from cmbagent_jupyter.core.views import RunHeader
from cmbagent_jupyter.widgets.approval import ApprovalWidget
from cmbagent_jupyter.widgets.base import FeedWidget, bundle_path
from cmbagent_jupyter.widgets.cost import CostWidget
from cmbagent_jupyter.widgets.dag import DagWidget
from cmbagent_jupyter.widgets.event_log import EventLogWidget
from cmbagent_jupyter.widgets.feed import RunFeed

ACTOR = "notebook"


def run_summary(feed: RunFeed) -> dict[str, Any]:
    """The header's `run` trait (the front end's RunHeader type)."""
    run = feed.run
    steps = feed.steps
    return RunHeader(
        id=run.id, task=run.task, status=run.status, mode=run.mode, model=run.model,
        session=run.session_id, steps_total=len(steps),
        steps_done=sum(1 for s in steps if s.status.value in ("completed", "skipped")),
        steps_failed=sum(1 for s in steps if s.status.value == "failed"),
        cost_usd=round(sum(c.cost_usd for c in feed.costs), 6),
        started_at=run.started_at.isoformat() if run.started_at else None,
        completed_at=run.completed_at.isoformat() if run.completed_at else None,
        error=run.error, parent_run_id=run.parent_run_id,
    ).model_dump(mode="json")


class RunHeaderWidget(FeedWidget):
    """The run's task, state, progress and cost, with pause / resume / cancel.

    Each button is an action on the run wherever it executes: pause and cancel are store
    writes its process hears of; resume continues it in this kernel.
    """

    _esm = bundle_path("run_header")
    run = traitlets.Dict().tag(sync=True)
    controls = traitlets.List(traitlets.Unicode()).tag(sync=True)

    _handlers = {"control": "_on_control"}

    def update_from_feed(self, feed: Any, events: list[dict[str, Any]], parts: frozenset[str]) -> None:
        if parts & {"run", "steps", "costs"}:
            summary = run_summary(feed)
            if summary != self.run:
                self.run = summary
            controls = run_controls(feed.run.status)
            if controls != self.controls:
                self.controls = controls

    def control(self, action: str) -> str:
        feed = self.feed
        if action not in self.controls:
            raise ValueError(f"cannot {action} run {feed.run_id}: it is {feed.run.status.value}")
        where = {"session_id": feed.session.session_id}
        if action == "pause":
            actions.pause(feed.store, feed.run_id, actor=ACTOR, **where)
        elif action == "cancel":
            actions.cancel(feed.store, feed.run_id, actor=ACTOR, **where)
        else:
            actions.resume(feed.store, feed.run_id, executor=InProcess(), **where)
        return f"{action} requested for run {feed.run_id}"

    def _on_control(self, msg: dict[str, Any]) -> None:
        self.notify(self.control(str(msg.get("action"))))
        self.feed.refresh({"run"})
        self.update_from_feed(self.feed, [], frozenset({"run"}))


class RunView(ipywidgets.VBox):
    """A run, live: header with controls, approval card, DAG with node detail, and
    tabs with the event log and the cost chart. All parts share one `RunFeed` (one
    store subscription); each part is also a widget of its own (`view.dag`, ...).

    `RunView(run_id)` reads the run from the store in `home` (or CMBAGENT_HOME); a run
    resumed or retried from it continues in this kernel. `handle`: the run handle it
    shows, if any (`display_run`).
    """

    def __init__(self, run_id: str, session_id: str | None = None, home: Any = None, *, store: Any = None,
                 handle: Any = None, live: bool = True, coalesce_s: float = 0.15, **kwargs: Any) -> None:
        self.feed = RunFeed(run_id, session_id, home, store=store, live=False, coalesce_s=coalesce_s)
        self.handle = handle
        self.header = RunHeaderWidget(feed=self.feed)
        self.approvals = ApprovalWidget(feed=self.feed, show_empty=False)
        self.dag = DagWidget(feed=self.feed, executor=InProcess())
        self.events = EventLogWidget(feed=self.feed)
        self.cost = CostWidget(feed=self.feed)
        self.tabs = ipywidgets.Tab(children=[self.events, self.cost], titles=("Events", "Cost"))
        super().__init__(children=[self.header, self.approvals, self.dag, self.tabs], **kwargs)
        self.add_class("cmbagent-run-view")
        if live:
            self.feed.start()

    @property
    def run_id(self) -> str:
        return self.feed.run_id

    def close(self) -> None:
        for child in (self.header, self.approvals, self.dag, self.events, self.cost, self.tabs):
            child.close()
        self.feed.close()
        super().close()
