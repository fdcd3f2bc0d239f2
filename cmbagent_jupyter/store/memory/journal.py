"""The engine's calls: a plan stored with the run's start, the claim, the step journal, the settle.

A run's journal records are applied in `seq` order, each once: a record whose seq the
run has already is skipped, one that would leave a hole is refused, and a completed
step is never recorded twice (a replay after a crash applies what the journal proves
and never moves a completed step back).
"""

from __future__ import annotations

from typing import Any, Sequence

from pydantic import ValidationError

from cmbagent_jupyter.core import (
    RUNNING_RUN_STATES,
    CheckpointKind,
    Checkpoint,
    EventType,
    JournalRecord,
    RunMode,
    RunStatus,
    Step,
    StepStatus,
)
from cmbagent_jupyter.core.errors import Conflict, Invalid
from cmbagent_jupyter.core.states import IllegalTransition, check_step_transition
from cmbagent_jupyter.store.memory.runs import KEEP, step_payload
from cmbagent_jupyter.store.memory.state import State, Tx, as_json, check, utc
from cmbagent_jupyter.store.port import (
    Claimed,
    JournalApplied,
    NewCheckpoint,
    PlanStep,
    PlanStored,
    Settled,
)

_STEP_EVENT = {StepStatus.completed: EventType.step_completed, StepStatus.failed: EventType.step_failed,
               StepStatus.running: EventType.step_started}


def _records(records: Any) -> list[JournalRecord]:
    if not isinstance(records, (list, tuple)):
        raise Invalid("records must be a list of journal records")
    out = []
    for r in records:
        try:
            out.append(r if isinstance(r, JournalRecord) else JournalRecord.model_validate(r))
        except ValidationError as exc:
            first = exc.errors()[0]
            raise Invalid(f"journal record: {'.'.join(map(str, first['loc']))}: {first['msg']}") from None
    return out


def _same_owner(owner_now: int | None, owner: int | None) -> bool:
    return owner is None or owner_now is None or int(owner_now) == int(owner)


