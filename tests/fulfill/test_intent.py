from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from fulfill.intent import (
    ACTION_TYPES,
    MAX_BRIEF_BYTES,
    MAX_DEPTH,
    MAX_EXPIRES_AT_EPOCH,
    MAX_INTENT_BYTES,
    PARAMETER_MODELS,
    IntentInvalid,
    check_document,
    check_envelope,
    count_structure,
    is_email,
    load_intent_document,
    parse_intent,
)
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


# --- the safe loader: hostile documents are IntentInvalid naming the field, never a crash ---------
def _vector_text() -> str:
    return (VECTORS / "valid-crm-create-task.json").read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("text", "field", "words"),
    [
        (
            _vector_text().replace('"priority": "High"', '"priority": "Hi\\u0000gh"'),
            "parameters.priority",
            "NUL",
        ),
        (
            _vector_text().replace('"priority":', '"prio\\u0000rity":'),
            "parameters.prio\\x00rity",
            "key contains a NUL",
        ),
        (
            _vector_text().replace('"priority": "High"', '"priority": "\\ud800"'),
            "parameters.priority",
            "lone surrogate",
        ),
        (
            _vector_text().replace('"priority":', '"\\udc00":'),
            "parameters.\\udc00",
            "key contains a lone surrogate",
        ),
        (_vector_text().replace("4102444800", "9" * 5000), "expires_at_epoch", "5000 digits"),
        (_vector_text().replace("4102444800", "-" + "9" * 21), "expires_at_epoch", "21 digits"),
        (_vector_text().replace("4102444800", "1e999"), "expires_at_epoch", "too large"),
        (_vector_text().replace("4102444800", "Infinity"), "expires_at_epoch", "Infinity"),
        (
            _vector_text().replace('"edited": false', '"edited": false, "edited": true'),
            "approval.edited",
            "more than once",
        ),
        # Refused before parsing: far more brackets or strings than any valid intent holds.
        ("[" * 10_000 + "]" * 10_000, "$", "no valid intent comes near"),
        ('{"parameters": ' + '{"a": ' * 10_000 + "1" + "}" * 10_001, "$", "no valid intent comes near"),
        ('{"parameters": ' + "[" * 500 + "]" * 500 + "}", "parameters" + ".0" * 31, "nests deeper than 32"),
        (
            '{"parameters": ' + "[" * 40 + "]" * 40 + "}",
            "parameters" + ".0" * 31,
            "nests deeper than 32 levels",
        ),
        ("[]", "$", "must be a JSON object"),
        ("\ufeff{}", "$", "not valid JSON"),
    ],
    ids=[
        "nul-value",
        "nul-key",
        "surrogate-value",
        "surrogate-key",
        "5000-digits",
        "21-digits",
        "1e999",
        "infinity",
        "duplicate-key",
        "deep-array",
        "deep-object",
        "depth-500",
        "depth-40",
        "array",
        "bom",
    ],
)
def test_hostile_text_names_the_field(text: str, field: str, words: str) -> None:
    for form in (text, text.encode("utf-8", "surrogatepass")):
        with pytest.raises(IntentInvalid) as raised:
            load_intent_document(form)
        assert (raised.value.field, str(raised.value).splitlines()) == (field, [str(raised.value)])
        assert words in raised.value.message
        with pytest.raises(IntentInvalid) as again:
            parse_intent(form)
        assert again.value.field == field


def test_invalid_utf8_is_a_clear_error() -> None:
    data = _vector_text().encode().replace(b"Follow up", b"Follow \xff\xfe")
    with pytest.raises(IntentInvalid) as raised:
        parse_intent(data)
    assert raised.value.field == "$"
    assert raised.value.message.startswith("is not valid UTF-8 (invalid byte at offset ")


def test_oversize_text_is_refused_before_parsing() -> None:
    huge = "[" + "1," * (16 * 1024 * 1024) + "1]"  # 32 MiB: parsing it would take seconds
    for form in (huge, huge.encode()):
        started = time.perf_counter()
        with pytest.raises(IntentInvalid) as raised:
            load_intent_document(form)
        assert time.perf_counter() - started < 0.5
        assert raised.value.field == "$" and f"the limit is {MAX_INTENT_BYTES} bytes" in raised.value.message


def test_a_contract_sized_brief_fits_as_text() -> None:
    document = load_vector("valid-internal-attach-brief.json")
    document["parameters"]["content"] = "# Brief\n" + "x" * (MAX_BRIEF_BYTES - 8)
    text = json.dumps(document)
    assert len(text) > MAX_BRIEF_BYTES
    assert len(parse_intent(text).parameters["content"].encode()) == MAX_BRIEF_BYTES


