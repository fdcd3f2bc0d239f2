"""`import cmbagent_jupyter` stays light: the API (and with it the engine) is loaded when first used."""

from __future__ import annotations

import json
import subprocess
import sys

from fixtures.processes import REPO_ROOT as REPO


def test_package_import_loads_no_heavy_module_until_the_api_is_used():
    code = (
        "import json, sys\n"
        "import cmbagent_jupyter as c\n"
        "before = sorted(m for m in ('ag2', 'duckdb', 'networkx', 'cmbagent_jupyter.api', 'rich') if m in sys.modules)\n"
        "fn = c.open_session\n"
        "after = sorted(m for m in ('cmbagent_jupyter.api',) if m in sys.modules)\n"
        "print(json.dumps({'before': before, 'after': after, 'names': [n for n in dir(c) if n[0] != '_'],"
        " 'same': fn is sys.modules['cmbagent_jupyter.api'].open_session}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=str(REPO),
                         check=True)
    seen = json.loads(out.stdout)
    assert seen["before"] == []
    assert seen["after"] == ["cmbagent_jupyter.api"] and seen["same"]
    assert {"open_session", "get_run", "SessionHandle", "RunHandle"} <= set(seen["names"])
