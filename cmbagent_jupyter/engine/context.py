"""The context dict carried from step to step, in CMBAgent's shape.

CMBAgent passes one dict through planning and control (main_task, final_plan,
previous_steps_execution_summary, current_plan_step_number, ...) and pickles it after
each step as `context/context_step_N.pkl`. We keep those keys so its users recognise
them and its pickles can be imported. With a DAG a step is shown the results of the
steps it depends on (directly or not), in step order, so what it sees does not depend
on which parallel step happened to finish first.

A step whose stored description differs from the plan's (play from a node with new
instructions, the fork step of a branch, feedback written into it) is given the
stored one: the store, not the plan in the run's config, says what to do now.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from cmbagent_jupyter.engine.dag import Plan, PlanDAG

SUMMARY_LIMIT = 2000


def base_context(*, task: str, run_path: str, config: dict[str, Any], plan: Plan | None = None,
                 plans: list[Any] | None = None, reviews: list[str] | None = None) -> dict[str, Any]:
    ctx: dict[str, Any] = {
        "main_task": task,
        "work_dir": run_path,
        "plans": list(plans or config.get("plans") or []),
        "reviews": list(reviews or config.get("reviews") or []),
        "max_n_attempts": int(config.get("max_n_attempts", 3)),
        "max_plan_steps": int(config.get("max_plan_steps", 8)),
        "n_plan_reviews": int(config.get("n_plan_reviews", 1)),
        "hardware_constraints": config.get("hardware_constraints"),
        "current_status": "planning" if plan is None else "executing",
    }
    branch = config.get("branch") or {}
    if branch.get("hypothesis"):
        ctx["branch_hypothesis"] = str(branch["hypothesis"])
    if plan is not None:
        ctx["final_plan"] = plan.to_json()
        ctx["number_of_steps_in_plan"] = len(plan.sub_tasks)
    return ctx


def step_summary(number: int, agent: str, sub_task: str, outputs: dict[str, Any]) -> str:
    return _summary_text(number, agent, sub_task, str(outputs.get("summary") or ""))


@lru_cache(maxsize=8192)
def _summary_text(number: int, agent: str, sub_task: str, body: str) -> str:
    """Every later step repeats its ancestors' summaries: format each one once."""
    body = body.strip()
    if len(body) > SUMMARY_LIMIT:
        body = body[:SUMMARY_LIMIT] + " ..."
    return f"### Step {number} ({agent}): {sub_task}\n{body}".rstrip()


def summaries(plan: Plan, keys: list[str], outputs: dict[str, dict[str, Any]]) -> str:
    parts = []
    for key in keys:
        if key in outputs:
            s = plan.step(key)
            parts.append(step_summary(s.number, s.sub_task_agent, s.sub_task, outputs[key]))
    return "\n\n".join(parts)


def step_context(base: dict[str, Any], dag: PlanDAG, key: str, outputs: dict[str, dict[str, Any]],
                 description: str | None = None) -> dict[str, Any]:
    """What one step is given: the base context plus its ancestors' results. `description` is
    the step's description in the store; when it was changed, it replaces the plan's words."""
    step = dag.plan.step(key)
    ancestors = dag.ancestors(key)
    images = [f for a in ancestors for f in (outputs.get(a) or {}).get("figures", [])]
    sub_task, bullets = step.sub_task, list(step.bullet_points)
    if description and description.strip() != step.description.strip():
        sub_task, bullets = description.strip(), []
    return {
        **base,
        "current_plan_step_number": step.number,
        "current_sub_task": sub_task,
        "current_instructions": bullets,
        "agent_for_sub_task": step.sub_task_agent,
        "current_status": "in progress",
        "depends_on": list(step.depends_on),
        "previous_steps_execution_summary": summaries(dag.plan, ancestors, outputs),
        "displayed_images": images,
        "step_outputs": {a: outputs[a] for a in ancestors if a in outputs},
    }


def run_context(base: dict[str, Any], dag: PlanDAG | None, outputs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The whole run's context after the completed steps (what a checkpoint pickles)."""
    ctx = dict(base)
    if dag is None:
        return ctx
    done = [k for k in dag.order() if k in outputs]
    last = max((dag.plan.step(k).number for k in done), default=0)
    ctx.update({
        "current_plan_step_number": last,
        "completed_steps": done,
        "previous_steps_execution_summary": summaries(dag.plan, done, outputs),
        "displayed_images": [f for k in done for f in outputs[k].get("figures", [])],
        "step_outputs": {k: outputs[k] for k in done},
        "current_status": "completed" if len(done) == len(dag.plan.sub_tasks) else "in progress",
    })
    return ctx
