"""What the in-memory backend holds, and how a call changes it: one lock, all or nothing.

Every write runs in a `Tx`: each change it makes is logged with how to undo it, so a
refusal half-way (a quota, a guard, a bad record in a batch) leaves the state as it was,
as a database transaction would. The events a write records are numbered inside it and
handed to the subscribers only once it has succeeded, by one delivery thread, in store
order.
"""

from __future__ import annotations

import copy
import queue
import threading
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

from cmbagent_jupyter.core import (
    EVENT_SCHEMA_VERSION,
    ApprovalRequest,
    Branch,
    Checkpoint,
    CostRecord,
    Run,
    Session,
    SessionStatus,
    StateTransition,
    Step,
    StepAttempt,
    check_id,
    new_id,
    utcnow,
)
from cmbagent_jupyter.core import codec
from cmbagent_jupyter.core.errors import Invalid, NotFound, StoreUnavailable
from cmbagent_jupyter.core.events import EventType
from cmbagent_jupyter.store.port import EventCallback, FileRecord, MetricPoint, Subscription

_MISSING = object()


def as_json(value: Any) -> Any:
    """`value` as the JSON it is stored as (a copy: the caller's object is never kept)."""
    return codec.loads(codec.dumps(value))


def utc(value: datetime) -> datetime:
    """A time in UTC (a naive one is taken to be UTC already)."""
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def check(kind: str, value: Any) -> str:
    """An id of `kind`, or Invalid naming what is wrong with it."""
    try:
        return check_id(kind, value)
    except ValueError as exc:
        raise Invalid(str(exc)) from None


class Tx:
    """One write: its changes (each with its undo) and the events it records."""

    def __init__(self, state: "State"):
        self.st = state
        self._undo: list[Callable[[], None]] = []
        self.events: list[dict[str, Any]] = []

    def put(self, mapping: dict, key: Any, value: Any) -> Any:
        old = mapping.get(key, _MISSING)
        if old is _MISSING:
            self._undo.append(lambda: mapping.pop(key, None))
        else:
            self._undo.append(lambda: mapping.__setitem__(key, old))
        mapping[key] = value
        return value

    def drop(self, mapping: dict, key: Any) -> None:
        old = mapping.pop(key)
        self._undo.append(lambda: mapping.__setitem__(key, old))

    def append(self, items: list, value: Any) -> Any:
        self._undo.append(items.pop)
        items.append(value)
        return value

    def rollback(self) -> None:
        for undo in reversed(self._undo):
            undo()
        self._undo.clear()
        self.events.clear()

    def emit(self, session_id: str, run_id: str | None, type: EventType | str, payload: dict[str, Any], *,
             ts: datetime | None = None, event_id: str | None = None) -> dict[str, Any]:
        """Record an event: numbered per run (per session without one) and store-wide."""
        key = ("run", run_id) if run_id else ("session", session_id)
        seq = self.put(self.st.seqs, key, self.st.seqs.get(key, 0) + 1)
        gseq = self.put(self.st.counters, "gseq", self.st.counters["gseq"] + 1)
        event = {"schema_version": EVENT_SCHEMA_VERSION, "id": event_id or new_id("event"),
                 "type": EventType(type).value, "session_id": session_id, "run_id": run_id, "seq": seq,
                 "gseq": gseq, "ts": utc(ts or utcnow()).isoformat(), "payload": payload}
        self.append(self.st.events, event)
        self.events.append(event)
        return event

    def history(self, session_id: str, entity_type: str, entity_id: str, src: str | None, dst: str,
                reason: str | None = None, actor: str | None = None, at: datetime | None = None) -> None:
        self.append(self.st.history, StateTransition(
            id=new_id("transition"), session_id=session_id, entity_type=entity_type, entity_id=entity_id,
            from_state=src, to_state=dst, reason=reason, actor=actor, at=at or utcnow()))


class MemorySubscription(Subscription):
    """Events of one session (or all), run and types, after `floor` live and a backlog replayed first."""

    def __init__(self, hub: "Hub", *, session_id: str | None, run_id: str | None, types: list[str] | None,
                 callback: EventCallback | None, since_gseq: int | None, floor: int):
        self.hub = hub
        self.session_id, self.run_id = session_id, run_id
        self.types = set(types) if types else None
        self.callback = callback
        self.floor = floor  # live events up to here come from the backlog only
        self.last_gseq: int | None = floor if since_gseq is None else since_gseq
        self.closed = False
        self._queue: queue.Queue[dict[str, Any]] = queue.Queue()

    def matches(self, event: dict[str, Any]) -> bool:
        return ((self.session_id is None or event["session_id"] == self.session_id)
                and (self.run_id is None or event["run_id"] == self.run_id)
                and (self.types is None or event["type"] in self.types))

    def deliver(self, event: dict[str, Any]) -> None:
        if self.closed or (self.last_gseq is not None and event["gseq"] <= self.last_gseq):
            return
        self.last_gseq = event["gseq"]
        event = copy.deepcopy(event)
        if self.callback is None:
            self._queue.put(event)
            return
        try:
            self.callback(event)
        except Exception:  # noqa: BLE001 - a faulty callback must not stop the deliveries
            pass

    def get(self, timeout: float | None = None) -> dict[str, Any] | None:
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def close(self) -> None:
        self.closed = True
        self.hub.remove(self)


