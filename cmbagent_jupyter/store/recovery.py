"""Rebuild the store from the files every session keeps (decision 3: dual persistence).

Each session directory holds `session.json`, each run directory `run.json`, the
checkpoint snapshots (pickles) the engine wrote now and then and the step journal
(`checkpoints/journal.jsonl`, one record per step boundary), replayed on top of them.
`rebuild` reads them and imports, through the store port, whatever the store lacks (the
local backend's `recover` first sets a database that cannot be opened aside).
`import_context` starts a run from a CMBAgent context pickle.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cmbagent_jupyter.store.checkpoint_files import JOURNAL_NAME, StepJournal
from cmbagent_jupyter.core import CheckpointKind, InvalidInput, Run, check_id
from cmbagent_jupyter.core.plan import Plan
from cmbagent_jupyter.store.checkpoints import (
    CheckpointWriter,
    jsonable,
    plan_steps_from_context,
    read_checkpoint_file,
    read_cmbagent_context,
)
from cmbagent_jupyter.core.errors import PayloadTooLarge, StoreError
from cmbagent_jupyter.store.port import SessionPort, StorePort


@dataclass
class RecoveryReport:
    """What a recovery found and did; `counts` are records added to the store."""

    home: str
    moved_aside: list[str] = field(default_factory=list)
    sessions: int = 0
    runs: int = 0
    steps: int = 0
    checkpoints: int = 0
    journal_records: int = 0
    interrupted: list[str] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "home": self.home, "moved_aside": self.moved_aside, "sessions": self.sessions, "runs": self.runs,
            "steps": self.steps, "checkpoints": self.checkpoints, "journal_records": self.journal_records,
            "interrupted": self.interrupted,
            "skipped": self.skipped,
        }


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def _valid(kind: str, value: str) -> bool:
    try:
        check_id(kind, value)
        return True
    except InvalidInput:
        return False


@dataclass
class _RunFiles:
    run_id: str
    run_doc: dict[str, Any] | None
    checkpoints: list[tuple[Path, dict[str, Any]]]


def _scan_run(home: Path, run_path: Path, report: RecoveryReport) -> _RunFiles:
    docs = []
    for pkl in sorted((run_path / "checkpoints").glob("*.pkl")):
        try:
            doc = read_checkpoint_file(pkl, home)
        except InvalidInput as exc:
            report.skipped.append({"path": str(pkl), "reason": str(exc)})
            continue
        if (doc.get("run") or {}).get("id") != run_path.name:
            report.skipped.append({"path": str(pkl), "reason": "the checkpoint belongs to another run"})
            continue
        docs.append((pkl, doc))
    docs.sort(key=lambda item: str((item[1].get("checkpoint") or {}).get("created_at") or ""))
    return _RunFiles(run_path.name, _read_json(run_path / "run.json"), docs)


def rebuild(store: StorePort) -> RecoveryReport:
    """Import every session, run, step and checkpoint found on disk that the store lacks."""
    home = store.home
    report = RecoveryReport(home=str(home))
    sessions_root = home / "sessions"
    for session_path in sorted(p for p in sessions_root.glob("*") if p.is_dir()):
        sid = session_path.name
        if not _valid("session", sid):
            report.skipped.append({"path": str(session_path), "reason": "not a session directory"})
            continue
        runs = [_scan_run(home, p, report) for p in sorted((session_path / "runs").glob("*"))
                if p.is_dir() and _valid("run", p.name)]
        session_doc = _read_json(session_path / "session.json")
        if session_doc is None:
            session_doc = next((doc["session"] for r in runs for _, doc in r.checkpoints
                                if isinstance(doc.get("session"), dict)), None)
        if session_doc is None or session_doc.get("id") != sid:
            report.skipped.append({"path": str(session_path), "reason": "no readable session.json or checkpoint"})
            continue
        try:
            done = store.import_session(session_doc)
        except StoreError as exc:
            report.skipped.append({"path": str(session_path), "reason": exc.message})
            continue
        report.sessions += int(done.created)
        ss = store.session(sid)
        for run in runs:
            _rebuild_run(ss, session_path / "runs" / run.run_id, run, report)
    return report


def _rebuild_run(ss: SessionPort, run_path: Path, run: _RunFiles, report: RecoveryReport) -> None:
    latest = run.checkpoints[-1][1] if run.checkpoints else None
    run_doc = run.run_doc or (latest or {}).get("run")
    if not isinstance(run_doc, dict) or run_doc.get("id") != run.run_id:
        report.skipped.append({"path": str(run_path), "reason": "no readable run.json or checkpoint"})
        return
    try:
        done = ss.import_run(run_doc)
    except StoreError as exc:
        report.skipped.append({"path": str(run_path), "reason": exc.message})
        return
    if done.created:
        report.runs += 1
        if done.status != done.was:
            report.interrupted.append(run.run_id)
    if latest is not None and isinstance(latest.get("steps"), list):
        # a step_complete checkpoint proves its step finished, even if the step list in
        # the pickle was taken a moment before the step was marked completed
        finished = {(doc.get("checkpoint") or {}).get("step_id") for _, doc in run.checkpoints
                    if (doc.get("checkpoint") or {}).get("kind") == CheckpointKind.step_complete.value}
        steps = [{**s, "status": "completed"} if isinstance(s, dict) and s.get("id") in finished else s
                 for s in latest["steps"]]
        try:
            report.steps += ss.import_steps(run.run_id, steps).count
        except StoreError as exc:
            report.skipped.append({"path": str(run_path), "reason": f"steps: {exc.message}"})
    planned = planned_steps(run_doc.get("config"))
    if planned:
        # the plan's steps with the ids the run's config lists (a run snapshotted no step yet, or a
        # snapshot older than its plan): pending until the journal says otherwise; stored ones stay
        try:
            report.steps += ss.import_steps(run.run_id, planned).count
        except StoreError as exc:
            report.skipped.append({"path": str(run_path), "reason": f"planned steps: {exc.message}"})
    for pkl, doc in run.checkpoints:
        meta = {**(doc.get("checkpoint") or {}), "pickle_path": str(pkl)}
        context = jsonable(doc.get("context") or {})
        try:
            try:
                done = ss.import_checkpoint(run.run_id, meta, context)
            except PayloadTooLarge:
                # the pickle keeps the full context; the store row points at it
                done = ss.import_checkpoint(run.run_id, meta, {"_stored_in_pickle_only": True})
        except StoreError as exc:
            report.skipped.append({"path": str(pkl), "reason": exc.message})
            continue
        report.checkpoints += int(done.created)
    _replay_journal(ss, run_path, run.run_id, report)


def planned_steps(config: Any) -> list[dict[str, Any]]:
    """The steps a run's config describes: its `final_plan` with the id of each step in its
    `step_ids` (set when the plan is stored with the ids its caller chose). [] unless every
    step of the plan has its id there."""
    if not isinstance(config, dict) or not isinstance(config.get("step_ids"), dict):
        return []
    try:
        plan = Plan.model_validate(config.get("final_plan"))
    except ValueError:
        return []
    ids = config["step_ids"]
    if not plan.sub_tasks or any(not isinstance(ids.get(s.key), str) for s in plan.sub_tasks):
        return []
    return [{"id": ids[s.key], **s.to_store()} for s in plan.sub_tasks]


def _replay_journal(ss: SessionPort, run_path: Path, run_id: str, report: RecoveryReport) -> None:
    """The step journal's records the store lacks (the snapshots are periodic; the journal has every step)."""
    journal = run_path / "checkpoints" / JOURNAL_NAME
    records, _ = StepJournal.read(journal)
    records = [r for r in records if r.get("run_id") in (None, run_id)]
    for i in range(0, len(records), 128):
        try:
            done = ss.advance(run_id, records[i:i + 128], replay=True)
        except StoreError as exc:
            report.skipped.append({"path": str(journal), "reason": f"journal: {exc.message}"})
            return
        report.journal_records += done.applied


def import_context(session_store: SessionPort, path: str | os.PathLike, task: str | None = None) -> Run:
    """A new draft run whose starting context is a CMBAgent context pickle (a dict with
    main_task, final_plan ...): its plan becomes the run's steps and the context its first
    checkpoint (kind manual)."""
    path = Path(path).expanduser()
    context = read_cmbagent_context(path)
    task = task or str(context.get("main_task") or "").strip() or f"imported from {path.name}"
    run = session_store.create_run(task, config={"imported_context": str(path.resolve())})
    steps = plan_steps_from_context(context)
    if steps:
        session_store.put_plan(run.id, steps)
    writer = CheckpointWriter(session_store, session_store.home)
    writer.save(run, kind=CheckpointKind.manual, context=context)
    return session_store.get_run(run.id)
