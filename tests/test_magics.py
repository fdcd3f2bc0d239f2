"""%cmbagent and %%cmbagent in a real IPython shell: runs, control, listings, one-line errors."""

from __future__ import annotations

import pytest
from fixtures.store import planned_run

from cmbagent_jupyter.magics import register

SUBCOMMANDS = ["run", "status", "show", "wait", "pause", "resume", "cancel", "approvals", "approve", "reject",
               "modify", "branch", "sessions", "cost", "agents"]


@pytest.fixture
def shell(api_home):
    """The test IPython shell with a fresh `%cmbagent` (no last run) for this test's home."""
    from IPython.testing.globalipapp import get_ipython

    ip = get_ipython()
    magics = register(ip)
    yield ip
    view = getattr(magics.last_run, "_run_view", None)
    if view is not None:
        view.close()


def magic(ip, line: str, cell: str | None = None):
    if cell is None:
        return ip.run_line_magic("cmbagent", line)
    return ip.run_cell_magic("cmbagent", line, cell)


def one_line_error(capsys) -> str:
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert "Traceback" not in captured.err + captured.out
    assert len(lines) == 1, f"expected one error line, got: {captured.err!r}"
    assert lines[0].startswith("cmbagent: error: "), lines[0]
    return lines[0].removeprefix("cmbagent: error: ")


def test_load_ext_registers_the_magics():
    from IPython.testing.globalipapp import get_ipython

    ip = get_ipython()
    ip.run_line_magic("load_ext", "cmbagent_jupyter")
    assert ip.find_line_magic("cmbagent") is not None
    assert ip.find_cell_magic("cmbagent") is not None


def test_help_lists_every_subcommand_with_examples(shell, capsys):
    doc = shell.find_line_magic("cmbagent").__doc__
    for name in SUBCOMMANDS:
        assert f"\n  {name}" in doc or f"| {name}" in doc, f"{name} is not in the %cmbagent? help"
    assert '%cmbagent run "Fit the CMB power spectrum" --scenario cmb_power_spectrum' in doc
    assert "%%cmbagent --scenario cmb_power_spectrum" in doc
    magic(shell, "")
    assert "Subcommands" in capsys.readouterr().out


def test_run_returns_a_handle_at_once_and_status_and_cost_describe_it(shell, capsys):
    handle = magic(shell, 'run "Compute the CMB power spectrum" --scenario cmb_power_spectrum --session magics')
    assert handle.status().task == "Compute the CMB power spectrum"
    assert handle.status().status.value in ("draft", "planning", "executing", "completed")
    magic(shell, "wait --timeout 180")
    assert capsys.readouterr().out.strip().endswith(f"run {handle.id} completed")

    magic(shell, "status")
    out = capsys.readouterr().out
    assert f"run {handle.id}  completed" in out and "steps: 6/6 completed" in out
    assert "step_6  researcher  completed" in out

    magic(shell, f"cost {handle.id}")
    out = capsys.readouterr().out
    assert out.startswith(f"run {handle.id}: $0.0000,") and "planner" in out and "scripted/cmb_power_spectrum" in out

    magic(shell, "sessions")
    assert "magics" in capsys.readouterr().out


def test_the_cell_magic_takes_the_task_from_the_body(shell):
    handle = magic(shell, "--scenario cmb_power_spectrum --mode deep_research --wait",
                   "Compute the CMB temperature power spectrum\nof a toy map.\n")
    run = handle.status()
    assert run.task == "Compute the CMB temperature power spectrum\nof a toy map."
    assert run.status.value == "completed" and run.model == "scripted:cmb_power_spectrum"


@pytest.mark.parametrize("line, message", [
    ("status", "no run given and none started in this kernel: name one, e.g. %cmbagent status RUN_ID"),
    ("status run_0123456789abcdef", "run run_0123456789abcdef does not exist"),
    ("status run_x", "malformed run id 'run_x': expected 'run_' followed by 12-32 lowercase hex digits"),
    ("frobnicate", "unknown subcommand 'frobnicate'; use one of run, status, show, wait, pause, resume, cancel, "
                   "approvals, approve, reject, modify, branch, sessions, cost, agents (see %cmbagent?)"),
    ('run "x" --bogus', "unrecognized arguments: --bogus"),
    ('run "unterminated', "cannot read the arguments: No closing quotation"),
    ("run", 'a run needs a task: %cmbagent run "TASK" (or the body of a %%cmbagent cell)'),
    ('run "x" --mode sideways', "unknown mode 'sideways'; expected one of one_shot, deep_research, "
                                "planning_and_control, control"),
    ("approve", "no approval is waiting"),
    ("approve apr_0123456789abcdef", "approval apr_0123456789abcdef does not exist"),
])
def test_errors_are_one_line(shell, capsys, line, message):
    assert magic(shell, line) is None
    assert one_line_error(capsys) == message


def test_approve_and_reject_resolve_through_the_store(shell, store, capsys):
    ss, run, _ = planned_run(store, 1)
    first = ss.create_approval(run_id=run.id, kind="after_planning")
    magic(shell, f"approvals {run.id}")
    assert first.id in capsys.readouterr().out
    magic(shell, f"approve {first.id} --feedback 'looks right'")
    assert capsys.readouterr().out.strip() == f"approval {first.id} (after_planning) approved: looks right"
    assert ss.get_approval(approval_id=first.id).resolved_by == "notebook"

    second = ss.create_approval(run_id=run.id, kind="before_each_step")
    magic(shell, f"reject {second.id}")
    assert one_line_error(capsys) == "reject needs feedback that says what to change"
    magic(shell, f"reject {second.id} -f 'use 50 bins'")
    assert capsys.readouterr().out.strip().endswith("rejected: use 50 bins")


def test_branch_creates_a_run_that_keeps_earlier_steps(shell, store, capsys):
    ss, run, steps = planned_run(store, 3)
    for s in steps:
        ss.transition_step(s.id, "running")
        ss.transition_step(s.id, "completed", outputs={"summary": s.key})
    ss.transition_run(run.id, "completed")
    assert magic(shell, f"branch {run.id} --from-step 2 --name 'more bins' --no-start") is None
    out = capsys.readouterr().out
    assert f"from step 2 of {run.id} (keeps steps 1)" in out
    child = next(r for r in ss.list_runs() if r.parent_run_id == run.id)
    assert [s.status.value for s in ss.list_steps(child.id)] == ["completed", "pending", "pending"]


def test_agents_lists_the_step_agents(shell, capsys):
    magic(shell, "agents")
    out = capsys.readouterr().out
    assert "engineer" in out and "researcher" in out and "planner" in out


def test_show_pause_and_cancel_act_on_any_run(shell, store, capsys):
    ss, run, _ = planned_run(store, 2)
    view = magic(shell, f"show {run.id}")
    try:
        assert view.run_id == run.id and view.dag.graph["nodes"]
    finally:
        view.close()
    magic(shell, f"pause {run.id}")
    out = capsys.readouterr().out.strip()
    after = ss.get_run(run.id)
    assert after.status.value == "paused" or after.pause_requested, out
    assert out.startswith(f"run {run.id}")
    magic(shell, f"cancel {run.id}")
    assert capsys.readouterr().out.strip() == f"run {run.id} cancelled"
    assert ss.get_run(run.id).status.value == "cancelled"
    magic(shell, f"resume {run.id}")
    assert "cancelled" in one_line_error(capsys)
