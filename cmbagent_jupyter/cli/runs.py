"""Run commands: run, status, pause, resume, cancel, cost (filled by the engine)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    return None
