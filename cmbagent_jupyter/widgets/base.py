"""What every widget shares: where the bundles live and how messages are handled.

Each widget's front end is one ES module built from the repository's
`widgets/src/<name>.ts` into `static/<name>.js` (see `widgets/build.mjs`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

import anywidget

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"


def bundle_path(name: str) -> Path:
    """Path of the bundle `static/<name>.js`, anchored to this file.

    anywidget reads a `pathlib.Path` `_esm` from disk when the class is defined, so
    a missing bundle is reported here, with the command that builds it.
    """
    path = STATIC_DIR / f"{name}.js"
    if not path.is_file():
        raise FileNotFoundError(
            f"widget bundle {path} is missing: run `npm run build` at the repository "
            'root, or reinstall with `pip install -e ".[test]"`, which builds it'
        )
    return path


def one_line(exc: BaseException) -> str:
    """An error as the one line a user reads (store errors carry their own message)."""
    text = str(getattr(exc, "message", None) or exc) or type(exc).__name__
    return " ".join(text.split())


class MessageWidget(anywidget.AnyWidget):
    """An anywidget whose front end talks in custom messages `{"type": ..., ...}`.

    A message from the browser goes to the handler registered for its type in
    `_handlers` (type -> method name). A handler's error is sent back as a notice
    (`{"type": "notice", "level": "error", "text": ...}`) instead of vanishing
    into the kernel log.
    """

    _handlers: dict[str, str] = {}

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.on_msg(self._dispatch)

    def _dispatch(self, _widget: Any, content: Any, _buffers: Any) -> None:
        if not isinstance(content, dict):
            return
        name = self._handlers.get(str(content.get("type")))
        if name is None:
            return
        handler: Callable[[dict[str, Any]], None] = getattr(self, name)
        try:
            handler(content)
        except Exception as exc:  # noqa: BLE001 - shown to the user, who clicked
            log.debug("widget message %r failed", content, exc_info=True)
            self.notify(one_line(exc), "error")

    def notify(self, text: str, level: str = "info") -> None:
        """Show a one-line notice in every view of this widget."""
        self.send({"type": "notice", "text": text, "level": level})


class FeedWidget(MessageWidget):
    """A widget that shows one run, kept current by a `RunFeed`.

    Give it a run id (it makes and owns its feed: `DagWidget("run_...")`) or a shared
    `feed=` (as `RunView` does for its parts). Without either it shows whatever its
    traits are set to. `close()` stops a feed it owns.
    """

    def __init__(self, run_id: str | None = None, *, session_id: str | None = None, home: Any = None,
                 store: Any = None, feed: Any = None, live: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        from cmbagent_jupyter.widgets.feed import RunFeed

        self._owns_feed = feed is None and run_id is not None
        if self._owns_feed:
            feed = RunFeed(run_id, session_id, home, store=store, live=live)
        self.feed = feed
        if feed is not None:
            feed.add_listener(self._feed_changed)

    def _feed_changed(self, feed: Any, events: list[dict[str, Any]], parts: frozenset[str]) -> None:
        with self.hold_sync():
            self.update_from_feed(feed, events, parts)

    def update_from_feed(self, feed: Any, events: list[dict[str, Any]], parts: frozenset[str]) -> None:
        """Set the traits from the feed's state (called on the feed's thread)."""
        raise NotImplementedError

    def close(self) -> None:
        if self.feed is not None:
            self.feed.remove_listener(self._feed_changed)
            if self._owns_feed:
                self.feed.close()
        super().close()
