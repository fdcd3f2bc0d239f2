"""The `cmbagent` command: one module per command group, assembled here."""

from __future__ import annotations

import sys

import typer

from cmbagent_jupyter.cli import control, runs, session, store
from cmbagent_jupyter.cli.common import fail_cleanly

app = typer.Typer(
    name="cmbagent",
    help="Durable multi-agent research workflows (CMBAgent planning and control) from the terminal.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(session.app, name="session")
store.register(app)
runs.register(app)
control.register(app)


def main(argv: list[str] | None = None) -> int:
    with fail_cleanly():
        app(args=argv if argv is not None else sys.argv[1:], prog_name="cmbagent", standalone_mode=True)
    return 0
