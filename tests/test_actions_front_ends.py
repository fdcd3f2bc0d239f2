"""One action, every front end: the same decision taken from the terminal, a notebook magic,
the REST server and a widget is stored the same; so is a retry with feedback from the
Python API, the terminal and the DAG widget. Only who took it differs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from fixtures.cli import cmbagent
from fixtures.engine import counting_code

from cmbagent_jupyter import open_session
from cmbagent_jupyter.core import RETRY_FEEDBACK_KIND, RunStatus
from cmbagent_jupyter.magics import register
from cmbagent_jupyter.widgets import ApprovalWidget, RunView

FEEDBACK = "  use 50 bins, not 20  "
STATUS = {"approve": "approved", "reject": "rejected", "modify": "modified"}
FRONT_ENDS = ("cli", "magics", "rest", "widget")


def waiting_run(ss, task: str):
    """A run that has asked for its plan to be approved."""
    run = ss.create_run(task)
    ss.put_plan(run.id, [{"key": "step_1", "agent": "engineer", "description": "fit"}])
    ss.transition_run(run.id, "planning")
    ss.transition_run(run.id, "executing")
    return ss.create_approval(run.id, "after_planning", request={"summary": "one step", "plan": {"sub_tasks": []}})


@pytest.mark.parametrize("decision", ["approve", "reject", "modify"])
async def test_an_approval_decided_from_any_front_end_is_stored_the_same(decision, api_call, store, cli, api_home,
                                                                         wire):
    from IPython.testing.globalipapp import get_ipython

    ss = store.session(store.create_session("front ends", {"max_concurrent_runs": len(FRONT_ENDS)}).id)
    gates = {front: waiting_run(ss, f"decided from {front}") for front in FRONT_ENDS}

    done = cli(decision, gates["cli"].id, "--feedback", FEEDBACK)
    assert done.code == 0, done.stderr
    shell = get_ipython()
    register(shell, home=api_home)
    shell.run_line_magic("cmbagent", f"{decision} {gates['magics'].id} --feedback '{FEEDBACK}'")
    endpoint = decision if decision in ("approve", "reject") else "resolve"
    body = {"session_id": ss.session_id, "feedback": FEEDBACK, **({"decision": decision} if endpoint == "resolve"
                                                                  else {})}
    reply = await api_call("POST", "approvals", gates["rest"].id, endpoint, body=body)
    assert reply.code == 200, reply.body
    card = wire(ApprovalWidget(gates["widget"].run_id, store=store, live=False))
    card.click({"type": "resolve", "approval_id": gates["widget"].id, "decision": decision, "feedback": FEEDBACK})

    stored = {front: ss.get_approval(gate.id) for front, gate in gates.items()}
    assert {front: a.resolved_by for front, a in stored.items()} == {
        "cli": "cli", "magics": "notebook", "rest": "jupyterlab", "widget": "notebook"}
    assert {(a.status.value, a.decision, a.feedback) for a in stored.values()} == {
        (STATUS[decision], decision, "use 50 bins, not 20")}
    payloads = {}
    for front, gate in gates.items():
        (event,) = ss.events(run_id=gate.run_id, types=["approval.received"])
        assert (event.payload["approval_id"], event.payload["resolved_by"]) == (gate.id, stored[front].resolved_by)
        payloads[front] = {k: v for k, v in event.payload.items() if k not in ("approval_id", "resolved_by")}
    assert payloads["cli"] == {"decision": decision, "status": STATUS[decision], "feedback": "use 50 bins, not 20",
                               "kind": "after_planning", "step_id": None}
    assert all(p == payloads["cli"] for p in payloads.values()), payloads


FIXED = "read the calibration from data/calibration.txt"
EXECUTOR = {"executor": [{"tool_calls": [{"name": "run_python", "arguments": {"filename": "{code_file}"}}]},
                         {"content": "Ran {code_file}."}]}
PLAN = {"sub_tasks": [{"key": "s1", "sub_task": "do s1", "sub_task_agent": "engineer"},
                      {"key": "s2", "sub_task": "do s2", "sub_task_agent": "engineer", "depends_on": ["s1"]}]}


def retry_scenario(path: Path) -> Path:
    """s1 works; s2 fails until it is told FIXED."""
    path.write_text(yaml.safe_dump({"name": path.stem, "price": {"input_per_mtok": 0, "output_per_mtok": 0},
                                    "defaults": EXECUTOR, "turns": [
        {"agent": "engineer", "step": "s1", "content": counting_code("s1")},
        {"agent": "engineer", "step": "s2", "turn": 1, "content": counting_code("s2", fail=True)},
        {"agent": "engineer", "step": "s2", "when": FIXED, "content": counting_code("s2", value="calibrated")}]}))
    return path


def what_the_retry_left(handle) -> dict:
    """The stored feedback record, the retried attempt's feedback and the retry.started event, minus the actor."""
    step = handle.step("s2")
    (record,) = [a for a in handle.approvals(pending_only=False) if a.kind == RETRY_FEEDBACK_KIND]
    first, second = handle.ss.list_attempts(step_id=step.id)
    (started,) = handle.events(types=["retry.started"])
    return {
        "record": (record.step_id == step.id, record.status.value, record.decision, record.feedback,
                   {k: v for k, v in record.request.items() if k != "source"}),
        "actor": (record.resolved_by, record.request["source"]),
        "attempts": (first.feedback, second.status.value, second.feedback),
        "retry.started": {k: v for k, v in started.payload.items() if k != "step_id"},
    }


def test_a_retry_with_feedback_from_the_api_the_cli_and_the_dag_is_stored_the_same(engine_home, tmp_path, wire):
    scenario = retry_scenario(tmp_path / "retry.yaml")
    session = open_session("retries", home=engine_home)

    def failed_run():
        handle = session.run("calibrate", mode="control", plan=PLAN, scenario=str(scenario), max_n_attempts=1,
                             quiet=True)
        assert handle.wait(60).status == RunStatus.failed
        return handle

    by_api = failed_run()
    by_api.retry("s2", f"  {FIXED}\n", wait=True)
    by_cli = failed_run()
    done = cmbagent(engine_home, "retry", by_cli.step("s2").id, "--feedback", f"{FIXED}  ", "--wait")
    assert done.returncode == 0, done.stdout + done.stderr
    by_dag = failed_run()
    view = RunView(by_dag.id, store=by_dag.store, live=False)
    try:
        dag = wire(view.dag)
        dag.click({"type": "retry", "step_id": by_dag.step("s2").id, "feedback": f" {FIXED} "})
        assert dag.last("notice")["text"] == f"step 2 will be retried with your feedback (run {by_dag.id} resumed)"
        assert by_dag.wait(60).status == RunStatus.completed
    finally:
        view.close()

    left = {"python": what_the_retry_left(by_api), "cli": what_the_retry_left(by_cli),
            "notebook": what_the_retry_left(by_dag)}
    for actor, found in left.items():
        assert found.pop("actor") == (actor, actor)
    assert left["python"] == {
        "record": (True, "approved", "retry", FIXED, {"title": "Retry step 2 with feedback", "summary": FIXED,
                                                      "step": "s2"}),
        "attempts": (None, "completed", FIXED),
        "retry.started": {"attempt": 2, "feedback": FIXED},
    }
    assert left["cli"] == left["python"] and left["notebook"] == left["python"]
    for handle in (by_api, by_cli, by_dag):
        assert handle.status().status == RunStatus.completed
        assert (Path(handle.status().path) / "control" / "data" / "s2.txt").read_text() == "calibrated"
