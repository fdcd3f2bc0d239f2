"""Turn model-call usage into cost records and send them to the store (`cost.add`)."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from cmbagent_jupyter.cost.pricing import price_call
from cmbagent_jupyter.llm.scope import ModelScope
from cmbagent_jupyter.store.port import SessionPort
from cmbagent_jupyter.core.threads import in_thread


@dataclass(frozen=True)
class CallUsage:
    scope: ModelScope
    model: str
    provider: str | None
    prompt_tokens: int
    completion_tokens: int


class CostRecorder:
    """Collects usage as calls happen (from any thread) and records it, priced, per flush."""

    def __init__(self, store: SessionPort, run_id: str | None, *, price_override: Any = None):
        self.store = store
        self.run_id = run_id
        self.price_override = price_override
        self._pending: list[CallUsage] = []
        self._lock = threading.Lock()
        self.total_usd = 0.0
        self.unpriced: set[str] = set()

    def add(self, usage: CallUsage) -> None:
        with self._lock:
            self._pending.append(usage)

    def records(self, batch: list[CallUsage]) -> list[dict[str, Any]]:
        out = []
        for u in batch:
            priced = price_call(u.model, u.prompt_tokens, u.completion_tokens, provider=u.provider,
                                override=self.price_override)
            if not priced.priced:
                self.unpriced.add(u.model)
            out.append({"run_id": self.run_id, "step_id": u.scope.step_id, "agent": u.scope.agent, "model": u.model,
                        "prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens,
                        "total_tokens": u.prompt_tokens + u.completion_tokens, "cost_usd": priced.cost_usd,
                        "priced": priced.priced})
        return out

    async def flush(self) -> float:
        with self._lock:
            batch, self._pending = self._pending, []
        if not batch:
            return 0.0
        records = await in_thread(self.records, batch)
        await self.store.aio.add_costs(records)
        spent = sum(r["cost_usd"] for r in records)
        self.total_usd += spent
        return spent
