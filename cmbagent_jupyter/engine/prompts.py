"""What the engine says to each agent: the per-turn requests (their roles are in the specs)."""

from __future__ import annotations

import json
import re
from typing import Any

from cmbagent_jupyter.engine.dag import Plan

_PY_FENCE = re.compile(r"```(?:python|py)\s*\n(.*?)```", re.S)
_ANY_FENCE = re.compile(r"```[a-zA-Z]*\s*\n(.*?)```", re.S)


def planner_request(task: str, *, max_steps: int, agents: list[str], constraints: str | None = None) -> str:
    text = (f"Main task:\n{task}\n\nWrite a plan of at most {max_steps} steps. Agents available for steps: "
            f"{', '.join(agents)}.")
    if constraints:
        text += f"\nHardware constraints: {constraints}"
    return text


def plan_invalid(error: str) -> str:
    return (f"Your plan cannot be used: {error}\nReply again with the whole corrected plan as one JSON object "
            f"{{\"sub_tasks\": [...]}} and nothing else.")


def plan_feedback(feedback: str, *, rejected: bool) -> str:
    if rejected:
        return (f"The user rejected this plan:\n{feedback}\n\nWrite a new plan that answers their objection, as "
                f"one JSON object {{\"sub_tasks\": [...]}}.")
    return (f"The user asks for these changes to the plan:\n{feedback}\n\nReply with the whole revised plan as one "
            f"JSON object {{\"sub_tasks\": [...]}}.")


def code_feedback(feedback: str) -> str:
    return (f"Before running it, the user asks for changes:\n{feedback}\n\nReply with the complete revised script "
            f"in one ```python block.")


def code_rejected(feedback: str) -> str:
    return (f"The user rejected this script before it ran:\n{feedback}\n\nWrite it again so that it answers their "
            f"objection, and reply with the complete script in one ```python block.")


def review_request(task: str, plan: Plan) -> str:
    return (f"Main task:\n{task}\n\nDraft plan:\n{json.dumps(plan.to_json(), indent=1)}\n\n"
            f"Review this plan and recommend improvements.")


def revise_request(review: str) -> str:
    return (f"The plan reviewer recommends:\n{review}\n\nRevise the plan accordingly and reply with the whole "
            f"final plan as one JSON object {{\"sub_tasks\": [...]}}.")


def _context_block(ctx: dict[str, Any]) -> str:
    parts = [f"Main task:\n{ctx['main_task']}",
             f"Current step ({ctx['current_plan_step_number']} of {ctx.get('number_of_steps_in_plan', '?')}): "
             f"{ctx['current_sub_task']}"]
    if ctx.get("current_instructions"):
        parts.append("Instructions:\n" + "\n".join(f"- {b}" for b in ctx["current_instructions"]))
    if ctx.get("previous_steps_execution_summary"):
        parts.append("Results of the steps this one depends on:\n" + ctx["previous_steps_execution_summary"])
    if ctx.get("displayed_images"):
        parts.append("Figures so far: " + ", ".join(ctx["displayed_images"]))
    if ctx.get("branch_hypothesis"):
        parts.append("Hypothesis this branch tests:\n" + ctx["branch_hypothesis"])
    if ctx.get("earlier_attempts"):
        parts.append("Earlier attempts of this step:\n" + ctx["earlier_attempts"])
    if ctx.get("user_feedback"):
        parts.append("Guidance from the user (follow it):\n" + ctx["user_feedback"])
    return "\n\n".join(parts)


def engineer_request(ctx: dict[str, Any], code_file: str) -> str:
    return (_context_block(ctx) + f"\n\nWrite the Python script of this step; it will be saved as codebase/{code_file} "
            f"and run from the control/ folder.")


def engineer_retry(attempt: int, error: str) -> str:
    return (f"Attempt {attempt} failed:\n{error}\n\nFix the problem and reply with the complete corrected script "
            f"in one ```python block.")


def executor_request(code_file: str) -> str:
    return f"Run {code_file} with the run_python tool and report whether it succeeded."


def researcher_request(ctx: dict[str, Any]) -> str:
    return _context_block(ctx) + "\n\nWrite the Markdown for this step."


def extract_python(text: str | None) -> str | None:
    """The script in a reply: the longest ```python block, else a lone fenced block, else None."""
    if not text:
        return None
    blocks = _PY_FENCE.findall(text) or _ANY_FENCE.findall(text)
    if not blocks:
        return None
    return max(blocks, key=len).strip() + "\n"


def strip_fence(text: str) -> str:
    """A Markdown reply wrapped in one ``` fence, unwrapped."""
    stripped = text.strip()
    m = re.fullmatch(r"```(?:markdown|md)?\s*\n(.*?)```", stripped, re.S)
    return (m.group(1) if m else stripped).strip() + "\n"
