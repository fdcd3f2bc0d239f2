"""Carrying out one step with its agents.

An engineer step: the engineer writes `control/codebase/step_N.py`, the executor runs it
through its `run_python` tool (a subprocess in `control/`); a failure goes back to the
engineer with the error, up to `max_n_attempts`. A researcher step: the researcher
writes Markdown, saved as `control/data/report_step_N.md`. A step's outputs hold only
what the step produced (no timings), so a re-run gives the same outputs.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from cmbagent_jupyter.agents.execution import ExecutionResult, run_python_file, run_python_tool
from cmbagent_jupyter.agents.factory import AgentFactory
from cmbagent_jupyter.agents.specs import AgentOutput
from cmbagent_jupyter.engine import prompts
from cmbagent_jupyter.engine.approvals import ApprovalMode
from cmbagent_jupyter.engine.gates import RunGates, feedback_of
from cmbagent_jupyter.engine.retry import (
    AttemptFailure,
    ErrorCategory,
    FailureKind,
    RetryContext,
    failure_from_execution,
)
from cmbagent_jupyter.engine.scheduler import StepFailed
from cmbagent_jupyter.engine.settings import RunSettings
from cmbagent_jupyter.llm.scope import SCOPE_KEY, ModelScope
from cmbagent_jupyter.models import Step

AfterTurn = Callable[[ModelScope, Any], Awaitable[None]]


class StepWorker:
    def __init__(self, factory: AgentFactory, settings: RunSettings, *, run_id: str, run_path: Path,
                 after_turn: AfterTurn, gates: RunGates | None = None):
        self.factory = factory
        self.gates = gates
        self.settings = settings
        self.run_id = run_id
        self.control = Path(run_path) / "control"
        self.after_turn = after_turn

    async def run(self, step: Step, ctx: dict[str, Any]) -> dict[str, Any]:
        spec = self.factory.spec(step.agent)
        if spec.output == AgentOutput.python:
            return await self._code_step(step, ctx)
        if spec.output == AgentOutput.markdown:
            return await self._writing_step(step, ctx)
        raise StepFailed(f"step {step.number} is given to agent {step.agent!r}, which does not carry out steps")

    def _scope(self, agent: str, step: Step, code_file: str | None = None) -> ModelScope:
        return ModelScope(agent=agent, run_id=self.run_id, step=step.key, step_number=step.number, step_id=step.id,
                          code_file=code_file, chat_dir=str(self.control / "chats"))

    async def _code_step(self, step: Step, ctx: dict[str, Any]) -> dict[str, Any]:
        code_file = f"step_{step.number}.py"
        codebase = self.control / "codebase"
        codebase.mkdir(parents=True, exist_ok=True)
        eng_scope = self._scope(step.agent, step, code_file)
        exe_scope = self._scope("executor", step, code_file)
        engineer = self.factory.build(step.agent)
        reply = await engineer.ask(prompts.engineer_request(ctx, code_file), dependencies={SCOPE_KEY: eng_scope})
        await self.after_turn(eng_scope, reply)
        error = ""
        attempt = 1
        history = RetryContext()
        while attempt <= self.settings.max_n_attempts:
            code = prompts.extract_python(reply.body)
            if code is None:
                error = "The reply holds no ```python block with the script."
                history.failures.append(AttemptFailure(attempt, FailureKind.validation, ErrorCategory.validation,
                                                       None, error))
            else:
                (codebase / code_file).write_text(code, encoding="utf-8")
                revised = await self._code_gate(step, code_file, code)
                if revised is not None:
                    # the user asked for changes before the code ran: a new draft, not a failed attempt
                    reply = await reply.ask(prompts.code_feedback(revised))
                    await self.after_turn(eng_scope, reply)
                    continue
                result = await self._execute(codebase, code_file, exe_scope)
                if result.ok:
                    return {
                        "agent": step.agent, "code_file": f"codebase/{code_file}", "attempts": attempt,
                        "summary": (result.stdout.strip()[-1500:] or f"{code_file} ran without output."),
                        "stdout": result.stdout, "files": result.files, "figures": result.figures,
                    }
                error = result.summary()
                history.failures.append(failure_from_execution(attempt, result.stderr, result.stdout, code))
            if attempt < self.settings.max_n_attempts:
                # what went wrong, classified, with a suggestion (engine/retry.py), then the raw output
                reply = await reply.ask(prompts.engineer_retry(attempt, history.prompt_section() + "\n\n" + error))
                await self.after_turn(eng_scope, reply)
            attempt += 1
        raise StepFailed(f"step {step.number} ({step.key}) failed after {self.settings.max_n_attempts} attempt(s): "
                         f"{error[-2500:]}")

    async def _code_gate(self, step: Step, code_file: str, code: str) -> str | None:
        """With `before_code_execution`, the user sees the code first; returns their requested changes, if any."""
        if self.gates is None or not self.gates.wants(ApprovalMode.before_code_execution):
            return None
        decision = await self.gates.ask(
            ApprovalMode.before_code_execution,
            {"title": f"Run {code_file}?", "summary": f"step {step.number}: {step.description[:200]}", "code": code,
             "step": step.key}, step_id=step.id)
        if decision.decision in ("reject", "abort"):
            raise StepFailed(f"step {step.number} ({step.key}): the user did not let {code_file} run"
                             f"{': ' + feedback_of(decision) if feedback_of(decision) else ''}")
        if decision.decision == "modify":
            return feedback_of(decision)
        return None

    async def _execute(self, codebase: Path, code_file: str, scope: ModelScope) -> ExecutionResult:
        results: list[ExecutionResult] = []
        tool = run_python_tool(codebase, self.control, results, timeout_s=self.settings.step_timeout_s,
                               allowed=lambda name: name == code_file)
        executor = self.factory.build("executor", tools={"run_python": tool})
        reply = await executor.ask(prompts.executor_request(code_file), dependencies={SCOPE_KEY: scope})
        await self.after_turn(scope, reply)
        if results:
            return results[-1]
        # the model answered without running the file: the step's code still has to run
        return await run_python_file(codebase / code_file, cwd=self.control, timeout_s=self.settings.step_timeout_s)

    async def _writing_step(self, step: Step, ctx: dict[str, Any]) -> dict[str, Any]:
        scope = self._scope(step.agent, step)
        writer = self.factory.build(step.agent)
        reply = await writer.ask(prompts.researcher_request(ctx), dependencies={SCOPE_KEY: scope})
        await self.after_turn(scope, reply)
        text = (reply.body or "").strip()
        if not text:
            raise StepFailed(f"step {step.number} ({step.key}): the {step.agent} returned nothing")
        rel = f"data/report_step_{step.number}.md"
        path = self.control / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        body = prompts.strip_fence(text)
        path.write_text(body, encoding="utf-8")
        return {"agent": step.agent, "report": rel, "summary": body[:1500], "files": [rel], "figures": [],
                "attempts": 1}
