"""Store commands: schema, states, recover, import-context, store status|stop."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    return None
