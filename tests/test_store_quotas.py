"""Each quota refuses a run start (draft -> planning) with a message naming it and its values."""

from __future__ import annotations

from pathlib import Path

import pytest

from cmbagent_jupyter.core.errors import NotFound, QuotaExceeded


def refused_start(ss, run_id: str) -> QuotaExceeded:
    events_before = len(ss.events(run_id=run_id))
    with pytest.raises(QuotaExceeded) as info:
        ss.transition_run(run_id, "planning")
    assert ss.get_run(run_id).status.value == "draft"
    assert len(ss.events(run_id=run_id)) == events_before
    assert [h.to_state for h in ss.history(run_id)] == ["draft"]
    return info.value


def test_max_concurrent_runs(store):
    ss = store.session(store.create_session("runs", {"max_concurrent_runs": 2}).id)
    first, second, third = (ss.create_run(f"task {i}") for i in range(3))
    ss.transition_run(first.id, "planning")
    ss.transition_run(second.id, "planning")

    err = refused_start(ss, third.id)
    assert "max_concurrent_runs" in err.message and "2 active run(s)" in err.message and "allows 2" in err.message

    ss.transition_run(first.id, "cancelled")
    assert ss.transition_run(third.id, "planning").status.value == "planning"


def test_max_cost_usd(store):
    ss = store.session(store.create_session("cost", {"max_cost_usd": 1.5}).id)
    run = ss.create_run("expensive")
    ss.add_costs([{"model": "gpt-x", "cost_usd": 1.0, "prompt_tokens": 10},
                  {"model": "gpt-x", "cost_usd": 0.75, "completion_tokens": 5}])

    err = refused_start(ss, run.id)
    assert "max_cost_usd" in err.message and "$1.7500" in err.message and "$1.50" in err.message

    ss.set_quotas(max_cost_usd=10)
    assert ss.transition_run(run.id, "planning").status.value == "planning"


def test_max_disk_mb(store):
    s = store.create_session("disk", {"max_disk_mb": 1})
    ss = store.session(s.id)
    run = ss.create_run("writes data")
    (Path(s.path) / "big.bin").write_bytes(b"\0" * (2 * 1024 * 1024))

    err = refused_start(ss, run.id)
    assert "max_disk_mb" in err.message and "2.0 MB" in err.message and "1.0 MB" in err.message

    (Path(s.path) / "big.bin").unlink()
    assert ss.transition_run(run.id, "planning").status.value == "planning"


def test_quotas_of_one_session_do_not_limit_another(store):
    tight = store.session(store.create_session("tight", {"max_concurrent_runs": 1}).id)
    other = store.session(store.create_session("other", {"max_concurrent_runs": 1}).id)
    tight.transition_run(tight.create_run("a").id, "planning")
    tight.add_costs([{"model": "m", "cost_usd": 1000}])
    assert other.transition_run(other.create_run("b").id, "planning").status.value == "planning"


def claim(ss, run_id: str) -> dict:
    """A run started as the engine starts it (the claim reads what the service remembers of the session)."""
    return ss.claim(run_id=run_id, to="planning", owner_pid=1, allowed_from=["draft"],
                   with_session=True)


def test_a_claim_sees_new_costs_new_quotas_and_a_deleted_session_at_once(store):
    sid = store.create_session("claims", {"max_cost_usd": 1.0, "max_concurrent_runs": 5}).id
    ss = store.session(sid)
    first, second, third = (ss.create_run(f"task {i}") for i in range(3))
    assert claim(ss, first.id).run.status == "planning"  # the service now knows the session and its spend

    ss.add_costs([{"model": "gpt-x", "cost_usd": 2.0}])
    with pytest.raises(QuotaExceeded) as info:
        claim(ss, second.id)
    assert "max_cost_usd" in info.value.message and "$2.0000" in info.value.message

    ss.set_quotas(max_cost_usd=10, max_concurrent_runs=1)
    with pytest.raises(QuotaExceeded) as info:
        claim(ss, second.id)
    assert "max_concurrent_runs" in info.value.message and "allows 1" in info.value.message

    ss.transition_run(first.id, "cancelled")
    assert claim(ss, second.id).session.quotas.max_concurrent_runs == 1
    ss.transition_run(second.id, "cancelled")
    store.session(sid).set_status("deleted")
    with pytest.raises(NotFound):
        claim(ss, third.id)
