"""Jupyter server extension: REST API and event WebSocket under `/cmbagent/api/`.

Enabled by `jupyter-config/jupyter_server_config.d/cmbagent_jupyter.json`, which the
wheel installs; found through `cmbagent_jupyter._jupyter_server_extension_points`.
Settings are traitlets of `CMBAgentServer` (`c.CMBAgentServer.home = ...`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from jupyter_server.serverapp import ServerApp


def _load_jupyter_server_extension(serverapp: ServerApp) -> None:
    from cmbagent_jupyter.server.api import ServerAPI
    from cmbagent_jupyter.server.config import CMBAgentServer
    from cmbagent_jupyter.server.handlers import setup_handlers

    config = CMBAgentServer(config=serverapp.config, parent=serverapp)
    api = ServerAPI(config.home or None, resume_command=list(config.resume_command) or None)
    setup_handlers(serverapp.web_app, api, queue_size=config.ws_queue_size,
                   heartbeat_s=config.heartbeat_interval)
    if config.start_store:
        api.start_store()
    serverapp.log.info("cmbagent_jupyter server extension loaded (CMBAGENT_HOME %s)", api.home)
