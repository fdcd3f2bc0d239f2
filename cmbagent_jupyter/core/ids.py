"""Ids, names and time: what every record is keyed and stamped with."""

from __future__ import annotations

import os
import re
import threading
import unicodedata
from datetime import datetime, timezone
from typing import Any

from cmbagent_jupyter.core.errors import InvalidInput

ID_PREFIXES = {
    "session": "ses",
    "run": "run",
    "step": "stp",
    "attempt": "att",
    "event": "evt",
    "checkpoint": "ckp",
    "approval": "apr",
    "cost": "cst",
    "branch": "brn",
    "decision": "pol",
    "transition": "trn",
    "request": "req",
    "file": "fil",
}
_ID_RE = re.compile(r"^(?P<prefix>[a-z]{3})_(?P<hex>[0-9a-f]{12,32})$")


class _RandomBytes:
    """The operating system's random bytes, fetched a few kilobytes at a time: a run makes
    an id for every event and checkpoint, and a system call for each (which also lets
    other threads take the interpreter) costs more than the rest of making it."""

    CHUNK = 4000

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pool = b""
        self._at = 0
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        self._lock = threading.Lock()
        self._pool, self._at = b"", 0  # a child never hands out its parent's ids

    def take(self, n: int) -> bytes:
        with self._lock:
            if self._at + n > len(self._pool):
                self._pool, self._at = os.urandom(max(self.CHUNK, n)), 0
            out = self._pool[self._at:self._at + n]
            self._at += n
            return out


_RANDOM = _RandomBytes()


def new_id(kind: str) -> str:
    """A fresh id: the kind's prefix and 80 random bits in hex."""
    return f"{ID_PREFIXES[kind]}_{_RANDOM.take(10).hex()}"


def new_ids(kind: str, n: int) -> list[str]:
    """`n` fresh ids of one kind (`new_id`), from one draw of random bytes."""
    prefix, raw = f"{ID_PREFIXES[kind]}_", _RANDOM.take(10 * n).hex()
    return [prefix + raw[i:i + 20] for i in range(0, 20 * n, 20)]


def check_id(kind: str, value: Any) -> str:
    """Validate an id of the given kind; the error names the kind and the value."""
    prefix = ID_PREFIXES[kind]
    if not isinstance(value, str):
        raise InvalidInput(f"{kind} id must be a string like '{prefix}_0123456789abcdef', got {type(value).__name__}")
    m = _ID_RE.match(value)
    if not m or m.group("prefix") != prefix:
        shown = value if len(value) <= 64 else value[:61] + "..."
        raise InvalidInput(f"malformed {kind} id {shown!r}: expected '{prefix}_' followed by 12-32 lowercase hex digits")
    return value


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def validate_name(value: str, what: str = "name", max_len: int = 120) -> str:
    """Names reach file systems, shells and HTML: refuse what could escape any of them."""
    if not isinstance(value, str):
        raise InvalidInput(f"{what} must be text")
    value = unicodedata.normalize("NFC", value).strip()
    if not value:
        raise InvalidInput(f"{what} must not be empty")
    if len(value) > max_len:
        raise InvalidInput(f"{what} is {len(value)} characters long; at most {max_len} are allowed")
    bad = [c for c in value if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp")]
    if bad:
        raise InvalidInput(f"{what} contains control characters ({', '.join(repr(c) for c in bad[:3])})")
    if "/" in value or "\\" in value or value in (".", "..") or value.startswith("."):
        raise InvalidInput(f"{what} {value!r} must not contain path separators or start with '.'")
    return value
