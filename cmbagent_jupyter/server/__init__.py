"""Jupyter server extension: REST API and event WebSocket under `/cmbagent/api/`.

Enabled by `jupyter-config/jupyter_server_config.d/cmbagent_jupyter.json`, which the
wheel installs; found through `cmbagent_jupyter._jupyter_server_extension_points`.
Settings are traitlets of `CMBAgentServer` (`c.CMBAgentServer.home = ...`).

REST (JSON; errors are `{"message", "reason"}` with 400, 403, 404, 409, 413, 429, 503):

    GET    health                          extension loaded, version
    GET    sessions                        sessions with cost and runs by status
    POST   sessions                        {name, quotas?}                  -> 201
    GET    sessions/{id}                   session, usage, runs
    DELETE sessions/{id}                   -> status deleted (409 with active runs)
    POST   workflows/{id}/pause            {session_id}  at the next step boundary (at once if its process is gone)
    POST   workflows/{id}/resume           {session_id}  spawns `cmbagent resume ID` -> 202
    GET    workflows/{id}/status?session_id=   run, steps, pending approvals, DAG
    POST   workflows/{id}/branch           {session_id, from_step, name?, instructions?, hypothesis?} -> 201 (paused)
    GET    approvals/pending[?session_id=]
    POST   approvals/{id}/approve|reject   {session_id, feedback}           (actor "jupyterlab")
    POST   approvals/{id}/resolve          {session_id, decision, feedback} any of the gate's options
    GET    cost/summary?session_id=[&run_id=][&group_by=agent,model]
    GET    cost/by-session
    GET    metrics/workflows[?session_id=]
    GET    agents;  POST agents/reload

A run, step or approval is only found in the session the request names (query
`session_id` or body), so another session's ids are 404. Every endpoint that acts on a
run is a call of `cmbagent_jupyter.actions`, the same as the CLI, the magics and the
widgets make.

WebSocket `events?session_id=&run_id=&since=`: a `connected` frame with the state
(sessions, runs, pending approvals, and the run's steps and DAG if `run_id`), then the
events after `since`, then live events, each an `Event` envelope with `seq` and `gseq`;
`heartbeat` frames; client messages `ping`, `request_state {since}`, `pause`,
`resume`, `resolve_approval {approval_id, decision, feedback}` answered by `pong`,
`state`, `ack` or `error`; a client too slow for its queue gets `replay_required
{since}` and comes back with that `since`.
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
