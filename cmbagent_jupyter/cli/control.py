"""Execution control from the terminal: approvals, retries, branches, replays, comparison.

`retry`, `play-from` and `branch` write their decision to the store, then continue the
run: here, followed live, with `--wait`; otherwise in a detached `cmbagent resume`
process whose output goes to the run folder's `resume.log`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

import typer
from rich.table import Table

from cmbagent_jupyter.cli.common import JSON_OPTION, console, err_console, fail_cleanly, open_store, print_json
from cmbagent_jupyter.core import ApprovalRequest


def _approval_table(rows: list[ApprovalRequest], names: dict[str, str]) -> Table:
    t = Table("id", "session", "run", "kind", "step", "status", "asked", "summary")
    for a in rows:
        summary = str(a.request.get("summary") or a.request.get("title") or "")[:60]
        t.add_row(a.id, names.get(a.session_id, a.session_id), a.run_id, a.kind, a.step_id or "", a.status.value,
                  a.created_at.strftime("%m-%d %H:%M"), summary)
    return t


def approvals(
    session: Optional[str] = typer.Option(None, "--session", "-s", help="Only this session (id or name)."),
    all_: bool = typer.Option(False, "--all", help="Include resolved approvals."),
    as_json: bool = JSON_OPTION,
) -> None:
    """List approvals waiting for a decision.  Example: cmbagent approvals --session "Project X" """
    with fail_cleanly(), open_store() as store:
        if session:
            rows = store.session(store.resolve_session(session).id).list_approvals(pending_only=not all_)
        else:
            rows = store.list_approvals(pending_only=not all_)
        if as_json:
            print_json(rows)
            return
        names = {s.id: s.name for s in store.list_sessions(include_archived=True)}
        console.print(_approval_table(rows, names))


def _resolve(approval_id: str, decision: str, feedback: Optional[str], as_json: bool) -> None:
    with fail_cleanly(), open_store() as store:
        found = store.find_approval(approval_id)
        a = store.session(found.session_id).resolve_approval(approval_id, decision, feedback=feedback, actor="cli")
        if as_json:
            print_json(a)
        else:
            console.print(f"approval {a.id} ({a.kind}) {a.status.value}" + (f": {a.feedback}" if a.feedback else ""),
                          highlight=False)


def approve(
    approval_id: str = typer.Argument(..., help="Approval id (apr_...)."),
    feedback: Optional[str] = typer.Option(None, "--feedback", "-f", help="Guidance passed to the next agent turn."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Approve a pending request.  Example: cmbagent approve apr_0123456789abcdef --feedback "ok" """
    _resolve(approval_id, "approve", feedback, as_json)


