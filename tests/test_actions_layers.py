"""The layers stay as designed: front ends reach user actions only through `actions/`, and
they import each other only downwards (read from the source, function-level imports included)."""

from __future__ import annotations

import ast
from pathlib import Path

from fixtures.processes import REPO_ROOT

PACKAGE = REPO_ROOT / "cmbagent_jupyter"
ADAPTERS = ("api.py", "magics.py", "cli", "server", "widgets")
# what changes a run through the store port: one implementation each, in actions/
ACTION_CALLS = {"resolve_approval", "reset_from", "create_branch", "request_pause", "transition_run"}


def modules(*parts: str) -> list[Path]:
    found: list[Path] = []
    for part in parts:
        path = PACKAGE / part
        found += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    return found


def imported(path: Path) -> list[tuple[str, bool]]:
    """Every module the file imports (absolute names), and whether the import is inside a function."""
    tree = ast.parse(path.read_text())
    in_function = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                   for n in ast.walk(f)}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, id(node) in in_function) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            out += [(n, id(node) in in_function) for n in names]
    return out


def imports_any(path: Path, prefixes: tuple[str, ...]) -> list[str]:
    return sorted({name for name, _ in imported(path)
                   if any(name == p or name.startswith(p + ".") for p in prefixes)})


def test_front_ends_import_downwards_only():
    upper = ("cmbagent_jupyter.api", "cmbagent_jupyter.magics", "cmbagent_jupyter.cli", "cmbagent_jupyter.server")
    wrong = {str(p.relative_to(PACKAGE)): imports_any(p, upper) for p in modules("widgets")}
    wrong |= {str(p.relative_to(PACKAGE)): imports_any(p, ("cmbagent_jupyter.api", "cmbagent_jupyter.magics"))
              for p in modules("cli", "server")}
    wrong |= {str(p.relative_to(PACKAGE)): imports_any(p, (*upper, "cmbagent_jupyter.widgets"))
              for p in modules("actions")}
    assert {k: v for k, v in wrong.items() if v} == {}


def test_the_actions_hide_no_import_in_a_function_but_the_engines():
    """The engine (and AG2) load with the first run executed here, not with `import cmbagent_jupyter.api`."""
    hidden = {str(p.relative_to(PACKAGE)): sorted({n for n, inside in imported(p) if inside})
              for p in modules("actions")}
    assert {k: v for k, v in hidden.items() if v} == {
        "actions/executors.py": ["cmbagent_jupyter.engine.runner", "cmbagent_jupyter.engine.runner.RunEngine"]}


def test_only_the_actions_change_runs_through_the_store_port():
    calls = {}
    for path in modules(*ADAPTERS):
        tree = ast.parse(path.read_text())
        found = sorted({n.func.attr for n in ast.walk(tree) if isinstance(n, ast.Call)
                        and isinstance(n.func, ast.Attribute) and n.func.attr in ACTION_CALLS})
        if found:
            calls[str(path.relative_to(PACKAGE))] = found
    assert calls == {}
    users = {str(p.relative_to(PACKAGE)) for p in modules("actions") if "resolve_approval(" in p.read_text()}
    assert users == {"actions/approvals.py", "actions/retry.py"}


def test_modules_stay_small():
    sizes = {str(p.relative_to(PACKAGE)): len(p.read_text().splitlines()) for p in modules("actions")}
    assert max(sizes.values()) < 300, sizes
    adapters = {str(p.relative_to(PACKAGE)): len(p.read_text().splitlines()) for p in modules(*ADAPTERS)}
    assert max(adapters.values()) < 500, adapters


def test_every_action_resolves_and_a_command_line_loads_only_what_it_uses():
    """`cmbagent pause` starts without what checking a new run's plan needs (networkx, the agents)."""
    import json
    import subprocess
    import sys

    code = ("import json, sys\n"
            "import cmbagent_jupyter.actions as a\n"
            "from cmbagent_jupyter.cli import app\n"
            "light = sorted(m for m in ('networkx', 'ag2', 'cmbagent_jupyter.actions.start') if m in sys.modules)\n"
            "names = {n: callable(getattr(a, n)) for n in a.__all__}\n"
            "print(json.dumps({'light': light, 'names': names}))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=str(REPO_ROOT),
                         check=True)
    seen = json.loads(out.stdout)
    assert seen["light"] == []
    assert all(seen["names"].values()) and {"decide", "retry_step", "start_run", "InProcess"} <= set(seen["names"])
