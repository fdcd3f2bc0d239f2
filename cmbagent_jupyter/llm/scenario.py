"""Scenario files: what the scripted model answers, per agent, step and turn.

A scenario is YAML. Each entry of `turns` is one model response for one agent in one
scope (`step: step_3`, or no step for planning) at one turn (1, 2, ... counted from the
moment that agent starts working on that scope). `defaults` holds responses for an
agent whose scope has no entry of its own (the executor's usual "run the file" turn).

    name: cmb_power_spectrum
    price: {input_per_mtok: 0, output_per_mtok: 0}
    turns:
      - {agent: planner, turn: 1, content: "{...plan JSON...}"}
      - {agent: engineer, step: step_1, turn: 1, content: "```python ...```"}
    defaults:
      executor:
        - tool_calls: [{name: run_python, arguments: {filename: "{code_file}"}}]
        - content: "Executed {code_file}."

A turn may instead `raise` a provider error (rate_limit, timeout, connection,
server_error: transient, retried with backoff; bad_request: not), to rehearse what a
real provider does. A turn with `when: TEXT` answers, at whatever turn, any call of
its agent and step whose prompt contains TEXT (e.g. the user's feedback), before the
numbered turns are looked at; such turns do not take a turn number.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from cmbagent_jupyter.core import InvalidInput

SCENARIO_DIR = Path(__file__).parent / "scenarios"
DEFAULT_SCENARIO = "cmb_power_spectrum"


class ScenarioError(InvalidInput):
    """A scenario file that cannot be used, or a turn it does not script."""


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ToolCallSpec(_Spec):
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)


class TokenUsage(_Spec):
    prompt_tokens: int = Field(0, ge=0)
    completion_tokens: int = Field(0, ge=0)


PROVIDER_ERRORS = ("rate_limit", "timeout", "connection", "server_error", "bad_request")


class ScriptedResponse(_Spec):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    content: str | None = None
    tool_calls: list[ToolCallSpec] = Field(default_factory=list)
    usage: TokenUsage | None = None
    raise_error: str | None = Field(None, alias="raise", description=f"one of {', '.join(PROVIDER_ERRORS)}")

    @model_validator(mode="after")
    def _says_something(self) -> "ScriptedResponse":
        if self.raise_error is not None:
            if self.raise_error not in PROVIDER_ERRORS:
                raise ValueError(f"raise must be one of {', '.join(PROVIDER_ERRORS)}, not {self.raise_error!r}")
            return self
        if self.content is None and not self.tool_calls:
            raise ValueError("a scripted response needs `content` or `tool_calls` (or `raise: ERROR`)")
        return self


class ScenarioTurn(ScriptedResponse):
    agent: str
    step: str | None = None
    turn: int | None = Field(None, ge=1)
    when: str | None = Field(None, min_length=1, description="answer any call whose prompt contains this text")

    @model_validator(mode="after")
    def _when_or_turn(self) -> "ScenarioTurn":
        if self.when is not None and self.turn is not None:
            raise ValueError("a turn has either `when` or `turn`, not both")
        return self


class ScenarioPrice(_Spec):
    input_per_mtok: float = Field(0.0, ge=0)
    output_per_mtok: float = Field(0.0, ge=0)


class Scenario(_Spec):
    name: str
    description: str = ""
    task: str | None = None
    model: str | None = None
    price: ScenarioPrice | None = None
    latency_s: float = Field(0.0, ge=0, description="simulated model latency per call, in seconds")
    turns: list[ScenarioTurn] = Field(default_factory=list)
    defaults: dict[str, list[ScriptedResponse]] = Field(default_factory=dict)
    source: str | None = Field(None, exclude=True)

    @property
    def model_name(self) -> str:
        return self.model or f"scripted/{self.name}"

    def index(self) -> dict[tuple[str, str | None], list[ScenarioTurn]]:
        """Turns by (agent, step), in turn order (explicit numbers first, then file order)."""
        by_scope: dict[tuple[str, str | None], list[ScenarioTurn]] = {}
        for t in self.turns:
            if t.when is not None:
                continue
            by_scope.setdefault((t.agent, t.step), []).append(t)
        out = {}
        for scope, turns in by_scope.items():
            numbered = {t.turn: t for t in turns if t.turn is not None}
            ordered: list[ScenarioTurn] = []
            loose = iter(t for t in turns if t.turn is None)
            n = 1
            while len(ordered) < len(turns):
                if n in numbered:
                    ordered.append(numbered[n])
                else:
                    nxt = next(loose, None)
                    if nxt is None:
                        missing = n
                        raise ScenarioError(f"scenario {self.name!r}: agent {scope[0]!r} "
                                            f"{'step ' + scope[1] if scope[1] else 'outside steps'} "
                                            f"has no turn {missing} but has later ones")
                    ordered.append(nxt)
                n += 1
            out[scope] = ordered
        return out

    def conditional(self) -> dict[tuple[str, str | None], list[ScenarioTurn]]:
        """The `when` turns by (agent, step), in file order."""
        out: dict[tuple[str, str | None], list[ScenarioTurn]] = {}
        for t in self.turns:
            if t.when is not None:
                out.setdefault((t.agent, t.step), []).append(t)
        return out

    def to_yaml(self) -> str:
        data = self.model_dump(mode="json", exclude_none=True, exclude_defaults=False, by_alias=True)
        for key in ("source",):
            data.pop(key, None)
        return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)


def scenario_path(ref: str | os.PathLike) -> Path:
    """A scenario by name (shipped, or under $CMBAGENT_HOME/scenarios) or by file path."""
    ref_s = str(ref)
    p = Path(ref_s).expanduser()
    if p.suffix in (".yaml", ".yml") or os.sep in ref_s:
        if not p.is_file():
            raise ScenarioError(f"no scenario file at {p}")
        return p
    candidates = [SCENARIO_DIR / f"{ref_s}.yaml"]
    home = os.environ.get("CMBAGENT_HOME")
    if home:
        candidates.insert(0, Path(home).expanduser() / "scenarios" / f"{ref_s}.yaml")
    for c in candidates:
        if c.is_file():
            return c
    raise ScenarioError(f"no scenario named {ref_s!r}; shipped scenarios: {', '.join(list_scenarios()) or 'none'}")


def list_scenarios() -> list[str]:
    return sorted(p.stem for p in SCENARIO_DIR.glob("*.yaml"))


def load_scenario(ref: str | os.PathLike) -> Scenario:
    path = scenario_path(ref)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ScenarioError(f"scenario {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ScenarioError(f"scenario {path} must be a mapping with `name` and `turns`")
    data.setdefault("name", path.stem)
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        raise ScenarioError(f"scenario {path}: {where}: {first['msg']}") from None
    scenario.source = str(path)
    scenario.index()
    return scenario
