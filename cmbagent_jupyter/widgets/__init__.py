"""anywidget components; their front ends are bundled from the repository's widgets/src.

`RunView(run_id)` is what a run shows in a cell; its parts (`DagWidget`,
`ApprovalWidget`, `CostWidget`, `EventLogWidget`, `RunHeaderWidget`) can each be
shown alone for a run, and all of them read the store, never the engine's memory.
"""

from __future__ import annotations

from cmbagent_jupyter.widgets.approval import ApprovalWidget
from cmbagent_jupyter.widgets.base import STATIC_DIR, bundle_path
from cmbagent_jupyter.widgets.cost import CostWidget
from cmbagent_jupyter.widgets.dag import DagWidget
from cmbagent_jupyter.widgets.dashboard import Dashboard
from cmbagent_jupyter.widgets.event_log import EventLogWidget
from cmbagent_jupyter.widgets.feed import RunFeed
from cmbagent_jupyter.widgets.run_view import RunHeaderWidget, RunView

__all__ = [
    "STATIC_DIR", "ApprovalWidget", "CostWidget", "DagWidget", "Dashboard", "EventLogWidget", "RunFeed", "RunHeaderWidget",
    "RunView", "bundle_path", "display_run",
]


def display_run(handle, **kwargs) -> RunView:
    """The `RunView` of a run handle (`cmbagent_jupyter.api.RunHandle`, or anything with the
    run's id and store); the same view is reused each time the handle is shown."""
    view = getattr(handle, "_run_view", None)
    if view is None or view.comm is None:
        run_id = getattr(handle, "run_id", None) or handle.id
        view = RunView(run_id, getattr(handle, "session_id", None), store=getattr(handle, "store", None),
                       handle=handle, **kwargs)
        handle._run_view = view
    return view
