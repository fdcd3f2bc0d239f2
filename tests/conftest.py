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
from contextlib import contextmanager
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
class ServerProcess:
    """A Jupyter server (lab, voila) started by a test, on 127.0.0.1."""

    url: str
    token: str
    process: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def scratch_jupyter_env(home: Path) -> dict[str, str]:
    """Environment for a Jupyter process that keeps its config, data and state in `home`.

    Installed extensions are still found: they live under sys.prefix, not in these dirs.
    """
    dirs = {
        "JUPYTER_CONFIG_DIR": home / "config",
        "JUPYTER_DATA_DIR": home / "data",
        "JUPYTER_RUNTIME_DIR": home / "runtime",
        "JUPYTERLAB_SETTINGS_DIR": home / "settings",
        "JUPYTERLAB_WORKSPACES_DIR": home / "workspaces",
    }
    for path in dirs.values():
        path.mkdir(parents=True, exist_ok=True)
    return {**os.environ, **{name: str(path) for name, path in dirs.items()}}


def wait_until_answering(server: ServerProcess, path: str, deadline_s: float = 120.0) -> None:
    """Poll `path` until the server answers HTTP at all, dies, or the deadline passes."""
    deadline = time.monotonic() + deadline_s
    url = f"{server.url}{path}"
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"{server.process.args[0]} exited early:\n{server.log()}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        # Block on the process instead of sleeping: returns early if it exits.
        try:
            server.process.wait(timeout=0.25)
        except subprocess.TimeoutExpired:
            pass
    raise TimeoutError(f"{url} did not answer within {deadline_s}s:\n{server.log()}")


@contextmanager
def spawn_server(
    argv: list[str], env: dict[str, str], port: int, token: str, log_path: Path, ready_path: str
) -> Iterator[ServerProcess]:
    """Start a server process, wait until it answers, and stop it (by its own pid) after."""
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(argv, stdout=log_file, stderr=subprocess.STDOUT, env=env)
    server = ServerProcess(f"http://127.0.0.1:{port}/", token, process, log_path)
    try:
        wait_until_answering(server, ready_path)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture
def jupyter_lab_server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A real `jupyter lab` process on 127.0.0.1 with a token, in a scratch home.

    The app is exposed as `window.jupyterapp` so tests can look at its commands.
    """
    home = tmp_path / "home"
    (home / "root").mkdir(parents=True)
    port = free_port()
    token = secrets.token_hex(16)
    argv = [
        interpreter_bin("jupyter-lab"),
        "--no-browser",
        "--allow-root",
        "--ip=127.0.0.1",
        f"--port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={home / 'root'}",
        "--LabApp.expose_app_in_browser=True",
        "--LabApp.news_url=",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]
    with spawn_server(
        argv, scratch_jupyter_env(home), port, token, tmp_path / "lab.log", "api/status"
    ) as server:
        yield server


@pytest.fixture
def voila_server(tmp_path: Path) -> Iterator[ServerProcess]:
    """`voila` serving a one-cell notebook that prints "hello from voila"."""
    import nbformat

    home = tmp_path / "home"
    notebook = home / "root" / "hello.ipynb"
    notebook.parent.mkdir(parents=True)
    nbformat.write(
        nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell('print("hello from voila")')]),
        notebook,
    )
    port = free_port()
    argv = [
        interpreter_bin("voila"),
        str(notebook),
        "--no-browser",
        f"--port={port}",
        "--Voila.ip=127.0.0.1",
        "--ServerApp.port_retries=0",
        "--ServerApp.allow_root=True",
    ]
    with spawn_server(
        argv, scratch_jupyter_env(home), port, "", tmp_path / "voila.log", "static/favicon.ico"
    ) as server:
        yield server


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



# ---------------------------------------------------------------------------
# Store fixtures (tests/test_store_*.py, test_models.py, test_states.py,
# test_cli_session.py, test_recover.py): a real store service in a temp home
# ---------------------------------------------------------------------------

from contextlib import contextmanager  # noqa: E402 (this section stands on its own)

REPO_ROOT = Path(__file__).resolve().parents[1]
STORE_SERVICE_MODULE = "cmbagent_jupyter.store.local.service"


def store_service_pids(home: Path) -> list[int]:
    """Live store service processes serving `home` (read from /proc; zombies excluded)."""
    home = Path(home).resolve()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_bytes().rsplit(b")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state in (b"Z", b"X") or STORE_SERVICE_MODULE.encode() not in argv:
            continue
        if str(home).encode() in argv:
            pids.append(int(entry.name))
    return pids


from engine_fixtures import cmbagent_command  # noqa: E402 - one definition for every section
from engine_fixtures import wait_for as wait_with_deadline  # noqa: E402


def wait_for(condition, deadline_s: float = 30.0, what: str = "condition", interval: float = 0.02):
    """Poll `condition` until it returns something truthy; fail with `what` at the deadline."""
    return wait_with_deadline(condition, deadline_s, what, lambda left: time.sleep(min(left, interval)))


def subprocess_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment of a child process that uses this checkout and `home`."""
    env = {**os.environ, "CMBAGENT_HOME": str(home), **extra}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p)
    return env


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str

    def json(self):
        import json

        return json.loads(self.stdout)


