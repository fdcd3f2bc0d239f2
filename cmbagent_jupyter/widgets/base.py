"""The anywidget components and where their front-end bundles live.

Each widget's front end is one ES module built from the repository's
`widgets/src/<name>.ts` into `static/<name>.js` (see `widgets/build.mjs`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import anywidget
import traitlets

STATIC_DIR = Path(__file__).parent / "static"

NodeClickCallback = Callable[[str], Any]


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


class EventLogWidget(anywidget.AnyWidget):
    """A live list of a run's events ({type, seq, ts, payload} dicts), newest last."""

    _esm = bundle_path("event_log")
    events = traitlets.List(traitlets.Dict()).tag(sync=True)


class DagWidget(anywidget.AnyWidget):
    """The plan graph coloured by node status, with clickable nodes.

    `graph` is {"nodes": [{id, label, status}], "edges": [{source, target}]}; a click
    in the browser arrives as the custom message {"type": "node_click", "id": ...}.
    """

    _esm = bundle_path("dag")
    graph = traitlets.Dict().tag(sync=True)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._node_click_callbacks: list[NodeClickCallback] = []
        self.on_msg(self._handle_custom_msg)

    def on_node_click(self, callback: NodeClickCallback, remove: bool = False) -> None:
        """Call `callback(node_id)` whenever a node is clicked (`remove=True` stops it)."""
        if remove:
            self._node_click_callbacks.remove(callback)
        else:
            self._node_click_callbacks.append(callback)

    def _handle_custom_msg(self, _widget: Any, content: Any, _buffers: Any) -> None:
        if isinstance(content, dict) and content.get("type") == "node_click":
            node_id = str(content.get("id"))
            for callback in list(self._node_click_callbacks):
                callback(node_id)
