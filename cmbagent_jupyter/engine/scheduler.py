"""The DAG scheduler: steps whose dependencies are done run in parallel, up to `max_parallel`.

It owns no state that matters after a crash: every completion and every start goes
through the `StepLedger` (one store transaction for both), and a step's successors are
started in the same transaction that records its completion, so nothing starts before
what it depends on is durable. Completions that arrive while that call is in flight
are recorded together in the next one.

Stopping: `pause` lets running steps finish and starts nothing new; `cancel` and
`interrupt` cancel the running steps (their processes are killed) and record nothing
more for them; a step failure starts nothing new and lets the others finish.
"""

from __future__ import annotations

import asyncio
import logging
import traceback
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from cmbagent_jupyter.engine.dag import PlanDAG
from cmbagent_jupyter.engine.ledger import RunSignal, StepLedger
from cmbagent_jupyter.core.errors import Conflict

log = logging.getLogger("cmbagent.engine")

StepFunc = Callable[[str], Awaitable[dict[str, Any]]]


class StepFailed(Exception):
    """A step that exhausted its attempts; the message is what the user sees."""


class StopRequest:
    """Why the scheduler should stop starting steps; set from any thread through the engine's loop."""

    KINDS = ("pause", "cancel", "interrupt")

    def __init__(self) -> None:
        self.kind: str | None = None
        self.reason: str | None = None
        self.changed = asyncio.Event()

    def request(self, kind: str, reason: str | None = None) -> None:
        if kind not in self.KINDS:
            raise ValueError(kind)
        order = {"pause": 0, "cancel": 1, "interrupt": 2}
        if self.kind is None or order[kind] > order[self.kind]:
            self.kind, self.reason = kind, reason
        self.changed.set()

    @property
    def hard(self) -> bool:
        return self.kind in ("cancel", "interrupt")


@dataclass
class ScheduleOutcome:
    completed: set[str] = field(default_factory=set)
    failed: dict[str, str] = field(default_factory=dict)
    cancelled: list[str] = field(default_factory=list)
    stopped: str | None = None
    remaining: set[str] = field(default_factory=set)

    @property
    def finished(self) -> bool:
        return not self.remaining and not self.failed and not self.stopped


class DagScheduler:
    def __init__(self, dag: PlanDAG, ledger: StepLedger, run_step: StepFunc, *, max_parallel: int = 4,
                 stop: StopRequest | None = None, on_signal: Callable[[RunSignal], None] | None = None):
        if max_parallel < 1:
            raise ValueError("max_parallel must be at least 1")
        self.dag = dag
        self.ledger = ledger
        self.run_step = run_step
        self.max_parallel = max_parallel
        self.stop = stop or StopRequest()
        self.on_signal = on_signal

    async def run(self) -> ScheduleOutcome:
        order = self.dag.order()
        deps = {k: set(self.dag.dependencies(k)) for k in order}
        done = set(self.ledger.completed())
        settled = set(done)  # done, and finished but not recorded yet: what a step may start after
        pending = [k for k in order if k not in done]
        running: dict[asyncio.Task, str] = {}
        to_complete: list[tuple[str, dict[str, Any]]] = []
        to_fail: list[tuple[str, str]] = []
        failed: dict[str, str] = {}
        # steps report here as they finish (in that order), and a stop request wakes the loop too
        finished: deque[asyncio.Task] = deque()
        wake = asyncio.Event()

        def on_finished(task: asyncio.Task) -> None:
            finished.append(task)
            wake.set()

        stop_wait: asyncio.Task | None = None
        try:
            while True:
                if self.stop.hard:
                    break
                starts: list[str] = []
                if self.stop.kind is None and not failed:
                    room = self.max_parallel - len(running)
                    for k in pending:
                        if room <= 0:
                            break
                        if deps[k] <= settled:
                            starts.append(k)
                            room -= 1
                if to_complete or to_fail or starts:
                    signal = await self.ledger.advance(complete=to_complete, fail=to_fail, start=starts)
                    done.update(k for k, _ in to_complete)
                    to_complete, to_fail = [], []
                    self._signal(signal)
                    for k in starts:
                        pending.remove(k)
                        task = asyncio.create_task(self.run_step(k), name=f"step:{k}")
                        running[task] = k
                        task.add_done_callback(on_finished)
                if not running:
                    break
                if not finished:
                    if stop_wait is None:
                        stop_wait = asyncio.create_task(self.stop.changed.wait())
                        stop_wait.add_done_callback(lambda _t: wake.set())
                    wake.clear()
                    await wake.wait()
                if stop_wait is not None and stop_wait.done():
                    self.stop.changed.clear()
                    stop_wait = None
                while finished:
                    task = finished.popleft()
                    key = running.pop(task, None)
                    if key is None:
                        continue
                    if task.cancelled():
                        pending.insert(0, key)
                        continue
                    exc = task.exception()
                    if exc is None:
                        to_complete.append((key, task.result()))
                        settled.add(key)
                    else:
                        msg = str(exc) if isinstance(exc, StepFailed) else \
                            f"{type(exc).__name__}: {exc}\n{''.join(traceback.format_exception(exc))[-3000:]}"
                        to_fail.append((key, msg))
                        failed[key] = msg
            if to_complete or to_fail:
                # steps that did finish are recorded even when stopping; a cancelled run refuses them
                try:
                    self._signal(await self.ledger.advance(complete=to_complete, fail=to_fail))
                    done |= {k for k, _ in to_complete}
                except Conflict:
                    pending[:0] = [k for k, _ in to_complete] + [k for k, _ in to_fail]
        finally:
            cancelled = list(running.values())
            for task in running:
                task.remove_done_callback(on_finished)
                task.cancel()
            if running:
                await asyncio.gather(*running, return_exceptions=True)
            if stop_wait is not None:
                stop_wait.cancel()
        return ScheduleOutcome(completed=done, failed=failed, cancelled=cancelled, stopped=self.stop.kind,
                               remaining=set(pending) | set(cancelled))

    def _signal(self, signal: RunSignal) -> None:
        if self.on_signal is not None:
            self.on_signal(signal)