@pytest.fixture
def cmb_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh CMBAGENT_HOME (set in the environment); afterwards its store service is
    stopped, by its own pid, and no service process may be left for it."""
    home = (tmp_path / "cmbagent-home").resolve()
    monkeypatch.setenv("CMBAGENT_HOME", str(home))
    monkeypatch.delenv("CMBAGENT_STORE_IDLE_SECONDS", raising=False)
    yield home
    from cmbagent_jupyter.store.local import stop_service

    stop_service(home)
    left = store_service_pids(home)
    for pid in left:  # only services of this test's own home
        os.kill(pid, 9)
    assert not left, f"store service process(es) {left} still running for {home} after the test"


@pytest.fixture
def store(cmb_home: Path):
    """A `Store` client of a service in `cmb_home` (started on first use)."""
    from cmbagent_jupyter.store import open_store

    s = open_store(cmb_home)
    yield s
    s.close()


@pytest.fixture
def cli(cmb_home: Path):
    """Run `cmbagent ARGS...` in a subprocess against `cmb_home`."""

    def run(*args: str, timeout: float = 120, input: str | None = None) -> CliResult:
        proc = subprocess.run([*cmbagent_command(), *args], capture_output=True, text=True, timeout=timeout,
                              env=subprocess_env(cmb_home, COLUMNS="200"), input=input)
        return CliResult(proc.returncode, proc.stdout, proc.stderr)

    return run


@contextmanager
def client_process(home: Path, script: str, *args: str, **env: str) -> Iterator[subprocess.Popen]:
    """A Python child running `script` (text) against `home`; killed if still alive at exit."""
    proc = subprocess.Popen([sys.executable, "-c", script, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=subprocess_env(home, **env))
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream:
                stream.close()


# ---------------------------------------------------------------------------
# Server extension fixtures (tests/test_server_*.py, tests/test_sidebar*.py):
# every Jupyter server a test starts uses its own CMBAGENT_HOME, and the store
# service it started there is stopped afterwards
# ---------------------------------------------------------------------------

from contextlib import asynccontextmanager  # noqa: E402 (this section stands on its own)

SERVER_FIXTURES = ("jp_serverapp", "jupyter_lab_server", "voila_server")


@pytest.fixture(autouse=True)
def _server_store_home(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Our server extension connects to (so starts) a store service at server start.

    For a test with a Jupyter server, CMBAGENT_HOME is the same temp home `cmb_home`
    uses; after the test the extension's client is closed (waiting for its start-up
    connection) and the home's service stopped by its own pid.
    """
    if not any(name in request.fixturenames for name in SERVER_FIXTURES):
        yield None
        return
    home = (tmp_path / "cmbagent-home").resolve()
    monkeypatch.setenv("CMBAGENT_HOME", str(home))
    app = request.getfixturevalue("jp_serverapp") if "jp_serverapp" in request.fixturenames else None
    yield home
    if app is not None:
        api = app.web_app.settings.get("cmbagent_api")
        if api is not None:
            api.close()
    from cmbagent_jupyter.store.local import stop_service

    stop_service(home)
    left = store_service_pids(home)
    for pid in left:
        os.kill(pid, 9)
    assert not left, f"store service process(es) {left} still running for {home} after the test"


