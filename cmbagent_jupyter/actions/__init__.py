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
from typing import Any

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
# the one list of what `actions.NAME` gives: each name lives in the module it is listed under
# (a test resolves every one of them)
__all__ = sorted(_HOME)


def __getattr__(name: str) -> Any:
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module 'cmbagent_jupyter.actions' has no attribute {name!r}")
    return getattr(importlib.import_module(f"cmbagent_jupyter.actions.{module}"), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOME])
