"""The event WebSocket `/cmbagent/api/events`: the store's events, live, for one user.

Query: `session_id` (omitted: every session), `run_id`, `since` (a gseq to replay
after). Authenticated like jupyter_server's own sockets (`@ws_authenticated` over
`JupyterHandler`); bad parameters and unknown ids are refused before the upgrade,
with the same JSON errors as the REST API.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from jupyter_server.auth.decorator import ws_authenticated
from jupyter_server.base.handlers import JupyterHandler
from jupyter_server.base.websocket import WebSocketMixin
from tornado.websocket import WebSocketClosedError, WebSocketHandler

from cmbagent_jupyter.server.api import ServerAPI
from cmbagent_jupyter.server.bodies import check_path_id
from cmbagent_jupyter.server.errors import ApiError, api_error
from cmbagent_jupyter.server.stream import EventStream, StreamScope


class EventsHandler(WebSocketMixin, WebSocketHandler, JupyterHandler):
    stream: EventStream | None = None

    @property
    def api(self) -> ServerAPI:
        return self.settings["cmbagent_api"]

    def _params(self) -> tuple[StreamScope, int | None]:
        def ident(kind: str, name: str) -> str | None:
            value = self.get_query_argument(name, None)
            return check_path_id(kind, value) if value else None

        since_text = self.get_query_argument("since", None)
        since = None
        if since_text not in (None, ""):
            try:
                since = int(since_text)
            except ValueError:
                raise ApiError(400, f"since must be a gseq (an integer), not {since_text!r}", "invalid_query") from None
            if since < 0:
                raise ApiError(400, "since must not be negative", "invalid_query")
        return StreamScope(ident("session", "session_id"), ident("run", "run_id")), since

    @ws_authenticated
    async def get(self, *args: Any, **kwargs: Any) -> None:
        try:
            self.scope, self.since = self._params()
            self.snapshot = await asyncio.to_thread(self.api.snapshot, self.scope.session_id, self.scope.run_id)
        except Exception as exc:  # noqa: BLE001
            err = api_error(exc)
            if err is None:
                raise
            self.set_status(err.status)
            self.set_header("Content-Type", "application/json")
            self.finish(json.dumps(err.to_json()))
            return
        await super().get(*args, **kwargs)

    def open(self, *args: Any, **kwargs: Any) -> None:
        super().open(*args, **kwargs)
        options = self.settings.get("cmbagent_stream", {})
        self.stream = EventStream(self.api, self.scope, self._send, **options)
        self.settings.setdefault("cmbagent_streams", set()).add(self.stream)
        self.stream.start(self.snapshot, self.since)

    async def _send(self, frame: dict[str, Any]) -> None:
        try:
            await self.write_message(json.dumps(frame, default=str))
        except WebSocketClosedError:
            if self.stream is not None:
                self.stream.close()

    async def on_message(self, message: str | bytes) -> None:
        if self.stream is not None:
            await self.stream.handle(message)

    def on_close(self) -> None:
        if self.stream is not None:
            self.stream.close()
            self.settings.get("cmbagent_streams", set()).discard(self.stream)