class Hub:
    """Hands committed events to the subscriptions, on one thread, in the order they were recorded."""

    def __init__(self) -> None:
        self.subs: list[MemorySubscription] = []
        self._items: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def add(self, sub: MemorySubscription, backlog: list[dict[str, Any]]) -> None:
        """Called under the store's lock: events committed later come after the backlog."""
        self.subs.append(sub)
        if self._thread is None:
            self._thread = threading.Thread(target=self._deliver, name="memory-store-events", daemon=True)
            self._thread.start()
        if backlog:
            self._items.put((sub, backlog))

    def remove(self, sub: MemorySubscription) -> None:
        try:
            self.subs.remove(sub)
        except ValueError:
            pass

    def publish(self, events: list[dict[str, Any]]) -> None:
        if events and self.subs:
            self._items.put((None, events))

    def close(self) -> None:
        if self._thread is not None:
            self._items.put(None)
            if self._thread is not threading.current_thread():  # a callback may close the store
                self._thread.join(timeout=10)
        for sub in list(self.subs):
            sub.closed = True
        self.subs.clear()

    def _deliver(self) -> None:
        while (item := self._items.get()) is not None:
            only, events = item
            for sub in [only] if only is not None else list(self.subs):
                for event in events:
                    if only is not None or (event["gseq"] > sub.floor and sub.matches(event)):
                        sub.deliver(event)


class State:
    """Every record of one store, by id, and the locks and counters around them."""

    def __init__(self, home: Path):
        self.home = home
        self.lock = threading.RLock()
        self.closed = False
        self.sessions: dict[str, Session] = {}
        self.runs: dict[str, Run] = {}
        self.journal_seq: dict[str, int] = {}  # run -> the last step-journal record applied
        self.dags: dict[str, dict[str, Any]] = {}
        self.steps: dict[str, Step] = {}
        self.checkpoints: dict[str, Checkpoint] = {}
        self.approvals: dict[str, ApprovalRequest] = {}
        self.attempts: dict[str, StepAttempt] = {}
        self.branches: dict[str, Branch] = {}
        self.costs: list[CostRecord] = []
        self.files: list[FileRecord] = []
        self.metrics: list[MetricPoint] = []
        self.history: list[StateTransition] = []
        self.events: list[dict[str, Any]] = []
        self.seqs: dict[tuple[str, str], int] = {}
        self.counters = {"gseq": 0}
        self.hub = Hub()

    @contextmanager
    def read(self) -> Iterator[None]:
        with self.lock:
            if self.closed:
                raise StoreUnavailable("the memory store is closed")
            yield

    @contextmanager
    def write(self) -> Iterator[Tx]:
        with self.read():
            tx = Tx(self)
            try:
                yield tx
            except BaseException:
                tx.rollback()
                raise
            self.hub.publish(tx.events)

    # -- lookups, each confined to one session -----------------------------------------

    def session(self, session_id: str, *, allow_deleted: bool = False) -> Session:
        found = self.sessions.get(check("session", session_id))
        if found is None or (found.status == SessionStatus.deleted and not allow_deleted):
            raise NotFound(f"session {session_id} does not exist")
        return found

    def live(self, session_id: str) -> bool:
        found = self.sessions.get(session_id)
        return found is not None and found.status != SessionStatus.deleted

    def run(self, session_id: str, run_id: str) -> Run:
        found = self.runs.get(check("run", run_id))
        if found is None or found.session_id != session_id:
            raise NotFound(f"run {run_id} does not exist in session {session_id}")
        return found

    def step(self, session_id: str, step_id: str) -> Step:
        found = self.steps.get(check("step", step_id))
        if found is None or found.session_id != session_id:
            raise NotFound(f"step {step_id} does not exist in session {session_id}")
        return found

    def steps_of(self, run_id: str) -> list[Step]:
        return sorted((s for s in self.steps.values() if s.run_id == run_id), key=lambda s: s.number)

    def spent(self, session_id: str, run_id: str | None = None) -> float:
        return sum(c.cost_usd for c in self.costs
                   if c.session_id == session_id and (run_id is None or c.run_id == run_id))

    def owner_of(self, records: dict[str, Any], what: str, entity_id: str) -> str:
        """The live session a record of any session belongs to (a lookup by a bare id)."""
        found = records.get(check(what, entity_id))
        if found is None or not self.live(found.session_id):
            raise NotFound(f"{what} {entity_id} does not exist")
        return found.session_id
