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

from cmbagent_jupyter.core.states import ACTIVE_RUN_STATES, RESUMABLE_RUN_STATES
from cmbagent_jupyter.core import ApprovalRequest, Quotas, Run, Step
from cmbagent_jupyter.core.graph import run_graph
from cmbagent_jupyter.server.bodies import CreateBranch, CreateSession
from cmbagent_jupyter.server.errors import ApiError
from cmbagent_jupyter.server.resume import ResumeLauncher
from cmbagent_jupyter.store import Conflict, QuotaExceeded, Store, Subscription

ACTOR = "jupyterlab"
ACTIVE = {s.value for s in ACTIVE_RUN_STATES}
RESUMABLE = {s.value for s in RESUMABLE_RUN_STATES}


class ServerAPI:
    def __init__(self, home: str | os.PathLike | None = None, *, resume_command: list[str] | None = None,
                 store: Store | None = None):
        self.store = store or Store(home)
        self.home: Path = self.store.home
        self.launcher = ResumeLauncher(self.home, resume_command)
        self._warm: threading.Thread | None = None

    def call(self, op: str, **args: Any) -> Any:
        return self.store.call(op, **args)

    def start_store(self) -> None:
        """Connect in the background, starting the home's store service if none runs."""
        self._warm = threading.Thread(target=self._ping, name="cmbagent-store-warmup", daemon=True)
        self._warm.start()

    def _ping(self) -> None:
        try:
            self.call("store.ping")
        except Exception:  # noqa: BLE001 - the first request will report it
            pass

    def close(self) -> None:
        if self._warm is not None:
            self._warm.join(timeout=60)
        self.store.close()

    # ------------------------------------------------------------ sessions

    def list_sessions(self) -> dict[str, Any]:
        sessions = self.call("session.list")
        metrics = {m["session_id"]: m for m in self.call("metrics.workflows")}
        for s in sessions:
            m = metrics.get(s["id"], {})
            s["cost_usd"] = m.get("total_cost_usd", 0.0)
            s["runs_by_status"] = m.get("runs_by_status", {})
        return {"sessions": sessions}

    def create_session(self, body: CreateSession) -> dict[str, Any]:
        quotas = body.quotas.model_dump() if body.quotas else Quotas().model_dump()
        return self.call("session.create", name=body.name, quotas=quotas, actor=ACTOR)

    def get_session(self, session_id: str) -> dict[str, Any]:
        return {
            "session": self.call("session.get", session_id=session_id),
            "usage": self.call("session.usage", session_id=session_id),
            "runs": self.call("run.list", session_id=session_id),
        }

    def delete_session(self, session_id: str) -> dict[str, Any]:
        return self.call("session.set_status", session_id=session_id, status="deleted", actor=ACTOR)

    # ------------------------------------------------------------ workflows

    def run_status(self, session_id: str, run_id: str) -> dict[str, Any]:
        run = self.call("run.get", session_id=session_id, run_id=run_id)
        steps = self.call("step.list", session_id=session_id, run_id=run_id)
        approvals = self.call("approval.list", session_id=session_id, run_id=run_id, pending_only=True)
        return {"run": run, "steps": steps, "approvals": approvals, "dag": _graph(run, steps, approvals)}

    def pause_run(self, session_id: str, run_id: str) -> dict[str, Any]:
        return self.call("run.request_pause", session_id=session_id, run_id=run_id)

    def resume_run(self, session_id: str, run_id: str) -> dict[str, Any]:
        """Start `cmbagent resume RUN_ID` for a run that can resume, if its session may run it."""
        run = self.call("run.get", session_id=session_id, run_id=run_id)
        if run["status"] not in RESUMABLE:
            raise Conflict(f"run {run_id} is {run['status']!r}; only {', '.join(sorted(RESUMABLE))} runs resume")
        if run["status"] not in ACTIVE:
            self._check_room(session_id)
        launched = self.launcher.launch(run_id, session_id)
        return {"run_id": run_id, "session_id": session_id, "status": "resuming", "pid": launched.pid,
                "command": launched.command, "log": launched.log}

    def _check_room(self, session_id: str) -> None:
        """Refuse early what the resumed process would be refused by the store anyway."""
        quotas = Quotas.model_validate(self.call("session.get", session_id=session_id)["quotas"])
        usage = self.call("session.usage", session_id=session_id)
        if usage["active_runs"] >= quotas.max_concurrent_runs:
            raise QuotaExceeded(f"quota max_concurrent_runs reached: session {session_id} has {usage['active_runs']} "
                                f"active run(s) of {quotas.max_concurrent_runs} allowed; pause or finish one first")
        if usage["cost_usd"] >= quotas.max_cost_usd:
            raise QuotaExceeded(f"quota max_cost_usd reached: session {session_id} has spent "
                                f"${usage['cost_usd']:.4f} of ${quotas.max_cost_usd:.2f}")

    def branch_run(self, session_id: str, run_id: str, body: CreateBranch) -> dict[str, Any]:
        return self.call("branch.create", session_id=session_id, run_id=run_id, from_step=body.from_step,
                         name=body.name, instructions=body.instructions, hypothesis=body.hypothesis, actor=ACTOR)

    # ------------------------------------------------------------ approvals

    def pending_approvals(self, session_id: str | None) -> dict[str, Any]:
        if session_id is None:
            return {"approvals": self.call("approval.list", all_sessions=True, pending_only=True)}
        self.call("session.get", session_id=session_id)
        return {"approvals": self.call("approval.list", session_id=session_id, pending_only=True)}

    def resolve_approval(self, session_id: str, approval_id: str, decision: str,
                         feedback: str | None) -> dict[str, Any]:
        return self.call("approval.resolve", session_id=session_id, approval_id=approval_id, decision=decision,
                         feedback=feedback, actor=ACTOR)

    # ------------------------------------------------------------ costs and metrics

    def cost_summary(self, session_id: str, run_id: str | None, group_by: list[str] | None) -> dict[str, Any]:
        self.call("session.get", session_id=session_id)
        if run_id is not None:
            self.call("run.get", session_id=session_id, run_id=run_id)
        rows = self.call("cost.summary", session_id=session_id, run_id=run_id, group_by=group_by)
        return {"session_id": session_id, "run_id": run_id, "rows": rows,
                "total_usd": sum(r["cost_usd"] for r in rows)}

    def cost_by_session(self) -> dict[str, Any]:
        rows = self.call("cost.summary", all_sessions=True, group_by=["session_id"])
        names = {s["id"]: s["name"] for s in self.call("session.list", include_archived=True)}
        rows = [{**r, "name": names[r["session_id"]]} for r in rows if r["session_id"] in names]
        return {"rows": rows, "total_usd": sum(r["cost_usd"] for r in rows)}

    def workflow_metrics(self, session_id: str | None) -> dict[str, Any]:
        return {"sessions": self.call("metrics.workflows", session_id=session_id)}

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
            session_id = self.call("run.find", run_id=run_id)["session_id"]
        state = self.call("server.snapshot", session_id=session_id, run_id=run_id)
        if run_id is not None:
            approvals = [a for a in state["approvals"] if a["run_id"] == run_id]
            state["dag"] = _graph(state["run"], state["steps"], approvals)
        return state

    def events(self, since: int, session_id: str | None, run_id: str | None, limit: int) -> list[dict[str, Any]]:
        args: dict[str, Any] = {"since_gseq": since, "limit": limit, "run_id": run_id}
        if session_id is None:
            args["all_sessions"] = True
        else:
            args["session_id"] = session_id
        return self.call("event.list", **args)

    def subscribe(self, session_id: str | None, run_id: str | None,
                  callback: Callable[[dict], None]) -> Subscription:
        """Live events from now on; `last_gseq` of the result is where they start."""
        if session_id is None:
            return self.store.client.subscribe(all_sessions=True, run_id=run_id, callback=callback)
        return self.store.client.subscribe(session_id=session_id, run_id=run_id, callback=callback)


def _graph(run: dict[str, Any], steps: list[dict[str, Any]], approvals: list[dict[str, Any]]) -> dict[str, Any]:
    return run_graph(Run.model_validate(run), [Step.model_validate(s) for s in steps],
                     [ApprovalRequest.model_validate(a) for a in approvals]).model_dump(mode="json", exclude_none=True)
