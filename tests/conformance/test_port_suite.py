"""The suite itself: written against the port and the core only, and calling every port method.

Only conftest.py names the backends; any other file here that imports more of the package,
or names a backend, makes the suite test that backend rather than the port.
"""

from __future__ import annotations

import ast
import inspect
import re
import sys
from pathlib import Path

from cmbagent_jupyter.store.port import SessionPort, StorePort

HERE = Path(__file__).resolve().parent
FIXTURE_FILE = "conftest.py"
# what the tests may import besides the port and the core: the standard library, the test
# tools, and the helpers beside them
ALLOWED_ROOTS = set(sys.stdlib_module_names) | {"pytest", "pydantic", "porttools", "fixtures"}
ALLOWED_PACKAGE = ("cmbagent_jupyter.core", "cmbagent_jupyter.store.port")
BACKEND_WORDS = ("store.local", "store.memory", "LocalStore", "MemoryStore", "duckdb", "stop_service")


def suite_files() -> list[Path]:
    return sorted(p for p in HERE.glob("*.py") if p.name != FIXTURE_FILE)


def imported(tree: ast.AST) -> list[str]:
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names.append("." * node.level + (node.module or ""))
    return names


def allowed(name: str) -> bool:
    if name.startswith("cmbagent_jupyter"):
        return any(name == p or name.startswith(p + ".") for p in ALLOWED_PACKAGE)
    if name == "fixtures" or name.startswith("fixtures."):
        return name == "fixtures.waiting"
    return not name.startswith(".") and name.split(".")[0] in ALLOWED_ROOTS


def test_the_suite_imports_nothing_but_the_port_and_the_core():
    files = suite_files()
    assert len(files) > 10
    wrong = {p.name: bad for p in files if (bad := [n for n in imported(ast.parse(p.read_text())) if not allowed(n)])}
    assert not wrong, f"conformance tests import beyond the port and the core: {wrong}"


def test_no_file_but_the_fixture_names_a_backend():
    named = {p.name: [w for w in BACKEND_WORDS if w in p.read_text()] for p in suite_files()
             if p.name != Path(__file__).name}
    assert not {k: v for k, v in named.items() if v}
    fixture = (HERE / FIXTURE_FILE).read_text()
    assert "store.memory" in fixture and "store.local" in fixture


def test_every_method_of_the_port_is_called_by_the_suite():
    text = "\n".join(p.read_text() for p in suite_files())
    methods = {name for cls in (StorePort, SessionPort)
               for name, _ in inspect.getmembers(cls, lambda m: inspect.isfunction(m) or isinstance(m, property))
               if not name.startswith("_")}
    called = {name for name in methods if re.search(rf"\.{name}\b", text)}
    assert methods - called == set(), f"port methods no conformance test calls: {sorted(methods - called)}"
