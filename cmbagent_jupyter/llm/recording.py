"""Record a run's model responses into a scenario file, to replay it offline later.

Wrap any model config (a real provider, or the scripted model itself) in
`RecordingModelConfig(inner, path)`: each response is written, keyed by agent, step
and turn, into a scenario YAML that `ScriptedModelConfig` replays. The file is
rewritten atomically after every call, so a run killed midway leaves a usable
recording of what it got so far. A step run again overwrites its earlier turns.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ag2.events import ModelResponse

from cmbagent_jupyter.llm.scenario import (
    Scenario,
    ScenarioPrice,
    ScenarioTurn,
    TokenUsage,
    ToolCallSpec,
    load_scenario,
)
from cmbagent_jupyter.llm.scope import ModelScope
from cmbagent_jupyter.llm.wrapper import ModelConfigWrapper


class RecordingModelConfig(ModelConfigWrapper):
    def __init__(self, inner: Any, path: str | os.PathLike, *, name: str | None = None, task: str | None = None,
                 resume: bool = False):
        super().__init__(inner)
        self.path = Path(path).expanduser()
        self.name = name or self.path.stem
        self.task = task
        self._turns: dict[tuple[str, str | None, int], ScenarioTurn] = {}
        self._defaults: dict[str, Any] = {}
        self._lock = threading.Lock()
        base = getattr(self.unwrap(), "scenario", None)
        if isinstance(base, Scenario):
            self._defaults = dict(base.defaults)
            self.task = self.task or base.task
        if resume and self.path.exists():
            # a resumed run keeps what was recorded before the stop; re-run steps overwrite their turns
            earlier = load_scenario(self.path)
            for t in earlier.turns:
                self._turns[(t.agent, t.step, t.turn or 1)] = t

    def observe(self, scope: ModelScope, turn: int, messages: Sequence[Any], context: Any,
                response: ModelResponse) -> None:
        usage = response.usage
        entry = ScenarioTurn(
            agent=scope.agent, step=scope.step, turn=turn, content=response.content,
            tool_calls=[ToolCallSpec(name=c.name, arguments=c.serialized_arguments) for c in response.tool_calls.calls],
            usage=TokenUsage(prompt_tokens=int(usage.prompt_tokens or 0),
                             completion_tokens=int(usage.completion_tokens or 0)),
        )
        if entry.content is None and not entry.tool_calls:
            entry.content = ""
        with self._lock:
            self._turns[(scope.agent, scope.step, turn)] = entry
            self._write()

    def scenario(self) -> Scenario:
        turns = [self._turns[k] for k in sorted(self._turns, key=lambda k: (k[1] or "", k[0], k[2]))]
        return Scenario(
            name=self.name,
            description=f"recorded from {self.inner.provider}/{self.inner.model}",
            task=self.task,
            price=ScenarioPrice(),
            turns=turns,
            defaults=self._defaults,
        )

    def _write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(self.scenario().to_yaml())
        os.replace(tmp, self.path)
