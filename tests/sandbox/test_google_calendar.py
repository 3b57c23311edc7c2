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
from connectors.google_calendar import GoogleCalendarConnector, event_id_for
from sandbox.base import Fault
from sandbox.google_calendar import GoogleCalendarEmulator
from tests.connectors.cases_google_calendar import (
    ORGANIZER,
    PARAMS,
    SERVICE_ACCOUNT,
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
    assert stored["creator"] == {"email": ORGANIZER}
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


def test_served_on_loopback_the_connector_works_end_to_end() -> None:
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
