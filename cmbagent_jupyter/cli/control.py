"""Execution control from the terminal: approvals, retries, branches, replays, comparison.

`retry`, `play-from` and `branch` write their decision to the store, then continue the
run: here, followed live, with `--wait`; otherwise in a detached `cmbagent resume`
process whose output goes to the run folder's `resume.log`.
"""

from __future__ import annotations

from typing import Optional

import typer
from rich.table import Table
from rich.tree import Tree

from cmbagent_jupyter import actions
from cmbagent_jupyter.actions import Detached, Execution, InProcess
from cmbagent_jupyter.cli.common import JSON_OPTION, console, err_console, fail_cleanly, open_store, print_json
from cmbagent_jupyter.cli.runs import follow_here
from cmbagent_jupyter.core import ApprovalRequest
from cmbagent_jupyter.store import StorePort

ACTOR = "cli"


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
        a = actions.decide(store, approval_id, decision, feedback=feedback, actor=ACTOR)
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
    with fail_cleanly(), open_store() as store:
        result = actions.compare_runs(store, run_a, run_b)
        if as_json:
            print_json(result)
            return
        t = Table("step", "agent", f"{run_a[:12]} status", f"{run_b[:12]} status", "same output", "cost A", "cost B")
        for row in result.steps:
            t.add_row(str(row.number), row.agent, row.a_status or "-", row.b_status or "-",
                      "yes" if row.same_output else "no", f"${row.a_cost:.4f}", f"${row.b_cost:.4f}")
        console.print(t)
        console.print(f"total cost: A ${result.a_cost:.4f}   B ${result.b_cost:.4f}", highlight=False)


def branches(
    run_id: str = typer.Argument(..., help="Any run of the tree."),
    as_json: bool = JSON_OPTION,
) -> None:
    """The tree of branches a run belongs to."""
    with fail_cleanly(), open_store() as store:
        tree = actions.branch_tree(store, run_id)
        if as_json:
            print_json(tree)
            return

        def add(node: Tree, item: actions.BranchNode) -> None:
            for child in item.children:
                label = f"{child.run_id} [{child.status}] {child.name} (from step {child.from_step})"
                add(node.add(label), child)

        root = Tree(f"{tree.run_id} [{tree.status}] {tree.task[:60]}")
        add(root, tree)
        console.print(root)


WAIT_OPTION = typer.Option(False, "--wait/--no-wait", help="Run here and follow it to its end (default: start a "
                                                         "detached `cmbagent resume` and return).")


def _executor(store: StorePort, wait: bool) -> InProcess | Detached:
    """Here, followed live (--wait), or in a detached `cmbagent resume` process."""
    return InProcess(store) if wait else Detached(store.home)


def _continued(store: StorePort, execution: Execution, *, as_json: bool, what: str) -> None:
    """Say where the run goes on; follow it when it goes on here."""
    if execution.where == "here":
        (err_console if as_json else console).print(f"{what}; running run {execution.run_id} here", highlight=False)
        follow_here(store, execution, as_json=as_json)
        return
    if as_json:
        print_json({"run_id": execution.run_id, "resumed_by_pid": execution.pid, "log": execution.log})
    else:
        console.print(f"{what}; run {execution.run_id} continues in process {execution.pid} (log: {execution.log}); "
                      f"follow it with: cmbagent status {execution.run_id}", highlight=False, soft_wrap=True)


def retry(
    step_id: str = typer.Argument(..., help="The failed step (step id, as `cmbagent status RUN --json` lists)."),
    feedback: str = typer.Option(..., "--feedback", "-f", help="What the next attempt should do differently."),
    wait: bool = WAIT_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Retry a failed step with your feedback; its next attempt also sees the earlier errors.
    Example: cmbagent retry step_0123456789abcdef --feedback "simulate the map instead of reading it" """
    with fail_cleanly(), open_store() as store:
        step = store.find_step(step_id)
        out = actions.retry_step(store, step.run_id, step.id, feedback, actor=ACTOR, session_id=step.session_id,
                                 executor=_executor(store, wait))
        if out.answered_gate:
            if as_json:
                print_json({"run_id": out.run_id, "step_id": step.id, "answered_gate": True})
            else:
                console.print(f"step {step.number} ({step.key}) will be retried with your feedback by the waiting run",
                              highlight=False)
            return
        _continued(store, out.execution, as_json=as_json,
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
        step = store.find_step(step_id)
        out = actions.play_from(store, step.run_id, step.id, instructions, actor=ACTOR, session_id=step.session_id,
                                executor=_executor(store, wait))
        _continued(store, out.execution, as_json=as_json,
                   what=f"replaying from step {step.number} ({step.key}): {', '.join(out.reset)} reset")


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
    with fail_cleanly(), open_store() as store:
        out = actions.branch(store, run_id, from_step, actor=ACTOR, name=name, instructions=instructions,
                             hypothesis=hypothesis, executor=_executor(store, wait))
        kept = out.reused_steps or "none"
        (err_console if as_json else console).print(
            f"branch {out.run.id} of {out.parent_run_id} from step {from_step}; kept steps {kept}", highlight=False)
        _continued(store, out.execution, as_json=as_json, what=f"branch {out.run.id} created")


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
