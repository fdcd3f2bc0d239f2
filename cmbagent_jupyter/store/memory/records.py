"""A session's events, checkpoints, history, costs, files and metrics."""

from __future__ import annotations

import copy
from datetime import datetime
from typing import Any, Sequence

from pydantic import ValidationError

from cmbagent_jupyter.core import (
    Checkpoint,
    CheckpointKind,
    CostRecord,
    CostRow,
    Event,
    EventType,
    InvalidInput,
    StateTransition,
    new_id,
    utcnow,
)
from cmbagent_jupyter.core.errors import Invalid
from cmbagent_jupyter.core.events import check_payload
from cmbagent_jupyter.store.memory.state import MemorySubscription, State, as_json, check, utc
from cmbagent_jupyter.store.port import (
    EventCallback,
    EventRef,
    FileRecord,
    MetricPoint,
    NewCost,
    NewEvent,
    NewFile,
    NewMetric,
    Subscription,
)

MAX_ITEMS = 10_000
MAX_LISTED = 100_000
FILE_KINDS = ("code", "data", "plot", "log", "other")
COST_GROUPS = ("run_id", "step_id", "agent", "model", "session_id")


def summarize(records: list[CostRecord], group_by: list[str] | None) -> list[CostRow]:
    """Cost records summed by the `group_by` fields, in their order (an absent value last)."""
    group = list(group_by or ["agent", "model"])
    if not set(group) <= set(COST_GROUPS):
        raise Invalid(f"group_by may use {', '.join(sorted(COST_GROUPS))}")
    rows: dict[tuple, dict[str, Any]] = {}
    for c in records:
        key = tuple(getattr(c, g) for g in group)
        row = rows.setdefault(key, {**dict(zip(group, key)), "calls": 0, "prompt_tokens": 0, "completion_tokens": 0,
                                    "total_tokens": 0, "cost_usd": 0.0, "priced": True})
        row["calls"] += 1
        row["prompt_tokens"] += c.prompt_tokens
        row["completion_tokens"] += c.completion_tokens
        row["total_tokens"] += c.total_tokens
        row["cost_usd"] += c.cost_usd
        row["priced"] = row["priced"] and c.priced
    ordered = sorted(rows, key=lambda key: [(v is None, v or "") for v in key])
    return [CostRow.model_validate(rows[k]) for k in ordered]


def _items(items: Any, name: str) -> list[Any]:
    if not isinstance(items, (list, tuple)):
        raise Invalid(f"{name} must be a list of objects")
    if len(items) > MAX_ITEMS:
        raise Invalid(f"{len(items)} {name} in one call; at most {MAX_ITEMS} are allowed")
    return list(items)


def _object(item: Any, model: type, what: str) -> dict[str, Any]:
    if isinstance(item, model):
        return item.model_dump()
    if not isinstance(item, dict):
        raise Invalid(f"each {what} must be an object")
    return item


def _amount(record: dict[str, Any], name: str, kind: type) -> Any:
    """A non-negative number (a negative cost would dodge the cost quota)."""
    value = record.get(name) or 0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or value != value:
        raise Invalid(f"{name} must be a non-negative number, not {value!r}")
    return kind(value)


