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

import operator
from dataclasses import dataclass
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
    body = str(outputs.get("summary") or "").strip()
    if len(body) > SUMMARY_LIMIT:
        body = body[:SUMMARY_LIMIT] + " ..."
    return f"### Step {number} ({agent}): {sub_task}\n{body}".rstrip()


@dataclass
class _Carried:
    """What is shown of a list of steps (their summaries, figures and outputs), kept so that
    a later list that starts with the same steps (the next step of a chain, the next line of
    a layered plan, the run after one more completion) only adds the steps after them."""

    keys: list[str]
    present: list[str]
    outs: list[dict[str, Any]]
    summary: str
    images: list[Any]
    step_outputs: dict[str, dict[str, Any]]


_EMPTY = _Carried([], [], [], "", [], {})
CARRY_MEMO = 256


def _carry(plan: Plan, keys: list[str], outputs: dict[str, dict[str, Any]], base: _Carried | None) -> _Carried:
    n = len(base.keys) if base is not None else 0
    if base is None or len(keys) < n or keys[:n] != base.keys or \
            not all(map(operator.is_, base.outs, map(outputs.get, base.present))):
        base, n = _EMPTY, 0
    texts: dict[str, tuple[dict[str, Any], str]] = plan.__dict__.setdefault("_summary_texts", {})
    present, outs, images, step_outputs = list(base.present), list(base.outs), list(base.images), dict(base.step_outputs)
    parts = [base.summary] if base.summary else []
    for key in keys[n:]:
        out = outputs.get(key)
        if out is None:
            continue
        hit = texts.get(key)
        if hit is None or hit[0] is not out:  # formatted once per outputs object (a re-run gets a new one)
            st = plan.step(key)
            hit = texts[key] = (out, step_summary(st.number, st.sub_task_agent, st.sub_task, out))
        parts.append(hit[1])
        present.append(key)
        outs.append(out)
        images.extend(out.get("figures") or ())
        step_outputs[key] = out
    return _Carried(list(keys), present, outs, "\n\n".join(parts), images, step_outputs)


def _memo(dag: PlanDAG) -> dict[str, _Carried]:
    return dag.__dict__.setdefault("_carried", {})


def step_context(base: dict[str, Any], dag: PlanDAG, key: str, outputs: dict[str, dict[str, Any]],
                 description: str | None = None) -> dict[str, Any]:
    """What one step is given: the base context plus its ancestors' results. `description` is
    the step's description in the store; when it was changed, it replaces the plan's words."""
    step = dag.plan.step(key)
    ancestors = dag.ancestors(key)
    memo = _memo(dag)
    carried = _carry(dag.plan, ancestors, outputs, memo.get(ancestors[-1]) if ancestors else None)
    memo.pop(key, None)
    memo[key] = carried
    if len(memo) > CARRY_MEMO:
        del memo[next(iter(memo))]
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
        "previous_steps_execution_summary": carried.summary,
        "displayed_images": list(carried.images),
        "step_outputs": dict(carried.step_outputs),
    }


def run_context(base: dict[str, Any], dag: PlanDAG | None, outputs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The whole run's context after the completed steps (what a checkpoint pickles)."""
    ctx = dict(base)
    if dag is None:
        return ctx
    done = [k for k in dag.order() if k in outputs]
    memo = _memo(dag)
    carried = memo[""] = _carry(dag.plan, done, outputs, memo.get(""))
    last = max((dag.plan.step(k).number for k in done), default=0)
    ctx.update({
        "current_plan_step_number": last,
        "completed_steps": done,
        "previous_steps_execution_summary": carried.summary,
        "displayed_images": list(carried.images),
        "step_outputs": dict(carried.step_outputs),
        "current_status": "completed" if len(done) == len(dag.plan.sub_tasks) else "in progress",
    })
    return ctx
