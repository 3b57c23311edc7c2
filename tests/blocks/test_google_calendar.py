"""The Google Calendar credentials block: documented fields, and secrets that never leak."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest
import respx

from blocks.auth import SUBJECT, AuthNotConfigured
from blocks.google_calendar import GoogleCalendarCredentials
from connectors.base import StepCall
from connectors.errors import ConnectorError, ProviderUnavailable
from connectors.google_calendar import GoogleCalendarConnector
from tests.connectors.cases_google_calendar import PARAMS, private_key_pem

CANARY = "CANARY-7b1e-do-not-leak"
API = "https://www.googleapis.com"


def oauth_block() -> GoogleCalendarCredentials:
    return GoogleCalendarCredentials(
        auth_mode="oauth_refresh_token",
        client_id="123.apps.googleusercontent.com",
        client_secret=f"secret-{CANARY}",
        refresh_token=f"1//{CANARY}",
        token_uri=f"{API}/oauth2/v4/token",
        api_base_url=API,
    )


def service_account_block() -> GoogleCalendarCredentials:
    # The canary rides after the PEM block (text around a PEM block is ignored by the parser).
    return GoogleCalendarCredentials(
        service_account_email="robot@acme-prod.iam.gserviceaccount.com",
        private_key=private_key_pem() + f"\n# {CANARY}\n",
        subject="drafts@acme.example",
        token_uri=f"{API}/oauth2/v4/token",
        api_base_url=API,
    )


def call() -> StepCall:
    return StepCall(
        action_intent_id="ai_1",
        tenant_id="acme",
        account_id="001",
        action_type="calendar.draft_meeting",
        step="draft_meeting",
        idempotency_key="ai_1:draft_meeting",
        params=PARAMS,
    )


def test_block_metadata_and_every_field_documented() -> None:
    assert GoogleCalendarCredentials._block_type_name == "Fulfill Google Calendar Credentials"
    assert GoogleCalendarCredentials._description
    assert GoogleCalendarCredentials.__doc__
    for name, info in GoogleCalendarCredentials.model_fields.items():
        assert info.title, f"{name} has no title"
        assert info.description, f"{name} has no description"
    schema = GoogleCalendarCredentials.model_json_schema()
    assert sorted(schema["secret_fields"]) == ["client_secret", "private_key", "refresh_token"]


def test_defaults_point_at_google() -> None:
    block = GoogleCalendarCredentials()
    assert block.token_uri == "https://oauth2.googleapis.com/token"
    assert block.api_base_url == "https://www.googleapis.com"
    assert block.scope == "https://www.googleapis.com/auth/calendar.events"


@pytest.mark.parametrize("make", [oauth_block, service_account_block])
def test_secrets_are_masked_in_repr_str_and_dumps(make: Any) -> None:
    block = make()
    for text in (repr(block), str(block), block.model_dump_json(), str(block.model_dump())):
        assert CANARY not in text


def test_missing_fields_names_only_what_is_missing() -> None:
    assert GoogleCalendarCredentials().missing_fields() == ["service_account_email", "private_key", "subject"]
    assert GoogleCalendarCredentials(auth_mode="oauth_refresh_token", client_id="cid").missing_fields() == [
        "client_secret",
        "refresh_token",
    ]
    assert oauth_block().missing_fields() == []
    assert GoogleCalendarCredentials(
        service_account_email="a@b.c", private_key="  ", subject="u@b.c"
    ).missing_fields() == ["private_key"]


def test_a_service_account_without_subject_impersonates_nobody() -> None:
    """Domain-wide delegation acts as the configured user only: no subject, no request at all."""
    block = GoogleCalendarCredentials(service_account_email="a@b.c", private_key=private_key_pem())
    assert block.missing_fields() == ["subject"]
    seen: list[httpx.Request] = []

    def provider(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(500)

    transport = httpx.MockTransport(provider)
    with block.get_client(transport=transport) as client, pytest.raises(AuthNotConfigured) as raised:
        client.post("/calendar/v3/calendars/ceo%40b.c/events", extensions={SUBJECT: "ceo@b.c"})
    assert "subject" in str(raised.value) and seen == []


def test_refused_credentials_leak_nothing_into_errors_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    connector = GoogleCalendarConnector(httpx.Client(), oauth_block())
    with respx.mock(base_url=API) as google:
        # Even a provider that echoes the secret back must not get it into our error.
        google.post("/oauth2/v4/token").respond(
            400, json={"error": "invalid_grant", "error_description": f"bad token 1//{CANARY}"}
        )
        with pytest.raises(ConnectorError) as raised:
            connector.execute(call())
    error = raised.value
    assert CANARY not in str(error)
    assert CANARY not in repr(error)
    assert CANARY not in str(error.as_dict())
    assert CANARY not in caplog.text


def test_a_bad_private_key_leaks_nothing() -> None:
    block = GoogleCalendarCredentials(
        service_account_email="robot@acme-prod.iam.gserviceaccount.com",
        private_key=f"-----BEGIN PRIVATE KEY-----\n{CANARY}\n-----END PRIVATE KEY-----\n",
        subject="drafts@acme.example",
        token_uri=f"{API}/oauth2/v4/token",
        api_base_url=API,
    )
    connector = GoogleCalendarConnector(httpx.Client(), block)
    with respx.mock(base_url=API), pytest.raises(ConnectorError) as raised:
        connector.execute(call())
    assert CANARY not in str(raised.value) and CANARY not in repr(raised.value.as_dict())
    assert raised.value.__cause__ is None and raised.value.__suppress_context__


def test_a_working_service_account_key_with_the_canary_signs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    connector = GoogleCalendarConnector(httpx.Client(), service_account_block())
    with respx.mock(base_url=API) as google:
        google.post("/oauth2/v4/token").respond(500, json={"error": "internal_failure"})
        with pytest.raises(ProviderUnavailable) as raised:
            connector.execute(call())
        assertion = google.calls.last.request.content.decode()
    assert "assertion=" in assertion and CANARY not in assertion
    assert CANARY not in str(raised.value)
    assert CANARY not in caplog.text
