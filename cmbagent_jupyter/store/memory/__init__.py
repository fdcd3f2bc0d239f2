"""The in-memory reference backend of the store port: plain Python records behind one lock.

It behaves as the local backend does through `store.port` (the conformance suite in
tests/conformance runs both), so it shows what the port means without a database, and
runs the engine in tests that need no store service. Run folders are made under its
`home` in CMBAgent's layout; nothing else is written there (no session.json or
run.json: the state lives as long as the object).
"""

from cmbagent_jupyter.store.memory.session import MemorySessionStore
from cmbagent_jupyter.store.memory.store import MemoryStore

__all__ = ["MemorySessionStore", "MemoryStore"]
