"""The JupyterLab sidebar in Chromium: sessions listed, a kernel's run waiting for
approval shown with Approve / Reject, and Approve in the sidebar letting it go on."""

from __future__ import annotations

import re
import time

import pytest

from fixtures.kernels import blocking_python_kernel, submit_cell, wait_cell
from fixtures.waiting import wait_for

WAIT_FOR_APPROVAL = """
import pathlib
import time
from cmbagent_jupyter.store import open_store

ss = open_store().session({session_id!r})
run = ss.create_run("Fit a toy CMB power spectrum")
steps = ss.put_plan(run.id, [
    {{"key": "step_1", "agent": "engineer", "description": "compute the spectrum"}},
    {{"key": "step_2", "agent": "researcher", "description": "write it up", "depends_on": ["step_1"]}},
])
ss.transition_run(run.id, "planning")
ss.transition_run(run.id, "executing")
decided = ss.subscribe(run_id=run.id, types=["approval.received"])
approval = ss.create_approval(run.id, "after_planning", request={{"question": "Carry out the 2-step plan?"}})
deadline = time.monotonic() + 300
while ss.get_approval(approval.id).status.value == "pending" and time.monotonic() < deadline:
    decided.get(timeout=5)
decision = ss.get_approval(approval.id)
ss.transition_run(run.id, "executing", reason="approved")
for step in steps:
    ss.transition_step(step.id, "running")
    ss.transition_step(step.id, "completed")
ss.transition_run(run.id, "completed")
print(run.id, decision.status.value, decision.resolved_by, decision.feedback)
"""


def open_sidebar(browser, server):
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.goto(f"{server.url}lab?token={server.token}")
    page.locator('.jp-SideBar li[data-id="cmbagent-sidebar"]').click(timeout=90_000)
    page.locator('#cmbagent-sidebar .cmbagent-connection[data-state="open"]').wait_for(timeout=30_000)
    news = page.locator(".jp-Notification-Toast-Close")  # JupyterLab's "get news?" toast, not ours
    if news.count():
        news.first.click()
    return page


@pytest.mark.browser
def test_approve_in_the_sidebar_lets_the_kernels_run_continue(
        cmb_home, store, jupyter_lab_server, chromium_browser, artifacts_dir):
    alpha = store.create_session("alpha")
    store.create_session("beta")
    page = open_sidebar(chromium_browser, jupyter_lab_server)
    sessions = page.locator("#cmbagent-sidebar .cmbagent-session-name")
    sessions.nth(1).wait_for(timeout=30_000)
    assert sessions.all_inner_texts() == ["alpha", "beta"]

    with blocking_python_kernel(cmb_home) as kernel:
        cell = submit_cell(kernel, WAIT_FOR_APPROVAL.format(session_id=alpha.id))
        approval = page.locator("#cmbagent-sidebar .cmbagent-approval")
        approval.wait_for(timeout=60_000)
        run_item = page.locator('#cmbagent-sidebar .cmbagent-run[data-status="waiting_approval"]')
        run_item.wait_for(timeout=30_000)
        approval.locator(".cmbagent-feedback").fill("Looks right, go ahead")
        page.screenshot(path=str(artifacts_dir / "sidebar_approval.png"))
        assert "Carry out the 2-step plan?" in approval.inner_text()

        approval.locator(".cmbagent-approve").click()
        printed = wait_cell(kernel, cell, timeout=120)

    run_id, status, resolved_by, feedback = printed.split(maxsplit=3)
    assert (status, resolved_by, feedback.strip()) == ("approved", "jupyterlab", "Looks right, go ahead")
    page.locator(f'#cmbagent-sidebar .cmbagent-run[data-run-id="{run_id}"][data-status="completed"]').wait_for(
        timeout=30_000)
    assert page.locator("#cmbagent-sidebar .cmbagent-approval").count() == 0
    assert store.session(alpha.id).get_run(run_id).status.value == "completed"
    page.screenshot(path=str(artifacts_dir / "sidebar_approved.png"))