class RecordOps:
    """What a session records along its runs, and how it is read back."""

    _st: State
    session_id: str

    def _scope(self, item: dict[str, Any]) -> None:
        """The run and step an item names must be this session's."""
        if item.get("run_id") is not None:
            self._st.run(self.session_id, item["run_id"])
        if item.get("step_id") is not None:
            self._st.step(self.session_id, item["step_id"])

    # -- events -----------------------------------------------------------------

    def append_events(self, events: Sequence[NewEvent | dict[str, Any]]) -> list[EventRef]:
        if not isinstance(events, (list, tuple)) or not events:
            raise Invalid("events must be a non-empty list")
        if len(events) > MAX_ITEMS:
            raise Invalid(f"{len(events)} events in one call; at most {MAX_ITEMS} are allowed")
        with self._st.write() as tx:
            self._st.session(self.session_id)
            items = [self._new_event(e) for e in events]
            for item in items:
                self._scope({"run_id": item.run_id})
            out = []
            for item in items:
                ev = tx.emit(self.session_id, item.run_id, item.type, as_json(item.payload), ts=item.ts,
                             event_id=item.id)
                out.append(EventRef(id=ev["id"], seq=ev["seq"], gseq=ev["gseq"]))
            return out

    def _new_event(self, event: Any) -> NewEvent:
        if isinstance(event, dict):
            event = dict(event)
            owner = event.pop("session_id", self.session_id)
            if owner != self.session_id:
                raise Invalid(f"event for session {owner} sent in a call for session {self.session_id}")
            try:
                event = NewEvent.model_validate(event)
            except ValidationError as exc:
                raise Invalid(f"bad event: {exc.errors()[0]['msg']}") from None
        elif not isinstance(event, NewEvent):
            raise Invalid("each event must be an object")
        try:
            check_payload(event.type, event.payload)
        except InvalidInput as exc:
            raise Invalid(str(exc)) from None
        if event.id is not None:
            check("event", event.id)
        return event

    def events(self, run_id: str | None = None, *, since_gseq: int | None = None, since_seq: int | None = None,
               types: list[str] | None = None, limit: int = 10_000) -> list[Event]:
        with self._st.read():
            if run_id is not None:
                check("run", run_id)
            kinds = set(types) if types else None
            found = [e for e in self._st.events if e["session_id"] == self.session_id
                     and (run_id is None or e["run_id"] == run_id)
                     and (run_id is None or since_seq is None or e["seq"] > since_seq)
                     and (since_gseq is None or e["gseq"] > since_gseq)
                     and (kinds is None or e["type"] in kinds)]
            return [Event.model_validate(copy.deepcopy(e)) for e in found[:min(int(limit or MAX_ITEMS), MAX_LISTED)]]

    def subscribe(self, *, run_id: str | None = None, types: list[str] | None = None,
                  since_gseq: int | None = None, callback: EventCallback | None = None) -> Subscription:
        return subscribe(self._st, session_id=self.session_id, run_id=run_id, types=types, since_gseq=since_gseq,
                         callback=callback)

    # -- checkpoints and history ------------------------------------------------------

    def put_checkpoint(self, run_id: str, *, kind: CheckpointKind | str = CheckpointKind.manual,
                       context: dict[str, Any] | None = None, step_id: str | None = None,
                       pickle_path: str | None = None, checkpoint_id: str | None = None) -> Checkpoint:
        with self._st.write() as tx:
            run = self._st.run(self.session_id, run_id)
            return self._put_checkpoint(tx, run, kind=kind, context=context, step_id=step_id, pickle_path=pickle_path,
                                        checkpoint_id=checkpoint_id).model_copy(deep=True)

    def _checkpoints(self, run_id: str) -> list[Checkpoint]:
        run = self._st.run(self.session_id, run_id)
        return sorted((c for c in self._st.checkpoints.values() if c.run_id == run.id), key=lambda c: c.created_at)

    def latest_checkpoint(self, run_id: str) -> Checkpoint | None:
        with self._st.read():
            found = self._checkpoints(run_id)
            return found[-1].model_copy(deep=True) if found else None

    def list_checkpoints(self, run_id: str) -> list[Checkpoint]:
        with self._st.read():
            return [c.model_copy(update={"context": {}}) for c in self._checkpoints(run_id)]

    def history(self, entity_id: str | None = None) -> list[StateTransition]:
        with self._st.read():
            found = [h for h in self._st.history if h.session_id == self.session_id
                     and (entity_id is None or h.entity_id == entity_id)]
            return [h.model_copy() for h in sorted(found, key=lambda h: h.at)]

    # -- costs ---------------------------------------------------------------------------

    def add_costs(self, records: Sequence[NewCost | dict[str, Any]]) -> float:
        if not isinstance(records, (list, tuple)):
            raise Invalid("records must be a list")
        with self._st.write() as tx:
            self._st.session(self.session_id)
            rows = []
            for item in records:
                r = _object(item, NewCost, "cost record")
                self._scope(r)
                pt, ct = _amount(r, "prompt_tokens", int), _amount(r, "completion_tokens", int)
                rows.append(CostRecord(
                    id=r.get("id") or new_id("cost"), session_id=self.session_id, run_id=r.get("run_id"),
                    step_id=r.get("step_id"), agent=r.get("agent"), model=str(r.get("model") or "unknown"),
                    prompt_tokens=pt, completion_tokens=ct, total_tokens=_amount(r, "total_tokens", int) or pt + ct,
                    cost_usd=_amount(r, "cost_usd", float), priced=bool(r.get("priced", True)), at=utcnow()))
            by_run: dict[str | None, list[CostRecord]] = {}
            for row in rows:
                tx.append(self._st.costs, row)
                by_run.setdefault(row.run_id, []).append(row)
            for run_id, group in by_run.items():
                tx.emit(self.session_id, run_id, EventType.cost_update, {
                    "records": [{"agent": c.agent, "model": c.model, "prompt_tokens": c.prompt_tokens,
                                 "completion_tokens": c.completion_tokens, "cost_usd": c.cost_usd,
                                 "step_id": c.step_id} for c in group],
                    "cost_usd": sum(c.cost_usd for c in group)})
            return float(sum(c.cost_usd for c in rows))

    def _costs(self, run_id: str | None) -> list[CostRecord]:
        if run_id is not None:
            check("run", run_id)
        return [c for c in self._st.costs if c.session_id == self.session_id and (run_id is None or c.run_id == run_id)]

    def cost_records(self, run_id: str | None = None) -> list[CostRecord]:
        with self._st.read():
            return [c.model_copy() for c in self._costs(run_id)]

    def cost_summary(self, run_id: str | None = None, group_by: list[str] | None = None) -> list[CostRow]:
        with self._st.read():
            return summarize(self._costs(run_id), group_by)

    # -- files and metrics -------------------------------------------------------------------

    def record_files(self, files: Sequence[NewFile]) -> list[FileRecord]:
        items = _items(files, "files")
        with self._st.write() as tx:
            self._st.session(self.session_id)
            now, out = utcnow(), []
            for item in items:
                f = _object(item, NewFile, "file")
                self._scope(f)
                path, kind, size = f.get("path"), f.get("kind") or "other", f.get("size")
                if not isinstance(path, str) or not path.strip() or len(path) > 4096:
                    raise Invalid("a file needs its path (text, at most 4096 characters)")
                if kind not in FILE_KINDS:
                    raise Invalid(f"unknown file kind {kind!r}; expected one of {', '.join(FILE_KINDS)}")
                if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
                    raise Invalid(f"size must be a non-negative integer, not {size!r}")
                out.append(FileRecord(id=new_id("file"), session_id=self.session_id, run_id=f.get("run_id"),
                                      step_id=f.get("step_id"), path=path, kind=kind, size=size, at=now))
            for r in out:
                tx.append(self._st.files, r)
                tx.emit(self.session_id, r.run_id, EventType.file_created,
                        {"path": r.path, "kind": r.kind, "size": r.size, "step_id": r.step_id})
            return [r.model_copy() for r in out]

    def list_files(self, run_id: str | None = None) -> list[FileRecord]:
        with self._st.read():
            if run_id is not None:
                check("run", run_id)
            return [f.model_copy() for f in self._st.files
                    if f.session_id == self.session_id and (run_id is None or f.run_id == run_id)]

    def record_metrics(self, points: Sequence[NewMetric]) -> int:
        items = _items(points, "points")
        with self._st.write() as tx:
            self._st.session(self.session_id)
            out = []
            for item in items:
                m = _object(item, NewMetric, "point")
                self._scope(m)
                name, value = m.get("name"), m.get("value")
                if not isinstance(name, str) or not name.strip() or len(name) > 200:
                    raise Invalid("a metric needs a name (text, at most 200 characters)")
                if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
                    raise Invalid(f"metric {name!r}: value must be a number, not {value!r}")
                at = m.get("at")
                if isinstance(at, str):
                    try:
                        at = datetime.fromisoformat(at)
                    except ValueError:
                        raise Invalid(f"metric {name!r}: at {at!r} is not an ISO date-time") from None
                out.append(MetricPoint(session_id=self.session_id, run_id=m.get("run_id"), name=name,
                                       value=float(value), at=utc(at) if at else utcnow()))
            for p in out:
                tx.append(self._st.metrics, p)
                tx.emit(self.session_id, p.run_id, EventType.metric_update, {"name": p.name, "value": p.value})
            return len(out)

    def list_metrics(self, *, run_id: str | None = None, name: str | None = None) -> list[MetricPoint]:
        with self._st.read():
            if run_id is not None:
                check("run", run_id)
            found = [m for m in self._st.metrics if m.session_id == self.session_id
                     and (run_id is None or m.run_id == run_id) and (not name or m.name == name)]
            return [m.model_copy() for m in sorted(found, key=lambda m: m.at)]


def subscribe(st: State, *, session_id: str | None, run_id: str | None, types: list[str] | None,
              since_gseq: int | None, callback: EventCallback | None) -> Subscription:
    """A subscription that gets the events after `since_gseq` first, then each one as it is committed."""
    with st.read():
        sub = MemorySubscription(st.hub, session_id=session_id, run_id=run_id, types=types, callback=callback,
                                 since_gseq=since_gseq, floor=st.counters["gseq"])
        backlog = [] if since_gseq is None else [e for e in st.events if e["gseq"] > since_gseq and sub.matches(e)]
        st.hub.add(sub, backlog)
        return sub
