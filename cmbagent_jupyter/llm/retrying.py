"""Provider hiccups retried where they happen: around each model call.

A rate limit, a timeout, a dropped connection or a 5xx from the provider is retried
with exponential backoff and jitter (tenacity, capped at 60 s) before it can fail a
step; anything else (a bad request, a scenario that lacks a
turn) goes straight up. The request is resent as it was, so the retry is invisible to
the agent loop.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import Any, Callable, TypeVar

from ag2.events import ModelResponse
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from cmbagent_jupyter.core.failures import is_transient
from cmbagent_jupyter.llm.scope import ModelScope, scope_of
from cmbagent_jupyter.llm.wrapper import DelegatingModelConfig

OnBackoff = Callable[[ModelScope, int, float, BaseException], None]
T = TypeVar("T")


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


async def call_with_backoff(
    func: Callable[[], Awaitable[T]],
    *,
    max_attempts: int = 5,
    initial: float = 1.0,
    cap: float = 60.0,
    on_backoff: Callable[[int, float, BaseException], None] | None = None,
) -> T:
    """Run `func`, retrying transient errors with exponential backoff and jitter."""

    def before_sleep(state: RetryCallState) -> None:
        if on_backoff is not None and state.outcome is not None:
            exc = state.outcome.exception()
            delay = state.next_action.sleep if state.next_action else 0.0
            on_backoff(state.attempt_number, delay, exc)

    retrying = AsyncRetrying(
        retry=retry_if_exception(is_transient),
        wait=wait_exponential_jitter(multiplier=initial, exp_base=2, max=cap, jitter=initial),
        stop=stop_after_attempt(max_attempts),
        before_sleep=before_sleep,
        reraise=True,
    )
    async for attempt in retrying:
        with attempt:
            return await func()
    raise AssertionError("unreachable")
