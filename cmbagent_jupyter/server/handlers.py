"""REST handlers of the server extension, one small authenticated class per resource."""

from __future__ import annotations

from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join
from tornado import web

from cmbagent_jupyter import __version__

API_PREFIX = "cmbagent/api"


class HealthHandler(APIHandler):
    """Tells a client that the extension is loaded, and which version it is."""

    @web.authenticated
    def get(self) -> None:
        self.finish({"status": "ok", "version": __version__})


def setup_handlers(web_app: web.Application) -> None:
    base_url = web_app.settings["base_url"]
    web_app.add_handlers(
        ".*$",
        [(url_path_join(base_url, API_PREFIX, "health"), HealthHandler)],
    )
