"""What a click on a DAG node shows: a step's output, attempts, code, figures and cost.

Built from the store (step, attempts, cost records) and the run directory, in the
layout the engine writes (CMBAgent's): `control/codebase/step_N.py`, figures and
reports under `control/data/`, `planning/final_plan.json`. Paths in a step's
outputs are relative to `control/` (or the run directory); files outside the
session's directory are never read. Figures travel as data URLs in a custom
message, never in a trait.
"""

from __future__ import annotations

import base64
import json
import mimetypes
from pathlib import Path
from typing import Any

from markdown_it import MarkdownIt

from cmbagent_jupyter.core.home import is_inside
from cmbagent_jupyter.core import CostRecord, Run, Step

MAX_FIGURE_BYTES = 4 * 1024 * 1024
MAX_FIGURES = 12
MAX_TEXT = 60_000
IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif",
               ".svg": "image/svg+xml"}
TEXT_KEYS = ("report_text", "markdown", "summary", "result", "output", "text", "stdout")
SKIP_KEYS = {"agent", "attempts", "code_file", "code", "files", "figures", "report", *TEXT_KEYS}

# Raw HTML off: whatever an agent writes is shown as text, never as markup or script.
_markdown = MarkdownIt("commonmark", {"html": False, "linkify": False}).enable("table")


def markdown_html(text: str) -> str:
    return _markdown.render(_clip(text))


def _clip(text: str, limit: int = MAX_TEXT) -> str:
    return text if len(text) <= limit else text[:limit] + f"\n\n… ({len(text) - limit} more characters)"


class RunFiles:
    """Files of one run, looked up the way the engine names them."""

    def __init__(self, run: Run):
        self.root = Path(run.path)
        # a branch may point at its parent's files: allow the whole session directory
        self.boundary = self.root.parent.parent if self.root.parent.name == "runs" else self.root

    def resolve(self, name: str) -> Path | None:
        raw = Path(name)
        candidates = [raw] if raw.is_absolute() else [self.root / "control" / raw, self.root / raw]
        for path in candidates:
            if path.is_file() and is_inside(path, self.boundary):
                return path
        return None

    def read_text(self, name: str) -> str | None:
        path = self.resolve(name)
        if path is None:
            return None
        try:
            return _clip(path.read_text(encoding="utf-8", errors="replace"))
        except OSError:
            return None

    def figure(self, name: str) -> dict[str, Any]:
        shown = Path(name).name
        path = self.resolve(name)
        if path is None:
            return {"name": shown, "error": f"{name} is not in the run directory"}
        mime = IMAGE_TYPES.get(path.suffix.lower()) or mimetypes.guess_type(path.name)[0]
        if mime not in IMAGE_TYPES.values():
            return {"name": shown, "error": f"{path.suffix or 'this'} files are not shown inline; open {path}"}
        size = path.stat().st_size
        if size > MAX_FIGURE_BYTES:
            return {"name": shown, "error": f"{size / 1e6:.1f} MB is too large to show inline; open {path}"}
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        return {"name": shown, "data_url": f"data:{mime};base64,{data}"}


def _cost(records: list[CostRecord]) -> dict[str, Any]:
    by_model: dict[str, dict[str, Any]] = {}
    for r in records:
        m = by_model.setdefault(r.model, {"model": r.model, "cost_usd": 0.0, "tokens": 0})
        m["cost_usd"] += r.cost_usd
        m["tokens"] += r.total_tokens
    return {"cost_usd": sum(r.cost_usd for r in records), "tokens": sum(r.total_tokens for r in records),
            "calls": len(records), "by_model": sorted(by_model.values(), key=lambda m: -m["cost_usd"])}


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def step_title(step: Step) -> str:
    text = str(step.inputs.get("sub_task") or step.description or step.key).strip().splitlines()[0]
    return f"{step.number}. {text}"


