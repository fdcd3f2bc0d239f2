"""The file half of dual persistence, written by the engine without extra store calls.

Each checkpoint is a pickle in the run's `checkpoints/` folder in the format
`store.checkpoints` reads (and `cmbagent recover` rebuilds the store from), built from
what the engine holds in memory. After a step also `context/context_step_N.pkl`, the
plain context dict CMBAgent writes, for tools that know that layout.
"""

from __future__ import annotations

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
    def store_row(cid: str, path: Path, kind: CheckpointKind | str, delta: dict[str, Any]) -> dict[str, Any]:
        """The store's copy: what changed (not the whole context again) and where the pickle is."""
        return {"id": cid, "kind": CheckpointKind(kind).value, "context": jsonable(delta), "pickle_path": str(path)}


def _atomic_write(path: Path, data: bytes, *, sync: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        if sync:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)
