"""What runs cost: tokens and dollars summed by any of session, run, step, agent, model."""

from __future__ import annotations

from pydantic import BaseModel

from cmbagent_jupyter.core import CostRow
from cmbagent_jupyter.store import StorePort

DEFAULT_GROUP_BY = ["agent", "model"]


class CostReport(BaseModel):
    """Cost rows of one run, one session or every session (`session_id` / `run_id` None)."""

    session_id: str | None = None
    run_id: str | None = None
    group_by: list[str]
    rows: list[CostRow]
    total_usd: float

    @property
    def unpriced(self) -> list[str]:
        """Models recorded at $0 for want of a price (known when the rows are grouped by model)."""
        return sorted({r.model for r in self.rows if not r.priced and r.model})


class SessionCost(CostRow):
    name: str


def costs(store: StorePort, *, session_id: str | None = None, run_id: str | None = None,
          group_by: list[str] | None = None) -> CostReport:
    """A run's costs (in `session_id` when given), a session's, or, with neither, every live session's."""
    keys = list(group_by or DEFAULT_GROUP_BY)
    if run_id is not None and session_id is None:
        session_id = store.find_run(run_id).session_id
    if session_id is None:
        rows = store.cost_summary(group_by=keys)
    else:
        ss = store.session(session_id)
        ss.info()
        if run_id is not None:
            ss.get_run(run_id)
        rows = ss.cost_summary(run_id=run_id, group_by=keys)
    return CostReport(session_id=session_id, run_id=run_id, group_by=keys, rows=rows,
                      total_usd=sum(r.cost_usd for r in rows))


def cost_by_session(store: StorePort) -> list[SessionCost]:
    """Every live session's total, with its name."""
    names = {s.id: s.name for s in store.list_sessions(include_archived=True)}
    return [SessionCost(**r.model_dump(), name=names[r.session_id])
            for r in store.cost_summary(group_by=["session_id"]) if r.session_id in names]