def run_command(page, label: str) -> None:
    page.keyboard.press("Control+Shift+C")
    page.locator(".lm-CommandPalette-input").fill(label)
    page.locator(".lm-CommandPalette-item", has_text=label).first.click()


def answer_dialog(page, text: str) -> None:
    dialog = page.locator(".jp-Dialog")
    dialog.locator("input").fill(text)
    dialog.locator(".jp-Dialog-button.jp-mod-accept").click()


@pytest.mark.browser
def test_palette_creates_a_session_and_opens_a_live_run_dag(
        cmb_home, store, jupyter_lab_server, chromium_browser, artifacts_dir):
    from playwright.sync_api import expect

    alpha = store.session(store.create_session("alpha").id)
    run = alpha.create_run("Fit a toy CMB power spectrum")
    steps = alpha.put_plan(run.id, [
        {"key": "step_1", "agent": "engineer", "description": "compute"},
        {"key": "step_2", "agent": "engineer", "description": "simulate", "depends_on": ["step_1"]},
        {"key": "step_3", "agent": "researcher", "description": "report", "depends_on": ["step_2"]},
    ])
    alpha.transition_run(run.id, "planning")
    alpha.transition_run(run.id, "executing")
    alpha.transition_step(steps[0].id, "running")
    alpha.transition_step(steps[0].id, "completed")
    page = open_sidebar(chromium_browser, jupyter_lab_server)

    run_command(page, "CMBAgent: new session")
    answer_dialog(page, "gamma")
    page.locator("#cmbagent-sidebar .cmbagent-session-name", has_text="gamma").wait_for(timeout=30_000)
    run_command(page, "CMBAgent: open run")
    answer_dialog(page, run.id)
    dag = page.locator(".cmbagent-dag-panel")
    dag.locator(f'[data-node="{steps[0].id}"][data-status="completed"]').wait_for(timeout=30_000)
    alpha.transition_step(steps[1].id, "running")
    dag.locator(f'[data-node="{steps[1].id}"][data-status="running"]').wait_for(timeout=30_000)
    page.screenshot(path=str(artifacts_dir / "sidebar_run_dag.png"))

    assert [s.name for s in store.list_sessions()] == ["alpha", "gamma"]
    assert dag.locator(".cmbagent-dag-node").count() == 5  # plan, three steps, done
    assert dag.locator(f'[data-node="{steps[2].id}"]').get_attribute("data-status") == "pending"
    assert dag.locator('[data-node="step_3"]').count() == 0  # nodes are named by step id, not key
    assert dag.locator('[data-key="step_3"]').get_attribute("data-node") == steps[2].id
    assert "executing" in dag.locator(".cmbagent-dag-header").inner_text()
    # the edge out of a completed step is drawn as met, the others not
    assert dag.locator(f'.cmbagent-dag-edge[data-source="{steps[0].id}"]').get_attribute("data-met") == "true"
    assert dag.locator(f'.cmbagent-dag-edge[data-source="{steps[1].id}"]').get_attribute("data-met") == "false"

    dag.locator(f'[data-node="{steps[1].id}"]').click()
    detail = dag.locator(".cmbagent-dag-panel-detail")
    expect(detail).to_have_attribute("data-selected", steps[1].id)
    expect(detail).to_contain_text("2. step_2 (engineer): running")
    expect(detail).to_contain_text("simulate")

    # the run's buttons follow the state sets Python defines: pause while running, resume once stopped
    item = page.locator(f'#cmbagent-sidebar .cmbagent-run[data-run-id="{run.id}"]')
    expect(item.locator(".cmbagent-pause")).to_have_count(1)
    expect(item.locator(".cmbagent-resume")).to_have_count(0)
    alpha.transition_run(run.id, "paused")
    expect(item).to_have_attribute("data-status", "paused", timeout=30_000)
    expect(item.locator(".cmbagent-resume")).to_have_count(1)
    expect(item.locator(".cmbagent-pause")).to_have_count(0)
    expect(dag.locator(".cmbagent-dag-header")).to_contain_text("paused", timeout=30_000)


