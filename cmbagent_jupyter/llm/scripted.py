"""The scripted model: replays a scenario through AG2's real model-client path.

`ScriptedModelConfig` is an AG2 model config like `OpenAIConfig`: `create()` returns an
async client that AG2's agent loop calls with the conversation and the tool schemas,
and that answers with a `ModelResponse` carrying token usage. Nothing in AG2 is
patched. It is the product's offline model (demos, teaching, tests, replays of
recorded runs) and always says so.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ag2.events import ModelMessage, ModelResponse, ToolCallEvent, ToolCallsEvent, Usage

from cmbagent_jupyter.llm.scenario import Scenario, ScenarioError, ScriptedResponse, load_scenario
from cmbagent_jupyter.llm.scope import ModelScope, TurnCounter, estimate_tokens, render_messages, scope_of

PROVIDER = "scripted"


@dataclass(frozen=True)
class ScriptedCall:
    """One call the scripted model served: what it was sent and what it answered."""

    agent: str
    step: str | None
    turn: int
    system: tuple[str, ...]
    messages: tuple[dict[str, str], ...]
    response: ScriptedResponse

    @property
    def sent_text(self) -> str:
        return "\n".join([*self.system, *(m["text"] for m in self.messages)])


class ScriptedModelConfig:
    """An AG2 model config whose client answers from a scenario file."""

    def __init__(self, scenario: Scenario | str | os.PathLike, *, latency_s: float | None = None):
        self.scenario = scenario if isinstance(scenario, Scenario) else load_scenario(scenario)
        self._index = self.scenario.index()
        self._conditional = self.scenario.conditional()
        self.turns = TurnCounter()
        self.latency_s = latency_s
        self.calls: list[ScriptedCall] = []
        self._lock = threading.Lock()

    @property
    def provider(self) -> str:
        return PROVIDER

    @property
    def model(self) -> str:
        return self.scenario.model_name

    def copy(self) -> "ScriptedModelConfig":
        return self

    def create(self) -> "ScriptedClient":
        return ScriptedClient(self)

    def create_files_client(self) -> Any:
        raise NotImplementedError("the scripted model has no Files API")

    def announcement(self) -> str:
        return f"using the scripted offline model (scenario {self.scenario.name})"

    def response_for(self, scope: ModelScope, turn: int, sent_text: str = "") -> tuple[ScriptedResponse, bool]:
        """The scripted answer and whether it came from `defaults` (whose text may hold placeholders)."""
        for cond in self._conditional.get((scope.agent, scope.step), ()):
            if cond.when in sent_text:
                return cond, False
        scripted = self._index.get((scope.agent, scope.step))
        where = f"step {scope.step}" if scope.step else "planning"
        if scripted is not None:
            if turn <= len(scripted):
                return scripted[turn - 1], False
            raise ScenarioError(
                f"scenario {self.scenario.name!r} scripts {len(scripted)} turn(s) for agent {scope.agent!r} in "
                f"{where}; turn {turn} was asked for")
        defaults = self.scenario.defaults.get(scope.agent)
        if defaults:
            return defaults[(turn - 1) % len(defaults)], True
        raise ScenarioError(f"scenario {self.scenario.name!r} has no response for agent {scope.agent!r} in {where}")


class ScriptedClient:
    def __init__(self, config: ScriptedModelConfig):
        self.config = config

    async def __call__(self, messages: Sequence[Any], context: Any, **kwargs: Any) -> ModelResponse:
        cfg = self.config
        scope = scope_of(context)
        turn = cfg.turns.next(scope)
        rendered = render_messages(messages)
        system = tuple(str(p) for p in (getattr(context, "prompt", None) or ()))
        sent_text = "\n".join([*system, *(m["text"] for m in rendered)])
        scripted, from_defaults = cfg.response_for(scope, turn, sent_text)
        with cfg._lock:
            cfg.calls.append(ScriptedCall(scope.agent, scope.step, turn, system, tuple(rendered), scripted))
        latency = cfg.latency_s if cfg.latency_s is not None else cfg.scenario.latency_s
        if latency:
            await asyncio.sleep(latency)
        if scripted.raise_error is not None:
            raise provider_error(scripted.raise_error, scope)
        return await build_response(scripted, scope, context, model=cfg.model, provider=PROVIDER,
                                    fill_content=from_defaults, sent_text=sent_text)


class ScriptedProviderError(Exception):
    """A provider failure the scenario asked for; named like the provider SDKs' errors, so it is
    classified (engine/retry.py) as theirs would be."""

    transient = True


class RateLimitError(ScriptedProviderError):
    status_code = 429


class APITimeoutError(ScriptedProviderError):
    pass


class APIConnectionError(ScriptedProviderError):
    pass


class InternalServerError(ScriptedProviderError):
    status_code = 500


class BadRequestError(ScriptedProviderError):
    transient = False
    status_code = 400


_ERRORS = {"rate_limit": (RateLimitError, "429 Too Many Requests: rate limit reached (scripted)"),
           "timeout": (APITimeoutError, "request timed out (scripted)"),
           "connection": (APIConnectionError, "connection reset by peer (scripted)"),
           "server_error": (InternalServerError, "500 Internal Server Error (scripted)"),
           "bad_request": (BadRequestError, "400 Bad Request (scripted)")}


def provider_error(kind: str, scope: ModelScope) -> ScriptedProviderError:
    cls, message = _ERRORS[kind]
    return cls(f"{message} for agent {scope.agent}" + (f" in step {scope.step}" if scope.step else ""))


async def build_response(scripted: ScriptedResponse, scope: ModelScope, context: Any, *, model: str, provider: str,
                         sent_text: str, fill_content: bool = False) -> ModelResponse:
    """A `ModelResponse` for a scripted answer, with usage reported. Placeholders such as
    `{code_file}` are filled in tool-call arguments, and in text only for `defaults`
    (scripted code may well contain braces of its own)."""
    calls = []
    for i, tc in enumerate(scripted.tool_calls):
        args = {k: _fill(v, scope) for k, v in tc.arguments.items()}
        calls.append(ToolCallEvent(tc.name, arguments=json.dumps(args), id=f"call_{scope.step or 'plan'}_{i}"))
    content = scripted.content
    if content is not None and fill_content:
        content = _fill(content, scope)
    if scripted.usage is not None:
        prompt_tokens, completion_tokens = scripted.usage.prompt_tokens, scripted.usage.completion_tokens
    else:
        prompt_tokens = estimate_tokens(sent_text)
        completion_tokens = estimate_tokens((content or "") + "".join(c.arguments for c in calls))
    usage = Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                  total_tokens=prompt_tokens + completion_tokens)
    message = None
    if content is not None:
        message = ModelMessage(content)
        await context.send(message)
    return ModelResponse(message, tool_calls=ToolCallsEvent(calls), usage=usage, model=model, provider=provider,
                         finish_reason="tool_calls" if calls else "stop")


def _fill(value: Any, scope: ModelScope) -> Any:
    if isinstance(value, str):
        for key, sub in scope.placeholders().items():
            value = value.replace(key, sub)
        return value
    if isinstance(value, list):
        return [_fill(v, scope) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, scope) for k, v in value.items()}
    return value
