"""The server's core, free of Tornado: what each endpoint does, as blocking calls.

Handlers run these off the event loop (`asyncio.to_thread`) because every store call
is a socket round trip. Every call on a run, step or approval names its session and
the store filters by it, so another session's ids are simply not found.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any, Callable

from cmbagent_jupyter import actions
from cmbagent_jupyter.actions import Detached
from cmbagent_jupyter.core import Quotas
from cmbagent_jupyter.core.graph import RunGraph, run_graph
from cmbagent_jupyter.server.bodies import CreateBranch, CreateSession
from cmbagent_jupyter.server.errors import ApiError
from cmbagent_jupyter.store import StorePort, Subscription, open_store

ACTOR = "jupyterlab"


class ServerAPI:
    def __init__(self, home: str | os.PathLike | None = None, *, resume_command: list[str] | None = None,
                 store: StorePort | None = None):
        self.store = store or open_store(home)
        self.home: Path = self.store.home
        # a resumed run outlives the request and the server: `cmbagent resume` in a process of its own
        self.launcher = Detached(self.home, resume_command, log_dir=self.home / "logs")
        self._warm: threading.Thread | None = None

    def start_store(self) -> None:
        """Connect in the background, starting the home's store service if none runs."""
        self._warm = threading.Thread(target=self._ping, name="cmbagent-store-warmup", daemon=True)
        self._warm.start()

    def _ping(self) -> None:
        try:
            self.store.ping()
        except Exception:  # noqa: BLE001 - the first request will report it
            pass

    def close(self) -> None:
        if self._warm is not None:
            self._warm.join(timeout=60)
        self.store.close()

    # ------------------------------------------------------------ sessions

    def list_sessions(self) -> dict[str, Any]:
        summaries = {m.session_id: m for m in self.store.session_metrics()}
        sessions = []
        for s in self.store.list_sessions():
            m = summaries.get(s.id)
            sessions.append({**_json(s), "cost_usd": m.total_cost_usd if m else 0.0,
                             "runs_by_status": m.runs_by_status if m else {}})
        return {"sessions": sessions}

    def create_session(self, body: CreateSession) -> dict[str, Any]:
        return _json(self.store.create_session(body.name, body.quotas or Quotas(), actor=ACTOR))

    def get_session(self, session_id: str) -> dict[str, Any]:
        ss = self.store.session(session_id)
        return {"session": _json(ss.info()), "usage": _json(ss.usage()), "runs": _json(ss.list_runs())}

    def delete_session(self, session_id: str) -> dict[str, Any]:
        return _json(self.store.session(session_id).set_status("deleted", actor=ACTOR))

    # ------------------------------------------------------------ workflows

    def run_status(self, session_id: str, run_id: str) -> dict[str, Any]:
        ss = self.store.session(session_id)
        run = ss.get_run(run_id)
        steps = ss.list_steps(run_id)
        approvals = ss.list_approvals(run_id, pending_only=True)
        return {"run": _json(run), "steps": _json(steps), "approvals": _json(approvals),
                "dag": _json(run_graph(run, steps, approvals))}

    def pause_run(self, session_id: str, run_id: str) -> dict[str, Any]:
        return _json(actions.pause(self.store, run_id, session_id=session_id, actor=ACTOR))

    def resume_run(self, session_id: str, run_id: str) -> dict[str, Any]:
        """Start `cmbagent resume RUN_ID` for a run that can resume, if its session may run it."""
        resumed = actions.resume(self.store, run_id, executor=self.launcher, session_id=session_id)
        launched = resumed.execution
        return {"run_id": run_id, "session_id": session_id, "status": "resuming", "pid": launched.pid,
                "command": launched.command, "log": launched.log}

    def branch_run(self, session_id: str, run_id: str, body: CreateBranch) -> dict[str, Any]:
        """A branch ready to run (paused): resuming it is the client's next request."""
        made = actions.branch(self.store, run_id, body.from_step, actor=ACTOR, name=body.name,
                              instructions=body.instructions, hypothesis=body.hypothesis, session_id=session_id)
        return made.model_dump(mode="json", exclude={"execution"})

    # ------------------------------------------------------------ approvals

    def pending_approvals(self, session_id: str | None) -> dict[str, Any]:
        if session_id is None:
            return {"approvals": _json(self.store.pending_approvals())}
        ss = self.store.session(session_id)
        ss.info()
        return {"approvals": _json(ss.list_approvals(pending_only=True))}

    def resolve_approval(self, session_id: str, approval_id: str, decision: str,
                         feedback: str | None) -> dict[str, Any]:
        return _json(actions.decide(self.store, approval_id, decision, feedback=feedback, actor=ACTOR,
                                    session_id=session_id))

    # ------------------------------------------------------------ costs and metrics

    def cost_summary(self, session_id: str, run_id: str | None, group_by: list[str] | None) -> dict[str, Any]:
        report = actions.costs(self.store, session_id=session_id, run_id=run_id, group_by=group_by)
        return report.model_dump(mode="json", include={"session_id", "run_id", "rows", "total_usd"})

    def cost_by_session(self) -> dict[str, Any]:
        rows = actions.cost_by_session(self.store)
        return {"rows": _json(rows), "total_usd": sum(r.cost_usd for r in rows)}

    def workflow_metrics(self, session_id: str | None) -> dict[str, Any]:
        return {"sessions": _json(self.store.session_metrics(session_id))}

    # ------------------------------------------------------------ agents

    def agents(self, reload: bool = False) -> dict[str, Any]:
        try:
            from cmbagent_jupyter.agents import specs
        except ImportError as exc:
            raise ApiError(503, f"the agent registry cannot be loaded: {exc}", "agents_unavailable") from None
        if reload:
            specs.builtin_specs.cache_clear()
        return {"agents": [s.model_dump(mode="json") for s in specs.load_specs().values()]}

    # ------------------------------------------------------------ the event stream

    def snapshot(self, session_id: str | None, run_id: str | None) -> dict[str, Any]:
        """The state a client starts from, and the `gseq` it is consistent with."""
        if run_id is not None and session_id is None:
            session_id = self.store.find_run(run_id).session_id
        snap = self.store.snapshot(session_id=session_id, run_id=run_id)
        state = _json(snap)
        if snap.run is not None:
            approvals = [a for a in snap.approvals if a.run_id == run_id]
            state["dag"] = _json(run_graph(snap.run, snap.steps or [], approvals))
        return state

    def events(self, since: int, session_id: str | None, run_id: str | None, limit: int) -> list[dict[str, Any]]:
        if session_id is None:
            events = self.store.events_all(since_gseq=since, run_id=run_id, limit=limit)
        else:
            events = self.store.session(session_id).events(run_id=run_id, since_gseq=since, limit=limit)
        return _json(events)

    def subscribe(self, session_id: str | None, run_id: str | None,
                  callback: Callable[[dict], None]) -> Subscription:
        """Live events from now on; `last_gseq` of the result is where they start."""
        if session_id is None:
            return self.store.subscribe_all(run_id=run_id, callback=callback)
        return self.store.session(session_id).subscribe(run_id=run_id, callback=callback)


def _json(value: Any) -> Any:
    """Records as the JSON the front ends read."""
    if isinstance(value, list):
        return [_json(v) for v in value]
    return value.model_dump(mode="json", exclude_none=isinstance(value, RunGraph))
