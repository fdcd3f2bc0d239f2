"""Every model call priced with genai-prices and recorded with its session, run, step and agent."""

from __future__ import annotations

import asyncio
import warnings
from pathlib import Path

import pytest

from cmbagent_jupyter.cost import pricing
from cmbagent_jupyter.cost.pricing import UnpricedModelWarning, price_call
from cmbagent_jupyter.cost.recorder import CallUsage, CostRecorder
from cmbagent_jupyter.llm.providers import Price
from cmbagent_jupyter.llm.scope import ModelScope
from cmbagent_jupyter.store import open_store
from fixtures.engine import engine_home  # noqa: F401 - fixture


def test_known_models_are_priced_from_genai_prices():
    from genai_prices import Usage, calc_price

    expected = float(calc_price(Usage(input_tokens=1000, output_tokens=100), model_ref="gpt-4o-mini").total_price)
    priced = price_call("gpt-4o-mini", 1000, 100, provider="openai")
    assert priced.priced and priced.cost_usd == pytest.approx(expected) and priced.cost_usd > 0
    assert price_call("openai/gpt-4o-mini", 1000, 100).cost_usd == pytest.approx(expected)


def test_an_unknown_model_costs_zero_with_a_warning_once(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(pricing, "_warned", set())
    with pytest.warns(UnpricedModelWarning, match="no price known for model 'scripted/demo'"):
        priced = price_call("scripted/demo", 500, 50)
    assert (priced.cost_usd, priced.priced) == (0.0, False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not price_call("scripted/demo", 1, 1).priced, "warned once per model"
    explicit = price_call("scripted/demo", 500, 50, override=Price(input_per_mtok=0, output_per_mtok=0))
    assert (explicit.cost_usd, explicit.priced) == (0.0, True), "a price of 0 given explicitly is a price"


def test_recorder_sends_priced_records_with_their_run_step_and_agent(engine_home: Path,
                                                                     monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(pricing, "_warned", set())
    store = open_store(engine_home)
    try:
        ss = store.session(store.create_session("c").id)
        run = ss.create_run("t", mode="control")
        [step] = ss.put_plan(run.id, [{"key": "s1", "number": 1, "agent": "engineer"}])
        rec = CostRecorder(ss, run.id)
        scope = ModelScope(agent="engineer", run_id=run.id, step="s1", step_id=step.id)
        rec.add(CallUsage(scope, "gpt-4o-mini", "openai", 2000, 300))
        with pytest.warns(UnpricedModelWarning):
            rec.add(CallUsage(scope, "house-model-7b", None, 10, 10))
            spent = asyncio.run(rec.flush())
        assert spent == pytest.approx(price_call("gpt-4o-mini", 2000, 300).cost_usd)
        rows = {r.model: r for r in ss.cost_records(run.id)}
        assert rows["gpt-4o-mini"].step_id == step.id and rows["gpt-4o-mini"].agent == "engineer"
        assert rows["gpt-4o-mini"].session_id == ss.session_id and rows["gpt-4o-mini"].priced
        assert (rows["house-model-7b"].cost_usd, rows["house-model-7b"].priced) == (0.0, False)
        summary = ss.cost_summary(run.id, group_by=["model"])
        assert {r.model: r.calls for r in summary} == {"gpt-4o-mini": 1, "house-model-7b": 1}
        assert asyncio.run(rec.flush()) == 0.0, "nothing is recorded twice"
        assert len(ss.cost_records(run.id)) == 2
    finally:
        store.close()
