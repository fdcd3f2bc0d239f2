"""`cmbagent session ...` in a real subprocess: what a user types and sees."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from fixtures.cli import cmbagent_command
from fixtures.processes import subprocess_env


def test_create_list_archive_restore_delete_from_the_command_line(cli, cmb_home):
    created = cli("session", "create", "--name", "Project X", "--max-cost-usd", "12", "--json")
    assert created.code == 0, created.stderr
    s = created.json()
    assert s["name"] == "Project X" and s["quotas"]["max_cost_usd"] == 12
    assert (cmb_home / "sessions" / s["id"] / "session.json").is_file()

    listed = cli("session", "list", "--json")
    assert listed.code == 0 and [x["id"] for x in listed.json()] == [s["id"]]

    archived = cli("session", "archive", s["id"])
    assert archived.code == 0 and "archived" in archived.stdout
    assert cli("session", "list", "--json").json() == []
    assert [x["status"] for x in cli("session", "list", "--all", "--json").json()] == ["archived"]

    assert cli("session", "restore", "Project X").code == 0
    shown = cli("session", "show", "Project X", "--json").json()
    assert shown["status"] == "active" and shown["usage"]["active_runs"] == 0

    assert cli("session", "quotas", "Project X", "--max-concurrent-runs", "1", "--json").json()["quotas"][
        "max_concurrent_runs"] == 1
    assert cli("session", "delete", s["id"]).code == 0
    assert cli("session", "list", "--all", "--json").json() == []


def test_the_table_shows_the_session(cli):
    cli("session", "create", "--name", "Project X")
    out = cli("session", "list")
    assert out.code == 0 and "Project X" in out.stdout and "ses_" in out.stdout


@pytest.mark.parametrize(
    ("name", "complaint"),
    [
        ("../x", "must not contain path separators"),
        ("/etc", "must not contain path separators"),
        (".config", "start with '.'"),
        ("tab\there", "control characters"),
        ("", "must not be empty"),
        ("n" * 500, "at most 120 are allowed"),
    ],
)
def test_a_bad_name_is_one_clear_line_and_exit_code_2(cli, cmb_home, name, complaint):
    result = cli("session", "create", "--name", name)

    assert result.code == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error:") and complaint in lines[0]
    assert not any((cmb_home / "sessions").iterdir())


def test_a_duplicate_name_is_refused(cli):
    assert cli("session", "create", "--name", "Project X").code == 0
    again = cli("session", "create", "--name", "Project X")
    assert again.code == 2 and "already exists" in again.stderr and "Traceback" not in again.stderr
    assert len(cli("session", "list", "--json").json()) == 1


def test_an_unknown_session_is_a_clear_error(cli):
    result = cli("session", "archive", "ses_0123456789abcdef")
    assert result.code == 2 and "does not exist" in result.stderr
    result = cli("session", "show", "nobody")
    assert result.code == 2 and "no session named 'nobody'" in result.stderr


def test_home_under_a_file_is_a_clear_error(tmp_path: Path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    proc = subprocess.run([*cmbagent_command(), "session", "list"], capture_output=True, text=True, timeout=60,
                          env=subprocess_env(blocker / "home"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "is not usable" in proc.stderr and str(blocker / "home") in proc.stderr
