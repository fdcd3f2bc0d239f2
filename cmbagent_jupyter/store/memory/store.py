"""The in-memory store: sessions, lookups by bare id, and the views across sessions."""

from __future__ import annotations

import copy
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from cmbagent_jupyter.core import (
    ACTIVE_RUN_STATES,
    ApprovalRequest,
    ApprovalStatus,
    CostRow,
    Event,
    EventType,
    InvalidInput,
    Quotas,
    Run,
    RunOverview,
    Session,
    SessionStatus,
    Step,
    StepStatus,
    new_id,
    utcnow,
    validate_name,
)
from cmbagent_jupyter.core.errors import Conflict, Invalid, NotFound
from cmbagent_jupyter.core.home import ensure_home, session_dir
from cmbagent_jupyter.core.views import RunSummary, SessionSummary, Snapshot
from cmbagent_jupyter.store.memory.records import MAX_LISTED, subscribe, summarize
from cmbagent_jupyter.store.memory.recovery import import_session
from cmbagent_jupyter.store.memory.session import MemorySessionStore
from cmbagent_jupyter.store.memory.state import State, check
from cmbagent_jupyter.store.port import EventCallback, Imported, SessionMetrics, StoreInfo, StorePort, Subscription

VERSION = 1
SNAPSHOT_RUN_LIMIT = 500
TASK_PREVIEW = 300


