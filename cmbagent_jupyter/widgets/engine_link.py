"""The few widget actions that need the engine (resume, cancel), through its public API."""

from __future__ import annotations

from typing import Any, Callable


def _api() -> Any:
    try:
        from cmbagent_jupyter import api
    except ImportError as exc:  # pragma: no cover - the engine ships api.py
        raise RuntimeError(f"the engine API is not available ({exc}); use `cmbagent resume` instead") from None
    return api


def engine_control(action: str, feed: Any) -> None:
    """Resume or cancel a run that this kernel may not be running."""
    api = _api()
    handle = api.open_session(feed.run.session_id, create=False, home=feed.store.home).attach(feed.run_id)
    getattr(handle, action)()


def resumer(feed: Any) -> Callable[[str], Any]:
    def resume(run_id: str) -> Any:
        engine_control("resume", feed)

    return resume
