"""Shared fixtures. Each section belongs to one area; add yours in a section of its own."""

from __future__ import annotations

import os
import re
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytest_plugins = ["pytest_jupyter.jupyter_server"]


# ---------------------------------------------------------------------------
# Install, server extension and browser fixtures (tests/test_install.py)
# ---------------------------------------------------------------------------

ARTIFACTS_DIR = Path(__file__).parent / "artifacts"
CHROMIUM = Path("/usr/bin/chromium")
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]


@pytest.fixture
def jp_server_config():
    """pytest-jupyter's in-process server, with our extension and strict auth.

    With `allow_unauthenticated_access` off, a handler that lacks an auth decorator
    raises JupyterServerAuthWarning, which pyproject's filterwarnings turns into a
    failure; extension load errors are re-raised instead of logged. The terminals
    extension (which pytest-jupyter adds unless told) is off: its websocket does its
    own auth check and would trip that warning.
    """
    return {
        "ServerApp": {
            "jpserver_extensions": {"cmbagent_jupyter": True, "jupyter_server_terminals": False},
            "allow_unauthenticated_access": False,
            "reraise_server_extension_failures": True,
        }
    }


@pytest.fixture
def run_jupyter():
    """Run `jupyter <args>` from this interpreter's environment; return stdout + stderr."""

    def run(*args: str) -> str:
        result = subprocess.run(
            [interpreter_bin("jupyter"), *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        return ANSI_ESCAPE.sub("", result.stdout + result.stderr)

    return run


def interpreter_bin(name: str) -> str:
    """A console script of the interpreter running the tests (not whatever is on PATH)."""
    path = Path(sys.executable).parent / name
    if not path.exists():
        raise FileNotFoundError(f"{name} is not installed next to {sys.executable}")
    return str(path)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class LabServer:
    url: str
    token: str
    process: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def wait_until_serving(server: LabServer, deadline_s: float = 120.0) -> None:
    """Poll /api/status until it answers, the process dies or the deadline passes."""
    deadline = time.monotonic() + deadline_s
    status_url = f"{server.url}api/status?token={server.token}"
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"jupyter lab exited early:\n{server.log()}")
        try:
            with urllib.request.urlopen(status_url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        # Block on the process instead of sleeping: returns early if it exits.
        try:
            server.process.wait(timeout=0.25)
        except subprocess.TimeoutExpired:
            pass
    raise TimeoutError(f"jupyter lab did not answer within {deadline_s}s:\n{server.log()}")


@pytest.fixture
def jupyter_lab_server(tmp_path: Path) -> Iterator[LabServer]:
    """A real `jupyter lab` process on 127.0.0.1 with a token, in a scratch home."""
    home = tmp_path / "home"
    for sub in ("config", "data", "runtime", "settings", "workspaces", "root"):
        (home / sub).mkdir(parents=True)
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(home / "config"),
        "JUPYTER_DATA_DIR": str(home / "data"),
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(home / "settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"),
    }
    port = free_port()
    token = secrets.token_hex(16)
    log_path = tmp_path / "jupyter-lab.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [
                interpreter_bin("jupyter-lab"),
                "--no-browser",
                "--allow-root",
                "--ip=127.0.0.1",
                f"--port={port}",
                "--ServerApp.port_retries=0",
                f"--IdentityProvider.token={token}",
                f"--ServerApp.root_dir={home / 'root'}",
                "--LabApp.news_url=",
                "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
        )
    server = LabServer(f"http://127.0.0.1:{port}/", token, process, log_path)
    try:
        wait_until_serving(server)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture
def chromium_browser():
    """Debian's headless Chromium driven by Playwright; Playwright downloads nothing."""
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: install Debian's chromium (`apt-get install -y chromium`, "
            "as .ci/run does)"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def artifacts_dir() -> Path:
    """Where tests leave screenshots for people to look at (ignored by git)."""
    ARTIFACTS_DIR.mkdir(exist_ok=True)
    return ARTIFACTS_DIR

