"""Provider hiccups retried where they happen: around each model call.

A rate limit, a timeout, a dropped connection or a 5xx from the provider is retried
with exponential backoff and jitter (engine/retry.py's `call_with_backoff`, capped at
60 s) before it can fail a step; anything else (a bad request, a scenario that lacks a
turn) goes straight up. The request is resent as it was, so the retry is invisible to
the agent loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Callable

from ag2.events import ModelResponse

from cmbagent_jupyter.engine.retry import call_with_backoff
from cmbagent_jupyter.llm.scope import ModelScope, scope_of
from cmbagent_jupyter.llm.wrapper import DelegatingModelConfig

OnBackoff = Callable[[ModelScope, int, float, BaseException], None]


class _RetryingClient:
    def __init__(self, config: RetryingModelConfig, client: Any):
        self.config = config
        self.client = client

    async def __call__(self, messages: Sequence[Any], context: Any, **kwargs: Any) -> ModelResponse:
        cfg = self.config
        scope = scope_of(context)

        def backoff(attempt: int, delay: float, exc: BaseException) -> None:
            if cfg.on_backoff is not None:
                cfg.on_backoff(scope, attempt, delay, exc)

        return await call_with_backoff(lambda: self.client(messages, context, **kwargs),
                                       max_attempts=cfg.max_attempts, initial=cfg.initial_s, cap=cfg.cap_s,
                                       on_backoff=backoff)


class RetryingModelConfig(DelegatingModelConfig):
    client_class = _RetryingClient

    def __init__(self, inner: Any, *, max_attempts: int = 5, initial_s: float = 1.0, cap_s: float = 60.0,
                 on_backoff: OnBackoff | None = None):
        super().__init__(inner)
        self.max_attempts = max_attempts
        self.initial_s = initial_s
        self.cap_s = cap_s
        self.on_backoff = on_backoff
