"""Framing and addresses shared by the store service and its clients.

Frames are a 4-byte big-endian length followed by UTF-8 JSON. The first frame of a
connection is `{"op": "hello", "token": ...}`; requests are `{"id", "op", "args",
"rid", "retry"}`; replies `{"id", "ok", "result" | "error"}`; pushed events
`{"push": sub_id, "event": {...}}` or `{"push": sub_id, "overflow": true}`.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
from pathlib import Path
from typing import Any

from cmbagent_jupyter.core import codec

MAX_FRAME = 32 * 1024 * 1024
HEADER = struct.Struct(">I")
PROTOCOL_VERSION = 1


def encode(obj: Any) -> bytes:
    body = codec.dumps_bytes(obj)
    return HEADER.pack(len(body)) + body


def runtime_file(home: Path) -> Path:
    return home / "run" / "store.json"


def error_file(home: Path) -> Path:
    return home / "run" / "store.error"


def socket_path(home: Path) -> Path:
    """Unix socket paths are limited to ~107 bytes: deep homes get one under /tmp."""
    default = home / "run" / "store.sock"
    if len(str(default)) < 100:
        return default
    base = Path(tempfile.gettempdir()) / f"cmbagent-{os.getuid()}"
    base.mkdir(mode=0o700, exist_ok=True)
    os.chmod(base, 0o700)
    return base / (hashlib.sha1(str(home).encode()).hexdigest()[:16] + ".sock")


def read_runtime(home: Path) -> dict[str, Any] | None:
    try:
        return json.loads(runtime_file(home).read_text())
    except (OSError, ValueError):
        return None


def write_private(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)
