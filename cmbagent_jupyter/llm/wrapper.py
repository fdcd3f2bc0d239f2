"""A model config around another: every call goes to the inner model, then to `observe`.

The recorder and the transcript writer are such wrappers. They are AG2 model configs
themselves (provider, model, copy, create), so agents use them like any other model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ag2.events import ModelResponse

from cmbagent_jupyter.llm.scope import ModelScope, TurnCounter, scope_of


class DelegatingModelConfig:
    """An AG2 model config that hands everything to `inner` but the client it creates."""

    client_class: type

    def __init__(self, inner: Any):
        self.inner = inner

    @property
    def provider(self) -> Any:
        return self.inner.provider

    @property
    def model(self) -> str:
        return self.inner.model

    def copy(self) -> "DelegatingModelConfig":
        return self

    def create(self) -> Any:
        return self.client_class(self, self.inner.create())

    def create_files_client(self) -> Any:
        return self.inner.create_files_client()

    def announcement(self) -> str | None:
        inner = getattr(self.inner, "announcement", None)
        return inner() if callable(inner) else None

    def unwrap(self) -> Any:
        inner = self.inner
        while hasattr(inner, "inner"):
            inner = inner.inner
        return inner


class _WrappedClient:
    def __init__(self, config: ModelConfigWrapper, client: Any):
        self.config = config
        self.client = client

    async def __call__(self, messages: Sequence[Any], context: Any, **kwargs: Any) -> ModelResponse:
        scope = scope_of(context)
        turn = self.config.turns.next(scope)
        response = await self.client(messages, context, **kwargs)
        self.config.observe(scope, turn, messages, context, response)
        return response


class ModelConfigWrapper(DelegatingModelConfig):
    client_class = _WrappedClient

    def __init__(self, inner: Any):
        super().__init__(inner)
        self.turns = TurnCounter()

    def observe(self, scope: ModelScope, turn: int, messages: Sequence[Any], context: Any,
                response: ModelResponse) -> None:
        raise NotImplementedError
