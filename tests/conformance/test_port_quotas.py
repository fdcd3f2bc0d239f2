"""A run that starts (moves from a state that does not count into one that does) is checked
against its session's quotas: the error names the quota and its values, and nothing changes."""

from __future__ import annotations

from pathlib import Path

import pytest

from cmbagent_jupyter.core import QuotaExceeded, RunStatus
from porttools import PID


def refused(ss, run_id: str, start) -> QuotaExceeded:
    before = (ss.get_run(run_id), len(ss.events(run_id)), len(ss.history(run_id)))
    with pytest.raises(QuotaExceeded) as info:
        start()
    assert (ss.get_run(run_id), len(ss.events(run_id)), len(ss.history(run_id))) == before
    return info.value


def test_max_concurrent_runs_counts_the_other_active_runs_paused_ones_too(port):
    ss = port.session(port.create_session("runs", {"max_concurrent_runs": 2}).id)
    first, second, third = (ss.create_run(f"task {i}") for i in range(3))
    ss.transition_run(first.id, "planning")
    ss.transition_run(second.id, "planning")
    ss.transition_run(second.id, "paused")
    err = refused(ss, third.id, lambda: ss.transition_run(third.id, "planning"))
    assert "max_concurrent_runs" in err.message and "2 active run(s)" in err.message and "allows 2" in err.message
    refused(ss, third.id, lambda: ss.claim(third.id, to="planning", owner_pid=PID))
    ss.transition_run(first.id, "cancelled")
    assert ss.transition_run(third.id, "planning").status == RunStatus.planning
    assert ss.transition_run(third.id, "paused").status == RunStatus.paused, "a move among active states is no start"


def test_max_cost_usd_stops_starts_once_spent_and_a_raised_quota_lets_them_through(port):
    ss = port.session(port.create_session("cost", {"max_cost_usd": 1.5}).id)
    run = ss.create_run("expensive")
    ss.add_costs([{"model": "gpt-x", "cost_usd": 1.0, "prompt_tokens": 10},
                  {"model": "gpt-x", "cost_usd": 0.75, "completion_tokens": 5}])
    err = refused(ss, run.id, lambda: ss.transition_run(run.id, "planning"))
    assert "max_cost_usd" in err.message and "$1.7500" in err.message and "$1.50" in err.message
    ss.set_quotas(max_cost_usd=10)
    assert ss.transition_run(run.id, "planning").status == RunStatus.planning


def test_max_disk_mb_is_measured_on_the_sessions_folder(port):
    s = port.create_session("disk", {"max_disk_mb": 1})
    ss = port.session(s.id)
    run = ss.create_run("writes data")
    big = Path(s.path) / "big.bin"
    big.write_bytes(b"\0" * (2 * 1024 * 1024))
    err = refused(ss, run.id, lambda: ss.transition_run(run.id, "planning"))
    assert "max_disk_mb" in err.message and "2.0 MB" in err.message and "1.0 MB" in err.message
    big.unlink()
    assert ss.transition_run(run.id, "planning").status == RunStatus.planning


def test_a_resume_is_a_start_too_and_quotas_of_one_session_do_not_limit_another(port):
    tight = port.session(port.create_session("tight", {"max_concurrent_runs": 1}).id)
    other = port.session(port.create_session("other", {"max_concurrent_runs": 1}).id)
    old, new = tight.create_run("old"), tight.create_run("new")
    tight.transition_run(old.id, "planning")
    tight.transition_run(old.id, "interrupted")
    tight.transition_run(new.id, "planning")
    refused(tight, old.id, lambda: tight.transition_run(old.id, "planning"))
    tight.add_costs([{"model": "m", "cost_usd": 1000}])
    assert other.transition_run(other.create_run("b").id, "planning").status == RunStatus.planning