class JournalOps:
    """plan_ready, claim, advance and settle."""

    _st: State
    session_id: str

    def plan_ready(self, run_id: str, steps: Sequence[PlanStep | dict[str, Any]], *,
                   config: dict[str, Any] | None = None, dag: dict[str, Any] | None = None,
                   mermaid: str | None = None, start: bool = True, return_steps: bool = True,
                   owner_pid: int | None = None, reason: str | None = None, actor: str | None = None,
                   checkpoint: NewCheckpoint | None = None) -> PlanStored:
        with self._st.write() as tx:
            run = self._st.run(self.session_id, run_id)
            if run.status not in (RunStatus.draft, RunStatus.planning, RunStatus.waiting_approval):
                raise Conflict(f"run {run.id} is {run.status.value}; a plan is stored while it is draft or planning")
            if not start and run.status != RunStatus.draft:
                raise Conflict(f"run {run.id} is {run.status.value}; a plan is stored without starting only on a "
                               f"draft run")
            if not isinstance(steps, (list, tuple)):
                raise Invalid("steps must be a list")
            plan = [self._plan_step(s, i) for i, s in enumerate(steps, start=1)]
            if not return_steps and not all(p.id for p in plan):
                raise Invalid("return_steps=false needs an id for every step")
            added, kept = self._put_steps(tx, run, plan)
            merged = {**run.config, **as_json(config or {})}
            merged.pop("step_ids", None)
            if not return_steps and not kept:
                # every step is new, with the id its caller chose: a claim of the draft need not send them back
                merged["step_ids"] = {s.key: s.id for s in added}
            run = tx.put(self._st.runs, run.id, run.model_copy(update={"config": merged}))
            tx.put(self._st.dags, run.id, as_json(dag or {}))
            tx.emit(self.session_id, run.id, EventType.dag_created, {"dag": as_json(dag or {}), "mermaid": mermaid})
            if checkpoint is not None:
                self._put_checkpoint(tx, run, kind=checkpoint.kind, context=checkpoint.context,
                                     pickle_path=checkpoint.pickle_path, checkpoint_id=checkpoint.id)
            if start:
                run = self._move_run(tx, run, RunStatus.executing, reason=reason or "plan ready", actor=actor,
                                     owner_pid=owner_pid, expected_from=[RunStatus.draft.value,
                                                                        RunStatus.planning.value,
                                                                        RunStatus.waiting_approval.value])
            if not return_steps:
                return PlanStored(run=run.model_copy(deep=True), stored=len(added), kept=kept)
            return PlanStored(run=run.model_copy(deep=True),
                              steps=[s.model_copy(deep=True) for s in self._st.steps_of(run.id)])

    def claim(self, run_id: str, *, to: str = "auto", owner_pid: int | None = None,
              allowed_from: list[str] | None = None, stale_owner_pid: int | None = None, reason: str | None = None,
              actor: str | None = None, with_session: bool = False, return_steps: bool = True) -> Claimed:
        with self._st.write() as tx:
            run = self._st.run(self.session_id, run_id)
            if to == "auto":
                planned = bool(run.config.get("final_plan"))
                if not planned and run.mode != RunMode.deep_research:
                    raise Invalid(f"run {run.id} ({run.mode.value}) has no plan to execute")
                to = RunStatus.executing.value if planned else RunStatus.planning.value
            if to not in (RunStatus.planning.value, RunStatus.executing.value):
                raise Invalid("a run is claimed to plan or to execute")
            allowed = list(allowed_from or [])
            status = run.status
            if status in RUNNING_RUN_STATES:
                if stale_owner_pid is None or run.owner_pid is None or int(run.owner_pid) != int(stale_owner_pid):
                    raise Conflict(f"run {run.id} is {status.value} and owned by process {run.owner_pid}; it can be "
                                   f"resumed once that process is gone")
                run = self._move_run(tx, run, RunStatus.interrupted, reason=f"owner process {stale_owner_pid} is gone",
                                     actor=actor)
                status = RunStatus.interrupted
                allowed.append(status.value)
            if allowed and status.value not in allowed:
                raise Conflict(f"run {run.id} is {status.value}; expected one of {', '.join(allowed)}")
            steps = self._st.steps_of(run.id)
            if to == RunStatus.executing.value and not steps:
                raise Invalid(f"run {run.id} ({run.mode.value}) has no steps to execute")
            # a new draft whose steps all have the ids its plan's caller chose: that caller has them
            known = not return_steps and status == RunStatus.draft and bool(run.config.get("step_ids"))
            if reason is None and status != RunStatus.draft:
                reason = "resumed"
            run = self._move_run(tx, run, to, reason=reason, actor=actor, owner_pid=owner_pid,
                                 expected_from=[status.value])
            session = self._st.session(self.session_id).model_copy(deep=True) if with_session else None
            return Claimed(run=run.model_copy(deep=True), session=session,
                           steps=None if known else [s.model_copy(deep=True) for s in steps],
                           journal_seq=self._st.journal_seq.get(run.id, 0))

    def advance(self, run_id: str, records: Sequence[JournalRecord | dict[str, Any]], *,
                owner_pid: int | None = None, replay: bool = False, actor: str | None = None) -> JournalApplied:
        with self._st.write() as tx:
            run = self._st.run(self.session_id, run_id)
            out = self._apply(tx, run.id, _records(records), owner_pid=owner_pid, replay=replay, actor=actor)
            if out.applied:
                tx.put(self._st.journal_seq, run.id, out.journal_seq)
            return out

    def _apply(self, tx: Tx, run_id: str, records: list[JournalRecord], *, owner_pid: int | None, replay: bool,
               actor: str | None) -> JournalApplied:
        """Apply the records the run lacks (the caller writes the returned journal seq)."""
        run = self._st.runs[run_id]
        applied = self._st.journal_seq.get(run_id, 0)
        for r in records:
            for step_id in r.named():
                check("step", step_id)
        signal = JournalApplied(run_status=run.status.value, pause_requested=run.pause_requested,
                                journal_seq=applied)
        todo = sorted((r for r in records if r.seq > applied), key=lambda r: r.seq)
        if not todo:
            return signal
        if len({r.seq for r in todo}) != len(todo):
            raise Invalid("a journal seq appears twice")
        if not replay:
            if todo[0].seq != applied + 1:
                # a batch lost on its way would leave a hole: the engine resends from the journal instead
                raise Conflict(f"journal records of run {run_id} arrive out of order: the store has up to seq "
                               f"{applied}, this batch starts at {todo[0].seq}")
            if run.status not in RUNNING_RUN_STATES:
                raise Conflict(f"run {run_id} is {run.status.value}; its steps are not recorded any more")
            if not _same_owner(run.owner_pid, owner_pid):
                raise Conflict(f"run {run_id} is now executed by process {run.owner_pid}, not {owner_pid}")
        elif run.status in (RunStatus.completed, RunStatus.cancelled):
            return signal  # nothing is recorded on a run that ended
        steps = {s.id: s for s in self._st.steps.values() if s.run_id == run_id}
        unknown = sorted({i for r in todo for i in r.named() if i not in steps})
        if unknown:
            raise Invalid(f"step(s) {', '.join(unknown)} are not steps of run {run_id}")
        saved: list[dict[str, Any]] = []  # checkpoint.saved events of the records' own checkpoints
        for r in todo:
            self._apply_one(tx, run_id, steps, r, saved, replay=replay, actor=actor)
        for payload in saved:
            tx.emit(self.session_id, run_id, EventType.checkpoint_saved, payload)
        return signal.model_copy(update={"journal_seq": todo[-1].seq, "applied": len(todo)})

    def _apply_one(self, tx: Tx, run_id: str, steps: dict[str, Step], r: JournalRecord,
                   saved: list[dict[str, Any]], *, replay: bool, actor: str | None) -> None:
        at = utc(r.at)

        def move(step_id: str, dst: StepStatus, reason: str, changes: dict[str, Any],
                 extra: dict[str, Any] | None = None) -> bool:
            step = steps[step_id]
            src = step.status
            if src == StepStatus.completed and (replay or dst == StepStatus.completed):
                if replay:
                    return False
                raise Conflict(f"step {step.key} of run {run_id} is completed already; a completed step is never "
                               f"recorded twice")
            if src != dst and not replay:
                try:
                    check_step_transition(step.id, src.value, dst.value)
                except IllegalTransition as exc:
                    raise Conflict(str(exc)) from None
            payload = {**step_payload(step, src.value, dst.value), "reason": reason, "journal_seq": r.seq}
            if actor is not None:
                payload["actor"] = actor
            payload.update(extra or {})
            if dst == StepStatus.failed:
                payload["error"] = str(changes.get("error") or "")[:2000]
            tx.emit(self.session_id, run_id, _STEP_EVENT[dst], payload, ts=at)
            if src != dst:
                tx.history(self.session_id, "step", step.id, src.value, dst.value, reason, actor, at=at)
            steps[step_id] = tx.put(self._st.steps, step.id, step.model_copy(update={"status": dst, **changes}))
            return True

        # the checkpoint of the record's completions: a row of its own if it has a context; otherwise
        # what changed is the completions themselves, named by their step_completed events
        cp = r.complete[0].checkpoint if r.complete else None
        shared = cp is not None and cp.context is None and cp.kind == CheckpointKind.step_complete
        snapshot = cp.pickle_path if shared else None
        done_keys: list[str] = []
        first_done: str | None = None
        for c in r.complete:
            extra = None
            if shared:
                extra = {"checkpoint_id": cp.id, **({"pickle_path": snapshot} if snapshot else {})}
            if not move(c.step_id, StepStatus.completed, "step finished",
                        {"outputs": as_json(c.outputs), "completed_at": at, "progress": 1.0, "error": None}, extra):
                continue
            done_keys.append(steps[c.step_id].key)
            first_done = first_done or c.step_id
            own = c.checkpoint
            if own is not None and not shared:
                context = own.context if own.context is not None else \
                    {"completed": [steps[x.step_id].key for x in r.complete]}
                self._journal_checkpoint(tx, run_id, own.id, own.kind, c.step_id, context, own.pickle_path, at,
                                         replay=replay)
                if own.pickle_path:
                    saved.append({"checkpoint_id": own.id, "kind": CheckpointKind(own.kind).value,
                                  "step_id": c.step_id, "pickle_path": own.pickle_path})
            elif snapshot:
                # checkpoint.saved announces a snapshot written to disk
                tx.emit(self.session_id, run_id, EventType.checkpoint_saved,
                        {"checkpoint_id": cp.id, "kind": CheckpointKind.step_complete.value, "step_id": c.step_id,
                         "pickle_path": snapshot}, ts=at)
                snapshot = None
        if shared and first_done is not None:
            self._journal_checkpoint(tx, run_id, cp.id, CheckpointKind.step_complete, first_done,
                                     {"completed": done_keys}, cp.pickle_path, at, replay=True)
        for f in r.fail:
            move(f.step_id, StepStatus.failed, "step failed", {"error": f.error})
        for step_id in r.start:
            step = steps[step_id]
            reason = "step started" if step.status != StepStatus.running else "re-run of a step in flight at a crash"
            move(step_id, StepStatus.running, reason,
                 {"started_at": at, "attempts": step.attempts + 1, "progress": 0.0, "error": None})

    def _journal_checkpoint(self, tx: Tx, run_id: str, cid: str, kind: Any, step_id: str, context: dict[str, Any],
                            pickle_path: str | None, at: Any, *, replay: bool) -> None:
        """A checkpoint a journal record names (one recovery put back already is kept on a replay)."""
        if cid in self._st.checkpoints:
            if replay:
                return
            raise Conflict(f"checkpoint {cid} already exists")
        tx.put(self._st.checkpoints, cid, Checkpoint(
            id=cid, session_id=self.session_id, run_id=run_id, step_id=step_id, kind=CheckpointKind(kind),
            context=as_json(context), pickle_path=pickle_path, created_at=at))

    def settle(self, run_id: str, to: str, *, owner_pid: int | None = None,
               records: Sequence[JournalRecord | dict[str, Any]] = (), checkpoint: NewCheckpoint | None = None,
               reset_steps: Sequence[str] = (), reset_to: str = StepStatus.pending.value,
               reason: str | None = None, actor: str | None = None, error: str | None = None,
               expected_from: list[str] | None = None) -> Settled:
        with self._st.write() as tx:
            run = self._st.run(self.session_id, run_id)
            if not _same_owner(run.owner_pid, owner_pid):
                raise Conflict(f"run {run.id} is now executed by process {run.owner_pid}, not {owner_pid}")
            if records:
                out = self._apply(tx, run.id, _records(records), owner_pid=owner_pid, replay=False, actor=None)
                if out.applied:
                    tx.put(self._st.journal_seq, run.id, out.journal_seq)
            if run.status.value != to and run.status in (RunStatus.completed, RunStatus.cancelled):
                raise Conflict(f"run {run.id} is {run.status.value} already")
            if reset_to not in (StepStatus.pending.value, StepStatus.cancelled.value, StepStatus.failed.value):
                raise Invalid("in-flight steps are set back to pending, cancelled or failed")
            for step_id in reset_steps:
                step = self._st.steps.get(check("step", step_id))
                if step is not None and step.run_id == run.id and step.status == StepStatus.running:
                    tx.put(self._st.steps, step.id, step.model_copy(update={"status": StepStatus(reset_to)}))
                    tx.history(self.session_id, "step", step.id, "running", reset_to, reason, actor)
                    tx.emit(self.session_id, run.id, EventType.step_state_changed,
                            step_payload(step, "running", reset_to))
            # a resend finds its checkpoint stored already
            if checkpoint is not None and not (checkpoint.id and self._resent(run.id, checkpoint.id)):
                self._put_checkpoint(tx, run, kind=checkpoint.kind, context=checkpoint.context,
                                     step_id=checkpoint.step_id, pickle_path=checkpoint.pickle_path,
                                     checkpoint_id=checkpoint.id)
            if run.status.value == to:
                return Settled(run=run.model_copy(deep=True))
            moved = self._move_run(tx, run, to, reason=reason, actor=actor, expected_from=expected_from or None,
                                   error=KEEP if error is None else error)
            return Settled(run=moved.model_copy(deep=True))

    def _resent(self, run_id: str, checkpoint_id: str) -> bool:
        found = self._st.checkpoints.get(check("checkpoint", checkpoint_id))
        return found is not None and found.run_id == run_id
