"""google-api-python-client keeps the Google Calendar emulator (and the connector) honest.

The Calendar v3 client is built OFFLINE from the discovery document shipped in google-api-python-client
(``googleapiclient/discovery_cache/documents/calendar.v3.json``), aimed at the emulator served on a real
loopback port, and authorised by google-auth's own service-account credentials (JWT grant against the
emulator's token endpoint). When the emulator and the official client disagree, the emulator is wrong.

Then every request the connector sends — what ``describe()`` lists and what ``execute``/``lookup``/
``compensate``/``check`` send besides — is validated against the same discovery document: method and
path template, path parameters, query parameters (names, enums, types) and body fields against the
``Event`` schema.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import google_auth_httplib2  # type: ignore[import-untyped]
import googleapiclient  # type: ignore[import-untyped]
import httplib2  # type: ignore[import-untyped]
import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from google.oauth2 import service_account
from googleapiclient.discovery import build_from_document  # type: ignore[import-untyped]
from googleapiclient.errors import HttpError  # type: ignore[import-untyped]

from blocks.auth import TOKEN_REQUEST
from connectors.base import StepCall, idempotency_key
from connectors.google_calendar import GoogleCalendarConnector, event_id_for
from sandbox.google_calendar import GoogleCalendarEmulator
from tests.connectors.cases_google_calendar import (
    PARAMS,
    SERVICE_ACCOUNT,
    SUBJECT,
    make_credentials,
    make_emulator,
    service_account_key,
)

DISCOVERY = Path(googleapiclient.__file__).parent / "discovery_cache" / "documents" / "calendar.v3.json"
SCOPE = "https://www.googleapis.com/auth/calendar.events"
EVENT_ID = "abcdefghijklmnopqrstuv0123456789"


def discovery() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(DISCOVERY.read_text())
    return document


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[GoogleCalendarEmulator, str]]:
    emulator = make_emulator()
    base = emulator.serve()
    try:
        yield emulator, base
    finally:
        emulator.shutdown()


@pytest.fixture
def emulator(served: tuple[GoogleCalendarEmulator, str]) -> GoogleCalendarEmulator:
    served[0].reset()
    return served[0]


def calendar_client(base: str, http: Any) -> Any:
    """The official Calendar v3 client from the shipped discovery document, aimed at ``base``."""
    document = discovery()
    document["rootUrl"] = f"{base}/"
    document["baseUrl"] = f"{base}/calendar/v3/"
    return build_from_document(document, http=http)


def authorised_http(base: str, subject: str = SUBJECT) -> Any:
    """google-auth's service-account credentials (JWT grant at the emulator's /token), over httplib2."""
    pem = service_account_key().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    credentials = service_account.Credentials.from_service_account_info(  # type: ignore[no-untyped-call]
        {
            "type": "service_account",
            "client_email": SERVICE_ACCOUNT,
            "private_key": pem.decode("ascii"),
            "private_key_id": "k1",
            "token_uri": f"{base}/token",
        },
        scopes=[SCOPE],
        subject=subject,
    )
    return google_auth_httplib2.AuthorizedHttp(credentials, http=httplib2.Http(proxy_info=None, timeout=10))


def event(event_id: str = EVENT_ID, **extra: Any) -> dict[str, Any]:
    return {
        "id": event_id,
        "summary": "Renewal pricing review",
        "start": {"dateTime": "2026-12-03T16:00:00+01:00"},
        "end": {"dateTime": "2026-12-03T16:30:00+01:00"},
        "extendedProperties": {"private": {"fulfill_intent_key": "k"}},
        **extra,
    }


# -- the official client drives the emulator ------------------------------------------------------------
def test_insert_get_patch_list_delete(served: tuple[GoogleCalendarEmulator, str], emulator: Any) -> None:
    calendar = calendar_client(served[1], authorised_http(served[1]))
    events = calendar.events()
    created = events.insert(calendarId="primary", body=event(), sendUpdates="none").execute()
    assert (created["id"], created["status"], created["kind"]) == (EVENT_ID, "confirmed", "calendar#event")
    assert created["creator"] == {"email": SUBJECT}
    got = events.get(calendarId="primary", eventId=EVENT_ID).execute()
    assert got["extendedProperties"]["private"] == {"fulfill_intent_key": "k"}
    patched = events.patch(
        calendarId="primary", eventId=EVENT_ID, body={"location": "Zoom"}, sendUpdates="none"
    ).execute()
    assert patched["location"] == "Zoom" and patched["summary"] == "Renewal pricing review"
    listed = events.list(calendarId="primary", maxResults=10).execute()
    assert listed["accessRole"] == "owner" and [e["id"] for e in listed["items"]] == [EVENT_ID]
    assert events.delete(calendarId="primary", eventId=EVENT_ID, sendUpdates="none").execute() == ""
    assert events.get(calendarId="primary", eventId=EVENT_ID).execute()["status"] == "cancelled"
    assert events.list(calendarId="primary").execute()["items"] == []
    deleted = events.list(calendarId="primary", showDeleted=True).execute()["items"]
    assert [(e["id"], e["status"]) for e in deleted] == [(EVENT_ID, "cancelled")]
    assert emulator.notifications == []


def test_list_pages_through_the_official_client(
    served: tuple[GoogleCalendarEmulator, str], emulator: Any
) -> None:
    events = calendar_client(served[1], authorised_http(served[1])).events()
    for n in range(3):
        events.insert(calendarId="primary", body=event(f"{EVENT_ID[:-1]}{n}")).execute()
    request, seen = events.list(calendarId="primary", maxResults=2), list[str]()
    while request is not None:
        page = request.execute()
        seen.extend(e["id"] for e in page["items"])
        request = events.list_next(request, page)
    assert seen == [f"{EVENT_ID[:-1]}{n}" for n in range(3)]


def _http_error(call: Any) -> HttpError:
    with pytest.raises(HttpError) as raised:
        call.execute()
    return raised.value


def test_error_cases_read_by_the_official_client(
    served: tuple[GoogleCalendarEmulator, str], emulator: Any
) -> None:
    events = calendar_client(served[1], authorised_http(served[1])).events()
    events.insert(calendarId="primary", body=event()).execute()
    cases = [
        (
            events.insert(calendarId="primary", body=event()),
            409,
            "The requested identifier already exists.",
            "duplicate",
        ),
        (
            events.insert(calendarId="primary", body=event("bad-id")),
            400,
            "Invalid resource id value.",
            "invalid",
        ),
        (events.get(calendarId="primary", eventId="abcdefgh"), 404, "Not Found", "notFound"),
        (
            events.insert(
                calendarId="primary",
                body=event(f"{EVENT_ID[:-1]}1", end={"dateTime": "2026-12-03T15:00:00+01:00"}),
            ),
            400,
            "The specified time range is empty.",
            "timeRangeEmpty",
        ),
    ]
    events.delete(calendarId="primary", eventId=EVENT_ID).execute()
    cases.append(
        (events.delete(calendarId="primary", eventId=EVENT_ID), 410, "Resource has been deleted", "deleted")
    )
    # A deleted event's id stays taken.
    cases.append(
        (
            events.insert(calendarId="primary", body=event()),
            409,
            "The requested identifier already exists.",
            "duplicate",
        )
    )
    for call, status, message, reason in cases:
        error = _http_error(call)
        assert (error.status_code, error.reason, error.error_details[0]["reason"]) == (
            status,
            message,
            reason,
        )


def test_an_invalid_send_updates_is_refused_by_the_client_and_the_emulator(
    served: tuple[GoogleCalendarEmulator, str], emulator: Any
) -> None:
    events = calendar_client(served[1], authorised_http(served[1])).events()
    with pytest.raises(TypeError):  # the discovery document's enum, checked by the client itself
        events.insert(calendarId="primary", body=event(), sendUpdates="nobody")
    raw = httpx.post(
        f"{served[1]}/calendar/v3/calendars/primary/events?sendUpdates=nobody",
        json=event(),
        headers={"Authorization": f"Bearer {_token(served[1])}"},
    )
    assert raw.status_code == 400 and raw.json()["error"]["errors"][0]["reason"] == "invalidParameter"


def _token(base: str) -> str:
    http = authorised_http(base)
    http.credentials.refresh(google_auth_httplib2.Request(httplib2.Http(proxy_info=None)))
    token: str = http.credentials.token
    return token


def test_without_credentials_the_official_client_gets_googles_401(
    served: tuple[GoogleCalendarEmulator, str],
) -> None:
    events = calendar_client(served[1], httplib2.Http(proxy_info=None, timeout=10)).events()
    error = _http_error(events.get(calendarId="primary", eventId=EVENT_ID))
    assert (error.status_code, error.reason, error.error_details[0]["reason"]) == (
        401,
        "Invalid Credentials",
        "authError",
    )


def test_a_calendar_outside_the_users_acl_is_not_found(
    served: tuple[GoogleCalendarEmulator, str], emulator: Any
) -> None:
    emulator.add_calendar("ceo@acme.example", {"ceo@acme.example": "owner"})
    try:
        events = calendar_client(served[1], authorised_http(served[1])).events()
        error = _http_error(events.insert(calendarId="ceo@acme.example", body=event()))
        assert (error.status_code, error.error_details[0]["reason"]) == (404, "notFound")
    finally:
        emulator.calendars.clear()


# -- every request the connector sends matches the discovery document ------------------------------------
STANDARD_PARAMETERS = set(discovery()["parameters"])


def _methods() -> list[tuple[str, re.Pattern[str], dict[str, Any]]]:
    document = discovery()
    found = []
    for resource in document["resources"].values():
        for method in resource.get("methods", {}).values():
            template = "/" + document["servicePath"] + method["path"]
            pattern = re.escape(template)
            for name in method.get("parameterOrder", []):
                pattern = pattern.replace(re.escape("{" + name + "}"), f"(?P<{name}>[^/]+)")
            found.append((method["httpMethod"], re.compile(pattern), method))
    return found


METHODS = _methods()


def _check_value(schema: dict[str, Any], value: Any, where: str) -> None:
    """``value`` fits the discovery schema ``schema`` (types, enums, nested objects, additionalProperties)."""
    schemas = discovery()["schemas"]
    if "$ref" in schema:
        schema = schemas[schema["$ref"]]
    kind = schema.get("type")
    if kind == "object":
        assert isinstance(value, dict), f"{where}: not an object"
        for key, item in value.items():
            if key in schema.get("properties", {}):
                _check_value(schema["properties"][key], item, f"{where}.{key}")
            else:
                assert "additionalProperties" in schema, (
                    f"{where}.{key}: no such field in the discovery document"
                )
                _check_value(schema["additionalProperties"], item, f"{where}.{key}")
    elif kind == "array":
        assert isinstance(value, list), f"{where}: not an array"
        for index, item in enumerate(value):
            _check_value(schema["items"], item, f"{where}[{index}]")
    elif kind == "string":
        assert isinstance(value, str), f"{where}: not a string"
        if "enum" in schema:
            assert value in schema["enum"], f"{where}: {value!r} not in {schema['enum']}"
        if schema.get("format") == "date-time":
            assert re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})", value), (
                where
            )
    elif kind == "boolean":
        assert isinstance(value, bool), f"{where}: not a boolean"
    elif kind == "integer":
        assert isinstance(value, int) and not isinstance(value, bool), f"{where}: not an integer"


def validate_against_discovery(request: httpx.Request) -> str:
    """Find ``request``'s method in the discovery document and check it; returns the method id."""
    raw_path = request.url.raw_path.decode("ascii").split("?", 1)[0]
    matches = [
        (pattern.fullmatch(raw_path), method)
        for http_method, pattern, method in METHODS
        if http_method == request.method and pattern.fullmatch(raw_path)
    ]
    assert len(matches) == 1, f"{request.method} {raw_path}: no single discovery method"
    match, method = matches[0]
    assert match is not None
    parameters = method.get("parameters", {})
    for name, value in match.groupdict().items():
        assert parameters[name]["location"] == "path" and unquote(value), name
        # One segment: no raw "/" and no literal dot segment (an encoded "%2E%2E" is a calendar named "..").
        assert "/" not in value and value not in (".", ".."), f"{name}: not one safe segment"
    for name, value in request.url.params.multi_items():
        if name in STANDARD_PARAMETERS:
            continue
        assert name in parameters and parameters[name]["location"] == "query", f"query {name}: unknown"
        spec = parameters[name]
        if "enum" in spec:
            assert value in spec["enum"], f"{name}={value!r} not in {spec['enum']}"
        if spec["type"] == "boolean":
            assert value in ("true", "false"), name
        if spec["type"] == "integer":
            assert value.isdigit() and int(value) >= int(spec.get("minimum", "0")), name
    if "request" in method:
        _check_value(method["request"], json.loads(request.content), method["id"])
    else:
        assert not request.content, f"{method['id']} takes no body"
    return str(method["id"])


