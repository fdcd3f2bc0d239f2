"""Executing a run from start (or from its last checkpoint) to an end or a stop.

`RunEngine.execute()` claims the run for this process, plans it if needed
(deep_research), stores the plan with its DAG, then lets the scheduler carry out the
steps while a heartbeat runs and a timed checkpoint is written every
`checkpoint_interval_s` inside long steps. It ends by settling the run: completed,
failed, paused (a pause asked from anywhere takes effect at the next step boundary),
cancelled, or interrupted (SIGTERM/SIGINT in the CLI: emergency checkpoint, in-flight
steps set back to pending). Resuming is the same call on a run that stopped: the
ledger skips completed steps and re-runs the one that was in flight.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from cmbagent_jupyter.agents.factory import AgentFactory
from cmbagent_jupyter.agents.specs import load_specs, step_agents
from cmbagent_jupyter.cost.recorder import CallUsage, CostRecorder
from cmbagent_jupyter.store.checkpoint_files import CheckpointFiles, StepJournal
from cmbagent_jupyter.engine.context import base_context, run_context, step_context
from cmbagent_jupyter.engine.approvals import ApprovalMode
from cmbagent_jupyter.engine.dag import Plan, PlanDAG, PlanError
from cmbagent_jupyter.engine.gates import JournaledGates, feedback_of, policy_of
from cmbagent_jupyter.engine.ledger import RunSignal, StepLedger, replay_journal
from cmbagent_jupyter.engine.liveness import owner_alive
from cmbagent_jupyter.engine.planning import PlanningFailed, PlanningPhase
from cmbagent_jupyter.engine.plans import DraftPlan, given_plan, plan_agents, plan_request
from cmbagent_jupyter.engine.scheduler import DagScheduler, ScheduleOutcome, StepFailed, StopRequest
from cmbagent_jupyter.engine.settings import RunSettings
from cmbagent_jupyter.core.states import ACTIVE_RUN_STATES
from cmbagent_jupyter.engine.step_worker import StepWorker
from cmbagent_jupyter.llm.providers import ModelChoice, resolve_model
from cmbagent_jupyter.llm.recording import RecordingModelConfig
from cmbagent_jupyter.llm.retrying import RetryingModelConfig
from cmbagent_jupyter.llm.scope import ModelScope
from cmbagent_jupyter.llm.transcript import TranscriptModelConfig
from cmbagent_jupyter.core import (
    CheckpointKind,
    EventType,
    InvalidInput,
    Run,
    RunMode,
    RunStatus,
    Session,
    Step,
    StepStatus,
)
from cmbagent_jupyter.core.errors import Conflict
from cmbagent_jupyter.store.port import Claimed, NewEvent, SessionPort, StorePort
from cmbagent_jupyter.core.threads import in_thread

log = logging.getLogger("cmbagent.engine")

StepRunner = Callable[[Step, dict[str, Any]], Awaitable[dict[str, Any]]]


class RunEngine:
    def __init__(self, store: StorePort, run: Run | str, *, model: ModelChoice | None = None,
                 max_parallel: int | None = None, step_runner: StepRunner | None = None):
        self.store = store
        self.run = run if isinstance(run, Run) else store.find_run(run)
        self.ss: SessionPort = store.session(self.run.session_id)
        self.settings = RunSettings.from_config(self.run.config)
        if max_parallel is not None:
            self.settings = self.settings.model_copy(update={"max_parallel": int(max_parallel)})
        self.model = model
        self.custom_step_runner = step_runner
        self.pid = os.getpid()
        self.stop: StopRequest | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending_stop: tuple[str, str | None] | None = None
        self._stop_lock = threading.Lock()
        self.costs: CostRecorder | None = None
        self.ledger: StepLedger | None = None
        self.dag: PlanDAG | None = None
        self.timed_checkpoints = 0
        self._planning: PlanningPhase | None = None
        self._claimed_plan: Plan | None = None
        self._claimed_dag: PlanDAG | None = None  # keeps the claimed plan's DAG (PlanDAG.of holds it weakly)
        self._claimed_base: dict[str, Any] | None = None
        self._journal: StepJournal | None = None  # a new run's step journal, made while it was claimed
        self._journal_seq: int | None = None  # what the claim said the store has of the step journal
        self._background: set[asyncio.Task] = set()

    # -- control from other threads ----------------------------------------------

    def request_stop(self, kind: str, reason: str | None = None) -> None:
        """Pause, cancel or interrupt this run; safe from any thread (signal handlers included)."""
        with self._stop_lock:
            loop, stop = self._loop, self.stop
            if loop is None or stop is None:
                self._pending_stop = (kind, reason)
                return
        if loop.is_closed():
            return
        loop.call_soon_threadsafe(stop.request, kind, reason)

    # -- the run -------------------------------------------------------------

    async def execute(self) -> Run:
        with self._stop_lock:
            self._loop = asyncio.get_running_loop()
            self.stop = StopRequest()
            if self._pending_stop:
                self.stop.request(*self._pending_stop)
        if self.model is None and self.custom_step_runner is None:
            self.model = resolve_model(self.run.model, home=self.store.home)
        session, run, steps = await self._claim()
        self.run = run
        files = CheckpointFiles(run, session)
        plan = self._claimed_plan or self._stored_plan(run, steps)
        self.costs = CostRecorder(self.ss, run.id, price_override=self.model.price if self.model else None)
        self.gates = JournaledGates(self.ss, run.id, policy_of(run.config))
        factory = self._factory()
        base = self._claimed_base or base_context(task=run.task, run_path=run.path, config=run.config, plan=plan)
        self.ledger = StepLedger(self.ss, files, steps, lambda outs: run_context(base, self.dag, outs),
                                 owner_pid=self.pid, on_signal=self._on_signal,
                                 journal_sync=self.settings.journal_sync, journal=self._journal,
                                 context_files=self.settings.context_files if self.settings.context_files is not None
                                 else self.custom_step_runner is None)
        self.gates.ledger = self.ledger
        if self._journal_seq is not None:
            self.ledger.prime(self._journal_seq, run.status.value)
        heartbeat = asyncio.create_task(self._heartbeat(), name="heartbeat")
        timed = asyncio.create_task(self._timed_checkpoints(), name="timed-checkpoints")
        try:
            if plan is None:
                plan = await self._plan(run, factory, base)
                if plan is None:
                    return await self._settle_planning_stop()
                base.update(base_context(task=run.task, run_path=run.path, config=self.run.config, plan=plan))
            self.dag = PlanDAG.of(plan)
            worker = StepWorker(factory, self.settings, run_id=run.id, run_path=Path(run.path),
                                after_turn=self._after_turn, gates=self.gates) if factory else None

            async def run_step(key: str) -> dict[str, Any]:
                step = self.ledger.steps[key]
                ctx = step_context(base, self.dag, key, self.ledger.outputs, description=step.description)
                ctx["user_feedback"] = await self.gates.before_step(step)
                if self.custom_step_runner is not None:
                    return await self.custom_step_runner(step, ctx)
                while True:
                    try:
                        return await worker.run(step, ctx)
                    except StepFailed as exc:
                        if not self.gates.wants(ApprovalMode.on_error):
                            raise
                        decision = await self.gates.ask(
                            ApprovalMode.on_error, {"title": f"Step {step.number} ({step.key}) failed",
                                                    "summary": str(exc)[:300], "error": str(exc)[-4000:],
                                                    "step": step.key}, step_id=step.id,
                            options=["retry", "modify", "skip", "abort"])
                        if decision.decision == "skip":
                            return {"agent": step.agent, "skipped": True, "attempts": 0, "files": [], "figures": [],
                                    "summary": f"Skipped by the user after it failed: {str(exc)[:500]}"}
                        if decision.decision in ("abort", "reject"):
                            raise StepFailed(f"{exc} (aborted by the user)") from None
                        ctx = {**ctx, "user_feedback": feedback_of(decision) or ctx.get("user_feedback")}

            scheduler = DagScheduler(self.dag, self.ledger, run_step, max_parallel=self.settings.max_parallel,
                                     stop=self.stop, on_signal=self._on_signal)
            outcome = await scheduler.run()
            return await self._settle(outcome)
        except Conflict as exc:
            log.info("run %s stopped: %s", run.id, exc)
            self.run = await in_thread(self.ss.get_run, run.id)
            if self.run.status == RunStatus.cancelled:
                await self._reset_running("cancelled", "run cancelled")
            return self.run
        except (PlanningFailed, PlanError, InvalidInput) as exc:
            return await self._fail(str(exc))
        except Exception as exc:  # noqa: BLE001 - a run never dies silently: it is marked failed
            log.exception("run %s failed", run.id)
            return await self._fail(f"{type(exc).__name__}: {exc}")
        finally:
            heartbeat.cancel()
            timed.cancel()
            await asyncio.gather(heartbeat, timed, return_exceptions=True)
            if self.ledger is not None:
                self.ledger.journal.close()
                # the ledger calls back into this engine: let both go without a full garbage collection
                self.ledger.on_signal = None
                self.ledger.context_of = _no_context
            try:
                await self.costs.flush()
            except Exception:  # noqa: BLE001
                log.exception("cost records of run %s not flushed", run.id)

    # -- claiming ------------------------------------------------------------------

    async def _claim(self) -> tuple[Session, Run, list[Step]]:
        given = self.run
        if given.status == RunStatus.draft and (given.config.get("final_plan") or given.mode == RunMode.deep_research):
            # a new run as it was handed in (never run: no journal, no owner): one call claims it, and
            # the store checks it is still a draft; if it is not any more, it is read again below
            claim = asyncio.ensure_future(self.ss.aio.claim(
                given.id, to="auto", owner_pid=self.pid, allowed_from=[RunStatus.draft.value], with_session=True,
                return_steps=False))
            await asyncio.sleep(0)  # the request is sent: the journal, the steps and the context are made meanwhile
            journal = StepJournal(given.path, sync=self.settings.journal_sync)
            made = asyncio.ensure_future(in_thread(journal.create))
            try:
                early = DraftPlan.of(given)
            except Exception:  # noqa: BLE001 - the claim is in flight: the claimed run's own config decides below
                early = None
            out = None
            try:
                out = await claim
            except Conflict:
                pass
            finally:
                self._journal = await _made_journal(made, journal, keep=out is not None)
            if out is not None:
                return self._claimed(out, early)
        # two reads at once (nothing is written before both answered); the steps come with the claim
        session, run = await asyncio.gather(in_thread(self.ss.info),
                                            in_thread(self.ss.get_run, self.run.id))
        if run.status in (RunStatus.completed, RunStatus.cancelled):
            raise InvalidInput(f"run {run.id} is {run.status.value}; there is nothing to resume")
        stale = None
        if run.status in ACTIVE_RUN_STATES and run.status != RunStatus.paused:
            if run.owner_pid and run.owner_pid != self.pid and owner_alive(run.owner_pid, run.last_heartbeat_at):
                raise InvalidInput(f"run {run.id} is {run.status.value} in process {run.owner_pid}; pause it or wait "
                                   f"for it to stop before resuming")
            stale = run.owner_pid
        planned = bool(run.config.get("final_plan"))
        if run.status == RunStatus.draft and run.mode != RunMode.deep_research and not planned:
            plan = self._given_plan(run)
            self._claimed_plan = plan
            run, steps = await self._store_plan(run, plan, from_draft=True)
            return session, run, steps
        if run.mode != RunMode.deep_research and not planned:
            raise InvalidInput(f"run {run.id} ({run.mode.value}) has no plan to execute")
        # what the step journal proves happened before a crash reaches the store before the claim
        await replay_journal(self.ss, run)
        to = RunStatus.executing if planned else RunStatus.planning
        out = await self.ss.aio.claim(run.id, to=to.value, owner_pid=self.pid, stale_owner_pid=stale,
                                      reason="resumed" if run.status != RunStatus.draft else None,
                                      allowed_from=[RunStatus.draft.value, RunStatus.paused.value,
                                                    RunStatus.interrupted.value, RunStatus.failed.value])
        return self._claimed(out, session=session)

    def _claimed(self, out: Claimed, early: "DraftPlan | None" = None, session: Session | None = None
                 ) -> tuple[Session, Run, list[Step]]:
        """The session, run and steps of a claim (`early`: the plan and steps built from the run
        as it was handed in, used if the claimed run has the same)."""
        self._journal_seq = out.journal_seq
        session = session or out.session
        run = out.run
        if out.steps is not None:
            return session, run, out.steps
        draft = early if early is not None and early.matches(run) else DraftPlan.of(run)
        self._claimed_plan, self._claimed_dag, self._claimed_base = draft.plan, draft.dag, draft.base
        return session, run, draft.steps

    def _given_plan(self, run: Run) -> Plan:
        extra = plan_agents(self.settings.plan) if self.custom_step_runner is not None else ()
        return given_plan(run.mode, self.settings, task=run.task, extra_agents=extra)

    def _stored_plan(self, run: Run, steps: list[Step]) -> Plan | None:
        """The plan of a run that has one; the store's steps must match it (the ledger check)."""
        if not steps:
            return None
        raw = run.config.get("final_plan")
        if raw is None:
            raise InvalidInput(f"run {run.id} has steps but no final_plan in its config")
        plan = Plan.model_validate(raw)
        expected = {s.key: (s.number, s.sub_task_agent) for s in plan.sub_tasks}
        found = {s.key: (s.number, s.agent) for s in steps}
        if expected != found:
            diff = sorted(set(expected.items()) ^ set(found.items()))
            raise InvalidInput(f"the steps recorded for run {run.id} do not match its plan ({diff[:4]}); "
                               f"refusing to guess which steps are done")
        return plan

    async def _store_plan(self, run: Run, plan: Plan, *, from_draft: bool = False) -> tuple[Run, list[Step]]:
        """Store the plan's steps (their ids chosen here, so the store need not send them back),
        its DAG and the run's move to executing, in one call."""
        planning = self._planning if not from_draft else None
        request = plan_request(plan, plans=planning.plans if planning else None,
                               reviews=planning.reviews if planning else None)
        out = await self.ss.aio.plan_ready(run.id, owner_pid=self.pid, **request)
        if out.kept:  # completed steps of an earlier plan stayed: read what the store holds
            return out.run, await in_thread(self.ss.list_steps, run.id)
        return out.run, [Step(session_id=run.session_id, run_id=run.id, **r) for r in request["steps"]]

    # -- planning ------------------------------------------------------------------

    async def _plan(self, run: Run, factory: AgentFactory | None, base: dict[str, Any]) -> Plan | None:
        if factory is None:
            raise InvalidInput("a deep_research run needs a model for its planner")
        self._planning = PlanningPhase(factory, self.settings, task=run.task, run_id=run.id, run_path=Path(run.path),
                                       step_agents=step_agents(), after_turn=self._after_turn)
        task = asyncio.create_task(self._plan_and_approve(), name="planning")
        while True:
            stop_wait = asyncio.create_task(self.stop.changed.wait())
            done, _ = await asyncio.wait([task, stop_wait], return_when=asyncio.FIRST_COMPLETED)
            stop_wait.cancel()
            if task in done:
                break
            self.stop.changed.clear()
            if self.stop.hard:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                return None
        plan = task.result()
        self.run, steps = await self._store_plan(run, plan)
        self.ledger.steps = {s.key: s for s in steps}
        self.ledger.files.run = self.run
        return plan

    async def _plan_and_approve(self) -> Plan:
        plan = await self._planning.run()
        while self.gates.wants(ApprovalMode.after_planning):
            dag = PlanDAG.of(plan)
            request = {"title": "Approve the plan", "plan": plan.to_json(), "mermaid": dag.to_mermaid(),
                       "summary": f"{len(plan.sub_tasks)} steps in {len(dag.levels())} levels: "
                                  + "; ".join(f"{s.number}. {s.sub_task}" for s in plan.sub_tasks)[:1500]}
            decision = await self.gates.ask(ApprovalMode.after_planning, request, back_to=None)
            if decision.decision == "approve":
                break
            feedback = feedback_of(decision)
            if decision.decision in ("abort",) or decision.status.value == "expired" or not feedback:
                raise PlanningFailed(f"the plan was not approved ({decision.decision}"
                                     f"{': ' + feedback if feedback else ''})")
            await in_thread(self.ss.transition_run, self.run.id, RunStatus.planning.value,
                            reason=f"re-planning after approval {decision.id}", actor=decision.resolved_by)
            plan = await self._planning.revise(feedback, rejected=decision.decision == "reject")
        return plan

    async def _settle_planning_stop(self) -> Run:
        kind = self.stop.kind
        if kind == "interrupt":
            out = await self.ledger.checkpoint(CheckpointKind.emergency, to=RunStatus.interrupted.value,
                                               reason=self.stop.reason or "interrupted during planning")
        else:
            out = await self.ss.aio.settle(self.run.id, RunStatus.cancelled.value,
                                      reason=self.stop.reason or "cancelled during planning")
        self.run = out.run
        return self.run

    # -- agents --------------------------------------------------------------------

    def _factory(self) -> AgentFactory | None:
        if self.model is None:
            return None
        config = RetryingModelConfig(self.model.config, on_backoff=self._on_backoff)
        if self.settings.record:
            config = RecordingModelConfig(config, self.settings.record, task=self.run.task, resume=True)
        config = TranscriptModelConfig(config, on_usage=self._on_usage)
        return AgentFactory(load_specs(self.settings.instructions), config)

    def _on_usage(self, scope: ModelScope, response: Any) -> None:
        usage = response.usage
        self.costs.add(CallUsage(scope=scope, model=response.model or self.model.model,
                                 provider=response.provider or self.model.provider,
                                 prompt_tokens=int(usage.prompt_tokens or 0),
                                 completion_tokens=int(usage.completion_tokens or 0)))

    def _on_backoff(self, scope: ModelScope, attempt: int, delay: float, exc: BaseException) -> None:
        """A transient provider error: say so in the run's events while the call waits to be retried."""
        log.warning("run %s: %s call failed (%s); retry %d in %.1f s", self.run.id, scope.agent, exc, attempt, delay)
        event = NewEvent(type=EventType.retry_backoff.value, run_id=self.run.id,
                         payload={"agent": scope.agent, "step": scope.step, "attempt": attempt, "delay_s": delay,
                                  "error": f"{type(exc).__name__}: {exc}"[:1000]})
        task = asyncio.get_running_loop().create_task(self.ss.aio.append_events([event]))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _after_turn(self, scope: ModelScope, reply: Any) -> None:
        text = reply.body or ""
        calls = [c.name for c in reply.response.tool_calls.calls] if reply.response.tool_calls else []
        event = NewEvent(type=EventType.agent_message.value, run_id=self.run.id,
                         payload={"agent": scope.agent, "step": scope.step, "step_id": scope.step_id,
                                  "content": text[:4000], "truncated": len(text) > 4000, "tool_calls": calls})
        await asyncio.gather(self.costs.flush(), self.ss.aio.append_events([event]))

    # -- while running ----------------------------------------------------------------

    def _on_signal(self, signal: RunSignal) -> None:
        if signal.pause_requested:
            self.stop.request("pause", "pause requested")

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.settings.heartbeat_interval_s)
            try:
                hb = await self.ss.aio.heartbeat(self.run.id, self.pid)
            except Exception as exc:  # noqa: BLE001 - a missed beat is retried at the next one
                log.warning("heartbeat of run %s failed: %s", self.run.id, exc)
                continue
            if hb.status == RunStatus.cancelled.value:
                self.stop.request("cancel", "cancelled")
            elif hb.status not in (s.value for s in ACTIVE_RUN_STATES):
                self.stop.request("cancel", f"run became {hb.status}")
            elif hb.pause_requested:
                self.stop.request("pause", "pause requested")

    async def _timed_checkpoints(self) -> None:
        interval = float(self.run.checkpoint_interval_s)
        while True:
            await asyncio.sleep(interval)
            if self.ledger is None:
                continue
            running = sorted(self.ledger.in_flight())
            if not running and self.dag is not None:
                continue
            try:
                await self.ledger.checkpoint(CheckpointKind.timed, extra={"running_steps": running},
                                             step_key=running[0] if running else None)
                self.timed_checkpoints += 1
            except Exception as exc:  # noqa: BLE001
                log.warning("timed checkpoint of run %s failed: %s", self.run.id, exc)

    # -- ending ---------------------------------------------------------------------

    async def _settle(self, outcome: ScheduleOutcome) -> Run:
        ledger = self.ledger
        in_flight = sorted(ledger.in_flight())
        if outcome.stopped == "interrupt":
            out = await ledger.checkpoint(CheckpointKind.emergency, to=RunStatus.interrupted.value,
                                          reason=self.stop.reason or "interrupted", reset=in_flight)
        elif outcome.stopped == "cancel":
            out = await ledger.checkpoint(CheckpointKind.manual, to=RunStatus.cancelled.value,
                                          reason=self.stop.reason or "cancelled", reset=in_flight,
                                          reset_to=StepStatus.cancelled.value)
        elif outcome.failed:
            key, error = next(iter(outcome.failed.items()))
            out = await ledger.checkpoint(CheckpointKind.error, to=RunStatus.failed.value,
                                          reason=f"step {key} failed", error=error[:4000])
        elif outcome.remaining:
            out = await ledger.checkpoint(CheckpointKind.manual, to=RunStatus.paused.value,
                                          reason=self.stop.reason or "paused at a step boundary")
        else:
            # the store gets every step in the transaction that marks the run completed
            out = await ledger.settle(RunStatus.completed.value, strict=True, reason="all steps completed")
        self.run = out.run
        return self.run

    async def _fail(self, error: str) -> Run:
        try:
            if self.ledger is not None:
                out = await self.ledger.checkpoint(CheckpointKind.error, to=RunStatus.failed.value,
                                                   reason="run failed", error=error[:4000],
                                                   reset=sorted(self.ledger.in_flight()),
                                                   reset_to=StepStatus.failed.value)
            else:
                out = await self.ss.aio.settle(self.run.id, RunStatus.failed.value,
                                          reason="run failed", error=error[:4000])
            self.run = out.run
        except Exception:  # noqa: BLE001
            log.exception("could not mark run %s failed", self.run.id)
        return self.run

    async def _reset_running(self, to: str, reason: str) -> None:
        if self.ledger is None:
            return
        running = [self.ledger.steps[k].id for k in self.ledger.in_flight()]
        if running:
            try:
                await self.ss.aio.settle(self.run.id, self.run.status.value, reason=reason,
                                    reset_steps=running, reset_to=to)
            except Exception:  # noqa: BLE001
                log.exception("could not reset the steps of run %s", self.run.id)


async def _made_journal(made: "asyncio.Future[bool]", journal: StepJournal, *, keep: bool) -> StepJournal | None:
    """The journal `StepJournal.create` made while the run was claimed, if the claim succeeded
    (`keep`); otherwise it is closed. None if none was made: the ledger opens the run's journal."""
    try:
        created = await made
    except OSError:  # the ledger opens it the usual way, and reports what the disk says
        return None
    if created and keep:
        return journal
    if created:
        journal.close()
    return None


def _no_context(outputs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {}
