"""The backends the conformance suite runs on: the one place that names them.

Every test takes `port`, a fresh store on a fresh home, once per backend. A new backend
(a server database) is one more parameter here and nothing else.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

BACKENDS = ["memory", "local"]


def _memory(home: Path) -> Iterator:
    from cmbagent_jupyter.store.memory import MemoryStore

    store = MemoryStore(home)
    try:
        yield store
    finally:
        store.close()


def _local(home: Path) -> Iterator:
    from cmbagent_jupyter.store.local import LocalStore, stop_service

    store = LocalStore(home)
    try:
        yield store
    finally:
        store.close()
        stop_service(home)


OPENERS = {"memory": _memory, "local": _local}


@pytest.fixture(params=BACKENDS)
def port(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator:
    """A `StorePort` of one backend on a fresh home."""
    yield from OPENERS[request.param]((tmp_path / "home").resolve())


@pytest.fixture
def ss(port):
    """The `SessionPort` of a new session."""
    return port.session(port.create_session("conformance").id)
