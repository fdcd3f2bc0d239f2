"""Carrying out one step with its agents.

An engineer step: the engineer writes `control/codebase/step_N.py`, the executor runs it
through its `run_python` tool (a subprocess in `control/`); a failure goes back to the
engineer with the error, up to `max_n_attempts`. A researcher step: the researcher
writes Markdown, saved as `control/data/report_step_N.md`. A step's outputs hold only
what the step produced (no timings), so a re-run gives the same outputs.

Every attempt is a row in the store (`attempt.start` / `attempt.finish`: error type,
error, traceback, output, the feedback it was given and what it cost), kept across
resumes. A step started again (resume, `cmbagent retry`, a retry from a widget) is told
what its earlier attempts got wrong and the feedback recorded for it since
(`retry_feedback` approvals), so a retry learns from the ones before.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
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
    categorize_traceback,
    failure_from_exception,
    failure_from_execution,
)
from cmbagent_jupyter.engine.scheduler import StepFailed
from cmbagent_jupyter.engine.settings import RunSettings
from cmbagent_jupyter.llm.scope import SCOPE_KEY, ModelScope
from cmbagent_jupyter.core import RETRY_FEEDBACK_KIND, Step
from cmbagent_jupyter.store.port import SessionPort

log = logging.getLogger("cmbagent.engine")

AfterTurn = Callable[[ModelScope, Any], Awaitable[None]]


class AttemptLog:
    """The store rows of one step's attempts, with the cost of each."""

    def __init__(self, store: SessionPort | None, run_id: str, step: Step):
        self.store = store
        self.run_id = run_id
        self.step = step
        self.open_id: str | None = None
        self._cost_at_start = 0.0

    async def _step_cost(self) -> float:
        rows = await self.store.aio.cost_summary(run_id=self.run_id, group_by=["step_id"])
        return sum(r.cost_usd for r in rows if r.step_id == self.step.id)

    async def start(self, feedback: str | None = None) -> None:
        if self.store is None or self.open_id is not None:
            return
        self._cost_at_start = await self._step_cost()
        started = await self.store.aio.start_attempt(self.step.id, feedback)
        self.open_id = started.id

    async def finish(self, status: str, failure: AttemptFailure | None = None, output: str | None = None) -> None:
        if self.store is None or self.open_id is None:
            return
        aid, self.open_id = self.open_id, None
        cost = max(0.0, await self._step_cost() - self._cost_at_start)
        args: dict[str, Any] = {"cost_usd": cost, "output": output}
        if failure is not None:
            args.update(error_type=failure.error_type or failure.kind.value, error=failure.message,
                        traceback=failure.traceback, output=failure.output or output)
        await self.store.aio.finish_attempt(aid, status, **args)


async def earlier_attempts(store: SessionPort | None, step: Step) -> tuple[RetryContext, list[str]]:
    """What went wrong in this step's attempts since it last succeeded, and the feedback recorded
    for it since its last attempt began (not already written into its instructions)."""
    history = RetryContext()
    if store is None:
        return history, []
    attempts = await store.aio.list_attempts(step_id=step.id)
    last_ok = max((i for i, a in enumerate(attempts) if a.status.value == "completed"), default=-1)
    for a in attempts[last_ok + 1:]:
        if a.status.value != "failed":
            continue
        etype, category, _ = categorize_traceback(a.traceback or "") if a.traceback else (a.error_type, None, "")
        history.failures.append(AttemptFailure(
            a.attempt, FailureKind.code if a.traceback else FailureKind.validation,
            category or ErrorCategory.unknown, a.error_type or etype, a.error or "failed",
            traceback=a.traceback, output=a.output))
    since: datetime | None = attempts[-1].started_at if attempts else None
    feedback = []
    for a in await store.aio.list_approvals(step.run_id, pending_only=False):
        if a.kind != RETRY_FEEDBACK_KIND or a.step_id != step.id or a.decision != "retry":
            continue
        text = feedback_of(a)
        if text and (since is None or (a.resolved_at or a.created_at) >= since) and text not in step.description:
            feedback.append(text)
    return history, feedback


