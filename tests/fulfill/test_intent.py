from __future__ import annotations

import json
from typing import Any

import pytest

from fulfill.intent import ACTION_TYPES, IntentInvalid, parse_intent
from tests.conftest import VECTORS, load_vector


@pytest.mark.parametrize("path", sorted(VECTORS.glob("valid-*.json")), ids=lambda p: p.name)
def test_every_valid_vector_parses(path: Any) -> None:
    intent = parse_intent(path.read_text(encoding="utf-8"))
    assert intent.action_type in ACTION_TYPES


def _mutated(mutate: Any) -> dict[str, Any]:
    document = load_vector("valid-crm-create-task.json")
    mutate(document)
    return document


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: d["parameters"].pop("subject"), "parameters.subject"),
        (lambda d: d["parameters"].update(colour="red"), "parameters.colour"),
        (lambda d: d.update(extra_top_level=1), "extra_top_level"),
        (lambda d: d.update(action_type="crm.delete_everything"), "action_type"),
        (lambda d: d["approval"].pop("key_id"), "approval.key_id"),
        (lambda d: d["parameters"].update(due_date="2026-13-01"), "parameters.due_date"),
        (lambda d: d["parameters"].update(priority="Urgent"), "parameters.priority"),
        (lambda d: d["parameters"].update(subject="x" * 256), "parameters.subject"),
        (lambda d: d.update(tenant_id="Acme Corp"), "tenant_id"),
        (lambda d: d.update(action_intent_id="-bad"), "action_intent_id"),
        (lambda d: d.update(created_at="2026-11-27 15:00"), "created_at"),
        (lambda d: d.update(expires_at_epoch="tomorrow"), "expires_at_epoch"),
        (lambda d: d.update(schema_version="action_intent.v2"), "schema_version"),
        (lambda d: d.pop("decision_id"), "decision_id"),
    ],
)
def test_bad_input_names_the_field(mutate: Any, field: str) -> None:
    with pytest.raises(IntentInvalid) as raised:
        parse_intent(_mutated(mutate))
    assert raised.value.field == field
    assert str(raised.value).startswith(f"{field}: ")


def test_malformed_json_is_a_clear_error() -> None:
    with pytest.raises(IntentInvalid) as raised:
        parse_intent('{"schema_version": "action_intent.v1",')
    assert raised.value.field == "$"
    assert "not valid JSON" in raised.value.message


def test_oversize_brief_is_rejected_with_its_size() -> None:
    document = load_vector("valid-internal-attach-brief.json")
    document["parameters"]["content"] = "é" * (512 * 1024 + 1)  # 2 bytes each in UTF-8
    with pytest.raises(IntentInvalid) as raised:
        parse_intent(document)
    assert raised.value.field == "parameters.content"
    assert "1048578 bytes" in raised.value.message


def test_meeting_end_must_follow_start() -> None:
    document = load_vector("valid-calendar-draft-meeting.json")
    document["parameters"]["end"] = document["parameters"]["start"]
    with pytest.raises(IntentInvalid) as raised:
        parse_intent(document)
    assert raised.value.field == "parameters.end"


def test_update_field_value_may_be_null_but_not_absent() -> None:
    document = load_vector("valid-crm-update-field-rotated-key.json")
    document["parameters"]["value"] = None
    assert parse_intent(document).parameters["value"] is None
    del document["parameters"]["value"]
    with pytest.raises(IntentInvalid) as raised:
        parse_intent(document)
    assert raised.value.field == "parameters.value"


def test_defaults_are_applied_in_normalized_parameters() -> None:
    document = load_vector("valid-crm-create-task.json")
    del document["parameters"]["priority"]
    assert parse_intent(json.dumps(document)).normalized_parameters()["priority"] == "Normal"


def test_lowercase_z_is_rfc3339_and_names_the_field_when_wrong() -> None:
    document = load_vector("valid-calendar-draft-meeting.json")
    document["parameters"]["start"] = "2026-12-03T15:00:00z"
    document["parameters"]["end"] = "2026-12-03T15:30:00z"
    assert parse_intent(document).action_type == "calendar.draft_meeting"
    document["parameters"]["end"] = "2026-12-03T14:30:00z"
    with pytest.raises(IntentInvalid) as raised:
        parse_intent(document)
    assert raised.value.field == "parameters.end"
