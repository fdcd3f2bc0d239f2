"""A run's plan in CMBAgent's format (`final_plan`: sub-tasks, each with its agent and bullet
points), plus our keys and dependencies. The engine validates a planner's reply into one
(`engine.dag.plan_from_data`); the store and recovery read it back from a run's config.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator


class SubTask(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    key: str
    number: int = Field(ge=1)
    sub_task: str = Field(min_length=1)
    sub_task_agent: str
    bullet_points: list[str] = Field(default_factory=list)
    depends_on: list[str] = Field(default_factory=list)

    @field_validator("bullet_points", mode="before")
    @classmethod
    def _bullets(cls, v: Any) -> Any:
        if isinstance(v, str):
            return [v]
        return v or []

    @property
    def description(self) -> str:
        text = self.sub_task
        if self.bullet_points:
            text += "\n" + "\n".join(f"- {b}" for b in self.bullet_points)
        return text

    def to_store(self) -> dict[str, Any]:
        return {"key": self.key, "number": self.number, "agent": self.sub_task_agent, "description": self.description,
                "depends_on": list(self.depends_on),
                "inputs": {"sub_task": self.sub_task, "bullet_points": list(self.bullet_points)}}


class Plan(BaseModel):
    model_config = ConfigDict(extra="ignore")

    sub_tasks: list[SubTask]

    def to_json(self) -> dict[str, Any]:
        """CMBAgent's final_plan shape, plus our keys and dependencies."""
        return {"sub_tasks": [s.model_dump(mode="json") for s in self.sub_tasks]}

    @property
    def keys(self) -> list[str]:
        return [s.key for s in self.sub_tasks]

    def step(self, key: str) -> SubTask:
        index = self.__dict__.get("_step_index")
        if index is None or len(index) != len(self.sub_tasks):
            index = {s.key: s for s in self.sub_tasks}
            self.__dict__["_step_index"] = index
        return index[key]