class StepWorker:
    def __init__(self, factory: AgentFactory, settings: RunSettings, *, run_id: str, run_path: Path,
                 after_turn: AfterTurn, gates: RunGates | None = None, store: SessionPort | None = None):
        self.factory = factory
        self.gates = gates
        self.store = store if store is not None else (gates.store if gates is not None else None)
        self.settings = settings
        self.run_id = run_id
        self.control = Path(run_path) / "control"
        self.after_turn = after_turn

    async def run(self, step: Step, ctx: dict[str, Any]) -> dict[str, Any]:
        spec = self.factory.spec(step.agent)
        if spec.output not in (AgentOutput.python, AgentOutput.markdown):
            raise StepFailed(f"step {step.number} is given to agent {step.agent!r}, which does not carry out steps")
        history, feedback = await earlier_attempts(self.store, step)
        guidance = [t for t in [ctx.get("user_feedback"), *feedback] if t]
        ctx = {**ctx, "user_feedback": "\n".join(guidance) or None, "earlier_attempts": history.prompt_section()}
        attempts = AttemptLog(self.store, self.run_id, step)
        try:
            if spec.output == AgentOutput.python:
                return await self._code_step(step, ctx, history, attempts)
            return await self._writing_step(step, ctx, attempts)
        except (StepFailed, asyncio.CancelledError):
            raise
        except Exception as exc:
            # a provider error that outlived its backoff, or a bug: the attempt still records it
            await _quietly(attempts.finish("failed", failure_from_exception(0, exc)))
            raise

    def _scope(self, agent: str, step: Step, code_file: str | None = None) -> ModelScope:
        return ModelScope(agent=agent, run_id=self.run_id, step=step.key, step_number=step.number, step_id=step.id,
                          code_file=code_file, chat_dir=str(self.control / "chats"))

    async def _code_step(self, step: Step, ctx: dict[str, Any], history: RetryContext,
                         attempts: AttemptLog) -> dict[str, Any]:
        code_file = f"step_{step.number}.py"
        codebase = self.control / "codebase"
        codebase.mkdir(parents=True, exist_ok=True)
        eng_scope = self._scope(step.agent, step, code_file)
        exe_scope = self._scope("executor", step, code_file)
        engineer = self.factory.build(step.agent)
        await attempts.start(ctx.get("user_feedback"))
        reply = await engineer.ask(prompts.engineer_request(ctx, code_file), dependencies={SCOPE_KEY: eng_scope})
        await self.after_turn(eng_scope, reply)
        error = ""
        attempt = 1
        while attempt <= self.settings.max_n_attempts:
            await attempts.start()
            code = prompts.extract_python(reply.body)
            if code is None:
                error = "The reply holds no ```python block with the script."
                failure = AttemptFailure(attempt, FailureKind.validation, ErrorCategory.validation, None, error,
                                         output=(reply.body or "")[-4000:])
                history.failures.append(failure)
                await attempts.finish("failed", failure)
            else:
                (codebase / code_file).write_text(code, encoding="utf-8")
                try:
                    revised = await self._code_gate(step, code_file, code)
                except StepFailed as exc:
                    await attempts.finish("failed", AttemptFailure(attempt, FailureKind.policy, ErrorCategory.unknown,
                                                                   "Rejected", str(exc)))
                    raise
                if revised is not None:
                    # the user asked for changes before the code ran: a new draft, not a failed attempt
                    reply = await reply.ask(revised)
                    await self.after_turn(eng_scope, reply)
                    continue
                result = await self._execute(codebase, code_file, exe_scope)
                if result.ok:
                    await attempts.finish("completed", output=result.stdout[-4000:])
                    return {
                        "agent": step.agent, "code_file": f"codebase/{code_file}", "attempts": attempt,
                        "summary": (result.stdout.strip()[-1500:] or f"{code_file} ran without output."),
                        "stdout": result.stdout, "files": result.files, "figures": result.figures,
                    }
                error = result.summary()
                failure = failure_from_execution(attempt, result.stderr, result.stdout, code)
                history.failures.append(failure)
                await attempts.finish("failed", failure)
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
             "step": step.key}, step_id=step.id, options=["approve", "reject", "modify", "abort"])
        feedback = feedback_of(decision)
        expired = decision.status.value == "expired"
        if decision.decision == "abort" or (decision.decision == "reject" and (expired or not feedback)):
            raise StepFailed(f"step {step.number} ({step.key}): the user did not let {code_file} run"
                             f"{': ' + feedback if feedback else ''}")
        if decision.decision == "reject":
            return prompts.code_rejected(feedback)
        if decision.decision == "modify" and feedback:
            return prompts.code_feedback(feedback)
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

    async def _writing_step(self, step: Step, ctx: dict[str, Any], attempts: AttemptLog) -> dict[str, Any]:
        scope = self._scope(step.agent, step)
        writer = self.factory.build(step.agent)
        await attempts.start(ctx.get("user_feedback"))
        reply = await writer.ask(prompts.researcher_request(ctx), dependencies={SCOPE_KEY: scope})
        await self.after_turn(scope, reply)
        text = (reply.body or "").strip()
        if not text:
            message = f"step {step.number} ({step.key}): the {step.agent} returned nothing"
            await attempts.finish("failed", AttemptFailure(1, FailureKind.validation, ErrorCategory.validation,
                                                           None, message))
            raise StepFailed(message)
        rel = f"data/report_step_{step.number}.md"
        path = self.control / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        body = prompts.strip_fence(text)
        path.write_text(body, encoding="utf-8")
        await attempts.finish("completed", output=body[:4000])
        return {"agent": step.agent, "report": rel, "summary": body[:1500], "files": [rel], "figures": [],
                "attempts": 1}


async def _quietly(coro: Awaitable[Any]) -> None:
    try:
        await coro
    except Exception as exc:  # noqa: BLE001 - the step's own error matters more than its record
        log.warning("attempt record not written: %s", exc)
