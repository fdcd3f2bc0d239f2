"""Jupyter server extension: the REST API the JupyterLab sidebar talks to.

Enabled by `jupyter-config/jupyter_server_config.d/cmbagent_jupyter.json`, which the
wheel installs; found through `cmbagent_jupyter._jupyter_server_extension_points`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from jupyter_server.serverapp import ServerApp


def _load_jupyter_server_extension(serverapp: ServerApp) -> None:
    from cmbagent_jupyter.server.handlers import setup_handlers

    setup_handlers(serverapp.web_app)
    serverapp.log.info("cmbagent_jupyter server extension loaded")
