"""REST handlers of the server extension: one small authenticated class per resource.

Each verb parses its input (ids, query, a pydantic body), runs one `ServerAPI` call
off the event loop and writes JSON; failures become `{"message", "reason"}` with the
status `errors.api_error` gives them.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any, Awaitable, Callable, TypeVar

from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join
from pydantic import BaseModel
from tornado import web

from cmbagent_jupyter._version import __version__
from cmbagent_jupyter.server.api import ServerAPI
from cmbagent_jupyter.server.bodies import (
    CreateBranch,
    CreateSession,
    Decision,
    NoBody,
    Resolve,
    RunControl,
    SessionScoped,
    check_path_id,
    parse_body,
)
from cmbagent_jupyter.server.errors import ApiError, api_error

API_PREFIX = "cmbagent/api"
SETTINGS_KEY = "cmbagent_api"

B = TypeVar("B", bound=BaseModel)


class HealthHandler(APIHandler):
    """Tells a client that the extension is loaded, and which version it is."""

    @web.authenticated
    def get(self) -> None:
        self.finish({"status": "ok", "version": __version__})


def answers_errors(method: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
    """Turn a refusal (bad input, unknown id, store error) into its JSON error reply;
    anything else is a bug and goes to Tornado's error handling."""

    @functools.wraps(method)
    async def wrapper(self: "CMBAgentHandler", *args: Any, **kwargs: Any) -> None:
        try:
            await method(self, *args, **kwargs)
        except Exception as exc:  # noqa: BLE001
            err = api_error(exc)
            if err is None:
                raise
            self.set_status(err.status)
            self.finish(err.to_json())

    return wrapper


class CMBAgentHandler(APIHandler):
    """Shared plumbing: the core, its calls off the event loop, session scoping."""

    @property
    def api(self) -> ServerAPI:
        return self.settings[SETTINGS_KEY]

    async def answer(self, func: Callable[..., Any], *args: Any, status: int = 200) -> None:
        """Run a core call in a worker thread (store calls block) and reply with its result."""
        result = await asyncio.to_thread(func, *args)
        self.set_status(status)
        self.finish(result)

    def body(self, model: type[B]) -> B:
        return parse_body(model, self.request.body)

    def query_id(self, kind: str, name: str) -> str | None:
        value = self.get_query_argument(name, None)
        return None if value is None or value == "" else check_path_id(kind, value)

    def session_of(self, body: SessionScoped | None = None) -> str:
        """The session a request names, in its body or its `session_id` query parameter."""
        in_query = self.query_id("session", "session_id")
        in_body = body.session_id if body is not None else None
        if in_query and in_body and in_query != in_body:
            raise ApiError(400, f"session_id is {in_query} in the query but {in_body} in the body", "invalid_body")
        session_id = in_body or in_query
        if session_id is None:
            raise ApiError(400, "this request needs a session_id (query parameter or body field)", "missing_session")
        return session_id


class SessionsHandler(CMBAgentHandler):
    @web.authenticated
    @answers_errors
    async def get(self) -> None:
        await self.answer(self.api.list_sessions)

    @web.authenticated
    @answers_errors
    async def post(self) -> None:
        await self.answer(self.api.create_session, self.body(CreateSession), status=201)


class SessionHandler(CMBAgentHandler):
    @web.authenticated
    @answers_errors
    async def get(self, session_id: str) -> None:
        await self.answer(self.api.get_session, check_path_id("session", session_id))

    @web.authenticated
    @answers_errors
    async def delete(self, session_id: str) -> None:
        await self.answer(self.api.delete_session, check_path_id("session", session_id))


class PauseHandler(CMBAgentHandler):
    @web.authenticated
    @answers_errors
    async def post(self, run_id: str) -> None:
        rid = check_path_id("run", run_id)
        await self.answer(self.api.pause_run, self.session_of(self.body(RunControl)), rid)


class ResumeHandler(CMBAgentHandler):
    @web.authenticated
    @answers_errors
    async def post(self, run_id: str) -> None:
        rid = check_path_id("run", run_id)
        await self.answer(self.api.resume_run, self.session_of(self.body(RunControl)), rid, status=202)


