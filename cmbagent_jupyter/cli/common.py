"""What every command group shares: the store handle, JSON output, clean errors."""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from typing import Any, Iterator

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.text import Text

from cmbagent_jupyter.actions import session_for
from cmbagent_jupyter.core import InvalidInput, StoreError
from cmbagent_jupyter.core.home import HomeError
from cmbagent_jupyter.store import StorePort, open_store as _open

console = Console()
err_console = Console(stderr=True)

CHOOSE_SESSION = "choose one with --session NAME_OR_ID"
JSON_OPTION = typer.Option(False, "--json", help="Print machine-readable JSON instead of a table.")


def open_store() -> StorePort:
    return _open()


def print_json(value: Any) -> None:
    def default(o: Any) -> Any:
        if isinstance(o, BaseModel):
            return o.model_dump(mode="json")
        return str(o)

    if isinstance(value, list):
        value = [v.model_dump(mode="json") if isinstance(v, BaseModel) else v for v in value]
    elif isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    sys.stdout.write(json.dumps(value, default=default, indent=2) + "\n")


@contextmanager
def fail_cleanly() -> Iterator[None]:
    """Known errors become one clear line on stderr and exit code 2, not a traceback."""
    try:
        yield
    except (StoreError, InvalidInput, HomeError) as exc:
        # one line however long, and the message as typed (a name may contain "[...]")
        message = Text.assemble(("error:", "bold red"), " ", str(getattr(exc, "message", None) or exc))
        err_console.print(message, highlight=False, soft_wrap=True)
        raise SystemExit(2) from None


def resolve_session(store: StorePort, ref: str | None):
    """A session by id or name; without one, the only active session or 'default'."""
    return session_for(store, ref, create=False, choose=CHOOSE_SESSION)
