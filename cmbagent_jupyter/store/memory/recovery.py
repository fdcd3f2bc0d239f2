"""Records rebuilt from files put back, each only if absent: recovering twice changes nothing."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any, Sequence

from cmbagent_jupyter.core import (
    ACTIVE_RUN_STATES,
    Checkpoint,
    CheckpointKind,
    EventType,
    InvalidInput,
    Quotas,
    Run,
    RunMode,
    RunStatus,
    Session,
    SessionStatus,
    Step,
    StepStatus,
    utcnow,
    validate_name,
)
from cmbagent_jupyter.core.errors import Conflict, Invalid
from cmbagent_jupyter.core.home import run_dir, session_dir
from cmbagent_jupyter.store.memory.state import State, as_json, check, utc
from cmbagent_jupyter.store.port import Imported

RECOVERED = "recovered from files"


def _time(value: Any, what: str) -> datetime | None:
    if value in (None, ""):
        return None
    try:
        return utc(datetime.fromisoformat(str(value)))
    except ValueError:
        raise Invalid(f"{what} {value!r} is not an ISO date-time") from None


def _object(value: Any, name: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise Invalid(f"{name} must be an object")
    return value


def import_session(st: State, doc: Any) -> Imported:
    """A session from its session.json; a name taken meanwhile gets a suffix."""
    doc = _object(doc, "session")
    with st.write() as tx:
        sid = check("session", doc.get("id"))
        if sid in st.sessions:
            return Imported(id=sid, created=False)
        try:
            name = validate_name(doc.get("name"), "session name")
            status = SessionStatus(doc.get("status") or SessionStatus.active.value)
            quotas = Quotas.model_validate(doc.get("quotas") or {})
        except (InvalidInput, ValueError) as exc:
            raise Invalid(f"session.json of {sid}: {exc}") from None
        if any(s.name == name and s.status != SessionStatus.deleted for s in st.sessions.values()):
            name = f"{name[:100]} (recovered {sid[-6:]})"
        path = session_dir(st.home, sid)
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        now = utcnow()
        tx.put(st.sessions, sid, Session(id=sid, name=name, status=status, quotas=quotas, path=str(path),
                                         created_at=_time(doc.get("created_at"), "created_at") or now, updated_at=now))
        tx.history(sid, "session", sid, None, status.value, RECOVERED)
        tx.emit(sid, None, EventType.session_created, {"name": name, "recovered": True})
        return Imported(id=sid, created=True, count=1, name=name)


class RecoveryOps:
    """A session's runs, steps and checkpoints put back from its files."""

    _st: State
    session_id: str

    def import_run(self, run: dict[str, Any], *, interrupt_active: bool = True) -> Imported:
        with self._st.write() as tx:
            sid = self.session_id
            self._st.session(sid, allow_deleted=True)
            doc = _object(run, "run")
            rid = check("run", doc.get("id"))
            found = self._st.runs.get(rid)
            if found is not None and found.session_id == sid:
                return Imported(id=rid, created=False, status=found.status.value)
            if found is not None:
                raise Conflict(f"run {rid} already exists in another session")
            if doc.get("session_id", sid) != sid:
                raise Invalid(f"run {rid} belongs to session {doc.get('session_id')}, not {sid}")
            try:
                status = RunStatus(doc.get("status") or RunStatus.draft.value)
                mode = RunMode(doc.get("mode") or RunMode.deep_research.value)
            except ValueError as exc:
                raise Invalid(f"run.json of {rid}: {exc}") from None
            config = doc.get("config") or {}
            if not isinstance(config, dict):
                raise Invalid(f"run.json of {rid}: config must be an object")
            final = status
            if status in ACTIVE_RUN_STATES and status != RunStatus.paused and interrupt_active:
                final = RunStatus.interrupted  # it cannot be running now: resume accepts it
            path = run_dir(self._st.home, sid, rid)
            path.mkdir(parents=True, exist_ok=True)
            tx.put(self._st.runs, rid, Run(
                id=rid, session_id=sid, task=str(doc.get("task") or ""), mode=mode, status=final,
                model=doc.get("model"), config=as_json(config), parent_run_id=doc.get("parent_run_id"),
                branch_from_step=doc.get("branch_from_step"),
                created_at=_time(doc.get("created_at"), "created_at") or utcnow(),
                started_at=_time(doc.get("started_at"), "started_at"),
                completed_at=_time(doc.get("completed_at"), "completed_at"),
                last_heartbeat_at=_time(doc.get("last_heartbeat_at"), "last_heartbeat_at"),
                checkpoint_interval_s=float(doc.get("checkpoint_interval_s") or 600.0), error=doc.get("error"),
                path=str(path)))
            tx.history(sid, "run", rid, None, status.value, RECOVERED)
            if final != status:
                reason = f"{RECOVERED}: the run was {status.value} when the store was lost"
                tx.history(sid, "run", rid, status.value, final.value, reason)
                tx.emit(sid, rid, EventType.workflow_state_changed,
                        {"from": status.value, "to": final.value, "reason": reason})
            return Imported(id=rid, created=True, count=1, status=final.value, was=status.value)

    def import_steps(self, run_id: str, steps: Sequence[dict[str, Any]]) -> Imported:
        with self._st.write() as tx:
            run = self._st.run(self.session_id, run_id)
            if not isinstance(steps, (list, tuple)):
                raise Invalid("steps must be a list")
            present = self._st.steps_of(run.id)
            ids, keys = {s.id for s in present}, {s.key for s in present}
            count = 0
            for i, s in enumerate(steps, start=1):
                if not isinstance(s, dict):
                    raise Invalid("each step must be an object")
                step_id = check("step", s.get("id"))
                if step_id in ids or s.get("key") in keys:
                    continue
                if step_id in self._st.steps:
                    raise Conflict(f"step {step_id} already exists in another run")
                try:
                    status = StepStatus(s.get("status") or StepStatus.pending.value)
                except ValueError as exc:
                    raise Invalid(f"step {step_id}: {exc}") from None
                step = Step(id=step_id, session_id=self.session_id, run_id=run.id, number=int(s.get("number") or i),
                            key=str(s.get("key") or f"step_{i}"), agent=str(s.get("agent") or "engineer"),
                            status=status, description=str(s.get("description") or ""),
                            depends_on=list(s.get("depends_on") or []), progress=float(s.get("progress") or 0.0),
                            inputs=as_json(s.get("inputs") or {}), outputs=as_json(s.get("outputs") or {}),
                            error=s.get("error"), attempts=int(s.get("attempts") or 0),
                            started_at=_time(s.get("started_at"), "started_at"),
                            completed_at=_time(s.get("completed_at"), "completed_at"))
                tx.put(self._st.steps, step_id, step)
                ids.add(step_id)
                keys.add(step.key)
                count += 1
            return Imported(id=run.id, created=bool(count), count=count)

    def import_checkpoint(self, run_id: str, checkpoint: dict[str, Any], context: dict[str, Any]) -> Imported:
        with self._st.write() as tx:
            run = self._st.run(self.session_id, run_id)
            doc = _object(checkpoint, "checkpoint")
            cid = check("checkpoint", doc.get("id"))
            if cid in self._st.checkpoints:
                return Imported(id=cid, created=False)
            try:
                kind = CheckpointKind(doc.get("kind") or CheckpointKind.step_complete.value)
            except ValueError:
                raise Invalid(f"checkpoint {cid}: unknown kind {doc.get('kind')!r}") from None
            pickle_path = doc.get("pickle_path")
            if pickle_path is not None and not Path(pickle_path).resolve().is_relative_to(Path(run.path).resolve()):
                raise Invalid(f"checkpoint {cid}: its file {pickle_path} is not inside the run's directory {run.path}")
            step_id = doc.get("step_id")
            found = self._st.steps.get(step_id) if isinstance(step_id, str) else None
            if found is None or found.run_id != run.id:
                step_id = None  # the step was replaced by a later plan: keep the checkpoint, drop the link
            context = _object(context if context is not None else {}, "context")
            tx.put(self._st.checkpoints, cid, Checkpoint(
                id=cid, session_id=self.session_id, run_id=run.id, step_id=step_id, kind=kind,
                context=as_json(context), pickle_path=pickle_path,
                created_at=_time(doc.get("created_at"), "created_at") or utcnow()))
            return Imported(id=cid, created=True, count=1)