class StatusHandler(CMBAgentHandler):
    @web.authenticated
    @answers_errors
    async def get(self, run_id: str) -> None:
        rid = check_path_id("run", run_id)
        await self.answer(self.api.run_status, self.session_of(), rid)


class BranchHandler(CMBAgentHandler):
    @web.authenticated
    @answers_errors
    async def post(self, run_id: str) -> None:
        rid, body = check_path_id("run", run_id), self.body(CreateBranch)
        await self.answer(self.api.branch_run, self.session_of(body), rid, body, status=201)


class PendingApprovalsHandler(CMBAgentHandler):
    @web.authenticated
    @answers_errors
    async def get(self) -> None:
        await self.answer(self.api.pending_approvals, self.query_id("session", "session_id"))


class DecisionHandler(CMBAgentHandler):
    decision = ""

    @web.authenticated
    @answers_errors
    async def post(self, approval_id: str) -> None:
        aid, body = check_path_id("approval", approval_id), self.body(Decision)
        await self.answer(self.api.resolve_approval, self.session_of(body), aid, self.decision, body.feedback)


class ResolveHandler(CMBAgentHandler):
    @web.authenticated
    @answers_errors
    async def post(self, approval_id: str) -> None:
        aid, body = check_path_id("approval", approval_id), self.body(Resolve)
        await self.answer(self.api.resolve_approval, self.session_of(body), aid, body.decision, body.feedback)


class ApproveHandler(DecisionHandler):
    decision = "approve"


class RejectHandler(DecisionHandler):
    decision = "reject"


class CostSummaryHandler(CMBAgentHandler):
    @web.authenticated
    @answers_errors
    async def get(self) -> None:
        group = self.get_query_argument("group_by", None)
        group_by = [g.strip() for g in group.split(",") if g.strip()] if group else None
        await self.answer(self.api.cost_summary, self.session_of(), self.query_id("run", "run_id"), group_by)


class CostBySessionHandler(CMBAgentHandler):
    @web.authenticated
    @answers_errors
    async def get(self) -> None:
        await self.answer(self.api.cost_by_session)


class WorkflowMetricsHandler(CMBAgentHandler):
    @web.authenticated
    @answers_errors
    async def get(self) -> None:
        await self.answer(self.api.workflow_metrics, self.query_id("session", "session_id"))


class AgentsHandler(CMBAgentHandler):
    @web.authenticated
    @answers_errors
    async def get(self) -> None:
        await self.answer(self.api.agents)


class AgentsReloadHandler(CMBAgentHandler):
    @web.authenticated
    @answers_errors
    async def post(self) -> None:
        self.body(NoBody)
        await self.answer(self.api.agents, True)


ID = r"(?P<{}>[^/]+)"


def routes(base_url: str) -> list[tuple[str, type]]:
    from cmbagent_jupyter.server.events import EventsHandler

    def url(*parts: str) -> str:
        return url_path_join(base_url, API_PREFIX, *parts)

    return [
        (url("health"), HealthHandler),
        (url("sessions"), SessionsHandler),
        (url("sessions", ID.format("session_id")), SessionHandler),
        (url("workflows", ID.format("run_id"), "pause"), PauseHandler),
        (url("workflows", ID.format("run_id"), "resume"), ResumeHandler),
        (url("workflows", ID.format("run_id"), "status"), StatusHandler),
        (url("workflows", ID.format("run_id"), "branch"), BranchHandler),
        (url("approvals", "pending"), PendingApprovalsHandler),
        (url("approvals", ID.format("approval_id"), "approve"), ApproveHandler),
        (url("approvals", ID.format("approval_id"), "reject"), RejectHandler),
        (url("approvals", ID.format("approval_id"), "resolve"), ResolveHandler),
        (url("cost", "summary"), CostSummaryHandler),
        (url("cost", "by-session"), CostBySessionHandler),
        (url("metrics", "workflows"), WorkflowMetricsHandler),
        (url("agents"), AgentsHandler),
        (url("agents", "reload"), AgentsReloadHandler),
        (url("events"), EventsHandler),
    ]


def setup_handlers(web_app: web.Application, api: ServerAPI, **stream_settings: Any) -> None:
    web_app.settings[SETTINGS_KEY] = api
    web_app.settings["cmbagent_stream"] = stream_settings
    web_app.add_handlers(".*$", routes(web_app.settings["base_url"]))
