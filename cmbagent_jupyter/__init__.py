"""cmbagent-jupyter: durable, controllable multi-agent research workflows in Jupyter."""

from __future__ import annotations

__version__ = "0.1.0"


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    return [{"src": "labextension", "dest": "cmbagent-jupyter"}]


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "cmbagent_jupyter.server"}]


def load_ipython_extension(ipython):  # pragma: no cover - thin hook
    from cmbagent_jupyter.magics import register

    register(ipython)
