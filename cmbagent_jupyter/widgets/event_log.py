"""The event log: a run's events as they happen, streamed as messages, not as a trait."""

from __future__ import annotations

from collections import deque
from typing import Any

import traitlets

from cmbagent_jupyter.widgets.base import FeedWidget, bundle_path
from cmbagent_jupyter.widgets.feed import summarize_event


class EventLogWidget(FeedWidget):
    """A run's events, newest last.

    New events go to the browser as `{"type": "events", "events": [...]}`; a view
    that opens later asks `{"type": "history"}` and gets the last `window` events
    (`reset: true`). Only `total` (events seen) and `window` are synced traits.
    `append()` feeds it by hand when it follows no run.
    """

    _esm = bundle_path("event_log")
    total = traitlets.Int(0).tag(sync=True)
    window = traitlets.Int(500).tag(sync=True)

    _handlers = {"history": "_on_history"}

    def __init__(self, run_id: str | None = None, **kwargs: Any) -> None:
        self._recent: deque[dict[str, Any]] = deque(maxlen=int(kwargs.get("window", 500)))
        super().__init__(run_id, **kwargs)

    @traitlets.observe("window")
    def _window_changed(self, change: dict[str, Any]) -> None:
        self._recent = deque(self._recent, maxlen=max(10, int(change["new"])))

    @property
    def recent(self) -> list[dict[str, Any]]:
        """The events a new view would show (small form: type, seq, ts, summary)."""
        return list(self._recent)

    def append(self, events: list[dict[str, Any]]) -> None:
        """Add events (full envelopes or their small form) and stream them to the views."""
        small = [e if "summary" in e else summarize_event(e) for e in events]
        if not small:
            return
        self._recent.extend(small)
        self.total += len(small)
        self.send({"type": "events", "events": small})

    def update_from_feed(self, feed: Any, events: list[dict[str, Any]], parts: frozenset[str]) -> None:
        if not events:
            return
        self._recent.extend(events)
        self.total = max(self.total + len(events), feed.total_events)
        self.send({"type": "events", "events": events})

    def _on_history(self, _msg: dict[str, Any]) -> None:
        self.send({"type": "events", "events": self.recent, "reset": True})