class MemoryStore(StorePort):
    """A whole store in this process. `home` (default: a new temporary folder, removed by `close`)
    holds the sessions' and runs' folders."""

    def __init__(self, home: str | os.PathLike | None = None):
        self._owned = home is None
        self.home: Path = ensure_home(home if home is not None else tempfile.mkdtemp(prefix="cmbagent-memory-"))
        self._st = State(self.home)

    @property
    def closed(self) -> bool:
        return self._st.closed

    def close(self) -> None:
        with self._st.lock:
            if self._st.closed:
                return
            self._st.closed = True
        self._st.hub.close()
        if self._owned:
            shutil.rmtree(self.home, ignore_errors=True)

    def session(self, session_id: str) -> MemorySessionStore:
        return MemorySessionStore(self, check("session", session_id))

    def ping(self) -> StoreInfo:
        with self._st.read():
            return StoreInfo(version=VERSION, pid=os.getpid(), gseq=self._st.counters["gseq"])

    # -- sessions -------------------------------------------------------------------

    def create_session(self, name: str, quotas: Quotas | dict[str, Any] | None = None, *,
                       actor: str | None = None) -> Session:
        try:
            name = validate_name(name, "session name")
            limits = Quotas.model_validate(quotas.model_dump() if isinstance(quotas, Quotas) else quotas or {})
        except (InvalidInput, ValidationError) as exc:
            raise Invalid(str(exc)) from None
        with self._st.write() as tx:
            clash = next((s.id for s in self._live() if s.name == name), None)
            if clash:
                raise Conflict(f"a session named {name!r} already exists ({clash})")
            sid = new_id("session")
            path = session_dir(self.home, sid)
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
            now = utcnow()
            session = tx.put(self._st.sessions, sid, Session(id=sid, name=name, quotas=limits, created_at=now,
                                                             updated_at=now, path=str(path)))
            tx.history(sid, "session", sid, None, SessionStatus.active.value, "created", actor)
            tx.emit(sid, None, EventType.session_created, {"name": name})
            return session.model_copy(deep=True)

    def _live(self) -> list[Session]:
        return sorted((s for s in self._st.sessions.values() if s.status != SessionStatus.deleted),
                      key=lambda s: s.created_at)

    def list_sessions(self, *, include_archived: bool = False, include_deleted: bool = False) -> list[Session]:
        shown = {SessionStatus.active}
        if include_archived:
            shown.add(SessionStatus.archived)
        if include_deleted:
            shown.add(SessionStatus.deleted)
        with self._st.read():
            found = sorted((s for s in self._st.sessions.values() if s.status in shown), key=lambda s: s.created_at)
            return [s.model_copy(deep=True) for s in found]

    def get_session(self, session_id: str) -> Session:
        with self._st.read():
            return self._st.session(session_id).model_copy(deep=True)

    def resolve_session(self, ref: str) -> Session:
        if not isinstance(ref, str) or not ref.strip():
            raise Invalid("session reference must be a session id or name")
        if ref.startswith("ses_"):
            return self.get_session(ref)
        with self._st.read():
            found = next((s for s in self._live() if s.name == ref), None)
            if found is None:
                raise NotFound(f"no session named {ref!r}")
            return found.model_copy(deep=True)

    # -- lookups by a bare id ------------------------------------------------------------

    def find_run(self, run_id: str) -> Run:
        with self._st.read():
            self._st.owner_of(self._st.runs, "run", run_id)
            return self._st.runs[run_id].model_copy(deep=True)

    def find_step(self, step_id: str) -> Step:
        with self._st.read():
            self._st.owner_of(self._st.steps, "step", step_id)
            return self._st.steps[step_id].model_copy(deep=True)

    def find_approval(self, approval_id: str) -> ApprovalRequest:
        with self._st.read():
            self._st.owner_of(self._st.approvals, "approval", approval_id)
            return self._st.approvals[approval_id].model_copy(deep=True)

    def pending_approvals(self) -> list[ApprovalRequest]:
        return self.list_approvals(pending_only=True)

    def list_approvals(self, *, pending_only: bool = True) -> list[ApprovalRequest]:
        with self._st.read():
            found = [a for a in self._st.approvals.values() if self._st.live(a.session_id)
                     and (not pending_only or a.status == ApprovalStatus.pending)]
            return [a.model_copy(deep=True) for a in sorted(found, key=lambda a: a.created_at)]

    # -- views across sessions -------------------------------------------------------------

    def runs_overview(self, *, session_id: str | None = None, status: str | list[str] | None = None,
                      limit: int = 200) -> list[RunOverview]:
        wanted = None if not status else set(status if isinstance(status, list) else [status])
        with self._st.read():
            if session_id is not None:
                check("session", session_id)
            runs = [r for r in self._st.runs.values() if self._st.live(r.session_id)
                    and (session_id is None or r.session_id == session_id)
                    and (wanted is None or r.status.value in wanted)]
            runs.sort(key=lambda r: r.created_at, reverse=True)
            out = []
            for r in runs[:min(int(limit or 200), 10_000)]:
                steps = [s.status for s in self._st.steps.values() if s.run_id == r.id]
                out.append(RunOverview(
                    **r.model_dump(include=set(RunOverview.model_fields) & set(Run.model_fields)),
                    session_name=self._st.sessions[r.session_id].name, steps_total=len(steps),
                    steps_completed=steps.count(StepStatus.completed), steps_running=steps.count(StepStatus.running),
                    cost_usd=self._st.spent(r.session_id, r.id)))
            return out

    def _scope(self, session_id: str | None) -> list[Session]:
        """The one session named (NotFound if it is not live), else every live one."""
        return [self._st.session(session_id)] if session_id is not None else self._live()

    def session_metrics(self, session_id: str | None = None) -> list[SessionMetrics]:
        with self._st.read():
            out = []
            for s in self._scope(session_id):
                runs = [r for r in self._st.runs.values() if r.session_id == s.id]
                by_status: dict[str, int] = {}
                for r in runs:
                    by_status[r.status.value] = by_status.get(r.status.value, 0) + 1
                spans = [(r.completed_at - r.started_at).total_seconds() for r in runs
                         if r.started_at is not None and r.completed_at is not None]
                out.append(SessionMetrics(
                    session_id=s.id, name=s.name, status=s.status.value, runs_by_status=by_status,
                    total_runs=len(runs), active_runs=sum(r.status in ACTIVE_RUN_STATES for r in runs),
                    finished_runs=len(spans), mean_duration_s=sum(spans) / len(spans) if spans else None,
                    total_cost_usd=self._st.spent(s.id)))
            return out

    def cost_summary(self, group_by: list[str] | None = None) -> list[CostRow]:
        with self._st.read():
            return summarize([c for c in self._st.costs if self._st.live(c.session_id)], group_by)

    def snapshot(self, *, session_id: str | None = None, run_id: str | None = None) -> Snapshot:
        with self._st.read():
            sessions = self._scope(session_id)
            ids = {s.id for s in sessions}
            runs = sorted((r for r in self._st.runs.values() if r.session_id in ids), key=lambda r: r.created_at)
            summaries = []
            for r in runs[-SNAPSHOT_RUN_LIMIT:]:
                task = r.task if len(r.task) <= TASK_PREVIEW else r.task[:TASK_PREVIEW] + "..."
                summaries.append(RunSummary(**{**r.model_dump(), "task": task},
                                            cost_usd=self._st.spent(r.session_id, r.id)))
            approvals = sorted((a for a in self._st.approvals.values()
                                if a.session_id in ids and a.status == ApprovalStatus.pending),
                               key=lambda a: a.created_at)
            out = Snapshot(sessions=[SessionSummary(**s.model_dump(), cost_usd=self._st.spent(s.id)) for s in sessions],
                           runs=summaries, approvals=[a.model_copy(deep=True) for a in approvals],
                           gseq=self._st.counters["gseq"])
            if run_id is not None:
                if session_id is None:
                    raise Invalid("a snapshot of a run needs its session_id")
                out.run = self._st.run(session_id, run_id).model_copy(deep=True)
                out.steps = [s.model_copy(deep=True) for s in self._st.steps_of(run_id)]
            return out

    def events_all(self, *, since_gseq: int = 0, run_id: str | None = None, limit: int = 10_000) -> list[Event]:
        with self._st.read():
            if run_id is not None:
                check("run", run_id)
            found = [e for e in self._st.events
                     if e["gseq"] > (since_gseq or 0) and (run_id is None or e["run_id"] == run_id)]
            return [Event.model_validate(copy.deepcopy(e)) for e in found[:min(int(limit or 10_000), MAX_LISTED)]]

    def subscribe_all(self, *, run_id: str | None = None, since_gseq: int | None = None,
                      callback: EventCallback | None = None) -> Subscription:
        return subscribe(self._st, session_id=None, run_id=run_id, types=None, since_gseq=since_gseq,
                         callback=callback)

    def import_session(self, session: dict[str, Any]) -> Imported:
        return import_session(self._st, session)
