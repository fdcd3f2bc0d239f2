"""Which model a run gets: keys from the environment, models.yaml, the scripted fallback,
and a run against an OpenAI-compatible server on 127.0.0.1 (the local-server case)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from cmbagent_jupyter import open_session
from cmbagent_jupyter.llm.providers import resolve_model
from cmbagent_jupyter.core import InvalidInput, RunStatus
from fixtures.engine import engine_home  # noqa: F401 - fixture


def test_without_any_key_the_scripted_model_is_chosen_and_says_so(engine_home: Path):
    choice = resolve_model(None, home=engine_home)
    assert choice.scripted and choice.ref == "scripted:cmb_power_spectrum"
    assert choice.announcement == "using the scripted offline model (scenario cmb_power_spectrum)"
    assert choice.config.provider == "scripted" and choice.config.model == "scripted/cmb_power_spectrum"


def test_a_key_in_the_environment_selects_its_provider(engine_home: Path, monkeypatch: pytest.MonkeyPatch):
    from ag2.config import OpenAIConfig

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-used")
    choice = resolve_model(None, home=engine_home)
    assert isinstance(choice.config, OpenAIConfig) and choice.ref == "openai/gpt-4.1-mini"
    assert choice.config.api_key == "sk-test-not-used" and choice.announcement == "using model openai/gpt-4.1-mini"
    assert resolve_model("gpt-4o", home=engine_home).ref == "openai/gpt-4o"
    assert resolve_model("scripted", home=engine_home).scripted, "the scripted model can still be asked for"


def test_models_yaml_names_local_servers_defaults_and_prices(engine_home: Path):
    engine_home.mkdir(parents=True, exist_ok=True)
    (engine_home / "models.yaml").write_text(
        "default: local/llama3.1\n"
        "providers:\n  local: {kind: openai_compatible, base_url: 'http://127.0.0.1:8000/v1'}\n"
        "prices:\n  local/llama3.1: {input_per_mtok: 0.1, output_per_mtok: 0.2}\n")
    choice = resolve_model(None, home=engine_home)
    assert choice.ref == "local/llama3.1" and choice.config.base_url == "http://127.0.0.1:8000/v1"
    assert choice.price.input_per_mtok == 0.1


@pytest.mark.parametrize("ref, message", [
    ("openai/gpt-4o", "needs an API key: set OPENAI_API_KEY"),
    ("nowhere/model-x", "unknown model provider 'nowhere'"),
    ("mystery-model", "cannot tell the provider of model 'mystery-model'"),
    ("scripted:no_such_scenario", "no scenario named 'no_such_scenario'"),
])
def test_a_model_that_cannot_be_used_gets_a_clear_error(engine_home: Path, ref: str, message: str):
    with pytest.raises(InvalidInput, match=message):
        resolve_model(ref, home=engine_home)


def test_a_provider_whose_extra_is_missing_says_how_to_install_it(engine_home: Path,
                                                                   monkeypatch: pytest.MonkeyPatch):
    try:
        import anthropic  # noqa: F401
    except ImportError:
        monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key")
        with pytest.raises(InvalidInput, match=r'pip install "ag2\[anthropic\]"'):
            resolve_model("claude-sonnet-4-5", home=engine_home)
    else:  # pragma: no cover - depends on the environment
        pytest.skip("the anthropic extra is installed here")


class _ChatCompletions(BaseHTTPRequestHandler):
    """Just enough of the OpenAI chat-completions API: what a local server (vLLM, llama.cpp) offers."""

    requests: list[dict] = []

    def do_POST(self):  # noqa: N802 - http.server's naming
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append(body)
        reply = {
            "id": "chatcmpl-local-1", "object": "chat.completion", "created": 1, "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": "# Local answer\nThe server replied."}}],
            "usage": {"prompt_tokens": 120, "completion_tokens": 8, "total_tokens": 128},
        }
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_a_run_against_an_openai_compatible_server_on_localhost(engine_home: Path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ChatCompletions)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        engine_home.mkdir(parents=True, exist_ok=True)
        (engine_home / "models.yaml").write_text(
            "providers:\n"
            f"  local: {{kind: openai_compatible, base_url: 'http://127.0.0.1:{server.server_port}/v1'}}\n"
            "prices:\n  local/tiny: {input_per_mtok: 1.0, output_per_mtok: 2.0}\n")
        handle = open_session(home=engine_home).run("Say hello", mode="one_shot", agent="researcher",
                                                    model="local/tiny", quiet=True)
        assert handle.announcement == "using model local/tiny"
        run = handle.wait(60)
        assert run.status == RunStatus.completed, run.error
        report = Path(run.path) / "control" / "data" / "report_step_1.md"
        assert report.read_text() == "# Local answer\nThe server replied.\n"
        sent = _ChatCompletions.requests[-1]
        assert sent["model"] == "tiny" and "You are the researcher" in sent["messages"][0]["content"]
        assert "Say hello" in sent["messages"][-1]["content"]
        [record] = handle.ss.cost_records(run.id)
        assert (record.agent, record.prompt_tokens, record.completion_tokens) == ("researcher", 120, 8)
        assert record.cost_usd == pytest.approx((120 * 1.0 + 8 * 2.0) / 1e6) and record.priced
    finally:
        server.shutdown()
        server.server_close()
