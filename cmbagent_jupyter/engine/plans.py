"""Plans the agents do not make (one_shot's single step, control's given plan), the request
that stores a plan with its DAG, and a new draft's plan rebuilt from its run (`DraftPlan`).

Apart from the runner, because a run's plan is checked before the run is created, by
code that must not load the agents' model clients to do it.
"""

from __future__ import annotations

from typing import Any

from cmbagent_jupyter.agents.specs import step_agents
from cmbagent_jupyter.core import InvalidInput, Run, RunMode, Step, new_id
from cmbagent_jupyter.engine.context import base_context
from cmbagent_jupyter.engine.dag import Plan, PlanDAG, plan_from_data
from cmbagent_jupyter.engine.settings import RunSettings


def given_plan(mode: RunMode, settings: RunSettings, *, task: str, extra_agents: Any = ()) -> Plan:
    """The plan of a run that is not planned by the agents: its one step (one_shot) or the plan given (control)."""
    agents = step_agents()
    if mode == RunMode.one_shot:
        if settings.agent not in agents:
            raise InvalidInput(f"one_shot agent must be one of {', '.join(agents)}, not {settings.agent!r}")
        return plan_from_data({"sub_tasks": [{"key": "step_1", "sub_task": task, "sub_task_agent": settings.agent}]},
                              agents=agents)
    if settings.plan is None:
        raise InvalidInput("a control run needs a plan: pass plan=... (CMBAgent plan JSON)")
    return plan_from_data(settings.plan, agents=sorted({*agents, *extra_agents}))


def plan_request(plan: Plan, *, plans: list[Any] | None = None, reviews: list[str] | None = None) -> dict[str, Any]:
    """What `engine.plan_ready` takes to store a plan: its steps (with ids chosen here), the
    run's config additions, the DAG and its Mermaid text."""
    dag = PlanDAG.of(plan)
    config: dict[str, Any] = {"final_plan": plan.to_json(), "plan_levels": dag.levels()}
    if plans is not None:
        config.update(plans=plans, reviews=reviews or [])
    return {"steps": [{**s.to_store(), "id": new_id("step")} for s in plan.sub_tasks], "config": config,
            "dag": dag.to_json(), "mermaid": dag.to_mermaid(), "return_steps": False}


def plan_agents(plan: Any) -> set[str]:
    """The agents a plan given as data names (a custom step runner may use its own)."""
    items = plan.get("sub_tasks", plan.get("steps", [])) if isinstance(plan, dict) else plan
    return {str(i.get("sub_task_agent") or i.get("agent")) for i in items or [] if isinstance(i, dict)}


class DraftPlan:
    """A new draft's plan, its DAG, its steps (the plan's, with the ids its config records,
    none started yet) and the base context its steps are given, built from a run."""

    def __init__(self, run: Run):
        self.task, self.path, self.config = run.task, run.path, run.config
        self.plan = Plan.model_validate(run.config["final_plan"])
        self.dag = PlanDAG.of(self.plan)
        if self.plan.sub_tasks:  # what each step is shown of the steps before it is worked out now
            self.dag.ancestors(self.plan.sub_tasks[0].key)
        ids = run.config["step_ids"]
        self.steps = [Step(session_id=run.session_id, run_id=run.id, id=ids[s.key], **s.to_store())
                      for s in self.plan.sub_tasks]
        self.base = base_context(task=run.task, run_path=run.path, config=run.config, plan=self.plan)

    @classmethod
    def of(cls, run: Run) -> "DraftPlan | None":
        return cls(run) if run.config.get("step_ids") and run.config.get("final_plan") else None

    def matches(self, run: Run) -> bool:
        """Built from the same task, folder and config as `run` has."""
        return (self.task, self.path) == (run.task, run.path) and self.config == run.config
