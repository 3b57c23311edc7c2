"""Google Calendar connector against respx: the exact documented request shapes and error bodies.

The fake host is never contacted: respx answers every request and refuses unmatched ones.
Docs: https://developers.google.com/workspace/calendar/api/v3/reference/events/insert,
https://developers.google.com/workspace/calendar/api/guides/errors,
https://developers.google.com/identity/protocols/oauth2/service-account#httprest
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
import respx
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from blocks.google_calendar import CALENDAR_EVENTS_SCOPE
from connectors.base import ExternalRef, Guarantee, StepCall, StepResult, idempotency_key
from connectors.errors import (
    AuthenticationFailed,
    Conflict,
    Forbidden,
    NetworkError,
    NotConfigured,
    NotFound,
    OutcomeUnknown,
    ProviderUnavailable,
    RateLimitedError,
    ValidationRejected,
)
from connectors.google_calendar import GoogleCalendarConnector, event_id_for
from tests.connectors.cases_google_calendar import (
    ORGANIZER,
    PARAMS,
    SERVICE_ACCOUNT,
    SUBJECT,
    make_credentials,
    service_account_key,
)

API = "https://www.googleapis.com"
# Google's older token URI lives on the API host, so one respx base_url covers both.
TOKEN_URI = f"{API}/oauth2/v4/token"
EVENTS = "/calendar/v3/calendars/jordan%40acme.example/events"
KEY = idempotency_key("ai_7f3c", "draft_meeting")
EVENT_ID = event_id_for(KEY)
HTML_LINK = "https://www.google.com/calendar/event?eid=abc"
TOKEN = "ya29.test-access-token"


def google_error(code: int, reason: str, message: str, domain: str = "global") -> dict[str, Any]:
    return {
        "error": {
            "errors": [{"domain": domain, "reason": reason, "message": message}],
            "code": code,
            "message": message,
        }
    }


def event_body(key: str = KEY, status: str = "confirmed") -> dict[str, Any]:
    return {
        "kind": "calendar#event",
        "id": EVENT_ID,
        "status": status,
        "htmlLink": HTML_LINK,
        "summary": PARAMS["title"],
        "start": {"dateTime": PARAMS["start"]},
        "end": {"dateTime": PARAMS["end"]},
        "extendedProperties": {"private": {"fulfill_intent_key": key}},
    }


def make_call(**params: Any) -> StepCall:
    return StepCall(
        action_intent_id="ai_7f3c",
        tenant_id="acme",
        account_id="001Hs00002abcDEF",
        action_type="calendar.draft_meeting",
        step="draft_meeting",
        idempotency_key=KEY,
        params={**PARAMS, **params},
    )


def make_connector(**overrides: Any) -> GoogleCalendarConnector:
    values = {"token_uri": TOKEN_URI, "api_base_url": API, **overrides}
    return GoogleCalendarConnector(httpx.Client(), make_credentials(**values))


@pytest.fixture
def google() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=API, assert_all_called=False) as router:
        router.post("/oauth2/v4/token", name="token").respond(
            200, json={"access_token": TOKEN, "expires_in": 3599, "token_type": "Bearer"}
        )
        yield router


def form_of(request: httpx.Request) -> dict[str, str]:
    return {key: values[0] for key, values in parse_qs(request.content.decode()).items()}


def b64url_json(part: str) -> dict[str, Any]:
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return decoded


# -- event id --------------------------------------------------------------------------------------
def test_event_id_is_deterministic_base32hex() -> None:
    assert re.fullmatch(r"[a-v0-9]{5,1024}", EVENT_ID)
    assert event_id_for(KEY) == EVENT_ID
    assert event_id_for(KEY + ":g1") != EVENT_ID
    assert len(EVENT_ID) == 52


# -- execute: request shapes -----------------------------------------------------------------------
def test_execute_inserts_a_draft_without_attendees_and_sends_no_updates(google: respx.MockRouter) -> None:
    insert = google.post(EVENTS).respond(200, json=event_body())
    result = make_connector().execute(make_call())

    request = insert.calls.last.request
    assert request.url.raw_path.decode() == f"{EVENTS}?sendUpdates=none"
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    body = json.loads(request.content)
    assert "attendees" not in body
    assert body["id"] == EVENT_ID
    assert body["summary"] == "Renewal pricing review"
    assert body["start"] == {"dateTime": "2026-12-03T16:00:00+01:00"}
    assert body["end"] == {"dateTime": "2026-12-03T16:30:00+01:00"}
    assert body["location"] == "Zoom"
    assert body["extendedProperties"]["private"] == {
        "fulfill_intent_key": KEY,
        "fulfill_action_intent_id": "ai_7f3c",
        "fulfill_proposed_attendees": "casey@customer.example, riley@customer.example",
    }
    assert body["description"].startswith("Walk through the renewal options.")
    assert (
        "Proposed attendees (not invited): casey@customer.example, riley@customer.example"
        in body["description"]
    )

    assert result == StepResult(
        ref=ExternalRef(system="google_calendar", object="event", id=EVENT_ID, url=HTML_LINK),
        created=True,
        undo={"calendar_id": ORGANIZER, "subject": SUBJECT},
        summary=(
            "Drafted the meeting “Renewal pricing review” (Dec 3, 16:00) in Google Calendar; "
            "nobody was invited."
        ),
    )


def test_service_account_assertion_is_a_signed_jwt_for_the_blocks_subject(google: respx.MockRouter) -> None:
    google.post(EVENTS).respond(200, json=event_body())
    make_connector().execute(make_call())

    form = form_of(google["token"].calls.last.request)
    assert form["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer"
    header_part, claims_part, signature_part = form["assertion"].split(".")
    assert b64url_json(header_part) == {"alg": "RS256", "typ": "JWT", "kid": "k1"}
    claims = b64url_json(claims_part)
    assert claims["iss"] == SERVICE_ACCOUNT
    assert claims["sub"] == SUBJECT  # the block's user, never the intent's organizer
    assert claims["scope"] == CALENDAR_EVENTS_SCOPE
    assert claims["aud"] == TOKEN_URI
    assert claims["exp"] - claims["iat"] == 3600
    signature = base64.urlsafe_b64decode(signature_part + "=" * (-len(signature_part) % 4))
    service_account_key().public_key().verify(
        signature, f"{header_part}.{claims_part}".encode(), padding.PKCS1v15(), hashes.SHA256()
    )


def test_draft_calendar_and_subject_from_the_block_win(google: respx.MockRouter) -> None:
    insert = google.post("/calendar/v3/calendars/drafts%40group.calendar.google.com/events").respond(
        200, json=event_body()
    )
    connector = make_connector(
        draft_calendar_id="drafts@group.calendar.google.com", subject="robot@acme.example"
    )
    result = connector.execute(make_call())
    assert insert.called
    claims = b64url_json(form_of(google["token"].calls.last.request)["assertion"].split(".")[1])
    assert claims["sub"] == "robot@acme.example"
    assert result.undo == {"calendar_id": "drafts@group.calendar.google.com", "subject": "robot@acme.example"}


def test_refresh_token_mode_posts_the_documented_form(google: respx.MockRouter) -> None:
    google.post(EVENTS).respond(200, json=event_body())
    connector = make_connector(
        auth_mode="oauth_refresh_token",
        client_id="123.apps.googleusercontent.com",
        client_secret="client-secret-value",
        refresh_token="1//refresh-value",
    )
    connector.execute(make_call())
    assert form_of(google["token"].calls.last.request) == {
        "grant_type": "refresh_token",
        "client_id": "123.apps.googleusercontent.com",
        "client_secret": "client-secret-value",
        "refresh_token": "1//refresh-value",
    }


def test_long_attendee_lists_are_split_within_the_property_value_limit(google: respx.MockRouter) -> None:
    insert = google.post(EVENTS).respond(200, json=event_body())
    attendees = [f"attendee.number.{n:02d}@customer-domain.example" for n in range(50)]
    make_connector().execute(make_call(attendees=attendees))
    private = json.loads(insert.calls.last.request.content)["extendedProperties"]["private"]
    keys = ["fulfill_proposed_attendees", "fulfill_proposed_attendees_2", "fulfill_proposed_attendees_3"]
    assert sorted(k for k in private if k.startswith("fulfill_proposed_attendees")) == keys
    chunks = [private[key] for key in keys]
    assert all(len(chunk) <= 1024 for chunk in chunks)
    assert "".join(chunks) == ", ".join(attendees)


# -- 409 duplicate -----------------------------------------------------------------------------------
def test_duplicate_with_our_key_is_reused(google: respx.MockRouter) -> None:
    google.post(EVENTS).respond(
        409, json=google_error(409, "duplicate", "The requested identifier already exists.")
    )
    get = google.get(f"{EVENTS}/{EVENT_ID}").respond(200, json=event_body())
    result = make_connector().execute(make_call())
    assert get.called
    assert result.created is False
    assert result.ref.id == EVENT_ID
    assert result.ref.url == HTML_LINK


def test_duplicate_with_a_foreign_key_is_a_conflict(google: respx.MockRouter) -> None:
    google.post(EVENTS).respond(
        409, json=google_error(409, "duplicate", "The requested identifier already exists.")
    )
    google.get(f"{EVENTS}/{EVENT_ID}").respond(200, json=event_body(key="someone-else:draft_meeting"))
    with pytest.raises(Conflict):
        make_connector().execute(make_call())


def test_duplicate_of_a_deleted_draft_is_a_conflict(google: respx.MockRouter) -> None:
    google.post(EVENTS).respond(
        409, json=google_error(409, "duplicate", "The requested identifier already exists.")
    )
    google.get(f"{EVENTS}/{EVENT_ID}").respond(200, json=event_body(status="cancelled"))
    with pytest.raises(Conflict):
        make_connector().execute(make_call())


# -- tokens ------------------------------------------------------------------------------------------
def test_token_is_cached_between_calls(google: respx.MockRouter) -> None:
    google.post(EVENTS).respond(200, json=event_body())
    connector = make_connector()
    connector.execute(make_call())
    connector.execute(make_call())
    assert google["token"].call_count == 1


def test_expired_token_is_fetched_again() -> None:
    now = [1_000_000.0]
    connector = GoogleCalendarConnector(
        httpx.Client(), make_credentials(token_uri=TOKEN_URI, api_base_url=API), clock=lambda: now[0]
    )
    with respx.mock(base_url=API) as google:
        token = google.post("/oauth2/v4/token").respond(200, json={"access_token": TOKEN, "expires_in": 3599})
        google.post(EVENTS).respond(200, json=event_body())
        connector.execute(make_call())
        now[0] += 3599 - 30  # inside the safety margin
        connector.execute(make_call())
    assert token.call_count == 2


def test_401_refreshes_once_then_succeeds(google: respx.MockRouter) -> None:
    auth_error = google_error(401, "authError", "Invalid Credentials")
    insert = google.post(EVENTS).mock(
        side_effect=[httpx.Response(401, json=auth_error), httpx.Response(200, json=event_body())]
    )
    result = make_connector().execute(make_call())
    assert result.created is True
    assert insert.call_count == 2
    assert google["token"].call_count == 2


def test_401_twice_is_authentication_failed(google: respx.MockRouter) -> None:
    google.post(EVENTS).respond(401, json=google_error(401, "authError", "Invalid Credentials"))
    with pytest.raises(AuthenticationFailed) as raised:
        make_connector().execute(make_call())
    assert google["token"].call_count == 2
    assert TOKEN not in str(raised.value)


def test_refused_grant_is_authentication_failed_without_secrets() -> None:
    canary = "1//CANARY-refresh-token-never-shown"
    connector = make_connector(
        auth_mode="oauth_refresh_token", client_id="cid", client_secret="CANARY-secret", refresh_token=canary
    )
    with respx.mock(base_url=API) as google:
        google.post("/oauth2/v4/token").respond(
            400, json={"error": "invalid_grant", "error_description": f"Bad Request {canary}"}
        )
        with pytest.raises(AuthenticationFailed) as raised:
            connector.execute(make_call())
    error = raised.value
    assert error.provider_code == "invalid_grant"
    assert "CANARY" not in str(error) and "CANARY" not in repr(error.as_dict())


def test_token_endpoint_outage_is_transient() -> None:
    with respx.mock(base_url=API) as google:
        google.post("/oauth2/v4/token").respond(503, json={"error": "internal_failure"})
        with pytest.raises(ProviderUnavailable):
            make_connector().execute(make_call())


def test_missing_credentials_are_not_configured() -> None:
    connector = make_connector(auth_mode="oauth_refresh_token")
    with respx.mock(base_url=API), pytest.raises(NotConfigured) as raised:
        connector.execute(make_call())
    assert "client_id" in str(raised.value) and "refresh_token" in str(raised.value)


def test_unreadable_private_key_is_not_configured() -> None:
    connector = make_connector(private_key="-----BEGIN PRIVATE KEY-----\nCANARY\n-----END PRIVATE KEY-----\n")
    with respx.mock(base_url=API), pytest.raises(NotConfigured) as raised:
        connector.execute(make_call())
    assert "CANARY" not in str(raised.value)


# -- error classification ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (403, google_error(403, "rateLimitExceeded", "Rate Limit Exceeded", "usageLimits"), RateLimitedError),
        (
            403,
            google_error(403, "userRateLimitExceeded", "User Rate Limit Exceeded", "usageLimits"),
            RateLimitedError,
        ),
        (429, google_error(429, "rateLimitExceeded", "Rate Limit Exceeded", "usageLimits"), RateLimitedError),
        (
            403,
            google_error(403, "forbiddenForNonOrganizer", "Shared properties can only be changed"),
            Forbidden,
        ),
        (400, google_error(400, "invalid", "Invalid resource id value."), ValidationRejected),
        (404, google_error(404, "notFound", "Not Found"), NotFound),
        (500, google_error(500, "backendError", "Backend Error"), ProviderUnavailable),
        (503, None, ProviderUnavailable),
    ],
)
def test_documented_errors_are_classified(
    google: respx.MockRouter, status: int, body: dict[str, Any] | None, expected: type[Exception]
) -> None:
    google.post(EVENTS).respond(status, json=body)
    with pytest.raises(expected) as raised:
        make_connector().execute(make_call())
    assert type(raised.value) is expected
    assert "Rate Limit Exceeded" not in str(raised.value)  # no raw provider message


def test_rate_limit_carries_retry_after(google: respx.MockRouter) -> None:
    google.post(EVENTS).respond(
        429, json=google_error(429, "rateLimitExceeded", "Rate Limit Exceeded"), headers={"Retry-After": "7"}
    )
    with pytest.raises(RateLimitedError) as raised:
        make_connector().execute(make_call())
    assert raised.value.retry_after == 7.0
    assert raised.value.provider_code == "rateLimitExceeded"


def test_read_timeout_on_insert_is_outcome_unknown(google: respx.MockRouter) -> None:
    google.post(EVENTS).mock(side_effect=httpx.ReadTimeout("slow"))
    with pytest.raises(OutcomeUnknown):
        make_connector().execute(make_call())


def test_connect_error_on_insert_is_a_plain_network_error(google: respx.MockRouter) -> None:
    google.post(EVENTS).mock(side_effect=httpx.ConnectError("refused"))
    with pytest.raises(NetworkError) as raised:
        make_connector().execute(make_call())
    assert not isinstance(raised.value, OutcomeUnknown)


# -- lookup ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("status", "body"),
    [
        (404, google_error(404, "notFound", "Not Found")),
        (410, google_error(410, "deleted", "Resource has been deleted")),
        (200, event_body(status="cancelled")),
    ],
)
def test_lookup_finds_nothing(google: respx.MockRouter, status: int, body: dict[str, Any]) -> None:
    google.get(f"{EVENTS}/{EVENT_ID}").respond(status, json=body)
    assert make_connector().lookup(make_call()) is None


def test_lookup_finds_our_event(google: respx.MockRouter) -> None:
    google.get(f"{EVENTS}/{EVENT_ID}").respond(200, json=event_body())
    found = make_connector().lookup(make_call())
    assert found is not None
    assert (found.ref.id, found.ref.url, found.created) == (EVENT_ID, HTML_LINK, False)


def test_lookup_refuses_a_foreign_event_with_our_id(google: respx.MockRouter) -> None:
    google.get(f"{EVENTS}/{EVENT_ID}").respond(200, json=event_body(key="other"))
    with pytest.raises(Conflict):
        make_connector().lookup(make_call())


def test_lookup_timeout_is_not_an_unknown_outcome(google: respx.MockRouter) -> None:
    google.get(f"{EVENTS}/{EVENT_ID}").mock(side_effect=httpx.ReadTimeout("slow"))
    with pytest.raises(NetworkError) as raised:
        make_connector().lookup(make_call())
    assert not isinstance(raised.value, OutcomeUnknown)


# -- compensate --------------------------------------------------------------------------------------
def _result() -> StepResult:
    return StepResult(
        ref=ExternalRef(system="google_calendar", object="event", id=EVENT_ID, url=HTML_LINK),
        created=True,
        undo={"calendar_id": ORGANIZER, "subject": SUBJECT},
        summary="…",
    )


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (204, None),
        (404, google_error(404, "notFound", "Not Found")),
        (410, google_error(410, "deleted", "Resource has been deleted")),
    ],
)
def test_compensate_deletes_silently(
    google: respx.MockRouter, status: int, body: dict[str, Any] | None
) -> None:
    delete = google.delete(f"{EVENTS}/{EVENT_ID}").respond(status, json=body)
    make_connector().compensate(make_call(), _result())
    request = delete.calls.last.request
    assert request.url.raw_path.decode() == f"{EVENTS}/{EVENT_ID}?sendUpdates=none"
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert request.content == b""


def test_compensate_outage_is_transient(google: respx.MockRouter) -> None:
    google.delete(f"{EVENTS}/{EVENT_ID}").respond(
        503, json=google_error(503, "backendError", "Backend Error")
    )
    with pytest.raises(ProviderUnavailable):
        make_connector().compensate(make_call(), _result())


# -- validate ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"title": "  "}, "parameters.title"),
        ({"start": "2026-12-03T16:00:00"}, "parameters.start"),
        ({"start": "Dec 3 2026"}, "parameters.start"),
        ({"end": "2026-12-03T16:00:00+01:00"}, "parameters.end"),
        ({"end": "2026-13-03T16:00:00+01:00"}, "parameters.end"),
        ({"organizer": ""}, "parameters.organizer"),
        ({"attendees": "casey@customer.example"}, "parameters.attendees"),
        ({"attendees": [f"a{n}@x.example" for n in range(51)]}, "parameters.attendees"),
        ({"attendees": ["casey@customer.example", "not-an-email"]}, "parameters.attendees[1]"),
        ({"description": 42}, "parameters.description"),
        ({"colour": "red"}, "parameters.colour"),
    ],
)
def test_validate_names_the_field(change: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationRejected) as raised:
        make_connector().validate("calendar.draft_meeting", {**PARAMS, **change})
    assert str(raised.value).startswith(f"{field}:")


def test_validate_accepts_minimal_and_utc_parameters() -> None:
    minimal = {
        "title": "Sync",
        "start": "2026-12-03T15:00:00Z",
        "end": "2026-12-03T15:30:00.000Z",
        "organizer": "a@b.c",
    }
    make_connector().validate("calendar.draft_meeting", minimal)
    make_connector().validate(
        "calendar.draft_meeting", {**PARAMS, "attendees": [f"a{n}@x.example" for n in range(50)]}
    )


def test_other_action_types_are_refused() -> None:
    connector = make_connector()
    assert connector.supports("calendar.draft_meeting") and not connector.supports("crm.create_task")
    assert connector.steps("calendar.draft_meeting", PARAMS) == ["draft_meeting"]
    with pytest.raises(ValidationRejected):
        connector.steps("crm.create_task", {})


# -- 409 after a deleted draft: status first (a deleted event is only guaranteed its id) ---------------
def _duplicate(google: respx.MockRouter, existing: dict[str, Any]) -> respx.Route:
    insert = google.post(EVENTS).respond(
        409, json=google_error(409, "duplicate", "The requested identifier already exists.")
    )
    google.get(f"{EVENTS}/{EVENT_ID}").respond(200, json=existing)
    return insert


def test_duplicate_of_a_deleted_draft_showing_only_its_id_is_not_recreated(google: respx.MockRouter) -> None:
    insert = _duplicate(google, {"kind": "calendar#event", "id": EVENT_ID, "status": "cancelled"})
    with pytest.raises(Conflict) as raised:
        make_connector().execute(make_call())
    assert raised.value.provider_code == "deleted"
    assert "deleted in Google Calendar" in raised.value.seller_message
    assert "not recreated" in raised.value.detail
    assert insert.call_count == 1  # no second insert, no restoring PATCH
    assert [c.request.method for c in google.calls if "/calendar/" in c.request.url.path] == ["POST", "GET"]


def test_duplicate_of_a_deleted_draft_with_our_key_is_not_recreated(google: respx.MockRouter) -> None:
    _duplicate(google, event_body(status="cancelled"))
    with pytest.raises(Conflict) as raised:
        make_connector().execute(make_call())
    assert raised.value.provider_code == "deleted"


def test_duplicate_of_a_deleted_foreign_event_is_a_foreign_conflict(google: respx.MockRouter) -> None:
    _duplicate(google, event_body(key="someone-else:draft_meeting", status="cancelled"))
    with pytest.raises(Conflict) as raised:
        make_connector().execute(make_call())
    assert raised.value.provider_code == "duplicate"


def test_lookup_reads_a_deleted_event_showing_only_its_id_as_nothing(google: respx.MockRouter) -> None:
    google.get(f"{EVENTS}/{EVENT_ID}").respond(200, json={"id": EVENT_ID, "status": "cancelled"})
    assert make_connector().lookup(make_call()) is None


# -- impersonation: the block decides whom to act as, never the intent ---------------------------------
def test_a_service_account_without_subject_is_refused_before_anything_is_sent(
    google: respx.MockRouter,
) -> None:
    connector = make_connector(subject=None)
    for act in (
        lambda: connector.execute(make_call()),
        lambda: connector.lookup(make_call()),
        lambda: connector.describe(make_call()),
        lambda: connector.compensate(make_call(), _result()),
    ):
        with pytest.raises(NotConfigured) as raised:
            act()
        assert "subject" in str(raised.value)
        assert "never impersonates the intent's organizer" in str(raised.value)
    assert not google.calls


def test_the_organizer_never_becomes_the_impersonated_user(google: respx.MockRouter) -> None:
    insert = google.post("/calendar/v3/calendars/ceo%40acme.example/events").respond(200, json=event_body())
    make_connector().execute(make_call(organizer="ceo@acme.example"))
    assert insert.called
    claims = b64url_json(form_of(google["token"].calls.last.request)["assertion"].split(".")[1])
    assert claims["sub"] == SUBJECT


def test_refresh_token_mode_names_no_subject() -> None:
    connector = make_connector(
        auth_mode="oauth_refresh_token", client_id="c", client_secret="s", refresh_token="r", subject=None
    )
    (insert,) = connector.describe(make_call())
    assert insert.subject is None


class Recorder:
    """A transport that records every request and answers like Google would (token, then the event)."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        if request.url.path.endswith("/token"):
            return httpx.Response(200, json={"access_token": TOKEN, "expires_in": 3599})
        return httpx.Response(200, json=event_body())


