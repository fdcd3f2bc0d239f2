"""RunFeed: the widgets' view of a run, loaded from the store and kept live by its events."""

from __future__ import annotations

import threading

from fixtures.store import planned_run
from fixtures.waiting import wait_for

from cmbagent_jupyter.widgets.feed import RunFeed, parts_for, summarize_event


def test_feed_loads_the_run_its_steps_approvals_and_costs(store):
    ss, run, steps = planned_run(store, 3)
    ss.add_costs([{"run_id": run.id, "step_id": steps[0].id, "agent": "engineer", "model": "m", "cost_usd": 0.5}])
    ss.create_approval(run_id=run.id, kind="after_planning", request={"summary": "ok?"})

    with RunFeed(run.id, store=store, live=False) as feed:
        assert feed.run.id == run.id and feed.session.session_id == run.session_id
        assert [s.key for s in feed.steps] == ["step_1", "step_2", "step_3"]
        assert [a.kind for a in feed.pending_approvals()] == ["after_planning"]
        assert [c.cost_usd for c in feed.costs] == [0.5]
        assert feed.run.status.value == "waiting_approval"


def test_events_refresh_only_what_they_touch():
    assert parts_for([{"type": "step.started"}]) == {"steps"}
    assert parts_for([{"type": "cost.update"}]) == {"costs", "run"}
    assert parts_for([{"type": "approval.requested"}]) >= {"approvals", "run"}
    assert parts_for([{"type": "agent.message"}, {"type": "checkpoint.saved"}]) == frozenset()


def test_a_step_change_in_the_store_reaches_listeners(store):
    ss, run, steps = planned_run(store, 2)
    seen: list[tuple[list, frozenset]] = []
    with RunFeed(run.id, store=store, coalesce_s=0.05) as feed:
        feed.add_listener(lambda f, events, parts: seen.append((events, parts)))
        ss.transition_step(steps[0].id, "running")
        wait_for(lambda: feed.steps[0].status.value == "running", what="the step to show as running")
        batch_types = [e["type"] for events, _ in seen for e in events]
        assert "step.started" in batch_types
        assert any("steps" in parts for _, parts in seen[1:])


def test_a_burst_of_events_is_coalesced_into_few_refreshes(store):
    ss, run, _ = planned_run(store, 1)
    calls = []
    done = threading.Event()
    with RunFeed(run.id, store=store, coalesce_s=0.3) as feed:
        wait_for(lambda: feed.total_events >= 1, what="the replayed history")
        base = feed.total_events

        def listener(f, events, parts):
            calls.append(len(events))
            if f.total_events >= base + 1000:
                done.set()

        feed.add_listener(listener)
        calls.clear()
        for chunk in range(10):
            ss.append_events([{"type": "agent.message", "session_id": run.session_id, "run_id": run.id,
                               "payload": {"sender": "engineer", "content": f"line {chunk}-{i}"}}
                              for i in range(100)])
        assert done.wait(30), f"only {feed.total_events - base} of 1000 events arrived"
    assert sum(calls) == 1000
    assert len(calls) <= 20, f"1000 events caused {len(calls)} listener calls"


def test_the_history_of_a_run_is_replayed_to_a_new_feed(store):
    ss, run, steps = planned_run(store, 1)
    ss.transition_step(steps[0].id, "running")
    ss.transition_step(steps[0].id, "completed", outputs={"summary": "done"})
    with RunFeed(run.id, store=store, coalesce_s=0.05) as feed:
        wait_for(lambda: any(e["type"] == "step.completed" for e in feed.recent), what="the replayed step.completed")
        recent = list(feed.recent)
    completed = next(e for e in recent if e["type"] == "step.completed")
    assert set(completed) == {"type", "seq", "ts", "summary"}
    assert "running → completed" in completed["summary"]


def test_summaries_are_one_short_line():
    long = {"type": "agent.message", "payload": {"sender": "researcher", "content": "word\n" * 500}}
    small = summarize_event(long)
    assert small["summary"].startswith("researcher: word word")
    assert len(small["summary"]) <= 200 and "\n" not in small["summary"]


def test_closing_a_feed_stops_its_thread_and_subscription(store):
    _, run, _ = planned_run(store, 1)
    feed = RunFeed(run.id, store=store)
    thread = feed._thread
    assert thread.is_alive() and store.client._subs
    feed.close()
    assert not thread.is_alive()
    assert not store.client._subs
