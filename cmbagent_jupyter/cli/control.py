"""Execution control from the terminal: approvals, retries, branches, replays, comparison."""

from __future__ import annotations

from typing import Optional

import typer
from rich.table import Table

from cmbagent_jupyter.cli.common import JSON_OPTION, console, fail_cleanly, open_store, print_json
from cmbagent_jupyter.models import ApprovalRequest


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
        args = {"pending_only": not all_}
        if session:
            args["session_id"] = store.resolve_session(session).id
        else:
            args["all_sessions"] = True
        rows = [ApprovalRequest.model_validate(r) for r in store.call("approval.list", **args)]
        if as_json:
            print_json(rows)
            return
        names = {s.id: s.name for s in store.list_sessions(include_archived=True)}
        console.print(_approval_table(rows, names))


def _resolve(approval_id: str, decision: str, feedback: Optional[str], as_json: bool) -> None:
    with fail_cleanly(), open_store() as store:
        found = store.call("approval.find", approval_id=approval_id)
        row = store.session(found["session_id"]).call(
            "approval.resolve", approval_id=approval_id, decision=decision, feedback=feedback, actor="cli")
        a = ApprovalRequest.model_validate(row)
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


def register(app: typer.Typer) -> None:
    app.command("approvals")(approvals)
    app.command("approve")(approve)
    app.command("reject")(reject)
    app.command("modify")(modify)
    app.command("compare")(compare)
    app.command("branches")(branches)