@pytest.mark.parametrize(
    ("organizer", "segment"),
    [
        ("..", "%2E%2E"),
        (".", "%2E"),
        ("%2e%2e", "%252e%252e"),
        ("../../admin", "..%2F..%2Fadmin"),
        ("a/b", "a%2Fb"),
        ("x?y=1", "x%3Fy%3D1"),
        ("x#frag", "x%23frag"),
        ("jordan@acme.example", "jordan%40acme.example"),
    ],
)
def test_the_organizer_is_one_encoded_path_segment(organizer: str, segment: str) -> None:
    recorder = Recorder()
    client = httpx.Client(transport=httpx.MockTransport(recorder))
    connector = GoogleCalendarConnector(client, make_credentials(token_uri=TOKEN_URI, api_base_url=API))
    connector.execute(make_call(organizer=organizer))
    connector.lookup(make_call(organizer=organizer))
    connector.compensate(make_call(organizer=organizer), _result().model_copy(update={"undo": {}}))
    api_calls = [r for r in recorder.requests if not r.url.path.endswith("/token")]
    assert [r.method for r in api_calls] == ["POST", "GET", "DELETE"]
    expected = f"/calendar/v3/calendars/{segment}/events"
    for request in api_calls:
        raw = request.url.raw_path.decode().split("?")[0]
        assert raw in (expected, f"{expected}/{EVENT_ID}")
        assert request.url.host == "www.googleapis.com" and not request.url.fragment
        assert dict(request.url.params) in ({"sendUpdates": "none"}, {})


