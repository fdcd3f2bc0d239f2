"""Records and the one Event envelope: validated at the edge, exported as a versioned schema."""

from __future__ import annotations

import os

import json

import jsonschema
import pytest
from pydantic import ValidationError

from cmbagent_jupyter.core import (
    EVENT_SCHEMA_VERSION,
    Event,
    EventType,
    InvalidInput,
    check_id,
    event_json_schema,
    new_id,
    validate_name,
)


def test_new_ids_are_valid_and_malformed_ones_are_explained():
    rid = new_id("run")
    assert check_id("run", rid) == rid
    with pytest.raises(InvalidInput, match="malformed run id 'ses_0123456789ab'"):
        check_id("run", "ses_0123456789ab")
    with pytest.raises(InvalidInput, match="must be a string"):
        check_id("session", None)


@pytest.mark.parametrize("name", ["Project X", "CMB lensing — run 2", "naïve", "a" * 120])
def test_ordinary_names_pass(name):
    assert validate_name(name) == name


def test_names_are_normalised_and_trimmed():
    assert validate_name("  Cafe\u0301  ") == "Café"


@pytest.mark.parametrize("name", ["../x", "/etc", "x/y", ".env", "..", "a\x1b[31m", "bidi\u202eevil", "", "a" * 121])
def test_hostile_names_are_refused(name):
    with pytest.raises(InvalidInput):
        validate_name(name, "session name")


def test_an_event_refuses_unknown_types_fields_and_ids():
    sid, rid = new_id("session"), new_id("run")
    ok = Event(type="log", session_id=sid, run_id=rid, payload={"a": 1})
    assert ok.schema_version == EVENT_SCHEMA_VERSION and ok.id.startswith("evt_")
    with pytest.raises(ValidationError):
        Event(type="not.a.type", session_id=sid)
    with pytest.raises(ValidationError):
        Event(type="log", session_id="nope")
    with pytest.raises(ValidationError):
        Event(type="log", session_id=sid, surprise=True)


def test_the_cli_prints_the_versioned_event_schema(cli, tmp_path):
    out = cli("schema", "events")
    assert out.code == 0, out.stderr
    schema = json.loads(out.stdout)
    assert schema == json.loads(json.dumps(event_json_schema()))
    assert schema["$id"].endswith(f"/event/v{EVENT_SCHEMA_VERSION}.json")
    # one variant per event type, told apart by `type`, each with its payload's model
    mapping = schema["discriminator"]["mapping"]
    assert schema["discriminator"]["propertyName"] == "type" and set(mapping) == {t.value for t in EventType}
    approval = schema["$defs"][mapping["approval.received"].rsplit("/", 1)[-1]]
    assert approval["properties"]["schema_version"]["default"] == EVENT_SCHEMA_VERSION
    payload = schema["$defs"][approval["properties"]["payload"]["$ref"].rsplit("/", 1)[-1]]
    assert {"approval_id", "decision", "feedback"} <= set(payload["properties"])
    jsonschema.Draft202012Validator.check_schema(schema)

    target = tmp_path / "event.schema.json"
    assert cli("schema", "events", "--out", str(target)).code == 0
    assert json.loads(target.read_text()) == schema


def test_real_events_from_the_store_validate_against_the_schema(store, cli):
    schema = json.loads(cli("schema", "events").stdout)
    validator = jsonschema.Draft202012Validator(schema)
    ss = store.session(store.create_session("schema").id)
    run = ss.create_run("t")
    step = ss.put_plan(run.id, [{"key": "step_1"}])[0]
    ss.transition_run(run.id, "executing")
    ss.transition_step(step.id, "running")
    ss.add_costs([{"model": "m", "cost_usd": 0.1, "run_id": run.id}])
    ss.put_checkpoint(run.id, kind="manual", context={"x": 1})
    ss.emit("agent.message", run.id, sender="engineer", content="done")

    events = [e.model_dump(mode="json") for e in ss.events()]  # the wire form, as clients receive it
    assert {e["type"] for e in events} >= {"session.created", "workflow.created", "workflow.started",
                                           "step.started", "cost.update", "checkpoint.saved", "agent.message"}
    for e in events:
        validator.validate(e)
    pushed = ss.subscribe(since_gseq=0).get(timeout=10)
    validator.validate(pushed)

    broken = {**events[0], "type": "made.up"}
    with pytest.raises(jsonschema.ValidationError):
        validator.validate(broken)


def test_ids_are_unique_and_a_forked_child_never_repeats_its_parents():
    from cmbagent_jupyter.core import check_id, new_id, new_ids

    made = [new_id("event") for _ in range(20_000)] + new_ids("event", 5_000) + new_ids("event", 1)
    assert len(set(made)) == len(made) and all(len(i) == 24 and check_id("event", i) for i in made)
    new_id("event")  # whatever random bytes the process holds, some are left when it forks
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: the ids it makes next
        os.write(write, " ".join(new_id("event") for _ in range(5)).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = os.read(read, 4096).decode().split()
    os.close(read)
    parent = [new_id("event") for _ in range(5)]
    assert len(child) == 5 and not set(child) & set(parent)