@pytest.mark.browser
def test_sidebar_reconnects_with_backoff_and_since_after_the_socket_drops(
        cmb_home, store, jupyter_lab_server, chromium_browser):
    alpha = store.create_session("alpha")
    attempts: list[tuple[float, str]] = []
    live = []
    refuse = {"left": 0}

    def route(ws):
        attempts.append((time.monotonic(), ws.url))
        if refuse["left"] > 0:  # the socket opens, then drops before any state: a broken stream
            refuse["left"] -= 1
            ws.close()
            return
        ws.connect_to_server()
        live.append(ws)

    page = chromium_browser.new_page(viewport={"width": 1400, "height": 900})
    page.route_web_socket(re.compile(r".*/cmbagent/api/events.*"), route)
    page.goto(f"{jupyter_lab_server.url}lab?token={jupyter_lab_server.token}")
    page.locator('.jp-SideBar li[data-id="cmbagent-sidebar"]').click(timeout=90_000)
    connection = page.locator("#cmbagent-sidebar .cmbagent-connection")
    page.locator('#cmbagent-sidebar .cmbagent-connection[data-state="open"]').wait_for(timeout=30_000)
    page.locator("#cmbagent-sidebar .cmbagent-session-name", has_text="alpha").wait_for(timeout=30_000)
    last_seen = store.events_all()[-1].gseq

    refuse["left"] = 2
    live[0].close()
    dropped_at = time.monotonic()
    store.create_session("made while away")
    page.locator("#cmbagent-sidebar .cmbagent-session-name", has_text="made while away").wait_for(timeout=60_000)

    assert connection.get_attribute("data-state") == "open"
    times = [t for t, _ in attempts[1:]]
    gaps = [times[0] - dropped_at, times[1] - times[0], times[2] - times[1]]
    assert len(attempts) == 4, attempts
    assert 0.9 <= gaps[0] < 1.9 and 1.9 <= gaps[1] < 3.9 and 3.9 <= gaps[2] < 7.9, gaps  # 1 s, 2 s, 4 s
    assert "since=" not in attempts[0][1]
    assert all(f"since={last_seen}" in url for _, url in attempts[1:]), attempts


START_GATED_RUN = """
from cmbagent_jupyter.api import open_session
run = open_session({name!r}).run("Fit a toy CMB power spectrum", approval_mode="after_planning")
print(run.id)
"""


@pytest.mark.browser
def test_engine_run_gated_after_planning_continues_when_approved_in_the_sidebar(
        cmb_home, store, jupyter_lab_server, chromium_browser, artifacts_dir):
    page = open_sidebar(chromium_browser, jupyter_lab_server)

    with blocking_python_kernel(cmb_home) as kernel:
        run_id = wait_cell(kernel, submit_cell(kernel, START_GATED_RUN.format(name="engine")), 120).split()[-1]
        card = page.locator(f'#cmbagent-sidebar .cmbagent-approval[data-run-id="{run_id}"]')
        card.wait_for(timeout=60_000)
        buttons = card.locator("button").all_inner_texts()
        assert "Approve the plan" in card.locator(".cmbagent-approval-title").inner_text()
        page.screenshot(path=str(artifacts_dir / "sidebar_engine_approval.png"))
        card.locator(".cmbagent-approve").click()
        status = wait_cell(kernel, submit_cell(kernel, "print(run.wait(300).status.value)"), 300)

    assert buttons == ["Approve", "Reject", "Modify"]
    assert status.strip() == "completed"
    page.locator(f'#cmbagent-sidebar .cmbagent-run[data-run-id="{run_id}"][data-status="completed"]').wait_for(
        timeout=30_000)
    session = store.find_run(run_id).session_id
    spent = sum(r.cost_usd for r in store.session(session).cost_summary())
    head = page.locator(f'#cmbagent-sidebar .cmbagent-session[data-session-id="{session}"] .cmbagent-session-head')
    wait_for(lambda: head.locator(".cmbagent-cost").inner_text() == f"${spent:.4f}", 30, "the session's cost")
    decision = store.session(session).list_approvals(run_id=run_id, pending_only=False)[0]
    assert (decision.status, decision.resolved_by) == ("approved", "jupyterlab")
