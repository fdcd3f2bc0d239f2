"""Durable state behind one typed port (`store.port`): sessions, runs, steps, the step journal,
approvals, events, checkpoints, costs, files and metrics.

`open_store(home)` gives the port on this home's local backend (a DuckDB file owned by
one store service); `store.memory` is the plain-Python reference backend.
"""

from __future__ import annotations

import os
from typing import Any

from cmbagent_jupyter.store.local import LocalStore
from cmbagent_jupyter.store.port import SessionPort, StorePort, Subscription


def open_store(home: str | os.PathLike | None = None, **options: Any) -> StorePort:
    """The store of a CMBAGENT_HOME (default: $CMBAGENT_HOME, else ~/.cmbagent)."""
    return LocalStore(home, **options)


__all__ = ["SessionPort", "StorePort", "Subscription", "open_store"]
