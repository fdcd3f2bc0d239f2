"""DagWidget: the plan graph from the store, live states, node detail, retry feedback."""

from __future__ import annotations

import base64
import json
import struct
import time
import zlib
from pathlib import Path

from fixtures.store import planned_run
from fixtures.waiting import wait_for

from cmbagent_jupyter.core import graph
from cmbagent_jupyter.widgets import DagWidget
from cmbagent_jupyter.widgets.feed import RunFeed


def tiny_png() -> bytes:
    """A valid 2x2 red PNG."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    raw = b"".join(b"\x00" + b"\xff\x00\x00" * 2 for _ in range(2))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 2, 2, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def run_graph(*args) -> dict:
    return graph.run_graph(*args).model_dump(exclude_none=True)


def node(graph: dict, node_id: str) -> dict:
    return next(n for n in graph["nodes"] if n["id"] == node_id)


def test_graph_has_a_planning_node_the_steps_and_a_terminator(store):
    ss, run, steps = planned_run(store, 4, parallel=True)
    graph = run_graph(run, steps)
    ids = [n["id"] for n in graph["nodes"]]
    assert ids == ["planning", *(s.id for s in steps), "end"]
    edges = {(e["source"], e["target"]) for e in graph["edges"]}
    s1, s2, s3, s4 = (s.id for s in steps)
    assert edges == {("planning", s1), (s1, s2), (s1, s3), (s1, s4), (s2, "end"), (s3, "end"), (s4, "end")}
    assert node(graph, "planning")["status"] == "completed"
    assert node(graph, s2) | {"status": None} == {
        "id": s2, "kind": "agent", "key": "step_2", "number": 2, "agent": "engineer",
        "label": "Sub-task number 2", "status": None}


def test_node_states_follow_the_store_live(store, wire):
    ss, run, steps = planned_run(store, 3)
    dag = DagWidget(run.id, store=store)
    wire(dag)
    assert [n["status"] for n in dag.graph["nodes"]] == ["completed", "pending", "pending", "pending", "pending"]

    ss.transition_step(steps[0].id, "running")
    wait_for(lambda: node(dag.graph, steps[0].id)["status"] == "running", what="step 1 running in the DAG")
    ss.transition_step(steps[0].id, "completed", outputs={"summary": "ok"})
    ss.transition_step(steps[1].id, "running")
    ss.transition_step(steps[1].id, "failed", error="ZeroDivisionError: division by zero")
    wait_for(lambda: node(dag.graph, steps[1].id)["status"] == "failed", what="step 2 failed in the DAG")
    assert node(dag.graph, steps[0].id)["status"] == "completed"
    assert node(dag.graph, "end")["status"] == "pending"


def test_a_pending_approval_shows_on_its_node(store):
    ss, run, steps = planned_run(store, 2)
    ss.create_approval(run_id=run.id, kind="before_each_step", step_id=steps[1].id)
    with RunFeed(run.id, store=store, live=False) as feed:
        graph = run_graph(feed.run, feed.steps, feed.approvals)
    assert node(graph, steps[1].id)["status"] == "waiting_approval"
    plan_gate_ss, plan_run, _ = planned_run(store, 1, task="other")
    plan_gate_ss.create_approval(run_id=plan_run.id, kind="after_planning")
    with RunFeed(plan_run.id, store=store, live=False) as feed:
        assert node(run_graph(feed.run, feed.steps, feed.approvals), "planning")["status"] == "waiting_approval"


def test_clicking_a_node_sends_its_detail_with_code_figures_and_cost(store, wire):
    ss, run, steps = planned_run(store, 2)
    control = Path(run.path) / "control"
    (control / "codebase").mkdir(parents=True, exist_ok=True)
    (control / "data").mkdir(parents=True, exist_ok=True)
    (control / "codebase" / "step_1.py").write_text("print('hello')\n")
    (control / "data" / "spectrum.png").write_bytes(tiny_png())
    ss.transition_step(steps[0].id, "running")
    attempt = ss.start_attempt(step_id=steps[0].id)
    ss.finish_attempt(attempt_id=attempt.id, status="completed", output="hello")
    ss.transition_step(steps[0].id, "completed", outputs={
        "agent": "engineer", "code_file": "codebase/step_1.py", "summary": "hello", "stdout": "hello\n",
        "files": ["data/spectrum.png", "data/cl.npz"], "figures": ["data/spectrum.png", "/etc/passwd"]})
    ss.add_costs([{"run_id": run.id, "step_id": steps[0].id, "agent": "engineer", "model": "gpt-x",
                   "prompt_tokens": 100, "completion_tokens": 20, "cost_usd": 0.002}])

    dag = DagWidget(run.id, store=store, live=False)
    w = wire(dag)
    w.click({"type": "node_click", "id": steps[0].id})

    assert dag.selected == steps[0].id
    msg = w.last("detail")
    detail = msg["detail"]
    assert msg["id"] == steps[0].id
    assert detail["title"] == "1. Sub-task number 1" and detail["status"] == "completed"
    assert detail["output_text"] == "hello"
    assert detail["code"] == [{"name": "step_1.py", "text": "print('hello')\n"}]
    png, outside = detail["figures"]
    assert png["name"] == "spectrum.png"
    assert base64.b64decode(png["data_url"].removeprefix("data:image/png;base64,")) == tiny_png()
    assert "data_url" not in outside and "not in the run directory" in outside["error"]
    assert detail["files"] == ["data/cl.npz"]
    assert [(a["attempt"], a["status"]) for a in detail["attempts"]] == [(1, "completed")]
    assert detail["cost"]["calls"] == 1 and detail["cost"]["tokens"] == 120
    assert detail["can_retry"] is False
    # figures travel in messages, never in synced state
    assert "data:image" not in json.dumps(dag.get_state())


def test_a_markdown_report_is_rendered_without_raw_html(store, wire):
    ss, run, steps = planned_run(store, 1, agents=("researcher",))
    data = Path(run.path) / "control" / "data"
    data.mkdir(parents=True, exist_ok=True)
    (data / "report_step_1.md").write_text("# Result\n\nA = 1.00\n\n<script>alert(1)</script>\n")
    ss.transition_step(steps[0].id, "running")
    ss.transition_step(steps[0].id, "completed", outputs={"report": "data/report_step_1.md", "summary": "x"})
    dag = DagWidget(run.id, store=store, live=False)
    w = wire(dag)
    dag.select("step_1")
    html = w.last("detail")["detail"]["output_html"]
    assert "<h1>Result</h1>" in html
    assert "<script>" not in html and "&lt;script&gt;" in html


def test_detail_is_resent_when_the_selected_step_changes(store, wire):
    ss, run, steps = planned_run(store, 1)
    dag = DagWidget(run.id, store=store)
    w = wire(dag)
    dag.select(1)
    assert w.last("detail")["detail"]["status"] == "pending"
    ss.transition_step(steps[0].id, "running")
    wait_for(lambda: w.last("detail")["detail"]["status"] == "running", what="a fresh detail after the change")
    count = len(w.of_type("detail"))
    ss.emit("agent.message", run.id, sender="engineer", content="thinking")
    ss.transition_step(steps[0].id, "completed", outputs={"summary": "done"})
    wait_for(lambda: w.last("detail")["detail"]["status"] == "completed", what="the completed detail")
    assert len(w.of_type("detail")) == count + 1


def test_planning_and_result_nodes_have_details(store, wire):
    ss, run, steps = planned_run(store, 2)
    dag = DagWidget(run.id, store=store, live=False)
    w = wire(dag)
    w.click({"type": "node_click", "id": "planning"})
    plan = w.last("detail")["detail"]
    assert [p["text"] for p in plan["plan"]] == ["Sub-task number 1", "Sub-task number 2"]
    w.click({"type": "node_click", "id": "end"})
    assert w.last("detail")["detail"]["description"].startswith("0 of 2 steps completed")


def test_retry_feedback_on_a_failed_run_records_the_feedback_and_resets_the_step(store, wire):
    ss, run, steps = planned_run(store, 3)
    ss.transition_step(steps[0].id, "running")
    ss.transition_step(steps[0].id, "completed", outputs={"summary": "ok"})
    ss.transition_step(steps[1].id, "running")
    ss.transition_step(steps[1].id, "failed", error="FileNotFoundError: data/map.fits")
    ss.transition_run(run.id, "failed", error="step 2 failed")
    dag = DagWidget(run.id, store=store, live=False)
    w = wire(dag)
    dag.select("step_2")
    assert w.last("detail")["detail"]["can_retry"] is True

    w.click({"type": "retry", "step_id": steps[1].id, "feedback": "simulate the map instead of reading it"})

    notice = w.last("notice")
    assert notice["level"] == "info", notice
    assert "feedback saved for step 2" in notice["text"]
    after = {s.key: s for s in ss.list_steps(run.id)}
    assert after["step_1"].status.value == "completed"
    assert after["step_2"].status.value == "pending" and after["step_3"].status.value == "pending"
    # the engine gives the recorded feedback to the next attempt (and records it there), not the instructions
    assert after["step_2"].description == "Sub-task 2"
    record = ss.list_approvals(run_id=run.id, pending_only=False)[-1]
    assert (record.kind, record.step_id, record.decision, record.feedback, record.resolved_by) == (
        "retry_feedback", steps[1].id, "retry", "simulate the map instead of reading it", "notebook")


def test_retry_feedback_answers_an_on_error_gate(store, wire):
    ss, run, steps = planned_run(store, 1)
    ss.transition_step(steps[0].id, "running")
    ss.transition_step(steps[0].id, "failed", error="boom")
    gate = ss.create_approval(run_id=run.id, step_id=steps[0].id, kind="on_error",
                   options=["retry", "skip", "abort", "modify"])
    dag = DagWidget(run.id, store=store, live=False)
    w = wire(dag)
    w.click({"type": "retry", "step_id": steps[0].id, "feedback": "use fewer bins"})
    assert "will be retried" in w.last("notice")["text"]
    resolved = ss.get_approval(approval_id=gate.id)
    assert (resolved.decision, resolved.feedback) == ("retry", "use fewer bins")


def test_retry_errors_come_back_as_one_line_notices(store, wire):
    ss, run, steps = planned_run(store, 1)
    dag = DagWidget(run.id, store=store, live=False)
    w = wire(dag)
    w.click({"type": "retry", "step_id": steps[0].id, "feedback": "x"})
    assert w.last("notice") == {"type": "notice", "level": "error",
                                "text": "step 1 (step_1) is pending; only a failed step is retried (play from it to "
                                        "re-run a completed one)"}
    w.click({"type": "retry", "step_id": steps[0].id, "feedback": "  "})
    assert w.last("notice")["text"] == "write some feedback for the next attempt first"


def test_three_hundred_nodes_build_quickly_and_stay_small(store):
    ss, run, steps = planned_run(store, 300, parallel=True)
    with RunFeed(run.id, store=store, live=False) as feed:
        started = time.perf_counter()
        graph = run_graph(feed.run, feed.steps, feed.approvals)
        elapsed = time.perf_counter() - started
    assert len(graph["nodes"]) == 302 and len(graph["edges"]) == 1 + 299 + 299
    assert elapsed < 0.5
    assert len(json.dumps(graph)) < 100_000


def test_a_dag_without_a_run_draws_what_it_is_given(wire):
    dag = DagWidget(graph={"nodes": [{"id": "a", "status": "running"}], "edges": []})
    clicks = []
    dag.on_node_click(clicks.append)
    w = wire(dag)
    w.click({"type": "node_click", "id": "a"})
    assert clicks == ["a"] and dag.selected == "a"