@pytest.mark.parametrize(
    ("mutate", "field", "words"),
    [
        (lambda d: d["parameters"].update(subject="Call\x00back"), "parameters.subject", "NUL"),
        (lambda d: d.update(tenant_id="acme\x00"), "tenant_id", "NUL"),
        (lambda d: d["parameters"].update({"x\x00": 1}), "parameters.x\\x00", "key contains a NUL"),
        (lambda d: d["approval"].update(approved_by="\ud83d"), "approval.approved_by", "lone surrogate"),
        (lambda d: d.update(expires_at_epoch=10**5000), "expires_at_epoch", "more than 20 digits"),
        (lambda d: d["parameters"].update(description=float("nan")), "parameters.description", "finite"),
        (lambda d: d["parameters"].update({1: "x"}), "parameters", "keys must be strings"),
        (lambda d: d["parameters"].update(subject=b"bytes"), "parameters.subject", "not a JSON value"),
        (
            lambda d: d["parameters"].update(subject="x" * (MAX_INTENT_BYTES + 1)),
            "parameters.subject",
            "bytes",
        ),
    ],
)
def test_a_parsed_document_gets_the_same_checks(mutate: Any, field: str, words: str) -> None:
    with pytest.raises(IntentInvalid) as raised:
        parse_intent(_mutated(mutate))
    assert raised.value.field == field and words in raised.value.message


def test_a_deeply_nested_parsed_document_is_refused_without_recursion() -> None:
    document = load_vector("valid-crm-create-task.json")
    nested: dict[str, Any] = {}
    document["parameters"]["related_to"] = nested
    for _ in range(100_000):  # far beyond Python's recursion limit
        nested["a"] = {}
        nested = nested["a"]
    with pytest.raises(IntentInvalid) as raised:
        check_document(document)
    assert raised.value.field.startswith("parameters.related_to.a.a")
    assert raised.value.message == f"nests deeper than {MAX_DEPTH} levels"
    cyclic = load_vector("valid-crm-create-task.json")
    cyclic["parameters"]["self"] = cyclic
    with pytest.raises(IntentInvalid):
        check_document(cyclic)


@pytest.mark.parametrize(
    ("expires", "accepted"),
    [(1, True), (MAX_EXPIRES_AT_EPOCH - 1, True), (MAX_EXPIRES_AT_EPOCH, False), (0, False), (-1, False)],
)
def test_expires_at_epoch_is_bounded_so_it_always_converts(expires: int, accepted: bool) -> None:
    assert int(datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp()) + 1 == MAX_EXPIRES_AT_EPOCH
    document = load_vector("valid-crm-create-task.json")
    document["expires_at_epoch"] = expires
    if accepted:
        assert datetime.fromtimestamp(parse_intent(document).expires_at_epoch, UTC).year <= 9999
    else:
        with pytest.raises(IntentInvalid) as raised:
            parse_intent(document)
        assert raised.value.field == "expires_at_epoch"


def test_a_contract_sized_brief_fits_even_when_every_byte_is_escaped() -> None:
    """The producer may escape every character (ensure_ascii, control characters): still accepted."""
    document = load_vector("valid-internal-attach-brief.json")
    document["parameters"]["content"] = "\x01" * MAX_BRIEF_BYTES  # 6 bytes of JSON each: \u0001
    text = json.dumps(document)
    assert len(text) > 6 * MAX_BRIEF_BYTES
    assert len(parse_intent(text).parameters["content"]) == MAX_BRIEF_BYTES


# -- no CPU for forgers: bounded strings, linear checks ----------------------------------------------------
OLD_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")  # the backtracking check is_email replaced


def test_the_pathological_attendee_is_refused_by_the_linear_check() -> None:
    """The string that made the old regular expression backtrack for seconds (100 KB of dotted
    domain ending in a space) is refused: by the length limit in the model, and by is_email itself."""
    pathological = "a@" + "a." * 50_000 + " "
    assert not is_email(pathological)
    assert not is_email("a@" + "a." * 150 + " ")  # within the length limit: the linear check decides
    document = load_vector("valid-calendar-draft-meeting.json")
    document["parameters"]["attendees"] = [pathological]
    with pytest.raises(IntentInvalid) as raised:
        parse_intent(document)
    assert raised.value.field == "parameters.attendees.0"


@given(st.text(alphabet="ab.@ \t\u00a0\u2003", max_size=40))
def test_is_email_agrees_with_the_regular_expression_it_replaced(value: str) -> None:
    assert is_email(value) == bool(OLD_EMAIL.match(value)) or len(value) < 3


