"""The approval card: a run's pending approval requests with approve / reject / modify."""

from __future__ import annotations

import json
from typing import Any

import traitlets

from cmbagent_jupyter import actions
from cmbagent_jupyter.core import ApprovalRequest, Step
from cmbagent_jupyter.core.views import ApprovalCard
from cmbagent_jupyter.widgets.base import FeedWidget, bundle_path
from cmbagent_jupyter.widgets.details import plan_items

KIND_TITLES = {
    "after_planning": "Approve the plan?",
    "plan": "Approve the plan?",
    "before_each_step": "Run this step?",
    "before_step": "Run this step?",
    "before_code_execution": "Run this code?",
    "on_error": "A step failed: retry, skip or abort?",
    "on_budget": "Budget threshold reached: continue?",
    "retry_feedback": "Retry with feedback",
}
MAX_RESOLVED = 5


def approval_card(a: ApprovalRequest, steps: list[Step]) -> dict[str, Any]:
    """The small, typed form of an approval that the card shows (the front end's ApprovalCard type)."""
    request = a.request or {}
    step = next((s for s in steps if s.id == a.step_id), None)
    plan = request.get("plan") or request.get("final_plan") or request.get("sub_tasks")
    shown = {"plan", "final_plan", "sub_tasks", "summary", "title", "message", "mermaid", "step"}
    rest = {k: v for k, v in request.items() if k not in shown}
    details = "\n".join(f"{k}: {v}" if isinstance(v, str) else f"{k}: {json.dumps(v, default=str)}"
                        for k, v in rest.items())
    summary = str(request.get("summary") or request.get("message") or "")
    items = plan_items(plan)
    if items and ": " in summary:
        summary = summary.split(": ", 1)[0]  # the plan itself is listed on the card
    title = request.get("title") or KIND_TITLES.get(a.kind, a.kind.replace("_", " ").capitalize())
    return ApprovalCard(
        id=a.id, kind=a.kind, title=str(title)[:200], status=a.status, options=list(a.options),
        summary=summary[:2000], plan=items[:100], details=details[:4000],
        step_label=f"step {step.number} ({step.agent}): {step.key}" if step else None,
        created_at=a.created_at.isoformat(), decision=a.decision, feedback=a.feedback, resolved_by=a.resolved_by,
    ).model_dump(mode="json")


ACTOR = "notebook"


class ApprovalWidget(FeedWidget):
    """Pending approvals of a run as cards; a click decides one (`actions.decide`, a store
    write), from this kernel, while the run waits in its own thread or process."""

    _esm = bundle_path("approval")
    approvals = traitlets.List(traitlets.Dict()).tag(sync=True)
    show_empty = traitlets.Bool(True, help="say 'No approvals waiting.' rather than show nothing").tag(sync=True)

    _handlers = {"resolve": "_on_resolve"}

    def update_from_feed(self, feed: Any, events: list[dict[str, Any]], parts: frozenset[str]) -> None:
        if parts & {"approvals", "steps"}:
            pending = [a for a in feed.approvals if a.status.value == "pending"]
            resolved = [a for a in feed.approvals if a.status.value != "pending"][-MAX_RESOLVED:]
            cards = [approval_card(a, feed.steps) for a in pending + resolved]
            if cards != self.approvals:
                self.approvals = cards

    @property
    def pending(self) -> list[dict[str, Any]]:
        return [a for a in self.approvals if a["status"] == "pending"]

    def resolve(self, approval_id: str, decision: str, feedback: str | None = None) -> ApprovalRequest:
        """Resolve an approval as a click would; the card updates from the store."""
        if self.feed is None:
            raise ValueError("this approval card is not following a run")
        feed = self.feed
        result = actions.decide(feed.store, approval_id, decision, feedback=feedback, actor=ACTOR,
                                session_id=feed.session.session_id, run_id=feed.run_id)
        feed.refresh({"approvals", "run"})
        self.update_from_feed(feed, [], frozenset({"approvals"}))
        return result

    def _on_resolve(self, msg: dict[str, Any]) -> None:
        result = self.resolve(str(msg.get("approval_id")), str(msg.get("decision")), msg.get("feedback"))
        self.notify(f"{result.kind.replace('_', ' ')}: {result.status.value}"
                    + (f" with feedback: {result.feedback}" if result.feedback else ""))
