"""anywidget components; their front ends are bundled from the repository's widgets/src."""

from __future__ import annotations

from cmbagent_jupyter.widgets.base import STATIC_DIR, DagWidget, EventLogWidget, bundle_path

__all__ = ["STATIC_DIR", "DagWidget", "EventLogWidget", "bundle_path"]
