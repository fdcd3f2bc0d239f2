"""Planning: the planner drafts, the reviewer critiques for `n_plan_reviews` rounds, the
planner revises. Every plan is validated into a DAG; an invalid one goes back to the
planner with the error, up to `max_plan_tries` times a round.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from cmbagent_jupyter.agents.factory import AgentFactory
from cmbagent_jupyter.engine import prompts
from cmbagent_jupyter.engine.dag import Plan, PlanError, parse_plan
from cmbagent_jupyter.engine.settings import RunSettings
from cmbagent_jupyter.llm.scope import SCOPE_KEY, ModelScope

AfterTurn = Callable[[ModelScope, Any], Awaitable[None]]


class PlanningFailed(Exception):
    pass


class PlanningPhase:
    def __init__(self, factory: AgentFactory, settings: RunSettings, *, task: str, run_id: str, run_path: Path,
                 step_agents: list[str], after_turn: AfterTurn):
        self.factory = factory
        self.settings = settings
        self.task = task
        self.run_id = run_id
        self.dir = Path(run_path) / "planning"
        self.step_agents = step_agents
        self.after_turn = after_turn
        self.plans: list[dict[str, Any]] = []
        self.reviews: list[str] = []
        self._reply: Any = None
        self._scope: ModelScope | None = None
        self._round = 0

    async def run(self) -> Plan:
        chat_dir = str(self.dir / "chats")
        planner_scope = ModelScope(agent="planner", run_id=self.run_id, chat_dir=chat_dir)
        reviewer_scope = ModelScope(agent="plan_reviewer", run_id=self.run_id, chat_dir=chat_dir)
        planner = self.factory.build("planner")
        request = prompts.planner_request(self.task, max_steps=self.settings.max_plan_steps, agents=self.step_agents,
                                          constraints=self.settings.hardware_constraints)
        reply = await planner.ask(request, dependencies={SCOPE_KEY: planner_scope})
        await self.after_turn(planner_scope, reply)
        plan, reply = await self._valid(reply, planner_scope, round_=0)
        for r in range(1, self.settings.n_plan_reviews + 1):
            reviewer = self.factory.build("plan_reviewer")
            review = await reviewer.ask(prompts.review_request(self.task, plan),
                                        dependencies={SCOPE_KEY: reviewer_scope})
            await self.after_turn(reviewer_scope, review)
            text = (review.body or "").strip()
            self.reviews.append(text)
            self._write(f"reviews/review_{r}.md", text + "\n")
            reply = await reply.ask(prompts.revise_request(text))
            await self.after_turn(planner_scope, reply)
            plan, reply = await self._valid(reply, planner_scope, round_=r)
        self._write("final_plan.json", json.dumps(plan.to_json(), indent=2) + "\n")
        self._reply, self._scope, self._round = reply, planner_scope, self.settings.n_plan_reviews
        return plan

    async def revise(self, feedback: str, *, rejected: bool) -> Plan:
        """The planner's next plan after a user's decision on the last one (modify or reject)."""
        self._round += 1
        reply = await self._reply.ask(prompts.plan_feedback(feedback, rejected=rejected))
        await self.after_turn(self._scope, reply)
        plan, self._reply = await self._valid(reply, self._scope, round_=self._round)
        self._write("final_plan.json", json.dumps(plan.to_json(), indent=2) + "\n")
        return plan

    async def _valid(self, reply: Any, scope: ModelScope, round_: int) -> tuple[Plan, Any]:
        errors = []
        for attempt in range(1, self.settings.max_plan_tries + 1):
            try:
                plan = parse_plan(reply.body or "", agents=self.step_agents, max_steps=self.settings.max_plan_steps)
            except PlanError as exc:
                errors.append(str(exc))
                self.plans.append({"round": round_, "attempt": attempt, "valid": False, "error": str(exc),
                                   "text": (reply.body or "")[:20_000]})
                if attempt == self.settings.max_plan_tries:
                    break
                reply = await reply.ask(prompts.plan_invalid(str(exc)))
                await self.after_turn(scope, reply)
                continue
            self.plans.append({"round": round_, "attempt": attempt, "valid": True, "plan": plan.to_json()})
            self._write(f"plans/plan_round_{round_}.json", json.dumps(plan.to_json(), indent=2) + "\n")
            return plan, reply
        raise PlanningFailed(f"the planner gave no valid plan in {self.settings.max_plan_tries} tries; last error: "
                             f"{errors[-1]}")

    def _write(self, rel: str, text: str) -> None:
        path = self.dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
