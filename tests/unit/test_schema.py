"""models/input-events.schema.json: committed, up to date, and describing the contract.

jsonschema is not a dependency, so the samples are checked with a small validator of
the keywords the generated schema uses (it fails loudly on any other keyword).
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from models.decode import TopicKind, decode
from models.events import CHANNELS, MODEL_BY_TYPE, PRIORITIES, SURVEY_TYPES, Envelope
from models.schema import SCHEMA_PATH, input_events_schema_text

REGENERATE = ".venv/bin/kpimon schema --out models/input-events.schema.json"

# Keywords with no effect on validity, and the ones `_errors` implements.
_ANNOTATIONS = {"$schema", "title", "description", "default", "format", "discriminator", "$defs"}
_IMPLEMENTED = {
    "$ref", "oneOf", "anyOf", "type", "const", "enum", "required", "properties",
    "additionalProperties", "minLength", "maxLength", "pattern", "minimum", "maximum",
    "exclusiveMinimum", "exclusiveMaximum",
}
_TYPES: dict[str, Any] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: type(v) is int or (type(v) is float and v.is_integer()),
    "number": lambda v: type(v) in (int, float),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def _errors(schema: dict[str, Any], value: Any, root: dict[str, Any], path: str = "$") -> list[str]:
    """JSON Schema 2020-12 validation, restricted to the keywords of the generated file."""
    unknown = set(schema) - _ANNOTATIONS - _IMPLEMENTED
    assert not unknown, f"validator does not implement {unknown} (at {path})"
    if "$ref" in schema:
        ref = schema["$ref"]
        assert ref.startswith("#/$defs/"), ref
        return _errors(root["$defs"][ref.removeprefix("#/$defs/")], value, root, path)
    errors: list[str] = []
    if "oneOf" in schema:
        passing = sum(not _errors(s, value, root, path) for s in schema["oneOf"])
        if passing != 1:
            errors.append(f"{path}: matches {passing} of oneOf")
    if "anyOf" in schema and all(_errors(s, value, root, path) for s in schema["anyOf"]):
        errors.append(f"{path}: matches none of anyOf")
    if "type" in schema and not _TYPES[schema["type"]](value):
        return [f"{path}: not of type {schema['type']}"]
    const = schema.get("const", value)
    if not (value == const and type(value) is type(const)):
        errors.append(f"{path}: not {schema['const']!r}")
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: not one of {schema['enum']}")
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            errors.append(f"{path}: shorter than {schema['minLength']}")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            errors.append(f"{path}: longer than {schema['maxLength']}")
        if "pattern" in schema and re.search(schema["pattern"], value) is None:
            errors.append(f"{path}: does not match {schema['pattern']}")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            errors.append(f"{path}: below {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            errors.append(f"{path}: above {schema['maximum']}")
        if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
            errors.append(f"{path}: not above {schema['exclusiveMinimum']}")
        if "exclusiveMaximum" in schema and value >= schema["exclusiveMaximum"]:
            errors.append(f"{path}: not below {schema['exclusiveMaximum']}")
    if isinstance(value, dict):
        required = schema.get("required", ())
        errors += [f"{path}: missing {name}" for name in required if name not in value]
        properties = schema.get("properties", {})
        for name, item in value.items():
            if name in properties:
                errors += _errors(properties[name], item, root, f"{path}.{name}")
            elif schema.get("additionalProperties") is False:
                errors.append(f"{path}: unexpected {name}")
    return errors


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    return loaded


def validate(schema: dict[str, Any], value: Any) -> list[str]:
    return _errors(schema, value, schema)


# --- the committed file ------------------------------------------------------------------


def test_committed_schema_is_what_the_models_generate() -> None:
    assert SCHEMA_PATH.name == "input-events.schema.json"
    assert SCHEMA_PATH.is_file(), f"{SCHEMA_PATH} is missing; create it with: {REGENERATE}"
    committed = SCHEMA_PATH.read_text(encoding="utf-8")
    assert committed == input_events_schema_text(), (
        f"{SCHEMA_PATH} is out of date with models/events.py; regenerate it with: {REGENERATE}"
    )


def test_schema_header(schema: dict[str, Any]) -> None:
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert "64 KiB" in schema["description"]
    assert schema["discriminator"]["propertyName"] == "type"


# --- structure per type ----------------------------------------------------------------

ENVELOPE = ["schema_version", "event_id", "type", "occurred_at", "ticket_id"]
REQUIRED_BY_TYPE = {
    "ticket.created": [*ENVELOPE, "queue", "channel"],
    "ticket.agent_replied": ENVELOPE,
    "ticket.handled": [*ENVELOPE, "talk_seconds", "hold_seconds", "wrap_seconds"],
    "ticket.abandoned": ENVELOPE,
    "ticket.resolved": ENVELOPE,
    "ticket.reopened": ENVELOPE,
    "survey.responded": [*ENVELOPE, "metric", "score"],
}
OPTIONAL_BY_TYPE = {
    "ticket.created": {"priority", "customer_id"},
    "ticket.agent_replied": {"agent_id"},
    "ticket.handled": {"agent_id"},
    "ticket.abandoned": set(),
    "ticket.resolved": {"agent_id"},
    "ticket.reopened": set(),
    "survey.responded": {"scale_max", "comment", "queue", "channel", "agent_id"},
}


def _definition(schema: dict[str, Any], type_: str) -> dict[str, Any]:
    ref = schema["discriminator"]["mapping"][type_]
    definition: dict[str, Any] = schema["$defs"][ref.removeprefix("#/$defs/")]
    return definition


def test_every_event_type_is_in_the_schema(schema: dict[str, Any]) -> None:
    assert set(schema["discriminator"]["mapping"]) == set(MODEL_BY_TYPE) == set(REQUIRED_BY_TYPE)
    refs = {option["$ref"] for option in schema["oneOf"]}
    assert refs == set(schema["discriminator"]["mapping"].values())


@pytest.mark.parametrize("type_", sorted(REQUIRED_BY_TYPE))
def test_required_and_optional_fields_per_type(schema: dict[str, Any], type_: str) -> None:
    definition = _definition(schema, type_)
    assert sorted(definition["required"]) == sorted(REQUIRED_BY_TYPE[type_])
    assert set(definition["properties"]) == set(REQUIRED_BY_TYPE[type_]) | OPTIONAL_BY_TYPE[type_]
    assert definition["properties"]["type"]["const"] == type_
    # Unknown extra fields are ignored, so the schema must not forbid them.
    assert definition.get("additionalProperties", True) is not False


@pytest.mark.parametrize("type_", sorted(REQUIRED_BY_TYPE))
def test_envelope_rules_per_type(schema: dict[str, Any], type_: str) -> None:
    props = _definition(schema, type_)["properties"]
    assert props["schema_version"] == props["schema_version"] | {"type": "integer", "const": 1}
    for name in ("event_id", "ticket_id"):
        assert (props[name]["type"], props[name]["minLength"], props[name]["maxLength"]) == (
            "string", 1, 128,
        )
    assert (props["occurred_at"]["type"], props["occurred_at"]["format"]) == (
        "string", "date-time",
    )


def test_field_rules_of_ticket_created_and_handled(schema: dict[str, Any]) -> None:
    created = _definition(schema, "ticket.created")["properties"]
    assert set(created["channel"]["enum"]) == set(CHANNELS)
    assert created["queue"]["pattern"] == "^[A-Za-z0-9_.-]+$"
    assert (created["queue"]["minLength"], created["queue"]["maxLength"]) == (1, 64)
    assert created["priority"]["default"] == "normal"
    handled = _definition(schema, "ticket.handled")["properties"]
    for name in ("talk_seconds", "hold_seconds", "wrap_seconds"):
        assert (handled[name]["type"], handled[name]["minimum"], handled[name]["maximum"]) == (
            "number", 0, 86400,
        )


# --- samples against the schema, and the decoder agreeing --------------------------------

NOW = 1_795_345_200.0  # an hour after the samples


def sample(type_: str, **changes: Any) -> dict[str, Any]:
    by_type: dict[str, dict[str, Any]] = {
        "ticket.created": {"queue": "billing", "channel": "chat", "priority": "high",
                           "customer_id": "c-1"},
        "ticket.handled": {"talk_seconds": 120, "hold_seconds": 7.5, "wrap_seconds": 30},
        "survey.responded": {"metric": "csat", "score": 5, "scale_max": 5, "comment": "thanks"},
        "ticket.agent_replied": {"agent_id": "a-7"},
    }
    fields = by_type.get(type_, {})
    obj = {
        "schema_version": 1,
        "event_id": "e-1",
        "type": type_,
        "occurred_at": "2026-11-22T10:00:00.250+01:00",
        "ticket_id": "T-1",
        **fields,
        **changes,
    }
    return {k: v for k, v in obj.items() if v is not ...}


def decoder_accepts(obj: dict[str, Any]) -> bool:
    kind: TopicKind = "surveys" if obj.get("type") in SURVEY_TYPES else "tickets"
    result = decode(kind, b"T-1", json.dumps(obj).encode(), now=NOW)
    return isinstance(result, Envelope)


VALID_SAMPLES = [
    *(sample(t) for t in sorted(REQUIRED_BY_TYPE)),
    sample("ticket.created", priority=..., customer_id=...),
    sample("ticket.created", priority=None, customer_id=None),  # null = not given
    sample("ticket.created", unknown_field={"nested": True}),
    sample("survey.responded", metric="nps", score=0, scale_max=10, queue="q.2",
           channel="web", agent_id=None, comment=None),
    sample("ticket.handled", talk_seconds=0, hold_seconds=86400, wrap_seconds=0.25),
]
INVALID_SAMPLES = [
    sample("ticket.created", queue=...),
    sample("ticket.created", channel="fax"),
    sample("ticket.created", priority="asap"),
    sample("ticket.created", queue="bad queue"),
    sample("ticket.created", queue="q" * 65),
    sample("ticket.handled", wrap_seconds=...),
    sample("ticket.handled", talk_seconds=-1),
    sample("ticket.handled", hold_seconds=86400.5),
    sample("ticket.handled", hold_seconds="7"),
    sample("survey.responded", metric="stars"),
    sample("survey.responded", score=...),
    sample("survey.responded", score="5"),
    sample("survey.responded", comment="x" * 4097),
    sample("ticket.resolved", schema_version=2),
    sample("ticket.resolved", event_id=""),
    sample("ticket.resolved", ticket_id="t" * 129),
    sample("ticket.resolved", occurred_at=1795341600),
    sample("ticket.resolved", agent_id=5),
    sample("ticket.resolved", ticket_id=...),
    sample("ticket.unknown"),  # the decoder ignores it; a producer must not send it
]


@pytest.mark.parametrize("obj", VALID_SAMPLES, ids=lambda o: str(o["type"]))
def test_valid_samples_pass_the_schema_and_the_decoder(
    schema: dict[str, Any], obj: dict[str, Any]
) -> None:
    assert validate(schema, obj) == []
    assert decoder_accepts(obj)


@pytest.mark.parametrize("obj", INVALID_SAMPLES, ids=lambda o: str(o["type"]))
def test_invalid_samples_fail_the_schema_and_the_decoder(
    schema: dict[str, Any], obj: dict[str, Any]
) -> None:
    assert validate(schema, obj) != []
    assert not decoder_accepts(obj)


def test_validator_self_check(schema: dict[str, Any]) -> None:
    # The mini validator really rejects: a non-object, and an empty object.
    assert validate(schema, []) != []
    assert validate(schema, {}) != []
    assert set(PRIORITIES) == set(_definition(schema, "ticket.created")["properties"]
                                  ["priority"]["anyOf"][0]["enum"])
