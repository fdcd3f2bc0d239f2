"""Execution control: approvals, step attempts, replays from a node and branches."""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any

from cmbagent_jupyter.core import (
    ApprovalRequest,
    ApprovalStatus,
    Branch,
    EventType,
    Run,
    RunStatus,
    Step,
    StepAttempt,
    StepStatus,
    new_id,
    utcnow,
)
from cmbagent_jupyter.core.errors import Conflict, Invalid, NotFound
from cmbagent_jupyter.core.states import (
    APPROVAL_DECISIONS,
    DECISIONS_NEEDING_FEEDBACK,
    DEFAULT_APPROVAL_OPTIONS,
    approval_status_of,
)
from cmbagent_jupyter.store.memory.state import State, as_json, check
from cmbagent_jupyter.store.port import BranchCreated, ReplayReset, StartedAttempt

MAX_FEEDBACK = 100_000
MAX_TEXT = 200_000


def descendants(steps: list[Step], key: str) -> set[str]:
    """The step `key` and every step that depends on it, directly or not (by key)."""
    if key not in {s.key for s in steps}:
        raise NotFound(f"no step {key!r} in this run")
    found, todo = {key}, [key]
    while todo:
        current = todo.pop()
        for s in steps:
            if current in s.depends_on and s.key not in found:
                found.add(s.key)
                todo.append(s.key)
    return found


def _clip(text: Any) -> str | None:
    if text is None:
        return None
    text = str(text)
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT // 2] + "\n...[clipped]...\n" + text[-MAX_TEXT // 2:]


def _plan_description(run: Run, key: str) -> str | None:
    """A step's words in the run's plan (sub-task and bullet points), before any change."""
    for s in (run.config.get("final_plan") or {}).get("sub_tasks", []):
        if s.get("key") == key:
            return str(s.get("sub_task") or "") + "".join(f"\n- {b}" for b in s.get("bullet_points") or [])
    return None


