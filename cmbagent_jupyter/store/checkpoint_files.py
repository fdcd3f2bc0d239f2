"""The file half of dual persistence, written by the engine without extra store calls.

`checkpoints/journal.jsonl` is the step journal: one line per step boundary with what
it changed (steps completed with their outputs, failed, started), synced to disk as
`StepJournal` describes. It is the durability point of a step: the store is brought up to date from it in the background
(group commit) and, after a crash, on resume or by `cmbagent recover`.

A full snapshot is a pickle in the run's `checkpoints/` folder in the format
`store.checkpoints` reads (and `cmbagent recover` rebuilds the store from), built from
what the engine holds in memory; the engine writes one now and then, not per step.
After a step also `context/context_step_N.pkl`, the plain context dict CMBAgent
writes, for tools that know that layout.
"""

from __future__ import annotations

import os
import pickle
import threading
from pathlib import Path
from typing import Any

from cmbagent_jupyter.core import codec
from cmbagent_jupyter.core import CheckpointKind, Run, Session, Step, new_id, utcnow
from cmbagent_jupyter.store.atomic import write_atomically
from cmbagent_jupyter.store.checkpoints import FORMAT, FORMAT_VERSION, jsonable


class CheckpointFiles:
    def __init__(self, run: Run, session: Session):
        self.run = run
        self.session = session
        self.root = Path(run.path)
        self._dumped: tuple[Run, dict[str, Any]] | None = None  # the run as the last snapshot held it

    def _run_dump(self, run: Run) -> dict[str, Any]:
        """`run` as a snapshot holds it, dumped once per run object (its config holds the whole plan)."""
        dumped = self._dumped  # one read: snapshots of two threads may each dump their own
        if dumped is None or dumped[0] is not run:
            dumped = self._dumped = (run, run.model_dump(mode="json"))
        return dumped[1]

    def new_checkpoint(self, kind: CheckpointKind | str) -> tuple[str, Path, Any]:
        kind = CheckpointKind(kind)
        cid = new_id("checkpoint")
        now = utcnow()
        path = self.root / "checkpoints" / f"ckpt_{now.strftime('%Y%m%dT%H%M%S%f')}_{kind.value}_{cid}.pkl"
        return cid, path, now

    def write(self, *, cid: str, path: Path, created_at: Any, kind: CheckpointKind | str, context: dict[str, Any],
              steps: list[Step] | list[dict[str, Any]], run: Run | None = None, step_id: str | None = None,
              step_numbers: list[int] = (), sync: bool = True) -> None:
        """Write the checkpoint pickle (atomic; fsynced unless `sync` is false) and CMBAgent's
        context pickles for `step_numbers`."""
        run = run or self.run
        document = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "checkpoint": {"id": cid, "kind": CheckpointKind(kind).value, "step_id": step_id,
                           "created_at": created_at.isoformat()},
            "session": self.session.model_dump(mode="json"),
            "run": self._run_dump(run),
            "steps": [s if isinstance(s, dict) else s.model_dump(mode="json") for s in steps],
            "context": context,
        }
        write_atomically(path, pickle.dumps(document, protocol=pickle.HIGHEST_PROTOCOL), sync=sync)
        if step_numbers:
            plain = pickle.dumps(context, protocol=pickle.HIGHEST_PROTOCOL)
            for n in step_numbers:
                write_atomically(self.root / "context" / f"context_step_{n}.pkl", plain, sync=False)

    @staticmethod
    def store_row(cid: str, path: Path | None, kind: CheckpointKind | str, delta: dict[str, Any]) -> dict[str, Any]:
        """The store's copy: what changed (not the whole context again) and where the snapshot is, if any."""
        return {"id": cid, "kind": CheckpointKind(kind).value, "context": jsonable(delta),
                "pickle_path": str(path) if path is not None else None}


JOURNAL_NAME = "journal.jsonl"
SYNC_PACE_S = 0.002  # the longest a written boundary waits for the next group sync to start