def _call(**params: Any) -> StepCall:
    return StepCall(
        action_intent_id="ai_7f3c",
        tenant_id="acme",
        account_id="001",
        action_type="calendar.draft_meeting",
        step="draft_meeting",
        idempotency_key=idempotency_key("ai_7f3c", "draft_meeting"),
        params={**PARAMS, **params},
    )


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"attendees": [f"attendee.number.{n:02d}@customer-domain.example" for n in range(50)]},
        {"location": None, "description": None, "attendees": None, "organizer": "primary"},
        {"organizer": ".."},
    ],
)
@pytest.mark.parametrize("draft_calendar_id", [None, "drafts@group.calendar.google.com"])
def test_every_request_the_connector_sends_matches_the_discovery_document(
    params: dict[str, Any], draft_calendar_id: str | None
) -> None:
    emulator = make_emulator()
    client = httpx.Client(transport=emulator.transport())
    connector = GoogleCalendarConnector(
        client,
        make_credentials(draft_calendar_id=draft_calendar_id, api_base_url="https://www.googleapis.com"),
    )
    call = _call(**params)
    call = call.model_copy(update={"params": {k: v for k, v in call.params.items() if v is not None}})
    described = connector.describe(call)
    connector.check()
    result = connector.execute(call)
    connector.execute(call)  # 409 → GET
    assert connector.lookup(call) is not None
    connector.compensate(call, result)
    sent = [r for r in emulator.requests if not r.extensions.get(TOKEN_REQUEST)]
    ids = [validate_against_discovery(r) for r in sent]
    assert ids == [
        "calendar.events.list",
        "calendar.events.insert",
        "calendar.events.insert",
        "calendar.events.get",
        "calendar.events.get",
        "calendar.events.delete",
    ]
    for description in described:
        request = client.build_request(
            description.method, description.url, params=description.params or None, json=description.body
        )
        assert validate_against_discovery(request) == "calendar.events.insert"
    assert event_id_for(call.idempotency_key) == result.ref.id


def test_the_validator_refuses_what_the_discovery_document_does_not_allow() -> None:
    base = "https://www.googleapis.com/calendar/v3/calendars/primary/events"
    bad = [
        httpx.Request("POST", base, params={"sendUpdates": "nobody"}, json=event()),
        httpx.Request("POST", base, params={"notifyEveryone": "true"}, json=event()),
        httpx.Request("POST", base, json={**event(), "attendee": []}),
        httpx.Request("POST", base, json={**event(), "extendedProperties": {"private": {"k": 1}}}),
        httpx.Request("PUT", base, json=event()),
    ]
    for request in bad:
        with pytest.raises(AssertionError):
            validate_against_discovery(request)
