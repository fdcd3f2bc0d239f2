"""Approval gates: a durable request in the store, resolved by id from any process.

A run that waits holds no thread busy: it blocks on the store's event push (or, in
async code, awaits it), so it uses no CPU, and a resumed run finds its open request
again instead of asking twice.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

from cmbagent_jupyter.core import ApprovalRequest, ApprovalStatus, Conflict
from cmbagent_jupyter.core.states import APPROVAL_DECISIONS
from cmbagent_jupyter.store.port import SessionPort




class ApprovalMode(str, Enum):
    none = "none"
    after_planning = "after_planning"
    before_each_step = "before_each_step"
    before_code_execution = "before_code_execution"
    on_error = "on_error"
    on_budget = "on_budget"
    custom = "custom"


class ApprovalPolicy:
    """Which gates a run opens, from its config: `approval_mode`, `approval_steps`
    (custom gates by step key or number), `budget_threshold_usd`, timeout and default."""

    def __init__(self, config: dict[str, Any]):
        modes = config.get("approval_mode") or "none"
        if isinstance(modes, str):
            modes = [m.strip() for m in modes.split(",") if m.strip()]
        try:
            self.modes = {ApprovalMode(m) for m in modes}
        except ValueError as exc:
            raise ValueError(f"unknown approval mode in {modes}; expected some of "
                             f"{', '.join(m.value for m in ApprovalMode)}") from exc
        self.steps = {str(s) for s in config.get("approval_steps") or []}
        if self.steps:
            self.modes.add(ApprovalMode.custom)
        self.budget_threshold = config.get("budget_threshold_usd")
        self.timeout_s = config.get("approval_timeout_s")
        self.default_action = config.get("approval_default_action")
        if self.default_action is not None and self.default_action not in APPROVAL_DECISIONS:
            raise ValueError(f"approval_default_action must be one of {', '.join(APPROVAL_DECISIONS)}, "
                             f"not {self.default_action!r}")

    def wants(self, mode: ApprovalMode) -> bool:
        return mode in self.modes

    def gate_before_step(self, key: str, number: int) -> bool:
        if ApprovalMode.before_each_step in self.modes:
            return True
        return ApprovalMode.custom in self.modes and (key in self.steps or str(number) in self.steps)


class ApprovalGate:
    def __init__(self, store: SessionPort, run_id: str):
        self.store = store
        self.run_id = run_id

    def find_open(self, kind: str, step_id: str | None = None) -> ApprovalRequest | None:
        """The latest request of this kind for this step, if any: a resumed run reuses it."""
        for approval in reversed(self.store.list_approvals(self.run_id, pending_only=False)):
            if approval.kind == kind and approval.step_id == step_id:
                return approval
        return None

    def request(self, kind: str, request: dict[str, Any], *, step_id: str | None = None,
                options: list[str] | None = None, timeout_s: float | None = None,
                default_action: str | None = None, reuse: bool = True) -> ApprovalRequest:
        if reuse:
            existing = self.find_open(kind, step_id)
            if existing is not None and existing.status == ApprovalStatus.pending:
                return existing
        return self.store.create_approval(self.run_id, kind, request=request, step_id=step_id, options=options,
                                          timeout_s=timeout_s, default_action=default_action)

    def get(self, approval_id: str) -> ApprovalRequest:
        return self.store.get_approval(approval_id)

    def expire(self, approval: ApprovalRequest) -> ApprovalRequest:
        """Apply the request's default action (or its most cautious option) once its time is up."""
        action = approval.default_action or next(
            (o for o in ("reject", "abort") if o in approval.options), approval.options[-1])

        try:
            return self.store.resolve_approval(approval.id, action, feedback=f"timed out; default action {action}",
                                               actor="timeout", expired=True, allow_empty_feedback=True)
        except Conflict:
            return self.get(approval.id)

