"""The step ledger: the durable record of which steps finished, with what, and what started.

`advance` is the only way step progress is recorded. It appends one record to the run's
step journal (`checkpoints/journal.jsonl`: the steps that finished with their outputs,
the ones that failed, the ones that may start now); a successor only starts once that
append returned, so a completion survives the process before anything that depends on
it begins. The journal reaches the disk by group commit (or at every boundary with the
run setting `journal_sync="boundary"`), and always before the run waits at a gate or
leaves an active state (`drain`). The store is updated behind it: a flusher task sends every record
queued since its last call in one `engine.advance_many` (one transaction, multi-row
statements), and its reply carries the run's signal (pause requested, status). Before
a run leaves an active state the flusher is drained, so the store is complete whenever
a run is not running; after a crash the journal is replayed into the store on resume
(`replay_journal`) or by `cmbagent recover`.

Full snapshots (the whole context, pickled) are written now and then: at the first
completion (not at a new run's, when its config lists its steps: `cmbagent recover` builds
them from run.json), every `SNAPSHOT_EVERY` completions or `SNAPSHOT_INTERVAL_S`, when every
step is done, and at timed, emergency and final checkpoints. The step snapshots of a run
whose config lists its steps are not fsynced (the journal is the durable record). On resume the ledger is read
back from the store: completed steps are skipped, steps found running were in flight
at a crash and run again.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pickle
import time
from dataclasses import dataclass
from typing import Any, Callable

from cmbagent_jupyter.store.atomic import write_atomically
from cmbagent_jupyter.store.checkpoint_files import CheckpointFiles, StepJournal
from cmbagent_jupyter.core import Checkpoint, CheckpointKind, Run, StepStatus, Step, new_id, utcnow
from cmbagent_jupyter.core.errors import Conflict
from cmbagent_jupyter.store.port import NewCheckpoint, SessionPort, Settled
from cmbagent_jupyter.core.threads import in_thread

log = logging.getLogger("cmbagent.engine")

SNAPSHOT_EVERY = 100
SNAPSHOT_INTERVAL_S = 60.0
EMERGENCY_DRAIN_S = 2.0
FLUSH_BATCH = 256
FLUSH_DELAY_S = 0.02
# a batch of this many step changes goes at once, without waiting out FLUSH_DELAY_S; each batch
# sent so doubles it (up to FLUSH_MAX_CHANGES): a run whose steps take no time sends few, large
# batches, each costing the store one transaction
FLUSH_MIN_CHANGES = 96
FLUSH_MAX_CHANGES = 1024
REPLAY_BATCH = 128
# test hook: with this set, the flusher never sends anything (the journal alone holds the run)
HOLD_FLUSH_ENV = "CMBAGENT_TEST_HOLD_STORE_FLUSH"


@dataclass(frozen=True)
class RunSignal:
    """What the store said about the run at the last flush."""

    run_status: str
    pause_requested: bool


class StepLedger:
    def __init__(self, store: SessionPort, files: CheckpointFiles, steps: list[Step],
                 context_of: Callable[[dict[str, dict[str, Any]]], dict[str, Any]], *, owner_pid: int | None = None,
                 on_signal: Callable[[RunSignal], None] | None = None, journal_sync: str = "group",
                 context_files: bool = True, journal: StepJournal | None = None):
        self.store = store
        self.files = files
        self.steps = {s.key: s for s in steps}
        self.outputs: dict[str, dict[str, Any]] = {
            s.key: dict(s.outputs) for s in steps if s.status == StepStatus.completed}
        self.context_of = context_of
        self.owner_pid = owner_pid if owner_pid is not None else os.getpid()
        self.on_signal = on_signal
        self.checkpoints_written = 0
        # `journal`: this run's, made while the run was being claimed (`StepJournal.create`)
        self.journal = journal if journal is not None else StepJournal(files.root, sync=journal_sync)
        self.applied_seq = 0
        self._seq: int | None = None
        self._dumps: dict[str, dict[str, Any]] = {}
        self._dirty: set[str] = set(self.steps)
        self._queue: list[dict[str, Any]] = []
        self._queued_changes = 0  # step changes in the records queued and not yet sent
        self._batch_changes = FLUSH_MIN_CHANGES  # what makes a batch worth sending before FLUSH_DELAY_S
        self._flusher: asyncio.Task | None = None
        self._hurry = asyncio.Event()  # set while draining: the flusher sends at once
        self._ready = asyncio.Event()  # set when a batch is worth sending now (big enough, or a drain)
        self._hold = False  # set once the run settles: the flusher sends nothing more
        self._sent_seq = 0  # the last record of the batch the flusher sent
        self._applied_hint: tuple[int, RunSignal] | None = None
        self._files_task: asyncio.Task | None = None
        self._files_jobs: list[Callable[[], None]] = []
        self._context_files: list[tuple[dict[str, dict[str, Any]], list[int]]] = []
        self.write_context_files = context_files
        self._error: BaseException | None = None
        self._signal = RunSignal("executing", False)
        # a run whose config (mirrored in run.json) lists its steps can be rebuilt without a snapshot
        # (`recovery.planned_steps`; the journal says what became of them): its snapshots are not
        # synced to the disk on the way (the journal is), and its start is not snapshotted at the
        # first completion; any other run's are
        planned = _planned_ids(files.run) == {s.key: s.id for s in steps}
        self._sync_snapshots = not planned
        fresh = all(s.status == StepStatus.pending for s in steps)
        self._since_snapshot: int | None = 0 if planned and fresh else None
        self._snapshot_at = time.monotonic()

    # -- what the store says --------------------------------------------------

    @property
    def steps(self) -> dict[str, Step]:
        """The run's steps by key, as the journal leaves them."""
        return self._steps

    @steps.setter
    def steps(self, steps: dict[str, Step]) -> None:
        self._steps = steps
        self._done = sum(s.status == StepStatus.completed for s in steps.values())

    def completed(self) -> set[str]:
        return {k for k, s in self.steps.items() if s.status == StepStatus.completed}

    def in_flight(self) -> set[str]:
        return {k for k, s in self.steps.items() if s.status == StepStatus.running}

    def context(self) -> dict[str, Any]:
        return self.context_of(self.outputs)

    def _steps_json(self) -> list[dict[str, Any]]:
        """The steps as a snapshot holds them; only the ones that changed are dumped again."""
        if set(self.steps) != set(self._dumps):
            self._dirty |= set(self.steps)
            self._dumps = {k: v for k, v in self._dumps.items() if k in self.steps}
        for key in self._dirty:
            self._dumps[key] = self.steps[key].model_dump(mode="json")
        self._dirty = set()
        return sorted(self._dumps.values(), key=lambda d: d["number"])

    # -- recording ------------------------------------------------------------------

    def prime(self, journal_seq: int, run_status: str) -> None:
        """What the store has of the journal, as the claim said (saves asking again at the first boundary)."""
        self._applied_hint = (int(journal_seq), RunSignal(run_status, False))

    async def _open(self) -> None:
        last = self.journal.last_seq if self.journal.is_open else await in_thread(self.journal.open)
        if self._applied_hint is None:
            out = await self.store.aio.advance(self.files.run.id, [])
            self._applied_hint = (out.journal_seq, RunSignal(out.run_status, out.pause_requested))
        self.applied_seq, self._signal = self._applied_hint
        self._seq = max(last, self.applied_seq)

    async def advance(self, *, complete: list[tuple[str, dict[str, Any]]] = (),
                      fail: list[tuple[str, str]] = (), start: list[str] = ()) -> RunSignal:
        """Journal a step boundary (durable when this returns) and queue it for the store."""
        if self._error is not None:
            raise self._error
        if self._seq is None:
            await self._open()
        now = utcnow()
        steps = self._steps
        changed: dict[str, Step] = {}
        for key, out in complete:
            changed[key] = steps[key].model_copy(update={"status": StepStatus.completed, "outputs": out,
                                                         "completed_at": now, "progress": 1.0})
        for key, err in fail:
            changed[key] = (changed.get(key) or steps[key]).model_copy(update={"status": StepStatus.failed,
                                                                                "error": err})
        for key in start:
            st = changed.get(key) or steps[key]
            changed[key] = st.model_copy(update={"status": StepStatus.running, "started_at": now,
                                                 "attempts": st.attempts + 1})
        seq = self._seq + 1
        record: dict[str, Any] = {
            "seq": seq, "at": now.isoformat(), "run_id": self.files.run.id,
            "complete": [{"step_id": steps[k].id, "key": k, "outputs": o} for k, o in complete],
            "fail": [{"step_id": steps[k].id, "key": k, "error": e} for k, e in fail],
            "start": [steps[k].id for k in start],
        }
        done_now = self._done + sum(steps[k].status != StepStatus.completed for k, _ in complete)
        snapshot = None
        if complete:
            if self._since_snapshot is not None:
                self._since_snapshot += 1
            if (self._since_snapshot is None or self._since_snapshot >= SNAPSHOT_EVERY or done_now == len(steps)
                    or time.monotonic() - self._snapshot_at >= SNAPSHOT_INTERVAL_S):
                snapshot = self.files.new_checkpoint(CheckpointKind.step_complete)
                self._since_snapshot, self._snapshot_at = 0, time.monotonic()
            # the store's checkpoint of these completions (and of the snapshot, if one is written);
            # what changed (the steps completed and their outputs) is taken from this record
            record["complete"][0]["checkpoint"] = {
                "id": snapshot[0] if snapshot else new_id("checkpoint"), "kind": CheckpointKind.step_complete.value,
                "pickle_path": str(snapshot[1]) if snapshot else None}
        self.journal.append(record)  # the durability point of this boundary
        self._seq = seq
        steps.update(changed)
        self._done = done_now
        for key, out in complete:
            self.outputs[key] = out
        self._dirty.update(changed)
        if complete:
            self._write_files([steps[k].number for k, _ in complete], steps[complete[0][0]].id, snapshot)
        self._queue.append(record)
        self._queued_changes += _changes(record)
        if self._queued_changes >= self._batch_changes:
            self._ready.set()
        if not self._hold and (self._flusher is None or self._flusher.done()):
            self._flusher = asyncio.get_running_loop().create_task(self._flush(), name="journal-flush")
        return self._signal

    def _write_files(self, numbers: list[int], step_id: str, snapshot: tuple[str, Any, Any] | None) -> None:
        """CMBAgent's context pickles of the steps just done are written with the next snapshot
        (a rename per step beside the journal would slow every journal fsync down), off the loop."""
        if self.write_context_files:
            self._context_files.append((dict(self.outputs), numbers))
        if snapshot is None:
            return
        self.checkpoints_written += 1
        self._schedule_files(self._steps_json(), step_id, snapshot, dict(self.outputs))

    def _schedule_files(self, steps_now: list[dict[str, Any]] | None, step_id: str | None,
                        snapshot: tuple[str, Any, Any] | None, outputs: dict[str, dict[str, Any]] | None = None) -> None:
        pending, self._context_files = self._context_files, []
        context_of, files, sync = self.context_of, self.files, self._sync_snapshots

        def job() -> None:
            try:
                if snapshot is not None:
                    cid, path, created = snapshot
                    files.write(cid=cid, path=path, created_at=created, kind=CheckpointKind.step_complete,
                                context=context_of(outputs), steps=steps_now, step_id=step_id, sync=sync)
                for done, numbers in pending:
                    plain = pickle.dumps(context_of(done), protocol=pickle.HIGHEST_PROTOCOL)
                    for n in numbers:
                        write_atomically(files.root / "context" / f"context_step_{n}.pkl", plain, sync=False)
            except OSError as exc:
                log.warning("checkpoint files of run %s not written: %s", files.run.id, exc)

        self._files_jobs.append(job)
        if self._files_task is None or self._files_task.done():
            self._files_task = asyncio.get_running_loop().create_task(self._run_files(), name="checkpoint-files")

    async def _run_files(self) -> None:
        while self._files_jobs:
            jobs, self._files_jobs = self._files_jobs, []
            await in_thread(lambda: [j() for j in jobs])

    async def _flush(self) -> None:
        if os.environ.get(HOLD_FLUSH_ENV):
            await asyncio.Event().wait()
        while self._queue and self._error is None:
            # let boundaries that follow at once join this transaction: fewer store commits
            # (each one an fsync of the database competing with the journal's) for a few ms;
            # a drain does not wait for that
            if not self._hurry.is_set() and self._queued_changes < self._batch_changes:
                self._ready.clear()
                try:
                    await asyncio.wait_for(self._ready.wait(), FLUSH_DELAY_S)
                except asyncio.TimeoutError:
                    pass
            if self._hold or not self._queue:
                return  # the run is settling: its last records go with the settle
            if self._queued_changes >= self._batch_changes:
                self._batch_changes = min(2 * self._batch_changes, FLUSH_MAX_CHANGES)
            batch = self._queue[:FLUSH_BATCH]
            self._sent_seq = batch[-1]["seq"]
            self._queued_changes = sum(_changes(r) for r in self._queue[FLUSH_BATCH:])
            try:
                out = await self.store.aio.advance(self.files.run.id, batch, owner_pid=self.owner_pid)
            except Exception as exc:  # noqa: BLE001 - raised at the next boundary or drain; the journal keeps it
                log.info("journal of run %s not applied to the store: %s", self.files.run.id, exc)
                self._error = exc
                return
            self._applied(out.journal_seq)
            self._signal = RunSignal(out.run_status, out.pause_requested)
            if self.on_signal is not None:
                self.on_signal(self._signal)

    def _applied(self, seq: int) -> None:
        """The store has the journal up to `seq`."""
        self.applied_seq = max(self.applied_seq, seq)
        self._queue = [r for r in self._queue if r["seq"] > self.applied_seq]

    async def drain(self, timeout: float | None = None, *, raise_errors: bool = True) -> bool:
        """Wait until the journal is on disk and the store has every boundary in it (and the
        files are written). Returns False if `timeout` passed first (the journal still holds the rest)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if not await self._settle_files(timeout):
            return False
        tasks = [t for t in (self._flusher, self._files_task) if t is not None and not t.done()]
        pending: set = set()
        if tasks:
            self._hurry.set()
            self._ready.set()
            try:
                _, pending = await asyncio.wait(tasks, timeout=_left(deadline))
            finally:
                self._hurry.clear()
        if raise_errors and self._error is not None:
            raise self._error
        return not pending

    async def _settle_files(self, timeout: float | None) -> bool:
        """The journal on disk; the pending file jobs scheduled. False if `timeout` passed first."""
        try:
            if not self.journal.durable and not await in_thread(self.journal.wait_durable, timeout):
                return False
        except OSError as exc:  # the disk refused an fsync: the store still gets what it can
            log.error("step journal of run %s could not be synced: %s", self.files.run.id, exc)
            self._error = self._error or exc
        if self._context_files:
            self._schedule_files(None, None, None)
        return True

    def _hold_back(self) -> list[dict[str, Any]] | None:
        """Stop sending to the store; returns the records the store still lacks beyond the
        batch in flight (the service applies requests in the order they were sent, so they
        follow it), or None when they cannot go in order (an earlier failure)."""
        self._hold = True  # for good: the run is leaving its active state
        self._hurry.set()  # a flusher waiting to batch more stops at once
        self._ready.set()
        if self._error is not None:
            return None
        in_flight = self._sent_seq if self._flusher is not None and not self._flusher.done() else 0
        return [r for r in self._queue if r["seq"] > max(in_flight, self.applied_seq)]

    async def _files_written(self, timeout: float | None) -> None:
        """Wait for the journal to be on disk and the checkpoint files to be written (at most `timeout`)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if not await self._settle_files(timeout):
            log.warning("run %s: the step journal was not on disk within %s s", self.files.run.id, timeout)
            return
        if self._files_task is not None and not self._files_task.done():
            _, pending = await asyncio.wait([self._files_task], timeout=_left(deadline))
            if pending:
                log.warning("run %s: checkpoint files still being written after %s s", self.files.run.id, timeout)

    async def settle(self, to: str, *, timeout: float | None = None, strict: bool = False,
                     **fields: Any) -> Settled:
        """Move the run (`engine.settle`) with every journaled boundary the store lacks, in one
        transaction. If those cannot go with it, they stay in the journal (a resume or
        `cmbagent recover` applies them) and the run is moved without them; with `strict`
        (a run marked completed must have every step in the store) the error is raised.

        The journal's last sync and the last checkpoint files go on meanwhile (the store's
        commit makes the records it takes durable on its own); this returns once they are done
        too, or `timeout` passed."""
        files = asyncio.ensure_future(self._files_written(timeout))
        try:
            return await self._settle(to, strict, fields)
        finally:
            self._hurry.clear()
            await files

    async def _settle(self, to: str, strict: bool, fields: dict[str, Any]) -> Settled:
        rest = self._hold_back()
        args = {"run_id": self.files.run.id, "to": to, "owner_pid": self.owner_pid, **fields}
        if strict and (rest is None or self._error is not None):
            raise self._error or RuntimeError(f"the step journal of run {self.files.run.id} could not reach "
                                              f"the store")
        if rest:
            try:
                out, sent = await self._settle_with(rest, args)
            except Exception as exc:  # noqa: BLE001 - the journal keeps them; the move must still happen
                if strict:
                    raise
                log.warning("run %s: the last step records did not go with the settle: %s", self.files.run.id, exc)
                self._error = self._error or exc
            else:
                if sent:
                    self._applied(int(sent[-1]["seq"]))
                return out
        elif strict:
            await self._in_flight_done()  # the batch in flight carries the last steps
        return await self.store.aio.settle(**args)

    async def _settle_with(self, rest: list[dict[str, Any]], args: dict[str, Any]
                           ) -> tuple[Settled, list[dict[str, Any]]]:
        """The settle with the records `rest`; the reply and the records that went with it."""
        try:
            return await self.store.aio.settle(records=rest, **args), rest
        except Conflict:
            if self._flusher is None or self._flusher.done():
                raise
        # the batch in flight went by another path and had not arrived: wait for it, then resend
        await self._in_flight_done()
        rest = [r for r in self._queue if r["seq"] > self.applied_seq]
        return await self.store.aio.settle(records=rest, **args), rest

    async def _in_flight_done(self) -> None:
        """Wait for the batch the flusher has in flight; a failure of it (or an earlier one) is raised."""
        if self._flusher is not None and not self._flusher.done():
            await asyncio.wait([self._flusher])
        if self._error is not None:
            raise self._error

    @property
    def signal(self) -> RunSignal:
        return self._signal

    async def checkpoint(self, kind: CheckpointKind, *, run: Run | None = None, extra: dict[str, Any] | None = None,
                         step_key: str | None = None, to: str | None = None, reason: str | None = None,
                         error: str | None = None, reset: list[str] = (), reset_to: str = "pending"
                         ) -> Checkpoint | Settled:
        """A checkpoint outside step completion (timed, emergency, manual); with `to`, also move the run
        (the reply is then the settled run).

        Moving the run first drains the journal into the store (an emergency waits at most
        `EMERGENCY_DRAIN_S`: what is left stays in the journal for the resume)."""
        cid, path, created = self.files.new_checkpoint(kind)
        context = {**self.context(), **(extra or {})}
        steps_now = self._steps_json()
        step_id = self.steps[step_key].id if step_key else None
        row = NewCheckpoint(**CheckpointFiles.store_row(cid, path, kind, {"kind": kind.value, **(extra or {})}),
                            step_id=step_id)
        await in_thread(self.files.write, cid=cid, path=path, created_at=created, kind=kind, context=context,
                        steps=steps_now, run=run, step_id=step_id)
        self.checkpoints_written += 1
        if to is None:
            return await self.store.aio.put_checkpoint(self.files.run.id, kind=kind, context=row.context,
                                                       step_id=step_id, pickle_path=str(path), checkpoint_id=cid)
        timeout = EMERGENCY_DRAIN_S if CheckpointKind(kind) == CheckpointKind.emergency else None
        return await self.settle(to, timeout=timeout, reason=reason, error=error, checkpoint=row,
                                 reset_steps=[self.steps[k].id for k in reset], reset_to=reset_to)


