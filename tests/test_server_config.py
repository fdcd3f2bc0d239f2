"""The extension's settings: traitlets read from the server's config, like any extension."""

from __future__ import annotations

import logging

import pytest
from tornado.web import Application
from traitlets import TraitError
from traitlets.config import Config, Configurable

from cmbagent_jupyter.server import _load_jupyter_server_extension
from cmbagent_jupyter.server.config import CMBAgentServer


class StubServerApp(Configurable):
    """What the extension's loader uses of a ServerApp: config, web_app, log."""

    def __init__(self, config: Config):
        super().__init__(config=config)
        self.web_app = Application(base_url="/base/")
        self.log = logging.getLogger("stub-server")


def test_configured_home_stream_options_and_resume_command_are_used(tmp_path):
    home = tmp_path / "elsewhere"
    app = StubServerApp(Config({"CMBAgentServer": {
        "home": str(home), "start_store": False, "heartbeat_interval": 2.5, "ws_queue_size": 77,
        "resume_command": ["my-resume", "{run_id}", "--session", "{session_id}"],
    }}))

    _load_jupyter_server_extension(app)

    api = app.web_app.settings["cmbagent_api"]
    assert api.home == home.resolve()
    assert app.web_app.settings["cmbagent_stream"] == {"queue_size": 77, "heartbeat_s": 2.5}
    assert api.launcher.argv("run_1", "ses_2") == ["my-resume", "run_1", "--session", "ses_2"]
    assert api._warm is None, "start_store=False: nothing connects (or starts a service) at load"
    paths = {rule.matcher.regex.pattern.rstrip("$") for rule in app.web_app.default_router.rules[0].target.rules}
    assert {"/base/cmbagent/api/events", "/base/cmbagent/api/metrics/workflows"} <= paths
    api.close()


def test_defaults_follow_cmbagent_home(tmp_path, monkeypatch):
    monkeypatch.setenv("CMBAGENT_HOME", str(tmp_path / "from-env"))
    app = StubServerApp(Config({"CMBAgentServer": {"start_store": False}}))

    _load_jupyter_server_extension(app)

    api = app.web_app.settings["cmbagent_api"]
    assert api.home == (tmp_path / "from-env").resolve()
    assert app.web_app.settings["cmbagent_stream"] == {"queue_size": 10_000, "heartbeat_s": 15.0}
    assert api.launcher.argv("run_1", "ses_2")[-2:] == ["resume", "run_1"]
    api.close()


@pytest.mark.parametrize(("name", "value"), [("heartbeat_interval", 0), ("ws_queue_size", 0)])
def test_nonsense_settings_are_refused(name, value):
    with pytest.raises(TraitError, match=name):
        CMBAgentServer(config=Config({"CMBAgentServer": {name: value}}))