class ControlOps:
    """Decisions and changes of course, any of which may come from another process."""

    _st: State
    session_id: str

    # -- approvals --------------------------------------------------------------------

    def create_approval(self, run_id: str, kind: str, *, request: dict[str, Any] | None = None,
                        step_id: str | None = None, options: list[str] | None = None,
                        timeout_s: float | None = None, default_action: str | None = None,
                        actor: str | None = None) -> ApprovalRequest:
        with self._st.write() as tx:
            sid = self.session_id
            run = self._st.run(sid, run_id)
            if step_id is not None:
                self._st.step(sid, step_id)
            if kind is None:
                raise Invalid("an approval needs its kind")
            options = list(options or DEFAULT_APPROVAL_OPTIONS)
            bad = [o for o in options if o not in APPROVAL_DECISIONS]
            if bad:
                raise Invalid(f"unknown approval option(s) {bad}; expected some of {', '.join(APPROVAL_DECISIONS)}")
            if default_action is not None and default_action not in options:
                raise Invalid(f"default_action {default_action!r} must be one of the options {options}")
            now = utcnow()
            approval = ApprovalRequest(
                id=new_id("approval"), session_id=sid, run_id=run.id, step_id=step_id, kind=str(kind),
                request=as_json(request or {}), options=options, created_at=now, default_action=default_action,
                timeout_at=now + timedelta(seconds=float(timeout_s)) if timeout_s else None)
            tx.put(self._st.approvals, approval.id, approval)
            if run.status in (RunStatus.executing, RunStatus.planning):
                tx.put(self._st.runs, run.id, run.model_copy(update={"status": RunStatus.waiting_approval}))
                tx.history(sid, "run", run.id, run.status.value, RunStatus.waiting_approval.value,
                           f"approval {approval.id} ({kind})", actor)
                tx.emit(sid, run.id, EventType.workflow_state_changed,
                        {"from": run.status.value, "to": RunStatus.waiting_approval.value,
                         "reason": f"approval {kind}"})
            tx.emit(sid, run.id, EventType.approval_requested, {
                "approval_id": approval.id, "kind": approval.kind, "step_id": step_id, "options": options,
                "request": approval.request,
                "timeout_at": approval.timeout_at.isoformat() if approval.timeout_at else None,
                "resume_status": run.status.value})
            return approval.model_copy(deep=True)

    def _approval(self, approval_id: str) -> ApprovalRequest:
        found = self._st.approvals.get(check("approval", approval_id))
        if found is None or found.session_id != self.session_id:
            raise NotFound(f"approval {approval_id} does not exist in session {self.session_id}")
        return found

    def resolve_approval(self, approval_id: str, decision: str, *, feedback: str | None = None,
                         actor: str | None = None, expired: bool = False,
                         allow_empty_feedback: bool = False) -> ApprovalRequest:
        with self._st.write() as tx:
            a = self._approval(approval_id)
            if decision not in a.options:
                raise Invalid(f"decision {decision!r} is not an option of approval {a.id}; choose one of {a.options}")
            if a.status != ApprovalStatus.pending:
                raise Conflict(f"approval {a.id} was already resolved ({a.status.value} by "
                               f"{a.resolved_by or 'unknown'})")
            if decision in DECISIONS_NEEDING_FEEDBACK and not (feedback or "").strip() and not allow_empty_feedback:
                raise Invalid(f"{decision} needs feedback that says what to change")
            if feedback is not None and len(str(feedback)) > MAX_FEEDBACK:
                raise Invalid(f"feedback is longer than {MAX_FEEDBACK} characters")
            status = ApprovalStatus.expired if expired else approval_status_of(decision)
            by = str(actor or "user")[:200]
            out = tx.put(self._st.approvals, a.id, a.model_copy(update={
                "status": status, "decision": decision, "feedback": feedback, "resolved_by": by,
                "resolved_at": utcnow()}))
            tx.emit(self.session_id, a.run_id, EventType.approval_received, {
                "approval_id": a.id, "decision": decision, "status": status.value, "feedback": feedback,
                "resolved_by": by, "kind": a.kind, "step_id": a.step_id})
            return out.model_copy(deep=True)

    def get_approval(self, approval_id: str) -> ApprovalRequest:
        with self._st.read():
            return self._approval(approval_id).model_copy(deep=True)

    def list_approvals(self, run_id: str | None = None, *, pending_only: bool = True) -> list[ApprovalRequest]:
        with self._st.read():
            if run_id is not None:
                check("run", run_id)
            if not self._st.live(self.session_id):
                return []
            found = [a for a in self._st.approvals.values() if a.session_id == self.session_id
                     and (run_id is None or a.run_id == run_id)
                     and (not pending_only or a.status == ApprovalStatus.pending)]
            return [a.model_copy(deep=True) for a in sorted(found, key=lambda a: a.created_at)]

    # -- attempts ------------------------------------------------------------------------

    def start_attempt(self, step_id: str, feedback: str | None = None) -> StartedAttempt:
        with self._st.write() as tx:
            step = self._st.step(self.session_id, step_id)
            n = max((a.attempt for a in self._st.attempts.values() if a.step_id == step.id), default=0) + 1
            attempt = StepAttempt(id=new_id("attempt"), session_id=self.session_id, run_id=step.run_id,
                                  step_id=step.id, attempt=n, status=StepStatus.running, feedback=feedback,
                                  started_at=utcnow())
            tx.put(self._st.attempts, attempt.id, attempt)
            if n > 1:
                tx.emit(self.session_id, step.run_id, EventType.retry_started,
                        {"step_id": step.id, "attempt": n, "feedback": feedback})
            return StartedAttempt(id=attempt.id, attempt=n, started_at=attempt.started_at)

    def finish_attempt(self, attempt_id: str, status: str, *, error_type: str | None = None,
                       error: str | None = None, traceback: str | None = None, output: str | None = None,
                       cost_usd: float = 0.0) -> StepAttempt:
        with self._st.write() as tx:
            found = self._st.attempts.get(check("attempt", attempt_id))
            if found is None or found.session_id != self.session_id:
                raise NotFound(f"attempt {attempt_id} does not exist in session {self.session_id}")
            status = str(status or StepStatus.completed.value)
            if status not in (StepStatus.completed.value, StepStatus.failed.value, StepStatus.cancelled.value):
                raise Invalid(f"an attempt ends completed, failed or cancelled, not {status!r}")
            out = tx.put(self._st.attempts, found.id, found.model_copy(update={
                "status": StepStatus(status), "error_type": error_type, "error": _clip(error),
                "traceback": _clip(traceback), "output": _clip(output), "cost_usd": float(cost_usd or 0.0),
                "ended_at": utcnow()}))
            if status == StepStatus.completed.value and found.attempt > 1:
                tx.emit(self.session_id, found.run_id, EventType.retry_succeeded,
                        {"step_id": found.step_id, "attempt": found.attempt})
            return out.model_copy()

    def list_attempts(self, *, step_id: str | None = None, run_id: str | None = None) -> list[StepAttempt]:
        with self._st.read():
            if step_id:
                check("step", step_id)
            elif run_id:
                check("run", run_id)
            else:
                raise Invalid("list_attempts needs step_id or run_id")
            found = [a for a in self._st.attempts.values() if a.session_id == self.session_id
                     and (a.step_id == step_id if step_id else a.run_id == run_id)]
            return [a.model_copy() for a in sorted(found, key=lambda a: (a.started_at, a.attempt))]

    # -- replays and branches ---------------------------------------------------------------

    def reset_from(self, step_id: str, *, instructions: str | None = None, description: str | None = None,
                   actor: str | None = None) -> ReplayReset:
        with self._st.write() as tx:
            sid = self.session_id
            step = self._st.step(sid, step_id)
            run = self._st.run(sid, step.run_id)
            if run.status in (RunStatus.executing, RunStatus.planning, RunStatus.waiting_approval, RunStatus.draft):
                raise Conflict(f"run {run.id} is {run.status.value}; pause it before replaying a step")
            if run.status == RunStatus.cancelled:
                raise Conflict(f"run {run.id} is cancelled; branch it instead (cmbagent branch)")
            if instructions:
                base = _plan_description(run, step.key) or step.description
                description = f"{base}\n\nChanged instructions (follow these):\n{str(instructions).strip()}"
            steps = self._st.steps_of(run.id)
            reset = descendants(steps, step.key)
            why = f"replay from {step.key}"
            if run.status == RunStatus.completed:
                tx.put(self._st.runs, run.id, run.model_copy(update={"status": RunStatus.paused,
                                                                     "completed_at": None}))
                tx.history(sid, "run", run.id, run.status.value, RunStatus.paused.value, why, actor)
                tx.emit(sid, run.id, EventType.workflow_state_changed,
                        {"from": run.status.value, "to": RunStatus.paused.value, "reason": why})
            for s in steps:
                if s.key not in reset:
                    continue
                changes: dict[str, Any] = {"status": StepStatus.pending, "outputs": {}, "error": None,
                                           "progress": 0.0, "completed_at": None}
                if s.id == step.id and description is not None:
                    changes["description"] = str(description)
                tx.put(self._st.steps, s.id, s.model_copy(update=changes))
                if s.status != StepStatus.pending:
                    tx.history(sid, "step", s.id, s.status.value, StepStatus.pending.value, why, actor)
                tx.emit(sid, run.id, EventType.dag_node_status_changed,
                        {"step_id": s.id, "key": s.key, "from": s.status.value, "to": StepStatus.pending.value})
            return ReplayReset(run_id=run.id, reset=sorted(reset), description=description)

    def create_branch(self, run_id: str, from_step: int, *, name: str | None = None,
                      instructions: str | None = None, hypothesis: str | None = None,
                      actor: str | None = None) -> BranchCreated:
        with self._st.write() as tx:
            sid = self.session_id
            parent = self._st.run(sid, run_id)
            try:
                from_step = int(from_step)
            except (TypeError, ValueError):
                raise Invalid("from_step must be a step number") from None
            steps = self._st.steps_of(parent.id)
            numbers = [s.number for s in steps]
            if from_step not in numbers:
                raise Invalid(f"run {parent.id} has no step {from_step}; its steps are {numbers}")
            fork = next(s for s in steps if s.number == from_step)
            redo = descendants(steps, fork.key)
            missing = [s.number for s in steps if s.key not in redo and s.status != StepStatus.completed]
            name = str(name or f"branch of {parent.id} at step {from_step}")[:200]
            config = {**parent.config, "branch": {"parent_run_id": parent.id, "from_step": from_step, "name": name,
                                                  "instructions": instructions, "hypothesis": hypothesis}}
            child = self._create_run(tx, parent.task, mode=parent.mode.value, model=parent.model, config=config,
                                     parent_run_id=parent.id, branch_from_step=from_step, run_id=None, actor=actor,
                                     checkpoint_interval_s=parent.checkpoint_interval_s)
            now = utcnow()
            for s in steps:
                kept = s.key not in redo and s.status == StepStatus.completed
                description = s.description
                if s.key == fork.key and instructions:
                    description = f"{description}\n\nChanged instructions for this branch:\n{instructions}"
                copy = Step(id=new_id("step"), session_id=sid, run_id=child.id, number=s.number, key=s.key,
                            agent=s.agent, status=StepStatus.completed if kept else StepStatus.pending,
                            description=description, depends_on=list(s.depends_on), progress=1.0 if kept else 0.0,
                            inputs=as_json(s.inputs), outputs=as_json(s.outputs) if kept else {},
                            started_at=now if kept else None, completed_at=now if kept else None)
                tx.put(self._st.steps, copy.id, copy)
            # ready to execute, resumable like a paused run, with the parent's files for the kept steps
            child = tx.put(self._st.runs, child.id, child.model_copy(update={"status": RunStatus.paused}))
            tx.history(sid, "run", child.id, RunStatus.draft.value, RunStatus.paused.value,
                       f"branch of {parent.id} at step {from_step}, ready to run", actor)
            self._copy_outputs(Path(parent.path), Path(child.path))
            branch = Branch(id=new_id("branch"), session_id=sid, parent_run_id=parent.id, parent_step=from_step,
                            child_run_id=child.id, name=name, hypothesis=hypothesis, created_at=now)
            tx.put(self._st.branches, branch.id, branch)
            tx.emit(sid, child.id, EventType.dag_created, {"branch_of": parent.id, "from_step": from_step})
            return BranchCreated(branch_id=branch.id, run=child.model_copy(deep=True),
                                 kept_steps=sorted(s.number for s in steps if s.key not in redo),
                                 incomplete_before_fork=missing)

    @staticmethod
    def _copy_outputs(parent: Path, child: Path) -> None:
        """The parent's control folder (code, data, figures) without its chats, into the branch."""
        if (parent / "control").is_dir():
            shutil.copytree(parent / "control", child / "control", dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("chats"))

    def list_branches(self, run_id: str | None = None) -> list[Branch]:
        with self._st.read():
            if run_id is not None:
                check("run", run_id)
            found = [b for b in self._st.branches.values() if b.session_id == self.session_id
                     and (run_id is None or run_id in (b.parent_run_id, b.child_run_id))]
            return [b.model_copy() for b in sorted(found, key=lambda b: b.created_at)]
