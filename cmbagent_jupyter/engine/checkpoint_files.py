"""The file half of dual persistence, written by the engine without extra store calls.

`checkpoints/journal.jsonl` is the step journal: one fsynced line per step boundary
with what it changed (steps completed with their outputs, failed, started). It is the
durability point of a step: the store is brought up to date from it in the background
(group commit) and, after a crash, on resume or by `cmbagent recover`.

A full snapshot is a pickle in the run's `checkpoints/` folder in the format
`store.checkpoints` reads (and `cmbagent recover` rebuilds the store from), built from
what the engine holds in memory; the engine writes one now and then, not per step.
After a step also `context/context_step_N.pkl`, the plain context dict CMBAgent
writes, for tools that know that layout.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import Any

from cmbagent_jupyter.models import CheckpointKind, Run, Session, Step, new_id, utcnow
from cmbagent_jupyter.store.checkpoints import FORMAT, FORMAT_VERSION, jsonable


class CheckpointFiles:
    def __init__(self, run: Run, session: Session):
        self.run = run
        self.session = session
        self.root = Path(run.path)

    def new_checkpoint(self, kind: CheckpointKind | str) -> tuple[str, Path, Any]:
        kind = CheckpointKind(kind)
        cid = new_id("checkpoint")
        now = utcnow()
        path = self.root / "checkpoints" / f"ckpt_{now.strftime('%Y%m%dT%H%M%S%f')}_{kind.value}_{cid}.pkl"
        return cid, path, now

    def write(self, *, cid: str, path: Path, created_at: Any, kind: CheckpointKind | str, context: dict[str, Any],
              steps: list[Step] | list[dict[str, Any]], run: Run | None = None, step_id: str | None = None,
              step_numbers: list[int] = ()) -> None:
        """Write the checkpoint pickle (fsynced, atomic) and CMBAgent's context pickles for `step_numbers`."""
        run = run or self.run
        document = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "checkpoint": {"id": cid, "kind": CheckpointKind(kind).value, "step_id": step_id,
                           "created_at": created_at.isoformat()},
            "session": self.session.model_dump(mode="json"),
            "run": run.model_dump(mode="json"),
            "steps": [s if isinstance(s, dict) else s.model_dump(mode="json") for s in steps],
            "context": context,
        }
        _atomic_write(path, pickle.dumps(document, protocol=pickle.HIGHEST_PROTOCOL), sync=True)
        if step_numbers:
            plain = pickle.dumps(context, protocol=pickle.HIGHEST_PROTOCOL)
            for n in step_numbers:
                _atomic_write(self.root / "context" / f"context_step_{n}.pkl", plain, sync=False)

    @staticmethod
    def store_row(cid: str, path: Path | None, kind: CheckpointKind | str, delta: dict[str, Any]) -> dict[str, Any]:
        """The store's copy: what changed (not the whole context again) and where the snapshot is, if any."""
        return {"id": cid, "kind": CheckpointKind(kind).value, "context": jsonable(delta),
                "pickle_path": str(path) if path is not None else None}


def _atomic_write(path: Path, data: bytes, *, sync: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        if sync:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)


JOURNAL_NAME = "journal.jsonl"


class StepJournal:
    """The run's step journal: one JSON line per step boundary, appended and fsynced
    before anything that depends on the boundary starts.

    A record is what the boundary changed (`seq`, `at`, `run_id`, `complete` with the
    outputs, `fail`, `start`, and the checkpoint row of the completions), in the form
    `engine.advance_many` applies, so the store can always be brought up to date from it.
    A torn last line (a crash during the append) is dropped when the journal is opened.
    """

    def __init__(self, run_path: str | Path):
        self.path = Path(run_path) / "checkpoints" / JOURNAL_NAME
        self._file: Any = None
        self.last_seq = 0

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
                rec = json.loads(data[pos:end])
            except ValueError:
                break
            if not isinstance(rec, dict) or not isinstance(rec.get("seq"), int):
                break
            records.append(rec)
            pos = good = end + 1
        return records, good

    def records(self) -> list[dict[str, Any]]:
        return self.read(self.path)[0]

    def open(self) -> int:
        """Open for appending (cutting a torn tail); returns the last seq written."""
        records, good = self.read(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.path.exists()
        self._file = open(self.path, "ab")
        if new:  # the file's name must survive a crash too
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        if self._file.tell() != good:
            self._file.truncate(good)
            self._file.seek(good)
        self.last_seq = records[-1]["seq"] if records else 0
        return self.last_seq

    def append(self, record: dict[str, Any]) -> None:
        """Write one record and fsync it: the boundary is durable when this returns."""
        if self._file is None:
            self.open()
        line = json.dumps(record, default=str, separators=(",", ":")).encode() + b"\n"
        self._file.write(line)
        self._file.flush()
        os.fdatasync(self._file.fileno()) if hasattr(os, "fdatasync") else os.fsync(self._file.fileno())
        self.last_seq = record["seq"]

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