@pytest.fixture
def server_api(jp_serverapp, cmb_home: Path):
    """The in-process server's core (`ServerAPI`), talking to the store in `cmb_home`."""
    api = jp_serverapp.web_app.settings["cmbagent_api"]
    assert api.home == cmb_home
    yield api
    api.close()  # before cmb_home stops the service: a closed client never restarts it


@dataclass
class ApiReply:
    code: int
    body: dict

    @property
    def message(self) -> str:
        return self.body.get("message", "")


@pytest.fixture
def api_call(jp_fetch, server_api):
    """`await api_call("GET", "sessions", params=..., body=...)` -> ApiReply, errors included."""
    import json

    async def call(method: str, *path: str, params: dict | None = None, body=None, raw: str | None = None,
                   headers: dict | None = None) -> ApiReply:
        kwargs = {"method": method, "raise_error": False, "params": params or {}}
        if headers is not None:
            kwargs["headers"] = headers
        if method in ("POST", "PUT", "PATCH"):
            kwargs["body"] = raw if raw is not None else json.dumps(body if body is not None else {})
        response = await jp_fetch("cmbagent", "api", *path, **kwargs)
        text = response.body.decode() if response.body else ""
        return ApiReply(response.code, json.loads(text) if text.strip().startswith("{") else {"text": text})

    return call


@pytest.fixture
def unauthenticated_call(jp_serverapp, http_server_client, jp_base_url):
    """A request to our API without the token; returns the HTTP status code."""

    async def call(method: str, *path: str, body: str | None = None) -> int:
        url = f"{jp_base_url}cmbagent/api/{'/'.join(path)}"
        if method in ("POST", "PUT", "PATCH") and body is None:
            body = "{}"
        response = await http_server_client.fetch(url, method=method, body=body, raise_error=False,
                                                  follow_redirects=False, allow_nonstandard_methods=True)
        return response.code

    return call


# ---------------------------------------------------------------------------
# Notebook experience fixtures (tests/test_widgets_*.py, tests/test_magics*.py,
# tests/test_notebooks*.py): widgets driven like a comm would, the Python API in
# a temp home, a scripted run
# ---------------------------------------------------------------------------


class WidgetWire:
    """What a widget's front end would see and say: captured `send` calls, and
    custom messages delivered to the widget exactly as its comm delivers them."""

    def __init__(self, widget):
        self.widget = widget
        self.sent: list[dict] = []
        widget.send = lambda content, buffers=None: self.sent.append(content)

    def click(self, content: dict) -> None:
        self.widget._handle_msg({"content": {"data": {"method": "custom", "content": content}}, "buffers": []})

    def of_type(self, type_: str) -> list[dict]:
        return [m for m in self.sent if m.get("type") == type_]

    def last(self, type_: str) -> dict:
        found = self.of_type(type_)
        assert found, f"no {type_!r} message was sent; sent: {[m.get('type') for m in self.sent]}"
        return found[-1]


@pytest.fixture
def wire():
    """`wire(widget)` -> WidgetWire; widgets wired here are closed after the test."""
    wired = []

    def make(widget) -> WidgetWire:
        wired.append(widget)
        return WidgetWire(widget)

    yield make
    for widget in wired:
        widget.close()


@pytest.fixture
def api_home(cmb_home: Path):
    """`cmb_home` for tests that use `cmbagent_jupyter.api`: its cached store client for
    this home is closed before the service is stopped (a closed client never restarts it)."""
    yield cmb_home
    from cmbagent_jupyter import api

    store = api._STORES.pop(str(cmb_home), None)
    if store is not None:
        store.close()


