"""One JSON Schema document for the front ends: events, records, the run graph, state sets.

The TypeScript types of the JupyterLab sidebar and the notebook widgets are generated
from it (packages/core/schema/cmbagent.schema.json, written by `cmbagent schema
frontend`), so a change of a model here changes their types; a test fails while the
committed file differs from `frontend_schema()`. Every definition sits in `$defs` under
the name the front ends import; the state sets are string enums that also carry
`x-constant`, the name of the array constant generated beside the type.
"""

from __future__ import annotations

import copy
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from cmbagent_jupyter.core.events import event_json_schema
from cmbagent_jupyter.core.graph import GraphEdge, GraphNode, RunGraph
from cmbagent_jupyter.core.records import ApprovalRequest, CostRecord, CostRow, Run, Session, Step, Usage
from cmbagent_jupyter.core.states import APPROVAL_DECISIONS, state_sets
from cmbagent_jupyter.core.views import (
    ApprovalCard,
    CostBar,
    PlanItem,
    RunHeader,
    RunStatusReply,
    RunSummary,
    SessionSummary,
    Snapshot,
)

FRONTEND_SCHEMA_ID = "https://cmbagent-jupyter/schemas/frontend.json"


RECORDS: tuple[type[BaseModel], ...] = (
    Session, SessionSummary, Run, RunSummary, Step, ApprovalRequest, CostRecord, CostRow, Usage,
    GraphNode, GraphEdge, RunGraph, Snapshot, RunStatusReply, ApprovalCard, PlanItem, CostBar,
    RunHeader,
)

# enums whose values the front ends test against, with the name of their array constant
ENUM_CONSTANTS = {"RunStatus": "RUN_STATUSES", "StepStatus": "STEP_STATUSES", "SessionStatus": "SESSION_STATUSES",
                  "ApprovalStatus": "APPROVAL_STATUSES", "RunMode": "RUN_MODES"}

# state set name -> (type name, constant name)
STATE_SET_NAMES = {
    "running": ("RunningRunState", "RUNNING_RUN_STATES"),
    "active": ("ActiveRunState", "ACTIVE_RUN_STATES"),
    "terminal": ("TerminalRunState", "TERMINAL_RUN_STATES"),
    "resumable": ("ResumableRunState", "RESUMABLE_RUN_STATES"),
    "stopped": ("StoppedRunState", "STOPPED_RUN_STATES"),
    "unsettled": ("UnsettledRunState", "UNSETTLED_RUN_STATES"),
}


def _merge(into: dict[str, Any], defs: dict[str, Any]) -> None:
    for name, schema in defs.items():
        if name in into and into[name] != schema:
            raise ValueError(f"two different front-end schema definitions are named {name!r}")
        into[name] = schema


def _drop_inner_titles(node: Any, keep: bool = True) -> Any:
    """Titles only on the document and its named definitions: a generator turns any other
    title (pydantic gives every property one) into a type of its own."""
    if isinstance(node, list):
        return [_drop_inner_titles(v, keep=False) for v in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key == "title" and isinstance(value, str) and not keep:
            continue
        if key == "$defs":
            out[key] = {name: _drop_inner_titles(d, keep=True) for name, d in value.items()}
        else:
            out[key] = _drop_inner_titles(value, keep=False)
    return out


def frontend_schema() -> dict[str, Any]:
    """The bundled schema: `Event` (one variant per event type), the records, and the state sets."""
    events = copy.deepcopy(event_json_schema())
    defs: dict[str, Any] = {}
    _merge(defs, events.pop("$defs"))
    _merge(defs, {"Event": {
        "title": "Event",
        "description": "The one envelope of every event; `type` tells which payload it carries.",
        "oneOf": events["oneOf"], "discriminator": events["discriminator"],
    }})
    _, records = models_json_schema([(model, "validation") for model in RECORDS], ref_template="#/$defs/{model}")
    _merge(defs, records["$defs"])
    for set_name, values in state_sets().items():
        type_name, constant = STATE_SET_NAMES[set_name]
        _merge(defs, {type_name: {
            "title": type_name, "type": "string", "enum": values, "x-constant": constant,
            "description": f"The run states of the {set_name!r} set (cmbagent_jupyter.core.states).",
        }})
    for name, constant in ENUM_CONSTANTS.items():
        defs[name] = {**defs[name], "x-constant": constant}
    _merge(defs, {"ApprovalDecision": {
        "title": "ApprovalDecision", "type": "string", "enum": list(APPROVAL_DECISIONS),
        "x-constant": "APPROVAL_DECISIONS",
        "description": "What a person may answer to an approval request; each request offers some of them.",
    }})
    # Every definition by its own name at the top, so a generator reaches each one.
    properties = {name: {"$ref": f"#/$defs/{name}"} for name in sorted(defs)}
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": FRONTEND_SCHEMA_ID,
        "title": "CmbagentFrontend",
        "description": "Generated by `cmbagent schema frontend`; do not edit.",
        "x-event-schema-version": events["x-event-schema-version"],
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
        "$defs": dict(sorted(defs.items())),
    }
    return _drop_inner_titles(schema)