def reject(
    approval_id: str = typer.Argument(..., help="Approval id (apr_...)."),
    feedback: str = typer.Option(..., "--feedback", "-f", help="What to change: given to the agent that redoes it."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Reject with feedback: the plan or step is redone with it.  Example: cmbagent reject apr_... -f "use 50 bins" """
    _resolve(approval_id, "reject", feedback, as_json)


def modify(
    approval_id: str = typer.Argument(..., help="Approval id (apr_...)."),
    feedback: str = typer.Option(..., "--feedback", "-f", help="The modification to apply."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Approve with a modification given as feedback."""
    _resolve(approval_id, "modify", feedback, as_json)


def compare(
    run_a: str = typer.Argument(..., help="First run id."),
    run_b: str = typer.Argument(..., help="Second run id."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Steps, outputs and costs of two runs side by side.  Example: cmbagent compare run_... run_..."""
    from cmbagent_jupyter.engine.compare import compare_runs

    with fail_cleanly(), open_store() as store:
        result = compare_runs(store, run_a, run_b)
        if as_json:
            print_json(result)
            return
        t = Table("step", "agent", f"{run_a[:12]} status", f"{run_b[:12]} status", "same output", "cost A", "cost B")
        for row in result["steps"]:
            t.add_row(str(row["number"]), row["agent"], row["a_status"] or "-", row["b_status"] or "-",
                      "yes" if row["same_output"] else "no", f"${row['a_cost']:.4f}", f"${row['b_cost']:.4f}")
        console.print(t)
        console.print(f"total cost: A ${result['a_cost']:.4f}   B ${result['b_cost']:.4f}", highlight=False)


def branches(
    run_id: str = typer.Argument(..., help="Any run of the tree."),
    as_json: bool = JSON_OPTION,
) -> None:
    """The tree of branches a run belongs to."""
    from rich.tree import Tree

    from cmbagent_jupyter.engine.compare import branch_tree

    with fail_cleanly(), open_store() as store:
        tree = branch_tree(store, run_id)
        if as_json:
            print_json(tree)
            return

        def add(node: Tree, item: dict) -> None:
            for child in item["children"]:
                label = f"{child['run_id']} [{child['status']}] {child['name']} (from step {child['from_step']})"
                add(node.add(label), child)

        root = Tree(f"{tree['run_id']} [{tree['status']}] {tree['task'][:60]}")
        add(root, tree)
        console.print(root)


WAIT_OPTION = typer.Option(False, "--wait/--no-wait", help="Run here and follow it to its end (default: start a "
                                                         "detached `cmbagent resume` and return).")


def _continue(store: Any, handle: Any, *, wait: bool, as_json: bool, what: str) -> None:
    """Resume the run here (followed live) or in a detached process."""
    from cmbagent_jupyter.cli.runs import _execute_here
    from cmbagent_jupyter.llm.providers import resolve_model

    run = handle.status()
    if wait:
        choice = resolve_model(run.model, home=store.home)
        (err_console if as_json else console).print(f"{what}; running run {run.id} here", highlight=False)
        _execute_here(store, handle, choice, max_parallel=None, as_json=as_json)
        return
    pid = start_detached_resume(store.home, run.id, Path(run.path))
    if as_json:
        print_json({"run_id": run.id, "resumed_by_pid": pid, "log": str(Path(run.path) / "resume.log")})
    else:
        console.print(f"{what}; run {run.id} continues in process {pid} (log: {Path(run.path) / 'resume.log'}); "
                      f"follow it with: cmbagent status {run.id}", highlight=False, soft_wrap=True)


def start_detached_resume(home: Path, run_id: str, run_path: Path) -> int:
    """`cmbagent resume RUN_ID` in its own session, so it outlives this command."""
    log = open(run_path / "resume.log", "ab")
    code = "import sys; from cmbagent_jupyter.cli import main; sys.exit(main())"
    env = {**os.environ, "CMBAGENT_HOME": str(home)}
    try:
        proc = subprocess.Popen([sys.executable, "-c", code, "resume", run_id], stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                cwd=str(run_path))
    finally:
        log.close()
    return proc.pid


def _handle_of_step(store: Any, step_id: str) -> tuple[Any, Any]:
    from cmbagent_jupyter.api import RunHandle

    step = store.find_step(step_id)
    return RunHandle(store, step.session_id, step.run_id), step


def retry(
    step_id: str = typer.Argument(..., help="The failed step (step id, as `cmbagent status RUN --json` lists)."),
    feedback: str = typer.Option(..., "--feedback", "-f", help="What the next attempt should do differently."),
    wait: bool = WAIT_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Retry a failed step with your feedback; its next attempt also sees the earlier errors.
    Example: cmbagent retry step_0123456789abcdef --feedback "simulate the map instead of reading it" """
    with fail_cleanly(), open_store() as store:
        handle, step = _handle_of_step(store, step_id)
        waiting = any(a.step_id == step.id and "retry" in a.options for a in handle.approvals())
        handle.retry(step.id, feedback, start=False, actor="cli")
        if waiting:
            if as_json:
                print_json({"run_id": handle.id, "step_id": step.id, "answered_gate": True})
            else:
                console.print(f"step {step.number} ({step.key}) will be retried with your feedback by the waiting run",
                              highlight=False)
            return
        _continue(store, handle, wait=wait, as_json=as_json,
                  what=f"feedback recorded for step {step.number} ({step.key})")


def play_from(
    step_id: str = typer.Argument(..., help="The step to re-run (step id); its descendants re-run too."),
    instructions: Optional[str] = typer.Option(None, "--instructions", "-i", help="New instructions for the step."),
    wait: bool = WAIT_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Re-run a step and exactly what depends on it, in place; other steps keep their results.
    Example: cmbagent play-from step_0123456789abcdef --instructions "use 50 bins" --wait"""
    with fail_cleanly(), open_store() as store:
        handle, step = _handle_of_step(store, step_id)
        handle.play_from(step.id, instructions, start=False, actor="cli")
        reset = [s.key for s in handle.steps() if s.status.value == "pending"]
        _continue(store, handle, wait=wait, as_json=as_json,
                  what=f"replaying from step {step.number} ({step.key}): {', '.join(reset)} reset")


def branch(
    run_id: str = typer.Argument(..., help="The run to branch."),
    from_step: int = typer.Option(..., "--from-step", help="First step to execute again (earlier ones are kept)."),
    name: Optional[str] = typer.Option(None, "--name", help="Name of the branch."),
    instructions: Optional[str] = typer.Option(None, "--instructions", "-i", help="Changed instructions of the "
                                                                                  "fork step."),
    hypothesis: Optional[str] = typer.Option(None, "--hypothesis", help="What this branch tests."),
    wait: bool = WAIT_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """A new run that keeps the steps before --from-step and executes from there.
    Example: cmbagent branch run_... --from-step 4 --name "fine bins" --instructions "use 50 bins" --wait"""
    from cmbagent_jupyter.api import RunHandle

    with fail_cleanly(), open_store() as store:
        run = store.find_run(run_id)
        parent = RunHandle(store, run.session_id, run.id)
        child = parent.branch(from_step, name=name, instructions=instructions, hypothesis=hypothesis, start=False,
                              actor="cli")
        kept = [s.number for s in child.steps() if s.status.value == "completed"]
        (err_console if as_json else console).print(
            f"branch {child.id} of {run.id} from step {from_step}; kept steps {kept or 'none'}", highlight=False)
        _continue(store, child, wait=wait, as_json=as_json, what=f"branch {child.id} created")


def register(app: typer.Typer) -> None:
    app.command("retry")(retry)
    app.command("play-from")(play_from)
    app.command("branch")(branch)
    app.command("approvals")(approvals)
    app.command("approve")(approve)
    app.command("reject")(reject)
    app.command("modify")(modify)
    app.command("compare")(compare)
    app.command("branches")(branches)
