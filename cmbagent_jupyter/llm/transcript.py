"""Chats on disk and usage as it happens: the wrapper the engine puts around a run's model.

Every model call of a run is appended as a JSON line per agent: planning agents to
`planning/chats/<agent>.jsonl`, step agents to `control/chats/<agent>.jsonl` (the
scope's `chat_dir`), as CMBAgent keeps its chats next to the outputs. Each call's
token usage goes to `on_usage` with the call's scope, to be priced and recorded.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Callable

from ag2.events import ModelResponse

from cmbagent_jupyter.llm.scope import ModelScope, render_messages
from cmbagent_jupyter.llm.wrapper import ModelConfigWrapper


class TranscriptModelConfig(ModelConfigWrapper):
    def __init__(self, inner: Any, on_usage: Callable[[ModelScope, ModelResponse], None] | None = None):
        super().__init__(inner)
        self.on_usage = on_usage
        self._lock = threading.Lock()

    def observe(self, scope: ModelScope, turn: int, messages: Sequence[Any], context: Any,
                response: ModelResponse) -> None:
        if self.on_usage is not None:
            self.on_usage(scope, response)
        if not scope.chat_dir:
            return
        usage = response.usage
        line = {
            "agent": scope.agent, "step": scope.step, "turn": turn, "model": response.model or self.model,
            "system": [str(p) for p in (getattr(context, "prompt", None) or ())],
            "messages": render_messages(messages),
            "response": {"content": response.content,
                         "tool_calls": [{"name": c.name, "arguments": c.arguments} for c in response.tool_calls.calls]},
            "usage": {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens},
        }
        path = Path(scope.chat_dir) / f"{scope.agent}.jsonl"
        with self._lock:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a", encoding="utf-8") as f:
                f.write(json.dumps(line, default=str) + "\n")


def read_transcript(path: str | Path) -> list[dict[str, Any]]:
    p = Path(path)
    if not p.exists():
        return []
    return [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
