"""Who is asking the model: the run, agent and step of a call, carried to the model client.

The engine passes a `ModelScope` in the AG2 call's dependencies; model clients (the
scripted model, the recorder, the transcript) read it to key turns and files. Each
time an agent starts on a step (or on planning) it gets a fresh scope, so turn numbers
restart at 1 whenever a step is run again, in this process or after a resume.
"""

from __future__ import annotations

import itertools
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

SCOPE_KEY = "cmbagent.scope"
_AG2_AGENT_KEY = "__ag2_agent__"


@dataclass(frozen=True)
class ModelScope:
    agent: str
    run_id: str | None = None
    step: str | None = None
    step_number: int | None = None
    step_id: str | None = None
    code_file: str | None = None
    chat_dir: str | None = None
    epoch: str = field(default_factory=lambda: uuid.uuid4().hex)

    def placeholders(self) -> dict[str, str]:
        return {"{code_file}": self.code_file or "", "{step}": self.step or "",
                "{step_number}": "" if self.step_number is None else str(self.step_number),
                "{agent}": self.agent}


def scope_of(context: Any) -> ModelScope:
    """The scope of a model call; a call made outside the engine gets one from the agent's name."""
    deps = getattr(context, "dependencies", {}) or {}
    scope = deps.get(SCOPE_KEY)
    if isinstance(scope, ModelScope):
        return scope
    agent = deps.get(_AG2_AGENT_KEY)
    name = getattr(agent, "name", None) or "agent"
    key = ("adhoc", id(context.stream) if hasattr(context, "stream") else 0, name)
    with _adhoc_lock:
        scope = _adhoc.get(key)
        if scope is None:
            scope = _adhoc[key] = ModelScope(agent=name)
    return scope


_adhoc: dict[tuple, ModelScope] = {}
_adhoc_lock = threading.Lock()


class TurnCounter:
    """Turn numbers per scope: 1 for the first call an agent makes in a scope, then 2, ..."""

    def __init__(self) -> None:
        self._next: dict[tuple[str, str, str | None], itertools.count] = {}
        self._lock = threading.Lock()

    def next(self, scope: ModelScope) -> int:
        key = (scope.epoch, scope.agent, scope.step)
        with self._lock:
            counter = self._next.get(key)
            if counter is None:
                counter = self._next[key] = itertools.count(1)
            return next(counter)


def render_messages(messages: Sequence[Any]) -> list[dict[str, str]]:
    """The text of what a model was sent, one entry per message, for transcripts and token estimates."""
    out: list[dict[str, str]] = []
    for m in messages:
        kind = type(m).__name__
        if kind in ("ModelRequest", "DrainedModelRequest"):
            out.append({"role": "user", "text": "\n".join(_part_text(p) for p in m.parts)})
        elif kind == "ModelResponse":
            text = m.content or ""
            if m.tool_calls:
                text += "".join(f"\n[tool call {c.name} {c.arguments}]" for c in m.tool_calls.calls)
            out.append({"role": "assistant", "text": text})
        elif kind == "ToolResultsEvent":
            for r in m.results:
                body = "\n".join(_part_text(p) for p in r.result.parts)
                out.append({"role": "tool", "text": f"[{r.name}] {body}"})
    return out


def _part_text(part: Any) -> str:
    content = getattr(part, "content", None)
    if isinstance(content, str):
        return content
    data = getattr(part, "data", None)
    return str(data if data is not None else part)


def estimate_tokens(text: str) -> int:
    """About four characters a token: what the scripted model reports when a scenario gives no usage."""
    return (len(text) + 3) // 4
