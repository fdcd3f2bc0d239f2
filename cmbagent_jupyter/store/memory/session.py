"""The port of one session on the in-memory backend: every call confined to that session."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cmbagent_jupyter.store.memory.control import ControlOps
from cmbagent_jupyter.store.memory.journal import JournalOps
from cmbagent_jupyter.store.memory.records import RecordOps
from cmbagent_jupyter.store.memory.recovery import RecoveryOps
from cmbagent_jupyter.store.memory.runs import RunOps
from cmbagent_jupyter.store.port import SessionPort

if TYPE_CHECKING:
    from cmbagent_jupyter.store.memory.store import MemoryStore


class MemorySessionStore(RunOps, RecordOps, JournalOps, ControlOps, RecoveryOps, SessionPort):
    """A session's runs, steps, journal, events, approvals, costs, files and metrics, in memory.

    Each base holds one area of the port; they share the state and the run helpers of `RunOps`
    (a move by the state machine, a plan's steps put in, a checkpoint written)."""

    def __init__(self, store: "MemoryStore", session_id: str):
        self.store = store
        self.home = store.home
        self._st = store._st
        self.session_id = session_id
