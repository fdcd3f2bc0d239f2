"""User actions: the one implementation of each thing a user does to a run, whichever
front end they use (the Python API, `cmbagent`, `%cmbagent`, the REST server and its
WebSocket, the widgets). Front ends parse their input, call one of these and format
what it returns; errors are those of `core.errors`, each saying what was wrong.

    start      create_run, start_run           control   pause, cancel
    resuming   resume
    approvals  decide                          retry     retry_step (with feedback)
    replay     play_from, branch               compare   compare_runs, branch_tree
    spending   costs, cost_by_session          lookup    run_in, step_in, session_for
    executors  InProcess, Detached: how a run continues after an action lets it

`actions.NAME` loads NAME's module on first use (PEP 562), so a command that only
pauses a run does not load what checking a new run's plan needs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_MODULES = {
    "compare": ("BranchNode", "Comparison", "branch_tree", "compare_runs"),
    "control": ("cancel", "pause"),
    "approvals": ("Decision", "decide"),
    "spending": ("CostReport", "SessionCost", "cost_by_session", "costs"),
    "executors": ("Detached", "Execution", "Executor", "InProcess", "executing_here", "process_store"),
    "lookup": ("run_in", "session_for", "step_in"),
    "replay": ("Branched", "Replayed", "branch", "play_from"),
    "resuming": ("Resumed", "resume"),
    "retry": ("Retried", "retry_step"),
    "start": ("Started", "create_run", "start_run"),
}
_HOME = {name: module for module, names in _MODULES.items() for name in names}
__all__ = [
    "BranchNode", "Branched", "Comparison", "CostReport", "Decision", "Detached", "Execution", "Executor", "InProcess",
    "Replayed", "Resumed", "Retried", "SessionCost", "Started", "branch", "branch_tree", "cancel", "compare_runs",
    "cost_by_session", "costs", "create_run", "decide", "executing_here", "pause", "play_from", "process_store",
    "resume", "retry_step", "run_in", "session_for", "start_run", "step_in",
]

if TYPE_CHECKING:
    from cmbagent_jupyter.actions.approvals import Decision, decide
    from cmbagent_jupyter.actions.compare import BranchNode, Comparison, branch_tree, compare_runs
    from cmbagent_jupyter.actions.control import cancel, pause
    from cmbagent_jupyter.actions.executors import (
        Detached,
        Execution,
        Executor,
        InProcess,
        executing_here,
        process_store,
    )
    from cmbagent_jupyter.actions.lookup import run_in, session_for, step_in
    from cmbagent_jupyter.actions.replay import Branched, Replayed, branch, play_from
    from cmbagent_jupyter.actions.resuming import Resumed, resume
    from cmbagent_jupyter.actions.retry import Retried, retry_step
    from cmbagent_jupyter.actions.spending import CostReport, SessionCost, cost_by_session, costs
    from cmbagent_jupyter.actions.start import Started, create_run, start_run


def __getattr__(name: str) -> Any:
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module 'cmbagent_jupyter.actions' has no attribute {name!r}")
    return getattr(importlib.import_module(f"cmbagent_jupyter.actions.{module}"), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOME])
