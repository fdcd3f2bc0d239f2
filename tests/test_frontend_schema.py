"""The front ends' JSON Schema: committed as generated, pure, complete, and turned into TypeScript."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import jsonschema

from cmbagent_jupyter.core import EventType
from cmbagent_jupyter.core.schema import STATE_SET_NAMES, frontend_schema
from cmbagent_jupyter.core.states import APPROVAL_DECISIONS, RunStatus, state_sets

ROOT = Path(__file__).resolve().parents[1]
SCHEMA_FILE = ROOT / "packages" / "core" / "schema" / "cmbagent.schema.json"
GENERATED_TS = ROOT / "packages" / "core" / "src" / "schema.ts"
SCHEMA_MODULE = ROOT / "cmbagent_jupyter" / "core" / "schema.py"
REGENERATE = f"cmbagent schema frontend --out {SCHEMA_FILE.relative_to(ROOT)}"


def test_the_committed_schema_is_the_one_the_models_give():
    committed = json.loads(SCHEMA_FILE.read_text())
    assert committed == frontend_schema(), f"the front-end schema is stale: run `{REGENERATE}` and commit it"


def test_the_schema_module_imports_only_the_core():
    tree = ast.parse(SCHEMA_MODULE.read_text())
    ours = [node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
            and node.module and node.module.startswith("cmbagent_jupyter")]
    ours += [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
             for alias in node.names if alias.name.startswith("cmbagent_jupyter")]
    assert ours and all(name.startswith("cmbagent_jupyter.core.") for name in ours), ours


def test_the_schema_bundles_events_records_and_state_sets():
    schema = frontend_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    defs = schema["$defs"]
    # every definition is reachable from the top, by its own name
    assert set(schema["properties"]) == set(defs)
    assert {"Session", "SessionSummary", "Run", "RunSummary", "Step", "ApprovalRequest", "CostRecord", "CostRow",
            "Usage", "RunGraph", "GraphNode", "GraphEdge", "Snapshot", "RunStatusReply", "ApprovalCard", "PlanItem",
            "CostBar", "RunHeader"} <= set(defs)
    variants = {ref["$ref"].rsplit("/", 1)[-1] for ref in defs["Event"]["oneOf"]}
    types = {defs[v]["properties"]["type"]["const"] for v in variants}
    assert types == {t.value for t in EventType}
    for name, values in state_sets().items():
        type_name, constant = STATE_SET_NAMES[name]
        assert defs[type_name]["enum"] == values and defs[type_name]["x-constant"] == constant
    assert defs["ApprovalDecision"]["enum"] == list(APPROVAL_DECISIONS)
    assert defs["RunStatus"]["enum"] == [s.value for s in RunStatus]
    # a property keeps no title: the generator would make each one a type of its own
    assert "title" not in defs["Run"]["properties"]["task"]


def test_a_record_that_breaks_the_schema_is_refused():
    defs = frontend_schema()["$defs"]

    def valid(name: str, value: dict) -> bool:
        return jsonschema.Draft202012Validator({"$ref": f"#/$defs/{name}", "$defs": defs}).is_valid(value)

    node = {"id": "stp_1", "kind": "agent", "label": "fit", "status": "running", "number": 1}
    assert valid("GraphNode", node)
    assert not valid("GraphNode", node | {"kind": "box"})
    event = {"id": "evt_1", "session_id": "ses_1", "ts": "2026-01-01T00:00:00Z", "type": "cost.update",
             "payload": {"records": [], "cost_usd": 0.5}}
    assert valid("Event", event)
    assert not valid("Event", event | {"payload": {"records": []}})


def test_the_cli_prints_and_writes_the_schema(cli, tmp_path):
    printed = cli("schema", "frontend")
    out = tmp_path / "frontend.schema.json"
    written = cli("schema", "frontend", "--out", str(out))

    assert printed.code == 0 and written.code == 0, printed.stderr + written.stderr
    assert json.loads(printed.stdout) == frontend_schema()
    assert out.read_text() == printed.stdout == SCHEMA_FILE.read_text()


def test_the_build_generates_types_and_state_set_constants_from_the_schema():
    """`npm run build` (run by `pip install -e .`) writes the TypeScript the front ends import."""
    assert GENERATED_TS.exists(), "packages/core/src/schema.ts is missing: run `npm run build`"
    ts = GENERATED_TS.read_text()
    for name, values in state_sets().items():
        type_name, constant = STATE_SET_NAMES[name]
        found = re.search(rf"export const {constant}: readonly {type_name}\[\] = (\[.*?\]);", ts)
        assert found and json.loads(found.group(1)) == values, constant
    union = re.search(r"export type Event =(.*?);", ts, re.S).group(1)
    assert len(re.findall(r"\|\s*\w+Event\b", union)) == len(EventType)
    assert re.search(r'export interface ApprovalRequestedEvent \{[^}]*type: "approval\.requested";', ts)
    assert re.search(r'kind: "planning" \| "agent" \| "terminator";', ts)
