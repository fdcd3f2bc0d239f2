"""Approval gates inside a run: where the engine stops for a human decision.

The run's `approval_mode` (engine/approvals.py's `ApprovalPolicy`) says where: after
planning, before each step (or the steps in `approval_steps`), before code runs, on
a step's error, or once spending passes `budget_threshold_usd`. A gate is a durable
request in the store (the run shows `waiting_approval`); any process decides it
(widget, CLI, magics, MCP), and the run hears of it through the store's event push.
Waiting holds no thread; stopping the run (cancel, interrupt) cancels the wait. A
resumed run finds its still-open request again, and a step that was already approved
is not asked about twice.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from cmbagent_jupyter.engine.approvals import ApprovalGate, ApprovalMode, ApprovalPolicy
from cmbagent_jupyter.engine.ledger import StepLedger
from cmbagent_jupyter.engine.scheduler import StepFailed
from cmbagent_jupyter.core import ApprovalRequest, ApprovalStatus, InvalidInput, RunStatus, Step, utcnow
from cmbagent_jupyter.core.errors import Invalid
from cmbagent_jupyter.store.port import SessionPort
from cmbagent_jupyter.core.threads import in_thread

log = logging.getLogger("cmbagent.engine")

POLL_S = 15.0


def policy_of(config: dict[str, Any]) -> ApprovalPolicy:
    try:
        return ApprovalPolicy(config)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None


class RunGates:
    def __init__(self, store: SessionPort, run_id: str, policy: ApprovalPolicy):
        self.store = store
        self.run_id = run_id
        self.policy = policy
        self.gate = ApprovalGate(store, run_id)
        self.budget_approved = False

    def wants(self, mode: ApprovalMode) -> bool:
        return self.policy.wants(mode)

    async def ask(self, kind: ApprovalMode, request: dict[str, Any], *, step_id: str | None = None,
                  options: list[str] | None = None, back_to: RunStatus | None = RunStatus.executing,
                  reuse_decided: bool = False) -> ApprovalRequest:
        """Open (or find again) a request, wait for its decision, and move the run back to `back_to`."""
        decided = await in_thread(self._decided, kind.value, step_id) if reuse_decided else None
        if decided is not None:
            return decided
        approval = await in_thread(
            self.gate.request, kind.value, request, step_id=step_id, options=options,
            timeout_s=self.policy.timeout_s, default_action=default_for(self.policy.default_action, options))
        await in_thread(self._mark_waiting, kind.value)
        decision = await self._wait(approval)
        if back_to is not None:
            await in_thread(self._leave_waiting, back_to, decision)
        return decision

    async def before_step(self, step: Step) -> str | None:
        """The gates before a step: its own approval, and the budget. Returns the user's guidance, if any."""
        feedback = None
        if self.policy.gate_before_step(step.key, step.number):
            decision = await self.ask(
                ApprovalMode.before_each_step, {"title": f"Start step {step.number} ({step.agent})?",
                                                "summary": step.description, "step": step.key},
                step_id=step.id, options=["approve", "reject", "modify", "abort"], reuse_decided=True)
            guidance = feedback_of(decision)
            if decision.decision == "abort" or (decision.decision == "reject" and (
                    decision.status.value == "expired" or not guidance)):
                raise StepFailed(f"step {step.number} ({step.key}) was rejected"
                                 f"{': ' + guidance if guidance else ''}")
            # a rejection with feedback redoes the step's plan with it, as a modification does
            feedback = guidance if decision.decision in ("modify", "reject") else None
        threshold = self.policy.budget_threshold
        if threshold is not None and not self.budget_approved:
            rows = await self.store.aio.cost_summary(run_id=self.run_id, group_by=["run_id"])
            spent = sum(r.cost_usd for r in rows)
            if spent >= float(threshold):
                decision = await self.ask(
                    ApprovalMode.on_budget, {"title": "Spending passed the budget threshold",
                                             "summary": f"${spent:.4f} spent; threshold ${float(threshold):.4f}"},
                    options=["approve", "abort"], reuse_decided=True)
                if decision.decision != "approve":
                    raise StepFailed(f"stopped at the budget threshold (${spent:.4f} of ${float(threshold):.4f})")
                self.budget_approved = True
        return feedback

    def _decided(self, kind: str, step_id: str | None) -> ApprovalRequest | None:
        found = self.gate.find_open(kind, step_id)
        if found is not None and found.status in (ApprovalStatus.approved, ApprovalStatus.modified):
            return found
        return None

    def _mark_waiting(self, kind: str) -> None:
        """A request found again after a resume did not move the run; do it here."""
        run = self.store.get_run(self.run_id)
        if run.status in (RunStatus.executing, RunStatus.planning):
            try:
                self.store.transition_run(self.run_id, RunStatus.waiting_approval.value,
                                          reason=f"waiting for the {kind} approval", actor="engine")
            except Invalid:
                pass

    async def _wait(self, approval: ApprovalRequest) -> ApprovalRequest:
        loop = asyncio.get_running_loop()
        woken = asyncio.Event()
        sub = self.store.subscribe(run_id=self.run_id, types=["approval.received"],
                                   callback=lambda _ev: loop.call_soon_threadsafe(woken.set))
        try:
            while True:
                current = await in_thread(self.gate.get, approval.id)
                if current.status != ApprovalStatus.pending:
                    return current
                wait_s = POLL_S
                if current.timeout_at is not None:
                    left = (current.timeout_at - utcnow()).total_seconds()
                    if left <= 0:
                        return await in_thread(self.gate.expire, current)
                    wait_s = min(wait_s, left)
                try:
                    await asyncio.wait_for(woken.wait(), timeout=wait_s)
                except asyncio.TimeoutError:
                    pass
                woken.clear()
        finally:
            sub.close()

    def _leave_waiting(self, to: RunStatus, decision: ApprovalRequest) -> None:
        try:
            self.store.transition_run(self.run_id, to.value, reason=f"approval {decision.id}: {decision.decision}",
                                      actor=decision.resolved_by or "user")
        except Invalid as exc:
            # another gate of this run is still open (the guard says so), or the run moved on
            log.info("run %s stays as it is after approval %s: %s", self.run_id, decision.id, exc)


class JournaledGates(RunGates):
    """Gates that first bring the store up to date with the step journal: whoever sees the
    run wait for a decision also sees every step that finished before it."""

    ledger: StepLedger | None = None

    async def ask(self, *args: Any, **kwargs: Any) -> Any:
        if self.ledger is not None:
            await self.ledger.drain(raise_errors=False)
        return await super().ask(*args, **kwargs)


DEFAULT_OPTIONS = ["approve", "reject", "modify"]
_EQUIVALENT = {"approve": ("approve", "retry"), "reject": ("reject", "abort"), "abort": ("abort", "reject"),
               "retry": ("retry", "approve"), "skip": ("skip", "approve")}


def default_for(action: str | None, options: list[str] | None) -> str | None:
    """The run's `approval_default_action` as one of this gate's options: `approve` on an error
    gate means retry, `reject` on a budget gate means abort."""
    if action is None:
        return None
    offered = options or DEFAULT_OPTIONS
    for candidate in _EQUIVALENT.get(action, (action,)):
        if candidate in offered:
            return candidate
    return None


def feedback_of(decision: ApprovalRequest) -> str | None:
    text = (decision.feedback or "").strip()
    return text or None