@pytest.mark.parametrize(
    ("action_type", "params"),
    [
        (
            "crm.create_task",
            {"subject": "s", "description": "d", "related_to": {"object": "Contact", "id": "1"}},
        ),
        (
            "crm.update_field",
            {"object": "Account", "record_id": "1", "field": "F", "value": "v", "previous_value": "p"},
        ),
        (
            "crm.create_opportunity",
            {
                "name": "n",
                "stage": "s",
                "close_date": "2026-01-01",
                "currency": "USD",
                "follow_up_task": {"subject": "s"},
            },
        ),
        (
            "calendar.draft_meeting",
            {
                "title": "t",
                "start": "2026-01-01T10:00:00Z",
                "end": "2026-01-01T11:00:00Z",
                "organizer": "o@acme.example",
                "attendees": ["a@acme.example"],
                "description": "d",
                "location": "l",
            },
        ),
        (
            "internal.create_task",
            {"title": "t", "assignee": "a", "due_date": "2026-01-01", "description": "d"},
        ),
        ("internal.log_note", {"body": "b", "title": "t"}),
        ("internal.attach_brief", {"title": "t", "content": "c", "content_type": "text/plain"}),
    ],
)
def test_every_string_of_every_parameter_model_is_bounded(action_type: str, params: dict[str, Any]) -> None:
    """Each string field, nested ones and list items included, refuses a value longer than the brief's limit."""
    model = PARAMETER_MODELS[action_type]
    model.model_validate(params)  # the base is valid
    huge = "x" * (MAX_BRIEF_BYTES + 1)
    paths: list[tuple[str, ...]] = []
    for name, value in params.items():
        if isinstance(value, str):
            paths.append((name,))
        elif isinstance(value, dict):
            paths += [(name, inner) for inner, item in value.items() if isinstance(item, str)]
        elif isinstance(value, list):
            paths.append((name, "0"))
    for path in paths:
        mutated = json.loads(json.dumps(params))
        target: Any = mutated
        for step in path[:-1]:
            target = target[step]
        if isinstance(target, list):
            target[int(path[-1])] = huge
        else:
            target[path[-1]] = huge
        with pytest.raises(ValidationError) as raised:
            model.model_validate(mutated)
        assert tuple(str(p) for p in raised.value.errors()[0]["loc"])[: len(path)] == path


def test_the_envelope_is_checked_without_the_parameters() -> None:
    document = load_vector("valid-crm-create-task.json")
    document["parameters"] = {"subject": "x" * 300}  # the action's model would refuse it
    assert check_envelope(document).action_type == "crm.create_task"
    document["tenant_id"] = "Not A Tenant"
    with pytest.raises(IntentInvalid) as raised:
        check_envelope(document)
    assert raised.value.field == "tenant_id"


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('{"a": [' + ",".join(['""'] * 2000) + "]}", "strings"),
        ('{"a": [' + ",".join(["0"] * 2000) + "]}", "values and containers"),
        ('{"a": [' + ",".join(["{}"] * 2000) + "]}", "values and containers"),
    ],
)
def test_a_document_with_more_structure_than_any_intent_is_refused_before_parsing(
    text: str, words: str
) -> None:
    with pytest.raises(IntentInvalid) as raised:
        load_intent_document(text)
    assert raised.value.field == "$" and words in raised.value.message


def test_count_structure_ignores_what_strings_hold() -> None:
    text = json.dumps({"a": ',[{"\\' * 1000, "b": [1, 2, {"c": "\\\\"}]})  # beyond the raw counts' shortcut
    # Strings: a, its value, b, c, its value. Outside them: { , [ , , { — none of the value's own.
    assert count_structure(text) == (5, 6)


def test_a_parsed_document_with_too_many_values_is_refused() -> None:
    document = load_vector("valid-crm-create-task.json")
    document["parameters"]["x"] = list(range(5000))
    with pytest.raises(IntentInvalid, match="more than 1000"):
        check_document(document)


def test_an_intent_encoded_twice_names_the_mistake() -> None:
    text = json.dumps(_vector_text())  # JSON text inside a JSON string
    with pytest.raises(IntentInvalid) as raised:
        load_intent_document(text)
    assert raised.value.field == "$" and "not JSON text inside a string" in raised.value.message
    document = load_vector("valid-crm-create-task.json")
    document["parameters"] = json.dumps(document["parameters"])
    with pytest.raises(IntentInvalid) as again:
        parse_intent(document)
    assert again.value.field == "parameters" and "encoded twice" in again.value.message