def _planned_ids(run: Run) -> dict[str, str] | None:
    """The step ids by key a run's config lists with its plan, if it has both."""
    ids, plan = run.config.get("step_ids"), run.config.get("final_plan")
    if not isinstance(ids, dict) or not isinstance(plan, dict):
        return None
    keys = [t.get("key") for t in plan.get("sub_tasks") or [] if isinstance(t, dict)]
    return {k: ids[k] for k in keys if k in ids} if len(keys) == len(ids) else None


def _changes(record: dict[str, Any]) -> int:
    return len(record["complete"]) + len(record["fail"]) + len(record["start"])


def _left(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


async def replay_journal(store: SessionPort, run: Run) -> int:
    """Apply the journal records of `run` the store lacks (after a crash); returns how many."""
    journal = StepJournal(run.path)
    records = await in_thread(journal.records)
    if not records:
        return 0
    out = await store.aio.advance(run.id, [])
    todo = [r for r in records if r["seq"] > out.journal_seq]
    applied = 0
    for i in range(0, len(todo), REPLAY_BATCH):
        done = await store.aio.advance(run.id, todo[i:i + REPLAY_BATCH], replay=True)
        applied += done.applied
    if applied:
        log.info("run %s: %d step journal record(s) applied to the store on resume", run.id, applied)
    return applied