def completed_scripted_run(home: Path, task: str = "Compute the CMB temperature power spectrum of a toy map"):
    """A run of the shipped `cmb_power_spectrum` scenario on the scripted model, waited for."""
    from cmbagent_jupyter import api

    handle = api.open_session("widgets", home=home).run(task, scenario="cmb_power_spectrum", quiet=True)
    run = handle.wait(180)
    assert run.status.value == "completed", f"scripted run ended {run.status.value}: {run.error}"
    return handle


def planned_run(store, n_steps: int = 3, *, task: str = "Toy CMB analysis", session: str = "widgets",
                agents: tuple[str, ...] = ("engineer", "engineer", "researcher"), parallel: bool = False):
    """A run in the store with a plan of `n_steps` (a chain, or all after step 1 when
    `parallel`), moved to executing: what the engine leaves before its first step."""
    try:
        sess = store.resolve_session(session)
    except Exception:  # noqa: BLE001 - NotFound: make it
        sess = store.create_session(session)
    ss = store.session(sess.id)
    run = ss.create_run(task)
    ss.transition_run(run.id, "planning")
    plan = []
    for i in range(1, n_steps + 1):
        deps = [] if i == 1 else (["step_1"] if parallel else [f"step_{i - 1}"])
        plan.append({"key": f"step_{i}", "agent": agents[(i - 1) % len(agents)], "depends_on": deps,
                     "description": f"Sub-task {i}", "inputs": {"sub_task": f"Sub-task number {i}"}})
    steps = ss.put_plan(run.id, plan)
    run = ss.transition_run(run.id, "executing")
    return ss, run, steps


@pytest.fixture
def voila_dashboard(tmp_path: Path, cmb_home: Path) -> Iterator[ServerProcess]:
    """`voila examples/dashboard.ipynb` on 127.0.0.1 with a token, its kernel using `cmb_home`
    (session "lab" preselected); stopped by its own pid after the test."""
    import shutil

    home = tmp_path / "voila-home"
    root = home / "root"
    root.mkdir(parents=True)
    shutil.copy(REPO_ROOT / "examples" / "dashboard.ipynb", root / "dashboard.ipynb")
    port = free_port()
    token = secrets.token_hex(16)
    argv = [
        interpreter_bin("voila"),
        str(root / "dashboard.ipynb"),
        "--no-browser",
        f"--port={port}",
        "--Voila.ip=127.0.0.1",
        f"--Voila.token={token}",
        "--ServerApp.port_retries=0",
        "--ServerApp.allow_root=True",
    ]
    env = {**scratch_jupyter_env(home), "CMBAGENT_HOME": str(cmb_home), "CMBAGENT_DASHBOARD_SESSION": "lab"}
    with spawn_server(argv, env, port, token, tmp_path / "voila-dashboard.log", "static/favicon.ico") as server:
        yield server