@pytest.mark.parametrize("organizer", ["..", "a/b", "x?y", "x#y", "%2e%2e", "jordan"])
def test_validate_refuses_an_organizer_that_is_no_calendar_id(organizer: str) -> None:
    with pytest.raises(ValidationRejected) as raised:
        make_connector().validate("calendar.draft_meeting", {**PARAMS, "organizer": organizer})
    assert str(raised.value).startswith("parameters.organizer:")


def test_validate_accepts_primary_and_group_calendars() -> None:
    for organizer in ("primary", "c_1a2b@group.calendar.google.com"):
        make_connector().validate("calendar.draft_meeting", {**PARAMS, "organizer": organizer})


def test_compensate_refuses_a_recorded_id_that_is_no_event_id_of_ours(google: respx.MockRouter) -> None:
    bad = _result().model_copy(update={"ref": ExternalRef(system="google_calendar", object="event", id="..")})
    with pytest.raises(ValidationRejected):
        make_connector().compensate(make_call(), bad)
    assert not google.calls


# -- check -----------------------------------------------------------------------------------------------
CHECK_LIST = "/calendar/v3/calendars/primary/events"


def events_list(role: str = "owner") -> dict[str, Any]:
    return {"kind": "calendar#events", "accessRole": role, "items": []}


def test_check_reads_the_calendar_and_grants_a_provider_key(google: respx.MockRouter) -> None:
    listed = google.get(CHECK_LIST).respond(200, json=events_list())
    checked = make_connector().check()
    assert checked.guarantees == {"calendar.draft_meeting": Guarantee.PROVIDER_KEY}
    assert checked.enabled("calendar.draft_meeting")
    assert all(p.ok for p in checked.preconditions)
    request = listed.calls.last.request
    assert (request.method, dict(request.url.params)) == ("GET", {"maxResults": "1"})
    claims = b64url_json(form_of(google["token"].calls.last.request)["assertion"].split(".")[1])
    assert claims["sub"] == SUBJECT
    assert all(c.request.method in ("GET", "POST") for c in google.calls)
    assert not [c for c in google.calls if c.request.method == "POST" and "/calendar/" in c.request.url.path]


