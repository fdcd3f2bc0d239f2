"""The JupyterLab sidebar in Chromium: sessions listed, a kernel's run waiting for
approval shown with Approve / Reject, and Approve in the sidebar letting it go on."""

from __future__ import annotations

import pytest

from conftest import blocking_python_kernel, submit_cell, wait_cell, wait_for

WAIT_FOR_APPROVAL = """
import pathlib
from cmbagent_jupyter.engine.approvals import ApprovalGate
from cmbagent_jupyter.store import Store

ss = Store().session({session_id!r})
run = ss.create_run("Fit a toy CMB power spectrum")
steps = ss.put_plan(run.id, [
    {{"key": "step_1", "agent": "engineer", "description": "compute the spectrum"}},
    {{"key": "step_2", "agent": "researcher", "description": "write it up", "depends_on": ["step_1"]}},
])
ss.transition_run(run.id, "planning")
ss.transition_run(run.id, "executing")
gate = ApprovalGate(ss, run.id)
approval = gate.request("after_planning", {{"question": "Carry out the 2-step plan?"}})
decision = gate.wait(approval, timeout=300)
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
