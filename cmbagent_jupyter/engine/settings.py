"""A run's settings: validated where they come in (CLI, Python API), stored in the run's config.

They travel with the run, so a run resumed in another process behaves as it began.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cmbagent_jupyter.core import InvalidInput
from cmbagent_jupyter.engine.gates import policy_of

SETTING_KEYS = ("max_parallel", "n_plan_reviews", "max_plan_steps", "max_plan_tries", "max_n_attempts",
                "heartbeat_interval_s", "step_timeout_s", "agent", "plan", "instructions", "record",
                "hardware_constraints", "approval_mode", "approval_steps", "approval_timeout_s",
                "approval_default_action", "budget_threshold_usd", "journal_sync", "context_files")


class RunSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_parallel: int = Field(4, ge=1, le=256, description="steps running at once")
    n_plan_reviews: int = Field(1, ge=0, le=10, description="review rounds of the plan")
    max_plan_steps: int = Field(8, ge=1, le=1000, description="largest plan accepted")
    max_plan_tries: int = Field(3, ge=1, le=10, description="planner attempts per round when its plan is invalid")
    max_n_attempts: int = Field(3, ge=1, le=20, description="code attempts of a step before it fails")
    heartbeat_interval_s: float = Field(5.0, gt=0, le=3600)
    step_timeout_s: float = Field(600.0, gt=0, description="time limit of one code execution")
    agent: str = Field("engineer", description="the agent of a one_shot run")
    plan: Any = Field(None, description="the plan a control run executes (CMBAgent JSON)")
    instructions: dict[str, str] = Field(default_factory=dict, description="extra instructions per agent")
    record: str | None = Field(None, description="scenario file to record the model's responses into")
    hardware_constraints: str | None = None
    approval_mode: str | list[str] | None = Field(None, description="where to wait for a human: after_planning, "
                                                  "before_each_step, before_code_execution, on_error, on_budget")
    approval_steps: list[str | int] = Field(default_factory=list, description="steps (keys or numbers) to gate")
    approval_timeout_s: float | None = Field(None, gt=0)
    approval_default_action: str | None = None
    budget_threshold_usd: float | None = Field(None, ge=0)
    journal_sync: Literal["group", "boundary"] = Field(
        "group", description="when a step boundary reaches the disk: group (a background fdatasync per batch of "
                             "boundaries; every boundary survives the process at once) or boundary (an fdatasync "
                             "before any dependent step starts)")
    context_files: bool | None = Field(
        None, description="write CMBAgent's context/context_step_N.pkl after each step; default: yes when the "
                          "agents run the steps, no for a custom step runner (its steps are not CMBAgent's)")

    @classmethod
    def parse(cls, values: dict[str, Any]) -> "RunSettings":
        try:
            settings = cls.model_validate({k: v for k, v in values.items() if v is not None})
        except ValidationError as exc:
            err = exc.errors()[0]
            raise InvalidInput(f"run setting {'.'.join(str(x) for x in err['loc'])}: {err['msg']}") from None
        policy_of(settings.to_config())
        return settings

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "RunSettings":
        return cls.parse({k: config[k] for k in SETTING_KEYS if k in config})

    def to_config(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)
