"""The typed store interface the rest of the code uses (it never sees DuckDB).

`Store` holds the session-level calls; `store.session(id)` gives a `SessionStore`
whose every call is bound to that one session.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Iterable

from cmbagent_jupyter.core import (
    ApprovalRequest,
    Checkpoint,
    CostRecord,
    Event,
    Quotas,
    Run,
    Session,
    StateTransition,
    Step,
    check_id,
)
from cmbagent_jupyter.store.client import StoreClient, Subscription


def _event_dict(ev: Event | dict[str, Any]) -> dict[str, Any]:
    if isinstance(ev, Event):
        return ev.model_dump(mode="json", exclude={"seq", "gseq"})
    return ev


class Store:
    def __init__(self, home: str | os.PathLike | None = None, *, client: StoreClient | None = None, **client_kw: Any):
        self.client = client or StoreClient(home, **client_kw)
        self.home = self.client.home

    def call(self, op: str, **args: Any) -> Any:
        return self.client.call(op, args)

    async def acall(self, op: str, **args: Any) -> Any:
        return await self.client.acall(op, args)

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- sessions --------------------------------------------------------------

    def create_session(self, name: str, quotas: Quotas | dict[str, Any] | None = None) -> Session:
        q = quotas.model_dump() if isinstance(quotas, Quotas) else (quotas or {})
        return Session.model_validate(self.call("session.create", name=name, quotas=q))

    def list_sessions(self, *, include_archived: bool = False, include_deleted: bool = False) -> list[Session]:
        rows = self.call("session.list", include_archived=include_archived, include_deleted=include_deleted)
        return [Session.model_validate(r) for r in rows]

    def get_session(self, session_id: str) -> Session:
        return Session.model_validate(self.call("session.get", session_id=session_id))

    def resolve_session(self, ref: str) -> Session:
        return Session.model_validate(self.call("session.resolve", ref=ref))

    def archive_session(self, session_id: str) -> Session:
        return Session.model_validate(self.call("session.set_status", session_id=session_id, status="archived"))

    def restore_session(self, session_id: str) -> Session:
        return Session.model_validate(self.call("session.set_status", session_id=session_id, status="active"))

    def delete_session(self, session_id: str) -> Session:
        return Session.model_validate(self.call("session.set_status", session_id=session_id, status="deleted"))

    def find_run(self, run_id: str) -> Run:
        return Run.model_validate(self.call("run.find", run_id=run_id))

    def session(self, session_id: str) -> "SessionStore":
        return SessionStore(self, check_id("session", session_id))

    def events_all(self, since_gseq: int = 0, limit: int = 10_000) -> list[Event]:
        rows = self.call("event.list", all_sessions=True, since_gseq=since_gseq, limit=limit)
        return [Event.model_validate(r) for r in rows]

    def subscribe_all(self, *, since_gseq: int | None = None, callback: Callable[[dict], None] | None = None) -> Subscription:
        return self.client.subscribe(all_sessions=True, since_gseq=since_gseq, callback=callback)


class SessionStore:
    """Everything a session owns; no call here can reach another session's rows."""

    def __init__(self, store: Store, session_id: str):
        self.store = store
        self.session_id = session_id

    def call(self, op: str, **args: Any) -> Any:
        return self.store.client.call(op, {"session_id": self.session_id, **args})

    async def acall(self, op: str, **args: Any) -> Any:
        return await self.store.client.acall(op, {"session_id": self.session_id, **args})

    def info(self) -> Session:
        return Session.model_validate(self.call("session.get"))

    def usage(self) -> dict[str, Any]:
        return self.call("session.usage")

    def set_quotas(self, **quotas: Any) -> Session:
        return Session.model_validate(self.call("session.set_quotas", quotas=quotas))

    # -- runs ------------------------------------------------------------------

    def create_run(self, task: str, *, mode: str = "deep_research", model: str | None = None,
                   config: dict[str, Any] | None = None, **extra: Any) -> Run:
        return Run.model_validate(self.call("run.create", task=task, mode=mode, model=model, config=config or {}, **extra))

    def get_run(self, run_id: str) -> Run:
        return Run.model_validate(self.call("run.get", run_id=run_id))

    def list_runs(self, status: str | list[str] | None = None) -> list[Run]:
        return [Run.model_validate(r) for r in self.call("run.list", status=status)]

    def transition_run(self, run_id: str, to: str, *, reason: str | None = None, actor: str | None = None,
                       **fields: Any) -> Run:
        return Run.model_validate(self.call("run.transition", run_id=run_id, to=to, reason=reason, actor=actor, **fields))

    def heartbeat(self, run_id: str, owner_pid: int | None = None) -> dict[str, Any]:
        return self.call("run.heartbeat", run_id=run_id, owner_pid=owner_pid)

    def request_pause(self, run_id: str) -> Run:
        return Run.model_validate(self.call("run.request_pause", run_id=run_id))

    def update_run(self, run_id: str, **fields: Any) -> Run:
        return Run.model_validate(self.call("run.update", run_id=run_id, **fields))

    # -- steps -------------------------------------------------------------------

    def put_plan(self, run_id: str, steps: list[dict[str, Any]]) -> list[Step]:
        return [Step.model_validate(s) for s in self.call("step.put_plan", run_id=run_id, steps=steps)]

    def list_steps(self, run_id: str) -> list[Step]:
        return [Step.model_validate(s) for s in self.call("step.list", run_id=run_id)]

    def get_step(self, step_id: str) -> Step:
        return Step.model_validate(self.call("step.get", step_id=step_id))

    def transition_step(self, step_id: str, to: str, **fields: Any) -> Step:
        return Step.model_validate(self.call("step.transition", step_id=step_id, to=to, **fields))

    # -- events ------------------------------------------------------------------

    def append_events(self, events: Iterable[Event | dict[str, Any]]) -> list[dict[str, Any]]:
        return self.call("event.append", events=[_event_dict(e) for e in events])

    def emit(self, type: str, run_id: str | None = None, **payload: Any) -> dict[str, Any]:
        return self.append_events([{"type": type, "session_id": self.session_id, "run_id": run_id, "payload": payload}])[0]

    def events(self, run_id: str | None = None, since_gseq: int | None = None, since_seq: int | None = None,
               types: list[str] | None = None, limit: int = 10_000) -> list[Event]:
        rows = self.call("event.list", run_id=run_id, since_gseq=since_gseq, since_seq=since_seq, types=types, limit=limit)
        return [Event.model_validate(r) for r in rows]

    def subscribe(self, *, run_id: str | None = None, types: list[str] | None = None, since_gseq: int | None = None,
                  callback: Callable[[dict], None] | None = None) -> Subscription:
        return self.store.client.subscribe(session_id=self.session_id, run_id=run_id, types=types,
                                           since_gseq=since_gseq, callback=callback)

    # -- checkpoints, history, costs ------------------------------------------------

    def put_checkpoint(self, run_id: str, *, kind: str, context: dict[str, Any], step_id: str | None = None,
                       pickle_path: str | None = None, checkpoint_id: str | None = None) -> dict[str, Any]:
        return self.call("checkpoint.put", run_id=run_id, kind=kind, context=context, step_id=step_id,
                         pickle_path=pickle_path, id=checkpoint_id)

    def latest_checkpoint(self, run_id: str) -> Checkpoint | None:
        row = self.call("checkpoint.latest", run_id=run_id)
        return Checkpoint.model_validate(row) if row else None

    def list_checkpoints(self, run_id: str) -> list[Checkpoint]:
        return [Checkpoint.model_validate(r) for r in self.call("checkpoint.list", run_id=run_id)]

    def history(self, entity_id: str | None = None) -> list[StateTransition]:
        return [StateTransition.model_validate(r) for r in self.call("history.list", entity_id=entity_id)]

    def add_costs(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        return self.call("cost.add", records=records)

    def cost_records(self, run_id: str | None = None) -> list[CostRecord]:
        return [CostRecord.model_validate(r) for r in self.call("cost.records", run_id=run_id)]

    def cost_summary(self, run_id: str | None = None, group_by: list[str] | None = None) -> list[dict[str, Any]]:
        return self.call("cost.summary", run_id=run_id, group_by=group_by)


__all__ = ["Store", "SessionStore", "ApprovalRequest"]
