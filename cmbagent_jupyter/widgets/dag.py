"""The live DAG of a run: plan steps as nodes coloured by state, dependencies as edges."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

import traitlets

from cmbagent_jupyter import actions
from cmbagent_jupyter.actions import Executor
from cmbagent_jupyter.core.graph import END, PLANNING, run_graph
from cmbagent_jupyter.widgets.base import FeedWidget, bundle_path
from cmbagent_jupyter.widgets.details import end_detail, planning_detail, step_detail

NodeClickCallback = Callable[[str], Any]
ACTOR = "notebook"


class DagWidget(FeedWidget):
    """A run's plan graph, live, with a detail view per node (output, attempts, code,
    figures, cost) and a feedback box on failed steps.

    `DagWidget("run_...")` follows a run from the store. Without a run it draws
    whatever `graph` is set to ({"nodes": [{id, label, status}], "edges": [{source,
    target}]}). A click in the browser arrives as {"type": "node_click", "id": ...}:
    the node becomes `selected` and its detail is sent as {"type": "detail", ...}.

    Feedback on a failed step retries it (`actions.retry_step`); `executor` is how the run
    then continues (`RunView` continues it in this kernel; none: it waits for a resume).
    """

    _esm = bundle_path("dag")
    graph = traitlets.Dict().tag(sync=True)
    selected = traitlets.Unicode("").tag(sync=True)
    height = traitlets.Int(460).tag(sync=True)

    _handlers = {"node_click": "_on_node_click", "retry": "_on_retry"}

    def __init__(self, run_id: str | None = None, *, executor: Executor | None = None, **kwargs: Any) -> None:
        self._node_click_callbacks: list[NodeClickCallback] = []
        self._detail_key: str | None = None
        self.executor = executor
        super().__init__(run_id, **kwargs)

    # -- state from the feed ------------------------------------------------------

    def update_from_feed(self, feed: Any, events: list[dict[str, Any]], parts: frozenset[str]) -> None:
        if parts & {"run", "steps", "approvals"}:
            graph = run_graph(feed.run, feed.steps, feed.approvals).model_dump(mode="json", exclude_none=True)
            if graph != self.graph:
                self.graph = graph
        if self.selected and parts & {"run", "steps", "approvals", "costs", "files"}:
            self.send_detail(only_if_changed=True)

    # -- selection and detail ---------------------------------------------------------

    def on_node_click(self, callback: NodeClickCallback, remove: bool = False) -> None:
        """Call `callback(node_id)` whenever a node is clicked (`remove=True` stops it)."""
        if remove:
            self._node_click_callbacks.remove(callback)
        else:
            self._node_click_callbacks.append(callback)

    def select(self, ref: str | int) -> str:
        """Select a node by id, step key or step number (as a click would); returns its id."""
        node_id = self.node_id(ref)
        if node_id == self.selected:
            self.send_detail()
        else:
            self.selected = node_id
        return node_id

    def node_id(self, ref: str | int) -> str:
        ids = [n["id"] for n in self.graph.get("nodes", [])]
        if isinstance(ref, str) and (ref in ids or not self.feed):
            return ref
        for s in self.feed.steps if self.feed else []:
            if ref in (s.key, s.number, str(s.number)):
                return s.id
        raise KeyError(f"no node {ref!r} in this DAG; nodes are {', '.join(ids) or 'none yet'}")

    @traitlets.observe("selected")
    def _selected_changed(self, change: dict[str, Any]) -> None:
        self._detail_key = None
        if change["new"]:
            self.send_detail()

    def detail(self, node_id: str | None = None) -> dict[str, Any] | None:
        """The detail of a node (the selected one by default), as the browser gets it."""
        node_id = node_id or self.selected
        feed = self.feed
        if not node_id or feed is None:
            return None
        graph = {n["id"]: n for n in self.graph.get("nodes", [])}
        status = graph.get(node_id, {}).get("status") or "pending"
        if node_id == PLANNING:
            return planning_detail(feed.run, feed.steps, feed.costs, status)
        if node_id == END:
            return end_detail(feed.run, feed.steps, feed.costs, status)
        step = feed.step_by_id(node_id)
        if step is None:
            return None
        attempts = [a.model_dump(mode="json") for a in feed.session.list_attempts(step_id=step.id)]
        detail = step_detail(step, feed.run, attempts, feed.costs)
        detail["status"] = status
        # a step the run is waiting on after it failed (an on_error gate) takes feedback too
        if any(a.step_id == step.id and "retry" in a.options for a in feed.pending_approvals()):
            detail["can_retry"] = True
        return detail

    def send_detail(self, *, only_if_changed: bool = False) -> None:
        detail = self.detail()
        if detail is None and not self.feed:
            return
        key = hashlib.sha1(json.dumps(detail, sort_keys=True, default=str).encode()).hexdigest()
        if only_if_changed and key == self._detail_key:
            return
        self._detail_key = key
        self.send({"type": "detail", "id": self.selected, "detail": detail})

    # -- messages from the browser ------------------------------------------------------

    def _on_node_click(self, msg: dict[str, Any]) -> None:
        node_id = str(msg.get("id"))
        if self.feed is not None:
            self.select(node_id)
        else:
            self.selected = node_id
        for callback in list(self._node_click_callbacks):
            callback(node_id)

    def retry(self, step_id: str, feedback: str) -> str:
        """Retry a failed step with feedback, as the detail's feedback box does; says what happened."""
        feed = self.feed
        if feed is None:
            raise ValueError("this DAG is not following a run")
        out = actions.retry_step(feed.store, feed.run_id, step_id, feedback, actor=ACTOR,
                                 session_id=feed.session.session_id, executor=self.executor)
        feed.refresh({"steps", "approvals", "run"})
        number = out.step.number
        if out.answered_gate:
            return f"step {number} will be retried with your feedback"
        if out.execution is None:
            return f"feedback saved for step {number}; it is pending again: resume run {feed.run_id} to retry it"
        return f"step {number} will be retried with your feedback (run {feed.run_id} resumed)"

    def _on_retry(self, msg: dict[str, Any]) -> None:
        feedback = str(msg.get("feedback") or "").strip()
        if not feedback:
            raise ValueError("write some feedback for the next attempt first")
        self.notify(self.retry(str(msg.get("step_id") or ""), feedback))
