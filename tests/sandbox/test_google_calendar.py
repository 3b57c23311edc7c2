"""The Google Calendar emulator speaks the documented subset faithfully and records who was notified."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from connectors.base import StepCall, idempotency_key
from connectors.errors import Conflict, NotConfigured
from connectors.google_calendar import GoogleCalendarConnector, event_id_for
from sandbox.base import Fault
from sandbox.google_calendar import GoogleCalendarEmulator
from tests.connectors.cases_google_calendar import (
    ORGANIZER,
    PARAMS,
    SERVICE_ACCOUNT,
    SUBJECT,
    make_credentials,
    make_emulator,
    service_account_key,
)

BASE = "https://www.googleapis.com"
EVENTS = "/calendar/v3/calendars/jordan%40acme.example/events"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def assertion(key: rsa.RSAPrivateKey, **claims: Any) -> str:
    now = int(time.time())
    body = {
        "iss": SERVICE_ACCOUNT,
        "sub": ORGANIZER,
        "scope": "https://www.googleapis.com/auth/calendar.events",
        "aud": "https://oauth2.googleapis.com/token",
        "iat": now,
        "exp": now + 3600,
        **claims,
    }
    header = b64url(json.dumps({"alg": "RS256", "typ": "JWT"}).encode())
    signing_input = f"{header}.{b64url(json.dumps(body).encode())}"
    signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{b64url(signature)}"


@pytest.fixture
def emulator() -> GoogleCalendarEmulator:
    return make_emulator()


@pytest.fixture
def http(emulator: GoogleCalendarEmulator) -> Iterator[httpx.Client]:
    with httpx.Client(transport=emulator.transport(), base_url=BASE) as client:
        yield client


def token_for(http: httpx.Client) -> dict[str, str]:
    response = http.post(
        "https://oauth2.googleapis.com/token",
        data={"grant_type": JWT_BEARER, "assertion": assertion(service_account_key())},
    )
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def draft(event_id: str = "abcdefghijklmnopqrstuv0123456789") -> dict[str, Any]:
    return {
        "id": event_id,
        "summary": "Renewal pricing review",
        "start": {"dateTime": "2026-12-03T16:00:00+01:00"},
        "end": {"dateTime": "2026-12-03T16:30:00+01:00"},
    }


# -- token endpoint ----------------------------------------------------------------------------------
def test_jwt_grant_issues_a_bearer_token(http: httpx.Client) -> None:
    response = http.post(
        "https://oauth2.googleapis.com/token",
        data={"grant_type": JWT_BEARER, "assertion": assertion(service_account_key())},
    )
    body = response.json()
    assert response.status_code == 200
    assert body["token_type"] == "Bearer" and body["expires_in"] == 3599 and body["access_token"]


@pytest.mark.parametrize(
    ("make", "error"),
    [
        (lambda: assertion(rsa.generate_private_key(public_exponent=65537, key_size=2048)), "invalid_grant"),
        (lambda: assertion(service_account_key(), iss="stranger@evil.example"), "invalid_grant"),
        (lambda: assertion(service_account_key(), exp=int(time.time()) + 7200), "invalid_grant"),
        (lambda: assertion(service_account_key(), aud="https://elsewhere.example/other"), "invalid_grant"),
        (lambda: assertion(service_account_key(), scope=""), "invalid_scope"),
        (lambda: "not-a-jwt", "invalid_grant"),
    ],
)
def test_bad_assertions_are_refused(http: httpx.Client, make: Any, error: str) -> None:
    response = http.post(
        "https://oauth2.googleapis.com/token", data={"grant_type": JWT_BEARER, "assertion": make()}
    )
    assert response.status_code == 400
    assert response.json()["error"] == error


def test_refresh_token_grant(emulator: GoogleCalendarEmulator, http: httpx.Client) -> None:
    emulator.add_oauth_client("cid", "secret", "1//refresh", ORGANIZER)
    ok = http.post(
        "/token",
        data={
            "grant_type": "refresh_token",
            "client_id": "cid",
            "client_secret": "secret",
            "refresh_token": "1//refresh",
        },
    )
    assert ok.status_code == 200
    wrong_secret = http.post(
        "/token",
        data={
            "grant_type": "refresh_token",
            "client_id": "cid",
            "client_secret": "nope",
            "refresh_token": "1//refresh",
        },
    )
    assert (wrong_secret.status_code, wrong_secret.json()["error"]) == (401, "invalid_client")
    wrong_token = http.post(
        "/token",
        data={
            "grant_type": "refresh_token",
            "client_id": "cid",
            "client_secret": "secret",
            "refresh_token": "x",
        },
    )
    assert (wrong_token.status_code, wrong_token.json()["error"]) == (400, "invalid_grant")


def test_api_without_a_valid_token_answers_googles_401(
    emulator: GoogleCalendarEmulator, http: httpx.Client
) -> None:
    response = http.post(
        EVENTS, params={"sendUpdates": "none"}, json=draft(), headers={"Authorization": "Bearer x"}
    )
    assert response.status_code == 401
    assert response.json()["error"]["errors"][0]["reason"] == "authError"
    headers = token_for(http)
    emulator.revoke_tokens()
    assert http.get(f"{EVENTS}/abcde", headers=headers).status_code == 401


# -- events ------------------------------------------------------------------------------------------
def test_insert_honours_the_client_id_and_refuses_a_duplicate(http: httpx.Client) -> None:
    headers = token_for(http)
    created = http.post(EVENTS, params={"sendUpdates": "none"}, json=draft(), headers=headers)
    assert created.status_code == 200
    event = created.json()
    assert event["id"] == "abcdefghijklmnopqrstuv0123456789"
    assert event["kind"] == "calendar#event" and event["status"] == "confirmed"
    assert event["htmlLink"].startswith("https://www.google.com/calendar/event?eid=")
    assert event["organizer"] == {"email": ORGANIZER, "self": True}

    again = http.post(EVENTS, params={"sendUpdates": "none"}, json=draft(), headers=headers)
    assert again.status_code == 409
    assert again.json() == {
        "error": {
            "errors": [
                {
                    "domain": "global",
                    "reason": "duplicate",
                    "message": "The requested identifier already exists.",
                }
            ],
            "code": 409,
            "message": "The requested identifier already exists.",
            "status": "ALREADY_EXISTS",
        }
    }


@pytest.mark.parametrize("bad_id", ["abcd", "ABCDEFGH", "wxyz12345", "abc-def-ghi", "a" * 1025])
def test_insert_rejects_ids_outside_base32hex(http: httpx.Client, bad_id: str) -> None:
    response = http.post(EVENTS, json=draft(bad_id), headers=token_for(http))
    assert response.status_code == 400
    assert response.json()["error"]["errors"][0]["reason"] == "invalid"


def test_insert_requires_start_and_end(http: httpx.Client) -> None:
    body = draft()
    del body["end"]
    response = http.post(EVENTS, json=body, headers=token_for(http))
    assert response.status_code == 400
    assert response.json()["error"]["errors"][0]["reason"] == "required"


def test_delete_cancels_then_answers_410_and_get_shows_cancelled(
    emulator: GoogleCalendarEmulator, http: httpx.Client
) -> None:
    headers = token_for(http)
    http.post(EVENTS, json=draft(), headers=headers)
    url = f"{EVENTS}/abcdefghijklmnopqrstuv0123456789"
    assert emulator.live_event_ids() == ("abcdefghijklmnopqrstuv0123456789",)

    deleted = http.delete(url, params={"sendUpdates": "none"}, headers=headers)
    assert (deleted.status_code, deleted.content) == (204, b"")
    assert http.get(url, headers=headers).json()["status"] == "cancelled"
    assert emulator.live_event_ids() == ()

    again = http.delete(url, params={"sendUpdates": "none"}, headers=headers)
    assert again.status_code == 410
    assert again.json()["error"]["errors"][0] == {
        "domain": "global",
        "reason": "deleted",
        "message": "Resource has been deleted",
    }
    # A deleted id stays taken.
    assert http.post(EVENTS, json=draft(), headers=headers).status_code == 409


def test_unknown_event_and_route_answer_googles_404(http: httpx.Client) -> None:
    headers = token_for(http)
    missing = http.get(f"{EVENTS}/abcdefgh", headers=headers)
    assert missing.status_code == 404
    assert missing.json()["error"]["errors"][0]["reason"] == "notFound"
    assert http.delete(f"{EVENTS}/abcdefgh", headers=headers).status_code == 404
    assert http.get("/calendar/v3/nothing-here", headers=headers).json()["error"]["code"] == 404


def test_invitations_that_would_have_gone_out_are_recorded(
    emulator: GoogleCalendarEmulator, http: httpx.Client
) -> None:
    body = {**draft(), "attendees": [{"email": "casey@customer.example"}]}
    http.post(EVENTS, params={"sendUpdates": "all"}, json=body, headers=token_for(http))
    assert emulator.inserts_with_attendees == 1
    assert [(n.send_updates, n.recipients) for n in emulator.notifications] == [
        ("all", ["casey@customer.example"])
    ]


# -- the connector against the emulator: nobody is notified ------------------------------------------
def _call() -> StepCall:
    return StepCall(
        action_intent_id="ai_7f3c",
        tenant_id="acme",
        account_id="001",
        action_type="calendar.draft_meeting",
        step="draft_meeting",
        idempotency_key=idempotency_key("ai_7f3c", "draft_meeting"),
        params=PARAMS,
    )


def test_a_connector_draft_notifies_nobody(emulator: GoogleCalendarEmulator, http: httpx.Client) -> None:
    connector = GoogleCalendarConnector(http, make_credentials())
    result = connector.execute(_call())
    connector.compensate(_call(), result)
    assert emulator.notifications == []
    assert emulator.inserts_with_attendees == 0
    assert emulator.send_updates_seen == ["none"]
    stored = emulator.events[(ORGANIZER, event_id_for(_call().idempotency_key))]
    assert "attendees" not in stored
    assert stored["extendedProperties"]["private"]["fulfill_proposed_attendees"] == (
        "casey@customer.example, riley@customer.example"
    )
    assert stored["creator"] == {"email": SUBJECT}  # the block's user wrote it into the organizer's calendar
    assert result.ref.url == stored["htmlLink"]


def test_connector_recovers_from_a_revoked_token(
    emulator: GoogleCalendarEmulator, http: httpx.Client
) -> None:
    connector = GoogleCalendarConnector(http, make_credentials())
    assert connector.lookup(_call()) is None
    emulator.revoke_tokens()
    assert connector.execute(_call()).created is True


def test_reset_forgets_state_and_faults(emulator: GoogleCalendarEmulator, http: httpx.Client) -> None:
    connector = GoogleCalendarConnector(http, make_credentials())
    connector.execute(_call())
    emulator.inject(Fault(kind="status", status=503))
    emulator.reset()
    assert emulator.live_event_ids() == () and emulator.send_updates_seen == []
    assert connector.execute(_call()).created is True  # old token forgotten: refreshed after one 401


def test_served_on_loopback_the_connector_works_end_to_end(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FULFILL_ALLOW_LOOPBACK_PROVIDERS", "1")  # the emulator is the provider here
    emulator = make_emulator()
    base = emulator.serve()
    try:
        credentials = make_credentials(api_base_url=base, token_uri=f"{base}/token")
        with httpx.Client(timeout=5) as client:
            connector = GoogleCalendarConnector(client, credentials)
            result = connector.execute(_call())
            assert connector.lookup(_call()) == result.model_copy(update={"created": False})
            connector.compensate(_call(), result)
            connector.compensate(_call(), result)
        assert emulator.live_event_ids() == ()
        assert emulator.notifications == []
    finally:
        emulator.shutdown()


# -- Google's error shape for every method -----------------------------------------------------------
def _is_google_error(response: httpx.Response, code: int, reason: str, status: str) -> bool:
    error = response.json()["error"]
    assert set(error) == {"code", "message", "errors", "status"}, error
    (detail,) = error["errors"]
    assert {"domain", "reason", "message"} <= set(detail)
    return (response.status_code, error["code"], detail["reason"], error["status"]) == (
        code,
        code,
        reason,
        status,
    ) and detail["message"] == error["message"]


def test_every_method_answers_googles_error_shape(
    emulator: GoogleCalendarEmulator, http: httpx.Client
) -> None:
    headers = token_for(http)
    url = f"{EVENTS}/abcdefghijklmnopqrstuv0123456789"
    assert http.post(EVENTS, json=draft(), headers=headers).status_code == 200
    cases = [
        (http.post(EVENTS, json=draft(), headers=headers), 409, "duplicate", "ALREADY_EXISTS"),
        (http.post(EVENTS, json=draft("short"[:4]), headers=headers), 400, "invalid", "INVALID_ARGUMENT"),
        (http.get(f"{EVENTS}/abcdefgh", headers=headers), 404, "notFound", "NOT_FOUND"),
        (http.patch(f"{EVENTS}/abcdefgh", json={}, headers=headers), 404, "notFound", "NOT_FOUND"),
        (http.put(f"{EVENTS}/abcdefgh", json=draft(), headers=headers), 404, "notFound", "NOT_FOUND"),
        (http.delete(f"{EVENTS}/abcdefgh", headers=headers), 404, "notFound", "NOT_FOUND"),
        (http.get(EVENTS, params={"maxResults": "0"}, headers=headers), 400, "invalid", "INVALID_ARGUMENT"),
        (http.get(EVENTS, headers={"Authorization": "Bearer x"}), 401, "authError", "UNAUTHENTICATED"),
        (http.put(EVENTS, json={}, headers=headers), 404, "notFound", "NOT_FOUND"),  # no such method
        (http.get("/calendar/v3/nothing-here", headers=headers), 404, "notFound", "NOT_FOUND"),
        (http.post(EVENTS, content=b"{not json", headers=headers), 400, "parseError", "INVALID_ARGUMENT"),
    ]
    http.delete(url, headers=headers)
    cases.append((http.delete(url, headers=headers), 410, "deleted", "NOT_FOUND"))
    for response, code, reason, status in cases:
        assert _is_google_error(response, code, reason, status), (response.request.method, response.json())


@pytest.mark.parametrize("method", ["POST", "PATCH", "DELETE"])
def test_send_updates_must_be_a_documented_value(http: httpx.Client, method: str) -> None:
    headers = token_for(http)
    http.post(EVENTS, json=draft(), headers=headers)
    url = EVENTS if method == "POST" else f"{EVENTS}/abcdefghijklmnopqrstuv0123456789"
    body = (
        draft("abcdefghijklmnopqrstuv0123456780") if method == "POST" else ({} if method == "PATCH" else None)
    )
    response = http.request(method, url, params={"sendUpdates": "nobody"}, json=body, headers=headers)
    assert _is_google_error(response, 400, "invalidParameter", "INVALID_ARGUMENT")
    assert response.json()["error"]["errors"][0]["location"] == "sendUpdates"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"end": {"dateTime": "2026-12-03T15:00:00+01:00"}}, "timeRangeEmpty"),
        ({"start": {"dateTime": "2026-12-03T16:00:00"}}, "required"),  # no offset, no timeZone
        ({"start": {"dateTime": "tomorrow"}}, "invalid"),
        ({"summary": 42}, "invalid"),
        ({"status": "deleted"}, "invalid"),
        ({"extendedProperties": {"private": {"k": "v" * 1025}}}, "invalid"),
        ({"extendedProperties": {"private": {"k" * 45: "v"}}}, "invalid"),
        ({"extendedProperties": {"private": {"k": 1}}}, "invalid"),
    ],
)
def test_insert_refuses_what_google_refuses(http: httpx.Client, change: dict[str, Any], reason: str) -> None:
    response = http.post(EVENTS, json={**draft(), **change}, headers=token_for(http))
    assert response.status_code == 400 and response.json()["error"]["errors"][0]["reason"] == reason


def test_a_time_zone_stands_in_for_the_offset(http: httpx.Client) -> None:
    body = {**draft(), "start": {"dateTime": "2026-12-03T16:00:00", "timeZone": "Europe/Zurich"}}
    assert http.post(EVENTS, json=body, headers=token_for(http)).status_code == 200


# -- deleted events, as Google returns them ------------------------------------------------------------
def test_list_hides_deleted_events_unless_show_deleted(http: httpx.Client) -> None:
    headers = token_for(http)
    http.post(EVENTS, json=draft(), headers=headers)
    http.post(EVENTS, json=draft("abcdefghijklmnopqrstuv0123456780"), headers=headers)
    http.delete(f"{EVENTS}/abcdefghijklmnopqrstuv0123456789", headers=headers)
    listed = http.get(EVENTS, headers=headers).json()
    assert listed["kind"] == "calendar#events" and listed["accessRole"] == "owner"  # the token's own calendar
    assert [e["id"] for e in listed["items"]] == ["abcdefghijklmnopqrstuv0123456780"]
    shown = http.get(EVENTS, params={"showDeleted": "true"}, headers=headers).json()["items"]
    assert [(e["id"], e["status"]) for e in shown] == [
        ("abcdefghijklmnopqrstuv0123456789", "cancelled"),
        ("abcdefghijklmnopqrstuv0123456780", "confirmed"),
    ]
    assert http.get(EVENTS, params={"showDeleted": "yes"}, headers=headers).status_code == 400


def test_list_pages_and_filters_by_private_property(http: httpx.Client) -> None:
    headers = token_for(http)
    for n in range(3):
        body = {
            **draft(f"abcdefghijklmnopqrstuv012345678{n}"),
            "extendedProperties": {"private": {"k": str(n)}},
        }
        http.post(EVENTS, json=body, headers=headers)
    first = http.get(EVENTS, params={"maxResults": "2"}, headers=headers).json()
    second = http.get(EVENTS, params={"pageToken": first["nextPageToken"]}, headers=headers).json()
    assert len(first["items"]) == 2 and len(second["items"]) == 1 and "nextSyncToken" in second
    only = http.get(EVENTS, params={"privateExtendedProperty": "k=1"}, headers=headers).json()["items"]
    assert [e["id"] for e in only] == ["abcdefghijklmnopqrstuv0123456781"]


def test_a_deleted_event_may_show_only_its_id() -> None:
    emulator = GoogleCalendarEmulator(deleted_details=False)
    emulator.add_service_account(SERVICE_ACCOUNT, service_account_key().public_key())
    with httpx.Client(transport=emulator.transport(), base_url=BASE) as http:
        headers = token_for(http)
        http.post(EVENTS, json={**draft(), "extendedProperties": {"private": {"k": "v"}}}, headers=headers)
        url = f"{EVENTS}/abcdefghijklmnopqrstuv0123456789"
        http.delete(url, headers=headers)
        shown = http.get(url, headers=headers)
    assert shown.status_code == 200
    assert set(shown.json()) <= {"kind", "etag", "id", "status", "updated"}
    assert shown.json()["status"] == "cancelled"


def test_purged_deleted_events_disappear_but_their_ids_stay_taken(
    emulator: GoogleCalendarEmulator, http: httpx.Client
) -> None:
    headers = token_for(http)
    http.post(EVENTS, json=draft(), headers=headers)
    http.delete(f"{EVENTS}/abcdefghijklmnopqrstuv0123456789", headers=headers)
    emulator.purge_deleted()
    assert http.get(f"{EVENTS}/abcdefghijklmnopqrstuv0123456789", headers=headers).status_code == 404
    assert http.post(EVENTS, json=draft(), headers=headers).status_code == 409


def test_patch_merges_and_can_restore_a_deleted_event(http: httpx.Client) -> None:
    headers = token_for(http)
    http.post(EVENTS, json={**draft(), "extendedProperties": {"private": {"a": "1"}}}, headers=headers)
    url = f"{EVENTS}/abcdefghijklmnopqrstuv0123456789"
    patched = http.patch(url, json={"extendedProperties": {"private": {"b": "2"}}}, headers=headers).json()
    assert patched["extendedProperties"]["private"] == {"a": "1", "b": "2"} and patched["sequence"] == 1
    http.delete(url, headers=headers)
    assert http.patch(url, json={"status": "confirmed"}, headers=headers).json()["status"] == "confirmed"


# -- calendars: ACLs and encoded ids -----------------------------------------------------------------
def test_a_registered_calendar_answers_only_its_acl(
    emulator: GoogleCalendarEmulator, http: httpx.Client
) -> None:
    emulator.add_calendar("team@group.calendar.google.com", {"someone@acme.example": "reader"})
    team = "/calendar/v3/calendars/team%40group.calendar.google.com/events"
    headers = token_for(http)  # acts as ORGANIZER, who is not in the ACL
    assert _is_google_error(http.get(team, headers=headers), 404, "notFound", "NOT_FOUND")
    emulator.add_calendar("team@group.calendar.google.com", {ORGANIZER: "reader"})
    assert http.get(team, headers=headers).json()["accessRole"] == "reader"
    refused = http.post(team, json=draft(), headers=headers)
    assert _is_google_error(refused, 403, "requiredAccessLevel", "PERMISSION_DENIED")
    own = http.get("/calendar/v3/calendars/primary/events", headers=headers).json()
    assert own["accessRole"] == "owner" and own["summary"] == ORGANIZER


def test_calendar_ids_are_single_encoded_segments(
    emulator: GoogleCalendarEmulator, http: httpx.Client
) -> None:
    headers = token_for(http)
    for segment, calendar in (("a%2Fb", "a/b"), ("%2E%2E", ".."), ("x%3Fy%23z", "x?y#z")):
        response = http.post(f"/calendar/v3/calendars/{segment}/events", json=draft(), headers=headers)
        assert response.status_code == 200, calendar
        assert (calendar, "abcdefghijklmnopqrstuv0123456789") in emulator.events
    # A literal dot segment is removed by the client before it is sent: it never reaches the calendars.
    assert http.post("/calendar/v3/calendars/../events", json=draft(), headers=headers).status_code == 404


def test_the_organizer_cannot_climb_out_of_the_calendar_path(
    emulator: GoogleCalendarEmulator, http: httpx.Client
) -> None:
    connector = GoogleCalendarConnector(http, make_credentials())
    for organizer in ("..", "../../calendar/v3/calendars/ceo@acme.example", "%2e%2e"):
        call = _call().model_copy(update={"params": {**PARAMS, "organizer": organizer}})
        connector.execute(call)
        assert (organizer, event_id_for(call.idempotency_key)) in emulator.events
        connector.compensate(call, connector.execute(call))
    assert emulator.live_event_ids() == ()
    assert {calendar for calendar, _ in emulator.events} == {
        "..",
        "../../calendar/v3/calendars/ceo@acme.example",
        "%2e%2e",
    }


# -- the connector and deleted drafts ------------------------------------------------------------------
def _generation(n: int) -> StepCall:
    return _call().model_copy(update={"idempotency_key": idempotency_key("ai_7f3c", "draft_meeting", n)})


@pytest.mark.parametrize("details", [True, False])
def test_a_deleted_draft_is_not_resurrected_and_a_new_generation_drafts_anew(details: bool) -> None:
    emulator = GoogleCalendarEmulator(deleted_details=details)
    emulator.add_service_account(SERVICE_ACCOUNT, service_account_key().public_key())
    with httpx.Client(transport=emulator.transport(), base_url=BASE) as http:
        connector = GoogleCalendarConnector(http, make_credentials())
        first = connector.execute(_generation(0))
        connector.compensate(_generation(0), first)  # our undo (or a person) deleted the draft
        assert connector.lookup(_generation(0)) is None
        with pytest.raises(Conflict) as raised:
            connector.execute(_generation(0))
        assert raised.value.provider_code == "deleted"
        assert emulator.live_event_ids() == ()
        assert [r.method for r in emulator.requests if "/calendar/" in r.url.path][-2:] == ["POST", "GET"]
        rerun = connector.execute(_generation(1))  # a rerun after compensation: a fresh key and id
    assert rerun.created and rerun.ref.id != first.ref.id
    assert emulator.live_event_ids() == (rerun.ref.id,)


def test_a_purged_draft_is_not_recreated_either(emulator: GoogleCalendarEmulator, http: httpx.Client) -> None:
    connector = GoogleCalendarConnector(http, make_credentials())
    connector.compensate(_call(), connector.execute(_call()))
    emulator.purge_deleted()
    assert connector.lookup(_call()) is None
    with pytest.raises(Conflict):
        connector.execute(_call())
    assert emulator.live_event_ids() == ()


# -- check against the emulator ------------------------------------------------------------------------
def test_check_against_the_emulator(emulator: GoogleCalendarEmulator, http: httpx.Client) -> None:
    connector = GoogleCalendarConnector(http, make_credentials())
    assert connector.check().enabled("calendar.draft_meeting")
    assert all(r.method in ("GET", "POST") for r in emulator.requests)
    assert [r.method for r in emulator.requests if "/calendar/" in r.url.path] == ["GET"]
    assert emulator.live_event_ids() == ()


def test_a_draft_calendar_the_user_cannot_reach_disables_drafting(
    emulator: GoogleCalendarEmulator, http: httpx.Client
) -> None:
    emulator.add_calendar("drafts@group.calendar.google.com", {"someone-else@acme.example": "owner"})
    connector = GoogleCalendarConnector(
        http, make_credentials(draft_calendar_id="drafts@group.calendar.google.com")
    )
    checked = connector.check()
    assert not checked.enabled("calendar.draft_meeting")
    before = len(emulator.requests)
    with pytest.raises(NotConfigured) as raised:
        connector.execute(_call())
    assert "drafts@group.calendar.google.com" in str(raised.value)
    assert len(emulator.requests) == before  # refused before any request
    emulator.add_calendar("drafts@group.calendar.google.com", {SUBJECT: "writer"})
    assert connector.check().enabled("calendar.draft_meeting")
    assert connector.execute(_call()).created