class EventSocket:
    """A client of /cmbagent/api/events: JSON frames in, JSON messages out."""

    def __init__(self, connection):
        self.connection = connection
        self.frames: list[dict] = []

    async def next(self, timeout: float = 30.0) -> dict:
        import asyncio
        import json

        text = await asyncio.wait_for(self.connection.read_message(), timeout)
        if text is None:
            raise ConnectionError("the server closed the event socket")
        frame = json.loads(text)
        self.frames.append(frame)
        return frame

    async def until(self, predicate, timeout: float = 60.0, what: str = "a frame") -> dict:
        """Read frames until one matches; fail at the deadline, naming what was awaited."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; "
                                     f"last frames: {self.frames[-3:]}")
            try:
                frame = await self.next(left)
            except TimeoutError:
                continue
            if predicate(frame):
                return frame

    async def first(self, predicate, timeout: float = 60.0, what: str = "a frame") -> dict:
        """The first frame received so far that matches, else the next one that does."""
        for frame in self.frames:
            if predicate(frame):
                return frame
        return await self.until(predicate, timeout, what)

    async def send(self, message: dict) -> None:
        import json

        await self.connection.write_message(json.dumps(message))

    def events(self) -> list[dict]:
        """The store events received so far (frames with a gseq), in arrival order."""
        return [f for f in self.frames if "gseq" in f and "type" in f and "payload" in f]

    def close(self) -> None:
        self.connection.close()


@pytest.fixture
def event_socket(jp_ws_fetch, server_api):
    """`await event_socket(session_id=..., since=...)` -> an EventSocket; all closed after."""
    sockets: list[EventSocket] = []

    async def connect(**params) -> EventSocket:
        query = {k: str(v) for k, v in params.items() if v is not None}
        sock = EventSocket(await jp_ws_fetch("cmbagent", "api", "events", params=query))
        sockets.append(sock)
        return sock

    yield connect
    for sock in sockets:
        sock.close()


@pytest.fixture
def stream_settings(jp_serverapp):
    """The live event-stream options of the in-process server (heartbeat_s, queue_size)."""
    return jp_serverapp.web_app.settings["cmbagent_stream"]


async def until(condition, timeout: float = 30.0, what: str = "condition"):
    """Await a condition by polling it without blocking the event loop the server runs on."""
    import asyncio

    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(0.02)


def kernel_env(home: Path) -> dict[str, str]:
    """A kernel's environment: this checkout importable, the test's CMBAGENT_HOME."""
    return subprocess_env(home)


class KernelError(AssertionError):
    pass


def _cell_outcome(messages: list[dict]) -> str:
    text, errors = [], []
    for msg in messages:
        kind, content = msg["header"]["msg_type"], msg["content"]
        if kind == "stream":
            text.append(content["text"])
        elif kind == "error":
            errors.append(f"{content['ename']}: {content['evalue']}\n" + "\n".join(content["traceback"][-5:]))
    if errors:
        raise KernelError("the kernel cell failed:\n" + ANSI_ESCAPE.sub("", "\n".join(errors)))
    return "".join(text)


@asynccontextmanager
async def python_kernel(home: Path):
    """A real ipykernel process (jupyter_client) using `home`; shut down (by its manager) after."""
    from jupyter_client.manager import AsyncKernelManager

    km = AsyncKernelManager(kernel_name="python3")
    await km.start_kernel(env=kernel_env(home))
    kc = km.client()
    kc.start_channels()
    try:
        await kc.wait_for_ready(timeout=120)
        yield kc
    finally:
        kc.stop_channels()
        await km.shutdown_kernel(now=True)


def submit_cell(kc, code: str) -> str:
    """Send a cell to the kernel without waiting for it; returns its message id."""
    return kc.execute(code, store_history=False)


async def cell_result(kc, msg_id: str, timeout: float = 120.0) -> str:
    """Wait for a submitted cell to finish; its printed output, or KernelError with the traceback."""
    import queue

    deadline = time.monotonic() + timeout
    messages = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"kernel cell {msg_id} still running after {timeout:.0f} s")
        try:
            msg = await kc.get_iopub_msg(timeout=min(left, 1.0))
        except queue.Empty:
            continue
        if msg.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        if msg["header"]["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            return _cell_outcome(messages)
        messages.append(msg)


async def run_cell(kc, code: str, timeout: float = 120.0) -> str:
    return await cell_result(kc, submit_cell(kc, code), timeout)


@contextmanager
def blocking_python_kernel(home: Path):
    """A real ipykernel process for synchronous tests (the browser ones); shut down after."""
    from jupyter_client.manager import KernelManager

    km = KernelManager(kernel_name="python3")
    km.start_kernel(env=kernel_env(home))
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=120)
        yield kc
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def wait_cell(kc, msg_id: str, timeout: float = 120.0) -> str:
    """Block until a submitted cell finishes; its output, or KernelError with the traceback."""
    import queue

    deadline = time.monotonic() + timeout
    messages = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"kernel cell {msg_id} still running after {timeout:.0f} s")
        try:
            msg = kc.get_iopub_msg(timeout=min(left, 1.0))
        except queue.Empty:
            continue
        if msg.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        if msg["header"]["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            return _cell_outcome(messages)
        messages.append(msg)
