"""The extension's settings, as traitlets (jupyterlab-git style: a Configurable read
from the server's config), e.g. in `jupyter_server_config.py`:

    c.CMBAgentServer.home = "/data/cmbagent"
    c.CMBAgentServer.heartbeat_interval = 10
"""

from __future__ import annotations

from traitlets import Bool, Float, Integer, List, TraitError, Unicode, validate
from traitlets.config import Configurable


class CMBAgentServer(Configurable):
    home = Unicode(
        "", config=True,
        help="CMBAGENT_HOME whose store the server uses; empty: $CMBAGENT_HOME, else ~/.cmbagent.",
    )
    start_store = Bool(
        True, config=True,
        help="Connect to the home's store service when the server starts, starting it if none runs.",
    )
    heartbeat_interval = Float(
        15.0, config=True, help="Seconds between heartbeat frames on the event WebSocket.",
    )
    ws_queue_size = Integer(
        10_000, config=True,
        help="Live events that may wait for one slow WebSocket client before it is told to replay.",
    )
    resume_command = List(
        Unicode(), config=True,
        help="Command that resumes a run, with {run_id} and {session_id} filled in; "
             "empty: this environment's `cmbagent resume {run_id}`.",
    )

    @validate("heartbeat_interval")
    def _positive_interval(self, proposal):
        if proposal["value"] <= 0:
            raise TraitError(f"heartbeat_interval must be a positive number of seconds, not {proposal['value']}")
        return proposal["value"]

    @validate("ws_queue_size")
    def _room_for_events(self, proposal):
        if proposal["value"] < 1:
            raise TraitError(f"ws_queue_size must be at least 1, not {proposal['value']}")
        return proposal["value"]
