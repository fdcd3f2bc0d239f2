"""`cmbagent session ...`: create, list, show, archive, restore, delete, quotas."""

from __future__ import annotations

from typing import Optional

import typer
from rich.table import Table

from cmbagent_jupyter.cli.common import JSON_OPTION, console, fail_cleanly, open_store, print_json

app = typer.Typer(help="Sessions: each has its own directory, runs, costs and quotas.", no_args_is_help=True)


def _table(sessions) -> Table:
    t = Table("id", "name", "status", "max $", "max runs", "max disk MB", "created")
    for s in sessions:
        t.add_row(s.id, s.name, s.status.value, f"{s.quotas.max_cost_usd:g}", str(s.quotas.max_concurrent_runs),
                  f"{s.quotas.max_disk_mb:g}", s.created_at.strftime("%Y-%m-%d %H:%M"))
    return t


@app.command("create")
def create(
    name: str = typer.Option(..., "--name", "-n", help="A readable name, unique among your sessions."),
    max_cost_usd: Optional[float] = typer.Option(None, help="Cost quota in USD (default 100)."),
    max_disk_mb: Optional[float] = typer.Option(None, help="Disk quota in MB (default 10240), checked when a run starts; while under it, the folder is measured again at most every 30 s."),
    max_concurrent_runs: Optional[int] = typer.Option(None, help="Runs active at once (default 3)."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Create a session.  Example: cmbagent session create --name "Project X" """
    quotas = {k: v for k, v in dict(max_cost_usd=max_cost_usd, max_disk_mb=max_disk_mb,
                                    max_concurrent_runs=max_concurrent_runs).items() if v is not None}
    with fail_cleanly(), open_store() as store:
        s = store.create_session(name, quotas)
        if as_json:
            print_json(s)
        else:
            console.print(f"created session [bold]{s.name}[/] ({s.id}) in {s.path}", highlight=False)


@app.command("list")
def list_(
    all_: bool = typer.Option(False, "--all", help="Include archived sessions."),
    as_json: bool = JSON_OPTION,
) -> None:
    """List sessions.  Example: cmbagent session list --all --json"""
    with fail_cleanly(), open_store() as store:
        sessions = store.list_sessions(include_archived=all_)
        if as_json:
            print_json(sessions)
        else:
            console.print(_table(sessions))


@app.command("show")
def show(ref: str = typer.Argument(..., help="Session id or name."), as_json: bool = JSON_OPTION) -> None:
    """Show one session with its usage against its quotas."""
    with fail_cleanly(), open_store() as store:
        s = store.resolve_session(ref)
        usage = store.session(s.id).usage()
        if as_json:
            print_json({**s.model_dump(mode="json"), "usage": usage.model_dump(mode="json")})
            return
        console.print(_table([s]))
        console.print(f"usage: {usage.active_runs} active run(s), ${usage.cost_usd:.4f}, "
                      f"{usage.disk_mb:.1f} MB on disk", highlight=False)


def _set_status(ref: str, verb: str, as_json: bool) -> None:
    with fail_cleanly(), open_store() as store:
        s = store.resolve_session(ref)
        status = {"archive": "archived", "restore": "active", "delete": "deleted"}[verb]
        s = store.session(s.id).set_status(status, actor="cli")
        if as_json:
            print_json(s)
        else:
            console.print(f"session {s.name} ({s.id}) is now {s.status.value}", highlight=False)


@app.command("archive")
def archive(ref: str = typer.Argument(..., help="Session id or name."), as_json: bool = JSON_OPTION) -> None:
    """Archive a session: hidden from lists, data kept.  Example: cmbagent session archive ses_..."""
    _set_status(ref, "archive", as_json)


@app.command("restore")
def restore(ref: str = typer.Argument(..., help="Session id or name."), as_json: bool = JSON_OPTION) -> None:
    """Make an archived session active again."""
    _set_status(ref, "restore", as_json)


@app.command("delete")
def delete(ref: str = typer.Argument(..., help="Session id or name."), as_json: bool = JSON_OPTION) -> None:
    """Mark a session deleted; its files stay on disk until you remove them."""
    _set_status(ref, "delete", as_json)


@app.command("quotas")
def quotas(
    ref: str = typer.Argument(..., help="Session id or name."),
    max_cost_usd: Optional[float] = typer.Option(None),
    max_disk_mb: Optional[float] = typer.Option(None),
    max_concurrent_runs: Optional[int] = typer.Option(None),
    as_json: bool = JSON_OPTION,
) -> None:
    """Change a session's quotas.  Example: cmbagent session quotas "Project X" --max-cost-usd 20"""
    changes = {k: v for k, v in dict(max_cost_usd=max_cost_usd, max_disk_mb=max_disk_mb,
                                     max_concurrent_runs=max_concurrent_runs).items() if v is not None}
    with fail_cleanly(), open_store() as store:
        s = store.resolve_session(ref)
        s = store.session(s.id).set_quotas(**changes)
        if as_json:
            print_json(s)
        else:
            console.print(_table([s]))
