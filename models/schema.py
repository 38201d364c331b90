"""The JSON Schema of the input events, generated from the models.

The generated file `models/input-events.schema.json` is kept in the repository for
producers; a test fails when it differs from what the models generate.
"""

from __future__ import annotations

import json
from pathlib import Path

from models.events import input_event_adapter

SCHEMA_PATH = Path(__file__).with_name("input-events.schema.json")


def input_events_schema_text() -> str:
    schema = input_event_adapter.json_schema(mode="validation")
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "kpimon input event (schema_version 1)",
        "description": (
            "One ticket or survey event as produced to the tickets or surveys topic. "
            "occurred_at is RFC 3339 with an offset and at most microsecond precision; "
            "unknown extra fields are ignored; messages are at most 64 KiB."
        ),
        **schema,
    }
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"
