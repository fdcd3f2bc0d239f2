"""`cmbagent recover` on the local backend: stop the service, set a database that cannot be
opened aside (kept as `store.duckdb.corrupt-<timestamp>`), then rebuild from the files."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

from cmbagent_jupyter.core.errors import StoreCorrupted
from cmbagent_jupyter.core.home import ensure_home, home_path
from cmbagent_jupyter.store.local.adapter import LocalStore
from cmbagent_jupyter.store.local.client import stop_service
from cmbagent_jupyter.store.local.database import Database
from cmbagent_jupyter.store.recovery import RecoveryReport, rebuild


def database_file(home: Path) -> Path:
    return home / "store.duckdb"


def check_database(home: Path) -> StoreCorrupted | None:
    """Open (and migrate) the database in this process; the service must be stopped."""
    path = database_file(home)
    if not path.exists():
        return None
    try:
        Database(path).close()
    except StoreCorrupted as exc:
        return exc
    return None


def move_aside(home: Path) -> list[Path]:
    """Keep a bad database (and its WAL) next to where it was, under a dated name."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    moved = []
    for path in (database_file(home), home / "store.duckdb.wal"):
        if path.exists():
            target = path.with_name(f"{path.name}.corrupt-{stamp}")
            n = 1
            while target.exists():
                target = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
                n += 1
            os.replace(path, target)
            moved.append(target)
    return moved


def recover(home: str | os.PathLike | None = None, *, move_corrupt: bool = True) -> RecoveryReport:
    """Stop the service, set a database that cannot be opened aside, rebuild from files."""
    root = ensure_home(home_path(home))
    stop_service(root)
    moved: list[Path] = []
    problem = check_database(root)
    if problem is not None:
        if not move_corrupt:
            raise problem
        moved = move_aside(root)
    elif not database_file(root).exists() and (root / "store.duckdb.wal").exists():
        moved = move_aside(root)  # a WAL without its database would be replayed onto a new, empty one
    with LocalStore(root) as store:
        report = rebuild(store)
    report.moved_aside = [str(p) for p in moved]
    return report
