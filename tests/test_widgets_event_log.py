"""EventLogWidget: events streamed as custom messages; only small counters are traits."""

from __future__ import annotations

import json

from fixtures.store import planned_run
from fixtures.waiting import wait_for

from cmbagent_jupyter.widgets import EventLogWidget


def streamed(w) -> list[dict]:
    return [e for m in w.of_type("events") if not m.get("reset") for e in m["events"]]


def test_events_of_a_run_are_streamed_to_the_log(store, wire):
    ss, run, steps = planned_run(store, 1)
    log = EventLogWidget(run.id, store=store)
    w = wire(log)
    wait_for(lambda: log.total >= 1, what="the run's past events")
    ss.transition_step(steps[0].id, "running")
    ss.emit("agent.message", run.id, sender="engineer", content="writing step_1.py")
    wait_for(lambda: any(e["type"] == "agent.message" for e in streamed(w)), what="the agent message in the log")
    message = next(e for e in streamed(w) if e["type"] == "agent.message")
    assert message["summary"] == "engineer: writing step_1.py"
    assert set(message) == {"type", "seq", "ts", "summary"}
    assert "step.started" in [e["type"] for e in streamed(w)]


def test_a_new_view_gets_the_recent_window_on_request(store, wire):
    ss, run, _ = planned_run(store, 1)
    ss.append_events([{"type": "log", "session_id": run.session_id, "run_id": run.id, "payload": {"i": i}}
                      for i in range(50)])
    log = EventLogWidget(run.id, store=store, window=20)
    w = wire(log)
    wait_for(lambda: log.total >= 50, what="the replayed events")
    w.click({"type": "history"})
    history = w.last("events")
    assert history["reset"] is True
    assert len(history["events"]) == 20
    assert history["events"][-1]["summary"] == '{"i":49}'


def test_a_thousand_events_do_not_grow_the_widget_state(store, wire):
    ss, run, _ = planned_run(store, 1)
    log = EventLogWidget(run.id, store=store)
    w = wire(log)
    wait_for(lambda: log.total >= 1, what="the first events")
    before = log.total
    for chunk in range(4):
        ss.append_events([{"type": "agent.message", "session_id": run.session_id, "run_id": run.id,
                           "payload": {"sender": "executor", "content": f"output line {chunk}.{i}"}}
                          for i in range(250)])
    wait_for(lambda: log.total >= before + 1000, what="1000 more events")
    assert len(w.of_type("events")) < 40, "events were not batched"
    assert set(log.get_state()) >= {"total", "window"}
    assert len(json.dumps({k: v for k, v in log.get_state().items() if k in ("total", "window")})) < 100
    assert len(log.recent) == 500


def test_a_log_without_a_run_takes_events_by_hand(wire):
    log = EventLogWidget()
    w = wire(log)
    log.append([{"type": "step.started", "seq": 1, "ts": "2026-01-01T00:00:00", "payload": {"key": "step_1"}}])
    assert log.total == 1
    assert w.last("events")["events"][0]["summary"] == "step_1"
