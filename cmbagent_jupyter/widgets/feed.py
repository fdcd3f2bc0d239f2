"""A run's live state for the widgets, read from the store and kept current by its events.

The widgets never look inside the engine: a `RunFeed` loads the run, its steps,
approvals and cost records from the store, subscribes to the run's events, and on
each batch of events reloads only what those events can have changed. Events
arrive on the store client's reader thread; the feed hands them to its own thread,
which waits `coalesce_s` for more before it refreshes and tells its listeners, so
a burst of 1,000 events costs a few reloads and a few trait syncs, not 1,000.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections import deque
from typing import Any, Callable, Iterable

from cmbagent_jupyter.core import ApprovalRequest, CostRecord, Run, Step, StoreError
from cmbagent_jupyter.store import SessionPort, StorePort, open_store

log = logging.getLogger(__name__)

PARTS = frozenset({"run", "steps", "approvals", "costs", "files"})

# What an event type (by prefix) can change; every event also goes to the log.
_TRIGGERS: tuple[tuple[str, frozenset[str]], ...] = (
    ("workflow.", frozenset({"run", "steps"})),
    ("step.", frozenset({"steps"})),
    ("dag.", frozenset({"steps"})),
    ("retry.", frozenset({"steps"})),
    ("approval.", frozenset({"approvals", "run", "steps"})),
    ("cost.", frozenset({"costs", "run"})),
    ("budget.", frozenset({"run"})),
    ("file.", frozenset({"files"})),
)

Listener = Callable[["RunFeed", list[dict[str, Any]], frozenset[str]], None]

_STOP = object()


def parts_for(events: Iterable[dict[str, Any]]) -> frozenset[str]:
    """The parts of a run's state that a batch of events may have changed."""
    out: set[str] = set()
    for event in events:
        etype = str(event.get("type", ""))
        for prefix, parts in _TRIGGERS:
            if etype.startswith(prefix):
                out |= parts
    return frozenset(out)


def summarize_event(event: dict[str, Any], limit: int = 200) -> dict[str, Any]:
    """The small form of an event the log shows: type, seq, time and a one-line summary."""
    payload = event.get("payload") or {}
    summary = _payload_summary(str(event.get("type", "")), payload)
    if len(summary) > limit:
        summary = summary[: limit - 1] + "…"
    return {"type": event.get("type"), "seq": event.get("seq"), "ts": event.get("ts"), "summary": summary}


def _payload_summary(etype: str, p: dict[str, Any]) -> str:
    if not isinstance(p, dict):
        return str(p)
    step = p.get("key") or p.get("step_key") or p.get("step_id") or ""
    if etype.startswith("step.") or etype == "dag.node_status_changed":
        text = f"{step} ({p.get('agent')})" if p.get("agent") else str(step)
        if p.get("from") or p.get("to"):
            text += f": {p.get('from')} → {p.get('to')}"
        if p.get("progress") is not None:
            text += f" {round(100 * float(p['progress']))}%"
        if p.get("error"):
            text += f" — {p['error']}"
        return text
    if etype.startswith("workflow."):
        if p.get("to"):
            return f"{p.get('from')} → {p.get('to')}" + (f" ({p['reason']})" if p.get("reason") else "")
        return ", ".join(f"{k}={v}" for k, v in p.items() if isinstance(v, (str, int, float)))
    if etype == "approval.requested":
        return f"{p.get('kind')} {p.get('approval_id')} waiting for {', '.join(p.get('options') or [])}"
    if etype == "approval.received":
        text = f"{p.get('kind')} {p.get('decision')} by {p.get('resolved_by')}"
        return text + (f": {p['feedback']}" if p.get("feedback") else "")
    if etype == "cost.update":
        models = sorted({str(r.get("model")) for r in p.get("records") or []})
        return f"${float(p.get('cost_usd') or 0):.4f} ({', '.join(models)})"
    if etype.startswith("agent."):
        who = p.get("sender") or p.get("agent") or ""
        text = p.get("content") or p.get("tool") or p.get("name") or ""
        return f"{who}: {' '.join(str(text).split())}" if who else " ".join(str(text).split())
    return json.dumps(p, default=str, separators=(",", ":"))


