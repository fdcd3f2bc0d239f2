"""Files the store replaces are replaced whole: the old content or the new, never a part."""

from __future__ import annotations

import os

import pytest

from cmbagent_jupyter.store import atomic
from cmbagent_jupyter.store.atomic import write_atomically


def test_a_file_is_replaced_whole_and_private_when_asked(tmp_path):
    target = tmp_path / "deep" / "run.json"
    write_atomically(target, b"first")
    write_atomically(target, b"second", sync=False, private=True)
    assert target.read_bytes() == b"second"
    assert target.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in target.parent.iterdir()) == ["run.json"], "no temporary file is left"


def test_a_failed_write_leaves_the_old_file_and_no_temporary_one(tmp_path, monkeypatch):
    target = tmp_path / "session.json"
    write_atomically(target, b"kept")

    def refuse(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic.os, "replace", refuse)
    with pytest.raises(OSError, match="No space left"):
        write_atomically(target, b"lost")
    assert target.read_bytes() == b"kept"
    assert sorted(os.listdir(tmp_path)) == ["session.json"]
