"""The step ledger: the durable record of which steps finished, with what, and what started.

`advance` is the only way step progress is recorded. One store call (`engine.advance`)
commits the steps that finished (status, outputs, checkpoint row) together with the
steps that may start because of them, while the checkpoint pickle is written beside
it; a successor only starts once that call returned. On resume the ledger is read
back from the store: completed steps are skipped, steps found running were in flight
at a crash and run again.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass
from typing import Any, Callable

from cmbagent_jupyter.engine.checkpoint_files import CheckpointFiles
from cmbagent_jupyter.models import CheckpointKind, Run, StepStatus, Step, utcnow
from cmbagent_jupyter.store.repository import SessionStore

log = logging.getLogger("cmbagent.engine")


@dataclass(frozen=True)
class RunSignal:
    """What the store said about the run at the last boundary."""

    run_status: str
    pause_requested: bool


class StepLedger:
    def __init__(self, store: SessionStore, files: CheckpointFiles, steps: list[Step],
                 context_of: Callable[[dict[str, dict[str, Any]]], dict[str, Any]], *, owner_pid: int | None = None):
        self.store = store
        self.files = files
        self.steps: dict[str, Step] = {s.key: s for s in steps}
        self.outputs: dict[str, dict[str, Any]] = {
            s.key: dict(s.outputs) for s in steps if s.status == StepStatus.completed}
        self.context_of = context_of
        self._dumps: dict[str, dict[str, Any]] = {}
        self.owner_pid = owner_pid if owner_pid is not None else os.getpid()
        self.checkpoints_written = 0

    # -- what the store says --------------------------------------------------

    def completed(self) -> set[str]:
        return {k for k, s in self.steps.items() if s.status == StepStatus.completed}

    def in_flight(self) -> set[str]:
        return {k for k, s in self.steps.items() if s.status == StepStatus.running}

    def context(self) -> dict[str, Any]:
        return self.context_of(self.outputs)

    def _steps_json(self, steps: dict[str, Step], changed: set[str]) -> list[dict[str, Any]]:
        """The steps as the checkpoint file holds them; only the ones that changed are dumped again."""
        for key in changed | (set(steps) - set(self._dumps)):
            self._dumps[key] = steps[key].model_dump(mode="json")
        return sorted(self._dumps.values(), key=lambda d: d["number"])

    # -- recording ------------------------------------------------------------------

    async def advance(self, *, complete: list[tuple[str, dict[str, Any]]] = (),
                      fail: list[tuple[str, str]] = (), start: list[str] = ()) -> RunSignal:
        now = utcnow()
        outputs = dict(self.outputs)
        mirror = dict(self.steps)
        for key, out in complete:
            outputs[key] = out
            mirror[key] = mirror[key].model_copy(update={"status": StepStatus.completed, "outputs": out,
                                                        "completed_at": now, "progress": 1.0})
        for key, err in fail:
            mirror[key] = mirror[key].model_copy(update={"status": StepStatus.failed, "error": err})
        for key in start:
            s = mirror[key]
            mirror[key] = s.model_copy(update={"status": StepStatus.running, "started_at": now,
                                               "attempts": s.attempts + 1})
        args: dict[str, Any] = {
            "run_id": self.files.run.id, "owner_pid": self.owner_pid,
            "complete": [], "fail": [{"step_id": self.steps[k].id, "error": e} for k, e in fail],
            "start": [self.steps[k].id for k in start],
        }
        write_files = None
        if complete:
            cid, path, created = self.files.new_checkpoint(CheckpointKind.step_complete)
            first = self.steps[complete[0][0]]
            delta = {"completed": [k for k, _ in complete], "outputs": {k: o for k, o in complete}}
            row = CheckpointFiles.store_row(cid, path, CheckpointKind.step_complete, delta)
            for i, (key, out) in enumerate(complete):
                entry: dict[str, Any] = {"step_id": self.steps[key].id, "outputs": out}
                if i == 0:
                    entry["checkpoint"] = row
                args["complete"].append(entry)
            context = self.context_of(outputs)
            steps_now = self._steps_json(mirror, changed={k for k, _ in complete} | {k for k, _ in fail} | set(start))
            numbers = [mirror[k].number for k, _ in complete]

            def write_files() -> None:
                try:
                    self.files.write(cid=cid, path=path, created_at=created, kind=CheckpointKind.step_complete,
                                     context=context, steps=steps_now, step_id=first.id, step_numbers=numbers)
                except OSError as exc:
                    log.warning("checkpoint file %s not written: %s", path, exc)

        if write_files is not None:
            _, result = await asyncio.gather(asyncio.to_thread(write_files), self.store.acall("engine.advance", **args))
            self.checkpoints_written += 1
        else:
            result = await self.store.acall("engine.advance", **args)
        self.steps, self.outputs = mirror, outputs
        return RunSignal(result["run_status"], bool(result["pause_requested"]))

    async def checkpoint(self, kind: CheckpointKind, *, run: Run | None = None, extra: dict[str, Any] | None = None,
                         step_key: str | None = None, to: str | None = None, reason: str | None = None,
                         error: str | None = None, reset: list[str] = (), reset_to: str = "pending") -> dict[str, Any]:
        """A checkpoint outside step completion (timed, emergency, manual); with `to`, also move the run."""
        cid, path, created = self.files.new_checkpoint(kind)
        context = {**self.context(), **(extra or {})}
        steps_now = self._steps_json(self.steps, changed=set(self.steps))
        step_id = self.steps[step_key].id if step_key else None
        row = CheckpointFiles.store_row(cid, path, kind, {"kind": kind.value, **(extra or {})})
        row["step_id"] = step_id
        await asyncio.to_thread(self.files.write, cid=cid, path=path, created_at=created, kind=kind, context=context,
                                steps=steps_now, run=run, step_id=step_id)
        self.checkpoints_written += 1
        if to is None:
            return await self.store.acall("checkpoint.put", run_id=self.files.run.id, kind=kind.value,
                                          context=row["context"], step_id=step_id, pickle_path=str(path),
                                          id=cid)
        return await self.store.acall("engine.settle", run_id=self.files.run.id, to=to, reason=reason, error=error,
                                      checkpoint=row, reset_steps=[self.steps[k].id for k in reset],
                                      reset_to=reset_to)
