"""The only module that talks to DuckDB: open, migrate, run statements in transactions."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Sequence

import duckdb

from cmbagent_jupyter.core import codec
from cmbagent_jupyter.core.errors import StoreCorrupted, StoreUnavailable
from cmbagent_jupyter.store.local.schema import LATEST_VERSION, MIGRATIONS


def to_db_time(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is not None:
        value = value.astimezone(timezone.utc).replace(tzinfo=None)
    return value


def from_db_time(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=timezone.utc)


# optimizer passes a write transaction's statements skip (see Database.tune): measured here, an
# update of 144 steps from list parameters plans and runs ~0.3 ms faster without them, an insert
# of 289 events ~0.4 ms, a one-row update ~0.1 ms
WRITE_SKIPPED_OPTIMIZERS = ("common_subplan,join_order,join_elimination,expression_rewriter,"
                            "statistics_propagation,build_side_probe_side")


class Database:
    """A DuckDB file opened for writing by its one owner process."""

    def __init__(self, path: Path | str, *, target_version: int | None = None):
        self.path = Path(path)
        self._writing = False
        try:
            self.conn = duckdb.connect(str(self.path))
        except duckdb.IOException as exc:
            text = str(exc)
            if "lock" in text.lower():
                raise StoreUnavailable(f"database {self.path} is held by another process: {text}") from exc
            raise StoreCorrupted(self._corrupt_message(text)) from exc
        except duckdb.Error as exc:
            raise StoreCorrupted(self._corrupt_message(str(exc))) from exc
        try:
            # the statements here are small OLTP ones: one thread runs them with the least
            # hand-off, and leaves the machine's other cores to the processes running steps
            self.conn.execute("SET threads = 1")
            self.version = self.migrate(target_version)
        except duckdb.Error as exc:
            self.conn.close()
            raise StoreCorrupted(self._corrupt_message(str(exc))) from exc

    def _corrupt_message(self, detail: str) -> str:
        return (
            f"the store database {self.path} cannot be opened ({detail.splitlines()[0][:300]}). "
            f"Run `cmbagent recover` to move it aside and rebuild it from the checkpoint files."
        )

    def current_version(self) -> int:
        exists = self.conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'schema_meta'"
        ).fetchone()[0]
        if not exists:
            return 0
        row = self.conn.execute("SELECT max(version) FROM schema_meta").fetchone()
        return int(row[0] or 0)

    def migrate(self, target_version: int | None = None) -> int:
        target = LATEST_VERSION if target_version is None else target_version
        self.conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_meta (version INTEGER NOT NULL, description VARCHAR, applied_at TIMESTAMP)"
        )
        current = self.current_version()
        if current > LATEST_VERSION:
            raise StoreCorrupted(
                f"the store database {self.path} has schema version {current}, newer than this "
                f"cmbagent-jupyter understands ({LATEST_VERSION}); upgrade the package"
            )
        for version, description, statements in MIGRATIONS:
            if version <= current or version > target:
                continue
            self.conn.execute("BEGIN TRANSACTION")
            try:
                for sql in statements:
                    self.conn.execute(sql)
                self.conn.execute(
                    "INSERT INTO schema_meta VALUES (?, ?, ?)",
                    [version, description, to_db_time(datetime.now(timezone.utc))],
                )
                self.conn.execute("COMMIT")
            except Exception:
                self.conn.execute("ROLLBACK")
                raise
            current = version
        return current

    # -- statements ---------------------------------------------------------

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> None:
        self.conn.execute(sql, params or [])

    def execute_count(self, sql: str, params: Sequence[Any] | None = None) -> int:
        """Run an UPDATE, DELETE or INSERT; the number of rows it changed."""
        row = self.conn.execute(sql, params or []).fetchone()
        return int(row[0]) if row else 0

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        rows = list(rows)
        if rows:
            self.conn.executemany(sql, rows)

    def insert_rows(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """Insert many rows with few statements.

        Rows whose columns each hold one scalar Python type go in column-wise: one list
        parameter per column, unnested by DuckDB (binding a parameter per value of a
        multi-row VALUES costs several times more); a column holding one value in every row
        is bound once. Anything else takes the VALUES path."""
        if not rows:
            return
        width = len(columns)
        cols = ", ".join(f'"{c}"' for c in columns)
        for start in range(0, len(rows), 500):
            chunk = rows[start : start + 500]
            lists = _column_lists(chunk, width)
            if lists is not None:
                self._insert_lists(table, cols, lists)
                continue
            placeholders = "(" + ", ".join("?" * width) + ")"
            sql = f"INSERT INTO {table} ({cols}) VALUES " + ", ".join([placeholders] * len(chunk))
            flat: list[Any] = [v for row in chunk for v in row]
            self.conn.execute(sql, flat)

    def insert_columns(self, table: str, columns: Sequence[str], lists: Sequence[list[Any]]) -> None:
        """`insert_rows` for rows given as one list per column, each of one scalar type (or None).
        One row goes in as a VALUES row (unnesting lists of one costs more than binding it)."""
        if not lists or not lists[0]:
            return
        cols = ", ".join(f'"{c}"' for c in columns)
        if len(lists[0]) == 1:
            self.conn.execute(f"INSERT INTO {table} ({cols}) VALUES ({', '.join('?' * len(lists))})",
                              [col[0] for col in lists])
            return
        self._insert_lists(table, cols, [col if any(v is not None for v in col) else None for col in lists])

    def _insert_lists(self, table: str, cols: str, lists: Sequence[list[Any] | None]) -> None:
        exprs, params = [], []
        for col in lists:
            if col is None:  # NULLs only (its list would have no element type)
                exprs.append("NULL")
            elif col[0] is not None and col.count(col[0]) == len(col):
                exprs.append("?")
                params.append(col[0])
            else:
                exprs.append(_packed(col, params))
        if all(e in ("?", "NULL") for e in exprs):  # one list sets the number of rows: the first column's
            first = next(i for i, col in enumerate(lists) if col is not None)
            exprs[first] = "unnest(?)"
            params[sum(e == "?" for e in exprs[:first])] = lists[first]
        self.conn.execute(f"INSERT INTO {table} ({cols}) SELECT * FROM (SELECT {', '.join(exprs)})", params)

    def fetch(self, sql: str, params: Sequence[Any] | None = None) -> list[dict[str, Any]]:
        cur = self.conn.execute(sql, params or [])
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row)) for row in cur.fetchall()]

    def fetchone(self, sql: str, params: Sequence[Any] | None = None) -> dict[str, Any] | None:
        rows = self.fetch(sql, params)
        return rows[0] if rows else None

    def scalar(self, sql: str, params: Sequence[Any] | None = None) -> Any:
        row = self.conn.execute(sql, params or []).fetchone()
        return row[0] if row else None

    def begin(self) -> None:
        self.tune(writing=True)
        self.conn.execute("BEGIN TRANSACTION")

    def tune(self, *, writing: bool) -> None:
        """Set the optimizer for what comes next: write transactions are small OLTP statements,
        whose plans the optimizer passes made for analytical queries (WRITE_SKIPPED_OPTIMIZERS)
        cost more than they save; reads get every pass. A setting of the whole database."""
        if writing != self._writing:
            self.conn.execute(f"SET disabled_optimizers = '{WRITE_SKIPPED_OPTIMIZERS}'" if writing
                              else "RESET disabled_optimizers")
            self._writing = writing

    def commit(self) -> None:
        self.conn.execute("COMMIT")

    def rollback(self) -> None:
        try:
            self.conn.execute("ROLLBACK")
        except duckdb.Error:
            pass

    def checkpoint(self) -> None:
        self.conn.execute("CHECKPOINT")

    def close(self) -> None:
        try:
            self.conn.close()
        except duckdb.Error:
            pass


def dumps(value: Any) -> str | None:
    if value is None:
        return None
    return codec.dumps(value)


def loads(value: Any) -> Any:
    if value is None or not isinstance(value, str):
        return value
    return codec.loads(value)


_COLUMN_TYPES = (str, int, float, bool, datetime)


_SEPARATOR = "\x1e"  # ASCII record separator: JSON text escapes it, ids and names never hold it


def _packed(col: list[Any], params: list[Any]) -> str:
    """The SQL of a column given as a list, its parameter appended to `params`. Binding a list
    converts each value on its own: a run of consecutive integers goes as its two ends, and
    text (no NULL, no separator in it) as one string split by DuckDB."""
    first = col[0]
    if type(first) is int and type(col[-1]) is int and col[-1] - first == len(col) - 1 \
            and all(type(v) is int and v == first + i for i, v in enumerate(col)):
        params += [first, col[-1] + 1]
        return "unnest(range(?, ?))"
    if type(first) is str and all(type(v) is str for v in col):
        text = _SEPARATOR.join(col)
        if text.count(_SEPARATOR) == len(col) - 1:
            params.append(text)
            return "unnest(string_split(?, chr(30)))"
    params.append(col)
    return "unnest(?)"


def _column_lists(rows: Sequence[Sequence[Any]], width: int) -> list[list[Any] | None] | None:
    """The rows as one list per column (None for a column of NULLs only), or None unless
    every column holds values of one scalar type (None aside)."""
    if len(rows) < 2 or any(len(r) != width for r in rows):
        return None
    lists: list[list[Any] | None] = [list(col) for col in zip(*rows)]
    for i, col in enumerate(lists):
        kind = None
        for v in col:
            if v is None:
                continue
            t = type(v)
            if kind is None:
                if t not in _COLUMN_TYPES:
                    return None
                kind = t
            elif t is not kind:
                return None
        if kind is None:
            lists[i] = None
    if all(col is None for col in lists):
        return None
    return lists
