"""The widget actions that need the engine (resume, cancel), through its public API."""

from __future__ import annotations

from typing import Any, Callable


def engine_control(action: str, feed: Any) -> None:
    """Resume (in this process) or cancel a run that this view has no handle for."""
    from cmbagent_jupyter.api import get_run

    handle = get_run(feed.run_id, home=feed.store.home)
    getattr(handle, action)()


def resumer(feed: Any) -> Callable[[str], Any]:
    def resume(_run_id: str) -> Any:
        engine_control("resume", feed)

    return resume
