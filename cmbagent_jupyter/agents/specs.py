"""Agent specs: what an agent is for and its instructions, as validated data.

The built-in specs live in `builtin_agents.yaml`; `load_specs()` reads them, and a run
may override any agent's instructions (`config.instructions.<agent>`), as CMBAgent
lets users pass per-agent instructions.
"""

from __future__ import annotations

from enum import Enum
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cmbagent_jupyter.core import InvalidInput

BUILTIN_FILE = Path(__file__).with_name("builtin_agents.yaml")


class AgentOutput(str, Enum):
    """What the engine does with an agent's reply."""

    plan = "plan"              # JSON plan, validated into a DAG
    review = "review"          # free-text recommendations for the planner
    python = "python"          # a Python code block, saved as control/codebase/step_N.py
    execution = "execution"    # runs code through its tool; the tool's result is what counts
    markdown = "markdown"      # a Markdown document, saved under control/data/


class AgentSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,40}$")
    role: str
    output: AgentOutput
    instructions: str
    tools: list[str] = Field(default_factory=list)
    step_agent: bool = Field(False, description="may be given plan steps (sub_task_agent)")

    def with_instructions(self, extra: str | None) -> "AgentSpec":
        if not extra:
            return self
        return self.model_copy(update={"instructions": f"{self.instructions}\n\n{extra}"})


@lru_cache(maxsize=1)
def builtin_specs() -> dict[str, AgentSpec]:
    return _parse(yaml.safe_load(BUILTIN_FILE.read_text()), BUILTIN_FILE)


def _parse(data: Any, where: Path) -> dict[str, AgentSpec]:
    if not isinstance(data, dict) or not isinstance(data.get("agents"), list):
        raise InvalidInput(f"{where} must hold a list under `agents`")
    specs: dict[str, AgentSpec] = {}
    for i, raw in enumerate(data["agents"]):
        try:
            spec = AgentSpec.model_validate(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            raise InvalidInput(f"{where}: agents[{i}].{'.'.join(str(x) for x in first['loc'])}: {first['msg']}") from None
        specs[spec.name] = spec
    return specs


def load_specs(overrides: dict[str, str] | None = None) -> dict[str, AgentSpec]:
    """The built-in specs, with per-agent extra instructions appended."""
    specs = dict(builtin_specs())
    for name, extra in (overrides or {}).items():
        if name not in specs:
            raise InvalidInput(f"instructions given for unknown agent {name!r}; agents: {', '.join(sorted(specs))}")
        specs[name] = specs[name].with_instructions(extra)
    return specs


def step_agents() -> list[str]:
    return sorted(n for n, s in builtin_specs().items() if s.step_agent)
