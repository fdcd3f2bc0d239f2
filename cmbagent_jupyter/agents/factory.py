"""The one place where agent specs become AG2 agents."""

from __future__ import annotations

from typing import Any, Callable

from ag2 import Agent

from cmbagent_jupyter.agents.specs import AgentSpec
from cmbagent_jupyter.core import InvalidInput


class AgentFactory:
    """Builds AG2 agents from specs with one model config; tools are bound per step."""

    def __init__(self, specs: dict[str, AgentSpec], model_config: Any):
        self.specs = specs
        self.model_config = model_config

    def spec(self, name: str) -> AgentSpec:
        try:
            return self.specs[name]
        except KeyError:
            raise InvalidInput(f"no agent named {name!r}; agents: {', '.join(sorted(self.specs))}") from None

    def build(self, name: str, *, tools: dict[str, Callable[..., Any]] | None = None) -> Agent:
        spec = self.spec(name)
        tools = tools or {}
        missing = [t for t in spec.tools if t not in tools]
        if missing:
            raise InvalidInput(f"agent {name!r} needs tool(s) {', '.join(missing)} bound to its step")
        return Agent(spec.name, spec.instructions, config=self.model_config, tools=[tools[t] for t in spec.tools])
