"""An older database file is upgraded in place by the service, its rows intact."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from cmbagent_jupyter.core.home import ensure_home, run_dir, session_dir
from cmbagent_jupyter.core.errors import StoreCorrupted
from cmbagent_jupyter.store.local import stop_service
from cmbagent_jupyter.store.local.database import Database
from cmbagent_jupyter.store.local.schema import LATEST_VERSION

SID = "ses_00000000000000000001"
RID = "run_00000000000000000001"
STEP = "stp_00000000000000000001"
T0 = datetime(2026, 1, 14, 9, 30)


def build_v1_home(home):
    """A home as the first release left it: schema v1 only, rows in v1 columns."""
    ensure_home(home)
    db = Database(home / "store.duckdb", target_version=1)
    assert db.version == 1
    spath, rpath = session_dir(home, SID), run_dir(home, SID, RID)
    rpath.mkdir(parents=True)
    db.execute("INSERT INTO sessions VALUES (?, ?, ?, ?, ?, ?, ?)",
               [SID, "legacy", "active", '{"max_cost_usd": 7.5}', T0, T0, str(spath)])
    db.execute("INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
               [RID, SID, "fit the CMB power spectrum", "deep_research", "paused", "gpt-x", '{"k": 1}', None, None,
                T0, T0, None, T0, 600.0, None, str(rpath)])
    db.execute("INSERT INTO steps VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
               [STEP, SID, RID, 1, "step_1", "engineer", "completed", "load the maps", '[]', 1.0, '{}',
                '{"summary": "done"}', None, 1, T0, T0])
    for seq in (1, 2):
        db.execute("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                   [f"evt_0000000000000000000{seq}", SID, RID, seq, seq, "log", T0, '{"old": true}'])
    db.execute("INSERT INTO checkpoints VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
               ["ckp_00000000000000000001", SID, RID, STEP, "step_complete", '{"main_task": "fit"}', None, T0])
    assert "owner_pid" not in {r["column_name"] for r in db.fetch(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'runs'")}
    db.close()


def test_a_v1_file_is_upgraded_in_place_and_its_rows_read_through_the_api(cmb_home, store):
    build_v1_home(cmb_home)

    assert store.ping().version == LATEST_VERSION
    s = store.get_session(SID)
    assert s.name == "legacy" and s.quotas.max_cost_usd == 7.5 and s.quotas.max_concurrent_runs == 3
    ss = store.session(SID)
    run = ss.get_run(RID)
    assert run.task == "fit the CMB power spectrum" and run.status.value == "paused"
    assert run.config == {"k": 1} and run.owner_pid is None and run.pause_requested is False
    assert run.created_at == T0.replace(tzinfo=timezone.utc)
    [step] = ss.list_steps(RID)
    assert step.outputs == {"summary": "done"} and step.status.value == "completed"
    assert [e.seq for e in ss.events(run_id=RID)] == [1, 2]
    assert ss.latest_checkpoint(RID).context == {"main_task": "fit"}

    # new columns and tables work on the old rows, and numbering carries on
    assert ss.heartbeat(RID, owner_pid=4242).status == "paused"
    assert ss.get_run(RID).owner_pid == 4242
    assert ss.emit("log", RID, new=True).seq == 3
    ss.add_costs([{"model": "m", "cost_usd": 1.0, "run_id": RID}])
    assert ss.usage().cost_usd == 1.0

    store.close()
    stop_service(cmb_home)
    db = Database(cmb_home / "store.duckdb")
    try:
        assert [r["version"] for r in db.fetch("SELECT version FROM schema_meta ORDER BY version")] == \
            list(range(1, LATEST_VERSION + 1))
    finally:
        db.close()


def test_a_file_newer_than_the_code_is_refused_clearly(cmb_home, store):
    ensure_home(cmb_home)
    db = Database(cmb_home / "store.duckdb")
    db.execute("INSERT INTO schema_meta VALUES (?, ?, ?)", [LATEST_VERSION + 1, "from the future", T0])
    db.close()

    with pytest.raises(StoreCorrupted, match=f"schema version {LATEST_VERSION + 1}.*upgrade the package"):
        store.ping()


@pytest.mark.parametrize("rows", [
    [("a", 1, "same", None, T0), ("b", 2, "same", None, T0)],  # constant columns bound once
    [("a", 1, "same", None, T0), ("a", 1, "same", None, T0)],  # every column constant
    [("a", 1, "x", None, T0), ("b", 2, "y", None, datetime(2026, 2, 1))],  # every column a list
    [("a", 1, "x", 1.5, T0), ("b", 2, "y", None, T0)],  # NULLs among values
    [("a", 1, "x", None, T0)],  # one row
    [(f"e{i}", 7 + i, '{"n": %d}' % i, None, T0) for i in range(5)],  # consecutive integers, text packed
    [("a", 3, "", None, T0), ("", 9, "x", None, T0), ("c", 4, "", None, T0)],  # empty text, integers apart
    [("a\x1eb", 1, "x", None, T0), ("c", 2, "y\x1e", None, T0)],  # the packing separator inside text
], ids=["constant", "all-constant", "varying", "nulls", "one-row", "consecutive", "empty-text", "separator"])
@pytest.mark.parametrize("given_as", ["rows", "columns"])
def test_insert_rows_puts_every_row_with_its_values(tmp_path, rows, given_as):
    db = Database(tmp_path / "t.duckdb")
    try:
        db.execute("CREATE TABLE t (k VARCHAR, n BIGINT, s VARCHAR, f DOUBLE, \"at\" TIMESTAMP)")
        if given_as == "rows":
            db.insert_rows("t", ("k", "n", "s", "f", "at"), rows)
        else:
            db.insert_columns("t", ("k", "n", "s", "f", "at"), [list(col) for col in zip(*rows)])
        got = [tuple(r.values()) for r in db.fetch("SELECT k, n, s, f, \"at\" FROM t")]
        assert sorted(got, key=lambda r: (r[1], r[0])) == sorted(rows, key=lambda r: (r[1], r[0]))
    finally:
        db.close()


def test_write_transactions_skip_the_analytical_optimizer_passes_and_reads_get_them_back(tmp_path):
    """The service's write transactions plan without the passes named in WRITE_SKIPPED_OPTIMIZERS;
    a read after them is planned with every pass, and the next write skips them again."""
    from cmbagent_jupyter.store.local.database import WRITE_SKIPPED_OPTIMIZERS

    db = Database(tmp_path / "t.duckdb")
    try:
        def skipped() -> set[str]:
            text = db.scalar("SELECT current_setting('disabled_optimizers')") or ""
            return {p for p in text.split(",") if p}

        assert skipped() == set()
        db.begin()
        assert skipped() == set(WRITE_SKIPPED_OPTIMIZERS.split(",")) and len(skipped()) == 6
        db.execute("CREATE TABLE t (k VARCHAR)")
        db.insert_columns("t", ("k",), [["a", "b"]])
        db.commit()
        db.tune(writing=False)
        assert skipped() == set() and db.scalar("SELECT count(*) FROM t") == 2
        db.begin()
        assert len(skipped()) == 6
        db.rollback()
    finally:
        db.close()