def test_check_reads_the_draft_calendar_when_one_is_set(google: respx.MockRouter) -> None:
    listed = google.get("/calendar/v3/calendars/drafts%40group.calendar.google.com/events").respond(
        200, json=events_list("writer")
    )
    checked = make_connector(draft_calendar_id="drafts@group.calendar.google.com").check()
    assert listed.called and checked.enabled("calendar.draft_meeting")


def test_check_without_subject_disables_drafting_and_sends_nothing(google: respx.MockRouter) -> None:
    connector = make_connector(subject=None)
    checked = connector.check()
    assert checked.guarantees == {"calendar.draft_meeting": Guarantee.DISABLED}
    (problem,) = checked.problems("calendar.draft_meeting")
    assert "set its subject" in problem
    assert not google.calls


def test_check_names_missing_fields() -> None:
    with respx.mock(base_url=API) as google:
        checked = make_connector(private_key=None).check()
        assert not google.calls
    assert checked.problems("calendar.draft_meeting") == [
        "Set private_key on the Google Calendar credentials block."
    ]


@pytest.mark.parametrize(
    ("status", "body", "fix"),
    [
        (
            404,
            google_error(404, "notFound", "Not Found"),
            "Share calendar 'primary' with drafts@acme.example",
        ),
        (200, events_list("reader"), "Give drafts@acme.example 'Make changes to events'"),
    ],
)
def test_a_failed_check_disables_execute_before_any_write(
    google: respx.MockRouter, status: int, body: dict[str, Any], fix: str
) -> None:
    google.get(CHECK_LIST).respond(status, json=body)
    insert = google.post(EVENTS).respond(200, json=event_body())
    connector = make_connector()
    checked = connector.check()
    assert not checked.enabled("calendar.draft_meeting")
    assert any(problem.startswith(fix) for problem in checked.problems("calendar.draft_meeting"))
    with pytest.raises(NotConfigured) as raised:
        connector.execute(make_call())
    assert fix in str(raised.value)
    assert not insert.called


def test_check_raises_when_google_refuses_the_credentials(google: respx.MockRouter) -> None:
    google.get(CHECK_LIST).respond(401, json=google_error(401, "authError", "Invalid Credentials"))
    with pytest.raises(AuthenticationFailed):
        make_connector().check()


def test_check_reports_an_unreadable_key_as_configuration() -> None:
    connector = make_connector(private_key="-----BEGIN PRIVATE KEY-----\nCANARY\n-----END PRIVATE KEY-----\n")
    with respx.mock(base_url=API):
        checked = connector.check()
    assert not checked.enabled("calendar.draft_meeting")
    assert "CANARY" not in repr(checked)