class RunFeed:
    """One run's state (run, steps, approvals, cost records, recent events), kept live.

    Listeners are called as `listener(feed, events, parts)` on the feed's thread after
    each refresh, and once at once when they are added (with the recent events and all
    parts). `live=False` loads once and never subscribes (`refresh()` updates by hand).
    """

    def __init__(self, run_id: str, session_id: str | None = None, home: Any = None, *, store: StorePort | None = None,
                 live: bool = True, coalesce_s: float = 0.15, history: int = 500):
        self._owns_store = store is None
        self.store = store if store is not None else open_store(home)
        try:
            if session_id is None:
                run = self.store.find_run(run_id)
            else:
                run = self.store.session(session_id).get_run(run_id)
        except BaseException:
            if self._owns_store:
                self.store.close()
            raise
        self.run: Run = run
        self.run_id = run.id
        self.session: SessionPort = self.store.session(run.session_id)
        self.steps: list[Step] = []
        self.approvals: list[ApprovalRequest] = []
        self.costs: list[CostRecord] = []
        self.recent: deque[dict[str, Any]] = deque(maxlen=history)
        self.total_events = 0
        self.coalesce_s = coalesce_s
        self.version = 0
        self._listeners: list[Listener] = []
        self._lock = threading.RLock()
        self._queue: queue.Queue[Any] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._subscription = None
        self.closed = False
        self.refresh(PARTS)
        if live:
            self.start()

    # -- state ---------------------------------------------------------------------

    def refresh(self, parts: Iterable[str] = PARTS) -> frozenset[str]:
        """Reload the given parts from the store; returns the parts reloaded."""
        parts = frozenset(parts)
        with self._lock:
            if "run" in parts:
                self.run = self.session.get_run(self.run_id)
            if "steps" in parts:
                self.steps = self.session.list_steps(self.run_id)
            if "approvals" in parts:
                self.approvals = self.session.list_approvals(self.run_id, pending_only=False)
            if "costs" in parts:
                self.costs = self.session.cost_records(self.run_id)
            self.version += 1
        return parts

    def step_by_id(self, step_id: str) -> Step | None:
        return next((s for s in self.steps if s.id == step_id), None)

    def pending_approvals(self) -> list[ApprovalRequest]:
        return [a for a in self.approvals if a.status.value == "pending"]

    # -- listeners -------------------------------------------------------------------

    def add_listener(self, listener: Listener) -> None:
        with self._lock:
            self._listeners.append(listener)
            recent = list(self.recent)
        self._notify(listener, recent, PARTS)

    def remove_listener(self, listener: Listener) -> None:
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def _notify(self, listener: Listener, events: list[dict[str, Any]], parts: frozenset[str]) -> None:
        try:
            listener(self, events, parts)
        except Exception:  # noqa: BLE001 - one faulty view must not stop the others
            log.exception("run feed listener %r failed", listener)

    # -- live updates ------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None or self.closed:
            return
        self._thread = threading.Thread(target=self._loop, name=f"cmbagent-feed-{self.run_id}", daemon=True)
        self._thread.start()
        # since_gseq=0: the service replays the run's past events, then streams, with no gap
        self._subscription = self.session.subscribe(run_id=self.run_id, since_gseq=0, callback=self._queue.put)

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            batch = [first]
            deadline = time.monotonic() + self.coalesce_s
            stop = False
            while True:
                left = deadline - time.monotonic()
                try:
                    item = self._queue.get(timeout=max(left, 0)) if left > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stop = True
                    break
                batch.append(item)
            self.apply(batch)
            if stop:
                return

    def apply(self, events: list[dict[str, Any]]) -> None:
        """Take in a batch of the run's events: refresh what they touch, tell the listeners."""
        if self.closed:
            return
        parts = parts_for(events) | {"events"}
        try:
            self.refresh(parts & PARTS)
        except StoreError as exc:
            log.warning("run feed %s could not refresh: %s", self.run_id, exc)
        small = [summarize_event(e) for e in events]
        with self._lock:
            self.recent.extend(small)
            self.total_events += len(events)
            listeners = list(self._listeners)
        for listener in listeners:
            self._notify(listener, small, frozenset(parts))

    def close(self) -> None:
        """Stop listening (and close the store client if the feed made it)."""
        if self.closed:
            return
        self.closed = True
        if self._subscription is not None:
            try:
                self._subscription.close()
            except StoreError:
                pass
        self._queue.put(_STOP)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        with self._lock:
            self._listeners.clear()
        if self._owns_store:
            self.store.close()

    def __enter__(self) -> "RunFeed":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
