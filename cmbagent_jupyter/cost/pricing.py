"""Prices of model calls, from the maintained `genai-prices` tables (offline, bundled).

A price given explicitly (models.yaml `prices`, or a scenario's `price`) wins. A model
the tables do not know is recorded at $0 with `priced=False` and a warning, once per
model and process, so an unknown cost never passes for a known one.
"""

from __future__ import annotations

import logging
import threading
import warnings
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("cmbagent.cost")


class UnpricedModelWarning(UserWarning):
    """A model whose calls are recorded at cost 0 because no price is known for it."""


@dataclass(frozen=True)
class Priced:
    cost_usd: float
    priced: bool
    note: str | None = None


_warned: set[str] = set()
_warned_lock = threading.Lock()

_PROVIDER_IDS = {"openai": "openai", "anthropic": "anthropic", "gemini": "google", "google": "google"}


def price_call(model: str, prompt_tokens: int, completion_tokens: int, *, provider: str | None = None,
               override: Any = None) -> Priced:
    if override is not None:
        cost = (prompt_tokens * float(override.input_per_mtok) + completion_tokens * float(override.output_per_mtok)) / 1e6
        return Priced(cost, True)
    try:
        from genai_prices import Usage, calc_price

        provider_id = _PROVIDER_IDS.get((provider or "").lower())
        bare = model.split("/", 1)[1] if "/" in model and model.split("/", 1)[0] in _PROVIDER_IDS else model
        calc = calc_price(Usage(input_tokens=prompt_tokens, output_tokens=completion_tokens), model_ref=bare,
                          provider_id=provider_id)
        return Priced(float(calc.total_price), True)
    except (LookupError, ValueError) as exc:
        note = f"no price known for model {model!r}; its calls are recorded at $0"
        _warn_once(model, note, exc)
        return Priced(0.0, False, note)


def _warn_once(model: str, note: str, exc: Exception) -> None:
    with _warned_lock:
        if model in _warned:
            return
        _warned.add(model)
    log.warning("%s (%s)", note, exc)
    warnings.warn(note, UnpricedModelWarning, stacklevel=3)
