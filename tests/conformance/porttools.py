"""What the conformance tests build and wait for: plans, journal records, runs, events.

Written against the store port and the core only, like every test beside it.
"""

from __future__ import annotations

import os
import threading
import time
from datetime import datetime, timezone
from typing import Any, Sequence

from cmbagent_jupyter.core import Run, Step, new_id
from cmbagent_jupyter.store.port import SessionPort, Subscription
from fixtures.waiting import wait_for

PID = os.getpid()
OTHER_PID = PID + 100_000  # a process that does not own the run


def at(second: int) -> datetime:
    """A fixed time of the step journal (seconds after 2026-01-01T00:00:00Z)."""
    return datetime(2026, 1, 1, 0, 0, second, tzinfo=timezone.utc)


def record(seq: int, *, start: Sequence[str] = (), complete: Sequence[Any] = (),
           fail: Sequence[tuple[str, str]] = (), second: int | None = None) -> dict[str, Any]:
    """A step-journal record; `complete` holds step ids, (id, outputs) pairs or Completion dicts."""
    done = []
    for c in complete:
        if isinstance(c, str):
            done.append({"step_id": c, "outputs": {"summary": c}})
        elif isinstance(c, tuple):
            done.append({"step_id": c[0], "outputs": c[1]})
        else:
            done.append(c)
    return {"seq": seq, "at": at(second if second is not None else seq).isoformat(), "start": list(start),
            "complete": done, "fail": [{"step_id": i, "error": e} for i, e in fail]}


def chain(*keys: str) -> list[dict[str, Any]]:
    """Plan steps, each depending on the one before."""
    return [{"key": k, "description": f"do {k}", "depends_on": [keys[i - 1]] if i else []}
            for i, k in enumerate(keys)]


def executing(ss: SessionPort, *keys: str, mode: str = "control") -> tuple[Run, list[Step]]:
    """A run whose steps (a chain of `keys`, default s1 and s2) are planned, claimed to execute by this process."""
    run = ss.create_run(f"run of {' '.join(keys) or 's1 s2'}", mode=mode)
    steps = ss.put_plan(run.id, chain(*(keys or ("s1", "s2"))))
    claimed = ss.claim(run.id, to="executing", owner_pid=PID)
    return claimed.run, steps


def finished(ss: SessionPort, *keys: str, config: dict[str, Any] | None = None) -> tuple[Run, dict[str, Step]]:
    """A completed run whose chain of `keys` each finished (outputs {"summary": key}), by the journal."""
    run = ss.create_run("finished run", mode="control", config=config)
    steps = ss.put_plan(run.id, chain(*keys))
    ss.claim(run.id, to="executing", owner_pid=PID)
    records = []
    for i, s in enumerate(steps):
        records.append(record(2 * i + 1, start=[s.id]))
        records.append(record(2 * i + 2, complete=[(s.id, {"summary": s.key})]))
    ss.settle(run.id, "completed", owner_pid=PID, records=records)
    return ss.get_run(run.id), {s.key: s for s in ss.list_steps(run.id)}


def take(sub: Subscription, n: int, timeout: float = 20.0) -> list[dict[str, Any]]:
    """The next `n` events of a subscription, waited for up to `timeout` seconds."""
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while len(got) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"timed out after {timeout} s with {len(got)} of {n} events: {got}")
        event = sub.get(timeout=left)
        if event is not None:
            got.append(event)
    return got


def until_marker(sub: Subscription, marker: str, timeout: float = 20.0) -> list[dict[str, Any]]:
    """Events of a subscription up to and including the log event whose message is `marker`."""
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while not got or got[-1]["payload"].get("message") != marker:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"timed out after {timeout} s waiting for {marker!r}; got {got}")
        event = sub.get(timeout=left)
        if event is not None:
            got.append(event)
    return got


class Collected:
    """A subscription callback that keeps what it is given."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def __call__(self, event: dict[str, Any]) -> None:
        with self._lock:
            self.events.append(event)

    def wait_marker(self, marker: str, timeout: float = 20.0) -> list[dict[str, Any]]:
        wait_for(lambda: any(e["payload"].get("message") == marker for e in list(self.events)), timeout,
                 f"the event {marker!r} at the callback")
        with self._lock:
            return list(self.events)


def unknown(kind: str) -> str:
    """A well-formed id of `kind` that no store has."""
    return new_id(kind)