def step_detail(step: Step, run: Run, attempts: list[dict[str, Any]], costs: list[CostRecord]) -> dict[str, Any]:
    files = RunFiles(run)
    outputs = step.outputs or {}
    detail: dict[str, Any] = {
        "id": step.id, "kind": "step", "title": step_title(step), "status": step.status.value, "agent": step.agent,
        "number": step.number, "description": step.description, "started_at": _iso(step.started_at),
        "completed_at": _iso(step.completed_at), "error": step.error,
        "can_retry": step.status.value == "failed", "attempt_count": step.attempts,
    }
    report = outputs.get("report")
    report_text = files.read_text(report) if isinstance(report, str) else None
    if report_text:
        detail["output_html"] = markdown_html(report_text)
    else:
        text = next((outputs[k] for k in TEXT_KEYS if isinstance(outputs.get(k), str) and outputs[k].strip()), None)
        if text is not None:
            # an engineer's stdout reads best as-is; a researcher's summary as Markdown
            if step.agent == "engineer" or "code_file" in outputs:
                detail["output_text"] = _clip(text)
            else:
                detail["output_html"] = markdown_html(text)
    extra = {k: v for k, v in outputs.items() if k not in SKIP_KEYS}
    if extra and "output_text" not in detail:
        detail["output_text"] = _clip(json.dumps(extra, indent=1, default=str), 8000)

    code: list[dict[str, str]] = []
    code_names = [outputs["code_file"]] if isinstance(outputs.get("code_file"), str) else []
    if not code_names:
        code_names = [f"codebase/step_{step.number}.py"]
    for name in code_names:
        text = files.read_text(name)
        if text is not None:
            code.append({"name": Path(name).name, "text": text})
    if isinstance(outputs.get("code"), str) and not code:
        code.append({"name": "code", "text": _clip(outputs["code"])})
    detail["code"] = code

    figures = [f for f in outputs.get("figures") or [] if isinstance(f, str)]
    detail["figures"] = [files.figure(f) for f in figures[:MAX_FIGURES]]
    detail["files"] = [str(f) for f in outputs.get("files") or [] if str(f) not in figures][:50]
    detail["attempts"] = [
        {"attempt": a.get("attempt"), "status": a.get("status"), "error_type": a.get("error_type"),
         "error": (a.get("error") or "")[:2000] or None, "feedback": a.get("feedback"),
         "cost_usd": a.get("cost_usd") or 0.0, "started_at": a.get("started_at")}
        for a in attempts
    ]
    detail["cost"] = _cost([c for c in costs if c.step_id == step.id])
    return detail


def plan_items(plan: Any) -> list[dict[str, Any]]:
    """A plan (CMBAgent's `{"sub_tasks": [...]}`, a list, or stored steps) as numbered lines."""
    if isinstance(plan, dict):
        plan = plan.get("sub_tasks") or plan.get("steps") or []
    items = []
    for i, s in enumerate(plan if isinstance(plan, list) else [], start=1):
        if isinstance(s, Step):
            items.append({"number": s.number, "agent": s.agent, "text": step_title(s).split(". ", 1)[-1]})
        elif isinstance(s, dict):
            text = s.get("sub_task") or s.get("description") or s.get("task") or ""
            items.append({"number": int(s.get("number") or i), "agent": str(s.get("sub_task_agent") or s.get("agent") or ""),
                          "text": " ".join(str(text).split())})
    return items


def planning_detail(run: Run, steps: list[Step], costs: list[CostRecord], status: str) -> dict[str, Any]:
    files = RunFiles(run)
    plan_text = files.read_text("planning/final_plan.json")
    plan: Any = None
    if plan_text:
        try:
            plan = json.loads(plan_text)
        except ValueError:
            plan = None
    items = plan_items(plan) or plan_items(steps)
    step_ids = {s.id for s in steps}
    planning_costs = [c for c in costs if c.step_id is None or c.step_id not in step_ids]
    return {"id": "planning", "kind": "planning", "title": "Planning", "status": status, "agent": "planner",
            "description": run.task, "plan": items, "cost": _cost(planning_costs), "code": [], "figures": [],
            "attempts": [], "can_retry": False}


def end_detail(run: Run, steps: list[Step], costs: list[CostRecord], status: str) -> dict[str, Any]:
    done = sum(1 for s in steps if s.status.value == "completed")
    lines = [f"{done} of {len(steps)} steps completed."]
    if run.completed_at and run.started_at:
        lines.append(f"Ran for {(run.completed_at - run.started_at).total_seconds():.1f} s.")
    figures = []
    for s in steps:
        figures += [f for f in (s.outputs or {}).get("figures") or [] if isinstance(f, str)]
    files = RunFiles(run)
    return {"id": "end", "kind": "terminator", "title": "Result", "status": status, "description": " ".join(lines),
            "error": run.error, "completed_at": _iso(run.completed_at), "started_at": _iso(run.started_at),
            "figures": [files.figure(f) for f in figures[:MAX_FIGURES]], "cost": _cost(costs), "code": [],
            "attempts": [], "can_retry": False}