class StepJournal:
    """The run's step journal: one JSON line per step boundary, written before anything
    that depends on the boundary starts.

    A record is what the boundary changed (`seq`, `at`, `run_id`, `complete` with the
    outputs, `fail`, `start`, and the checkpoint row of the completions), in the form
    `engine.advance_many` applies, so the store can always be brought up to date from it.
    A torn last line (a crash during the append) is dropped when the journal is opened.

    `append` returns once the line is in the operating system's hands: it survives the
    process being killed at any point. Reaching the disk (surviving a power cut) is
    `sync`'s choice: with ``"boundary"`` every append fdatasyncs before returning; with
    ``"group"`` a syncer thread fdatasyncs the lines written so far, at most `SYNC_PACE_S`
    after the previous sync (or at once when idle), one call covering every line written
    before it began (group commit, as a database does with its log), so
    a successor may start while its predecessor's line is on its way to the disk. Waiting
    for the disk (`wait_durable`) is what the ledger does before a run waits at a gate or
    leaves an active state.
    """

    SYNC_MODES = ("group", "boundary")

    def __init__(self, run_path: str | Path, *, sync: str = "group"):
        if sync not in self.SYNC_MODES:
            raise ValueError(f"journal sync must be one of {', '.join(self.SYNC_MODES)}, not {sync!r}")
        self.path = Path(run_path) / "checkpoints" / JOURNAL_NAME
        self.sync = sync
        self._fd: int | None = None
        self.last_seq = 0
        self._cond = threading.Condition()
        self._written = 0  # appends so far
        self._synced = 0  # appends known to be on disk
        self._sync_error: OSError | None = None
        self._syncer: threading.Thread | None = None
        self._idle = False  # the syncer waits for an append
        self._waiting = 0  # callers of wait_durable

    @staticmethod
    def read(path: Path) -> tuple[list[dict[str, Any]], int]:
        """The complete records of a journal and the byte length they take (a torn tail excluded)."""
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return [], 0
        records: list[dict[str, Any]] = []
        good = 0
        pos = 0
        while pos < len(data):
            end = data.find(b"\n", pos)
            if end < 0:
                break  # torn tail: the append never finished
            try:
                rec = codec.loads(data[pos:end])
            except ValueError:
                break
            if not isinstance(rec, dict) or not isinstance(rec.get("seq"), int):
                break
            records.append(rec)
            pos = good = end + 1
        return records, good

    def records(self) -> list[dict[str, Any]]:
        return self.read(self.path)[0]

    @property
    def is_open(self) -> bool:
        return self._fd is not None

    def open(self) -> int:
        """Open for appending (cutting a torn tail); returns the last seq written."""
        records, good = self.read(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.path.exists()
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        if new:  # the file's name must survive a crash too
            _sync_dir(self.path.parent)
        if os.fstat(fd).st_size != good:
            os.ftruncate(fd, good)
            _datasync(fd)
        self._fd = fd
        self.last_seq = records[-1]["seq"] if records else 0
        return self.last_seq

    def create(self) -> bool:
        """Open the journal of a run that has none yet: the file is made (its name synced) and
        opened. False, with nothing done, if it exists already (`open` reads and repairs one).
        Safe before the run is claimed: a journal another process writes is never touched."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        except FileExistsError:
            return False
        try:
            _sync_dir(self.path.parent)
        except OSError:
            os.close(fd)
            raise
        self._fd = fd
        self.last_seq = 0
        return True

    def append(self, record: dict[str, Any]) -> None:
        """Write one record: it survives this process when this returns (and the disk, per `sync`)."""
        if self._fd is None:
            self.open()
        if self._sync_error is not None:
            raise self._sync_error
        view = memoryview(codec.dumps_bytes(record) + b"\n")
        while view:
            view = view[os.write(self._fd, view):]
        self.last_seq = record["seq"]
        if self.sync == "boundary":
            _datasync(self._fd)
            self._written = self._synced = self._written + 1
            return
        with self._cond:
            self._written += 1
            if self._syncer is None:
                self._syncer = threading.Thread(target=self._sync_loop, args=(self._fd,), daemon=True,
                                                name=f"journal-sync:{self.path.parent.parent.name}")
                self._syncer.start()
            if self._idle:
                self._cond.notify_all()

    def _sync_loop(self, fd: int) -> None:
        while True:
            with self._cond:
                self._idle = True
                self._cond.wait_for(lambda: self._written > self._synced or self._fd != fd)
                self._idle = False
                if self._written <= self._synced:
                    return  # closed with nothing left to sync
                target = self._written
            try:
                _datasync(fd)
            except OSError as exc:  # a disk that fails an fsync: every later append and wait says so
                with self._cond:
                    self._sync_error = exc
                    self._cond.notify_all()
                return
            with self._cond:
                self._synced = target
                self._cond.notify_all()
                # the boundaries of the next moment join one sync (this thread wakes less often while a
                # run is busy), unless someone waits for the disk or the journal closes
                self._cond.wait_for(lambda: self._waiting or self._fd != fd, SYNC_PACE_S)

    @property
    def durable(self) -> bool:
        """Every record appended so far is on disk."""
        return self._synced >= self._written and self._sync_error is None

    def wait_durable(self, timeout: float | None = None) -> bool:
        """Block until every record appended so far is on disk; False if `timeout` passed first."""
        with self._cond:
            target = self._written
            self._waiting += 1
            self._cond.notify_all()
            try:
                ok = self._cond.wait_for(lambda: self._synced >= target or self._sync_error is not None, timeout)
            finally:
                self._waiting -= 1
        if self._sync_error is not None:
            raise self._sync_error
        return ok

    def close(self) -> None:
        """Sync what is left, then close."""
        if self._fd is None:
            return
        fd = self._fd
        try:
            self.wait_durable()
        except OSError:
            pass
        finally:
            with self._cond:
                self._fd = None
                self._cond.notify_all()
            syncer, self._syncer = self._syncer, None
            if syncer is not None:
                syncer.join()
            os.close(fd)


def _sync_dir(path: Path) -> None:
    """fsync a folder: the names made in it survive a crash."""
    dir_fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _datasync(fd: int) -> None:
    os.fdatasync(fd) if hasattr(os, "fdatasync") else os.fsync(fd)
