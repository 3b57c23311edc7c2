"""HubSpot connector against respx: the exact documented request shapes and error bodies.

The fake host is never contacted: respx answers every request and refuses unmatched ones.
Docs: https://developers.hubspot.com/docs/api-reference/crm-objects-v3/guide,
https://developers.hubspot.com/docs/api-reference/latest/crm/activities/tasks/guide,
https://developers.hubspot.com/docs/api/usage-details,
https://developers.hubspot.com/docs/api-reference/legacy/authentication/oauth-tokens/v1/refresh-oauth-token
"""

from __future__ import annotations

import email.utils
import json
import logging
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
import respx

from connectors.base import ExternalRef, StepCall, StepResult, idempotency_key
from connectors.errors import (
    AuthenticationFailed,
    Conflict,
    ConnectorError,
    NetworkError,
    NotConfigured,
    OutcomeUnknown,
    ProviderUnavailable,
    RateLimitedError,
    StalePrecondition,
    ValidationRejected,
)
from connectors.hubspot import DAILY_RESET_WAIT_SECONDS, HubSpotConnector, PortalFacts, forget_attempts
from tests.connectors.cases_hubspot import (
    OPPORTUNITY_PARAMS,
    TASK_PARAMS,
    UPDATE_PARAMS,
    make_credentials,
    portal_facts,
)

API = "https://api.hubapi.com"
TOKEN = "pat-na1-canary-7f1e"
SECRET = "client-secret-canary-93ab"
REFRESH = "refresh-canary-1c2d"
INTENT = "ai_7f3c"


def hubspot_error(category: str, message: str = "emulated") -> dict[str, Any]:
    return {"status": "error", "message": message, "correlationId": "aa11-bb22", "category": category}


NO_HITS = {"total": 0, "results": []}


@pytest.fixture
def api() -> Iterator[respx.MockRouter]:
    """The fake HubSpot; a task search finds nothing unless a test says otherwise."""
    forget_attempts()
    with respx.mock(base_url=API, assert_all_called=False) as router:
        router.post("/crm/v3/objects/tasks/search", name="task_search").respond(200, json=NO_HITS)
        yield router


def connector(
    auth_mode: str = "private_app", clock: Any = None, facts: PortalFacts | None = None
) -> HubSpotConnector:
    """A connector whose portal facts are known (tasks searched, deals unique): no check requests."""
    if auth_mode == "private_app":
        creds = make_credentials(private_app_token=TOKEN)
    else:
        creds = make_credentials("oauth", client_secret=SECRET, refresh_token=REFRESH)
    kwargs = {"clock": clock} if clock else {}
    return HubSpotConnector(httpx.Client(), creds, facts=facts or portal_facts(), **kwargs)


def call(action_type: str, step: str, params: dict[str, Any], **extra: Any) -> StepCall:
    return StepCall(
        action_intent_id=INTENT,
        tenant_id="acme",
        account_id="1001",
        action_type=action_type,
        step=step,
        idempotency_key=idempotency_key(INTENT, step),
        params=params,
        **extra,
    )


TASK_CALL = call("crm.create_task", "create_task", TASK_PARAMS)
DEAL_CALL = call("crm.create_opportunity", "create_opportunity", OPPORTUNITY_PARAMS)
FOLLOW_UP_CALL = call(
    "crm.create_opportunity",
    "create_follow_up_task",
    OPPORTUNITY_PARAMS,
    prior={"create_opportunity": ExternalRef(system="hubspot", object="deal", id="2077")},
)
UPDATE_CALL = call("crm.update_field", "update_field", UPDATE_PARAMS)
TASK_KEY_PATH = "/crm/v3/objects/tasks/ai_7f3c%3Acreate_task"
DEAL_KEY_PATH = "/crm/v3/objects/deals/ai_7f3c%3Acreate_opportunity"


def record(record_id: str, **properties: str) -> dict[str, Any]:
    return {
        "id": record_id,
        "properties": {"hs_object_id": record_id, **properties},
        "createdAt": "2026-11-27T15:02:13.000Z",
        "updatedAt": "2026-11-27T15:02:13.000Z",
        "archived": False,
    }


# -- plans and validation -------------------------------------------------------------------------
def test_steps_follow_the_contract() -> None:
    hub = connector()
    assert hub.steps("crm.create_task", TASK_PARAMS) == ["create_task"]
    assert hub.steps("crm.update_field", UPDATE_PARAMS) == ["update_field"]
    assert hub.steps("crm.create_opportunity", OPPORTUNITY_PARAMS) == [
        "create_opportunity",
        "create_follow_up_task",
    ]
    without = {k: v for k, v in OPPORTUNITY_PARAMS.items() if k != "follow_up_task"}
    assert hub.steps("crm.create_opportunity", without) == ["create_opportunity"]


@pytest.mark.parametrize(
    ("action_type", "params", "field"),
    [
        ("crm.create_task", {"subject": ""}, "parameters.subject"),
        ("crm.create_task", {"subject": "x" * 256}, "parameters.subject"),
        ("crm.create_task", {"subject": "Call", "due_date": "03/12/2026"}, "parameters.due_date"),
        (
            "crm.create_task",
            {"subject": "Call", "related_to": {"object": "Case", "id": "1"}},
            "related_to.object",
        ),
        ("crm.create_task", {"subject": "Call", "colour": "red"}, "parameters.colour"),
        ("crm.update_field", {**UPDATE_PARAMS, "object": "Invoice"}, "parameters.object"),
        ("crm.update_field", {**UPDATE_PARAMS, "field": "deal stage"}, "parameters.field"),
        ("crm.update_field", {**UPDATE_PARAMS, "field": "fulfill_intent_key"}, "parameters.field"),
        ("crm.update_field", {**UPDATE_PARAMS, "value": {"nested": 1}}, "parameters.value"),
        ("crm.create_opportunity", {**OPPORTUNITY_PARAMS, "amount": "lots"}, "parameters.amount"),
        ("crm.create_opportunity", {**OPPORTUNITY_PARAMS, "currency": "euro"}, "parameters.currency"),
        ("calendar.draft_meeting", {}, "action_type"),
    ],
)
def test_validate_names_the_field(action_type: str, params: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationRejected) as raised:
        connector().validate(action_type, params)
    assert field in str(raised.value)


# -- creates --------------------------------------------------------------------------------------
def test_create_task_sends_the_documented_body(api: respx.MockRouter) -> None:
    route = api.post("/crm/v3/objects/tasks").respond(201, json=record("9001"))
    result = connector().execute(TASK_CALL)
    request = route.calls.last.request
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert json.loads(request.content) == {
        "properties": {
            "hs_task_subject": "Follow up on renewal pricing",
            "hs_task_body": "Send the two renewal options.",
            "hs_timestamp": "2026-12-03T12:00:00Z",
            "hs_task_priority": "HIGH",
            "hs_task_status": "NOT_STARTED",
            "fulfill_intent_key": "ai_7f3c:create_task",
        },
        "associations": [
            {
                "to": {"id": "1001"},
                "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 192}],
            }
        ],
    }
    assert result.created is True
    assert result.ref == ExternalRef(
        system="hubspot",
        object="task",
        id="9001",
        url="https://app.hubspot.com/contacts/4471234/record/0-2/1001",
    )
    assert result.summary == "Created the task “Follow up on renewal pricing” in HubSpot."


def test_task_related_to_a_contact_uses_its_association_type(api: respx.MockRouter) -> None:
    route = api.post("/crm/v3/objects/tasks").respond(201, json=record("9002"))
    params = {"subject": "Call Jordan", "related_to": {"object": "Contact", "id": "3001"}}
    result = connector().execute(call("crm.create_task", "create_task", params))
    body = json.loads(route.calls.last.request.content)
    assert body["associations"][0] == {
        "to": {"id": "3001"},
        "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 204}],
    }
    assert body["properties"]["hs_task_priority"] == "MEDIUM"
    assert result.ref.url == "https://app.hubspot.com/contacts/4471234/record/0-1/3001"


@pytest.mark.parametrize("status", [409, 400])
def test_a_refused_create_reuses_the_record_holding_the_key(api: respx.MockRouter, status: int) -> None:
    """UNIQUE strategy (deals): no search; a refused create is read back by idProperty."""
    api.post("/crm/v3/objects/deals").respond(status, json=hubspot_error("CONFLICT"))
    read = api.get(DEAL_KEY_PATH).respond(
        200, json=record("2077", fulfill_intent_key="ai_7f3c:create_opportunity", dealname="Acme")
    )
    result = connector().execute(DEAL_CALL)
    assert result.created is False
    assert result.ref.id == "2077"
    params = read.calls.last.request.url.params
    assert params["idProperty"] == "fulfill_intent_key"
    assert "fulfill_intent_key" in params["properties"].split(",")


def test_a_409_with_no_record_for_the_key_is_a_conflict(api: respx.MockRouter) -> None:
    api.post("/crm/v3/objects/deals").respond(409, json=hubspot_error("CONFLICT"))
    api.get(DEAL_KEY_PATH).respond(404, json=hubspot_error("OBJECT_NOT_FOUND"))
    with pytest.raises(Conflict):
        connector().execute(DEAL_CALL)


def test_a_400_with_no_record_for_the_key_stays_a_validation_error(api: respx.MockRouter) -> None:
    body = hubspot_error("VALIDATION_ERROR")
    body["errors"] = [{"message": "bad", "context": {"propertyName": ["closedate"]}}]
    api.post("/crm/v3/objects/deals").respond(400, json=body)
    api.get(DEAL_KEY_PATH).respond(404, json=hubspot_error("OBJECT_NOT_FOUND"))
    with pytest.raises(ValidationRejected) as raised:
        connector().execute(DEAL_CALL)
    assert raised.value.provider_code == "VALIDATION_ERROR"
    assert "closedate" in raised.value.detail
    assert "emulated" not in raised.value.detail  # the provider's message is not copied


def test_a_refused_task_create_is_not_read_back_by_id_property(api: respx.MockRouter) -> None:
    """SEARCH strategy (tasks): idProperty would answer 400 on a non-unique property; never sent."""
    body = hubspot_error("VALIDATION_ERROR")
    body["errors"] = [{"message": "bad", "context": {"propertyName": ["hs_timestamp"]}}]
    api.post("/crm/v3/objects/tasks").respond(400, json=body)
    by_key = api.get(TASK_KEY_PATH).respond(404, json=hubspot_error("OBJECT_NOT_FOUND"))
    with pytest.raises(ValidationRejected) as raised:
        connector().execute(TASK_CALL)
    assert "hs_timestamp" in raised.value.detail
    assert by_key.call_count == 0


def test_create_opportunity_with_oauth(api: respx.MockRouter) -> None:
    token = api.post("/oauth/v1/token").respond(
        200,
        json={"token_type": "bearer", "refresh_token": REFRESH, "access_token": "acc-1", "expires_in": 1800},
    )
    deal = api.post("/crm/v3/objects/deals").respond(201, json=record("2077"))
    hub = connector("oauth")
    result = hub.execute(DEAL_CALL)
    form = parse_qs(token.calls.last.request.content.decode())
    assert token.calls.last.request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert form == {
        "grant_type": ["refresh_token"],
        "client_id": ["emulator-client-id"],
        "client_secret": [SECRET],
        "refresh_token": [REFRESH],
    }
    request = deal.calls.last.request
    assert request.headers["Authorization"] == "Bearer acc-1"
    assert json.loads(request.content) == {
        "properties": {
            "dealname": "Acme expansion 2027",
            "dealstage": "qualifiedtobuy",
            "pipeline": "default",
            "closedate": "2027-03-31T12:00:00Z",
            "amount": "48000",
            "deal_currency_code": "EUR",
            "fulfill_intent_key": "ai_7f3c:create_opportunity",
        },
        "associations": [
            {
                "to": {"id": "1001"},
                "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 5}],
            }
        ],
    }
    assert result.ref == ExternalRef(
        system="hubspot",
        object="deal",
        id="2077",
        url="https://app.hubspot.com/contacts/4471234/record/0-3/2077",
    )
    hub.execute(DEAL_CALL)
    assert token.call_count == 1, "the access token is cached"


def test_follow_up_task_is_attached_to_the_deal(api: respx.MockRouter) -> None:
    route = api.post("/crm/v3/objects/tasks").respond(201, json=record("9003"))
    result = connector().execute(FOLLOW_UP_CALL)
    body = json.loads(route.calls.last.request.content)
    assert body["properties"]["hs_task_subject"] == "Send the order form"
    assert body["properties"]["hs_timestamp"] == "2026-12-10T12:00:00Z"
    assert body["properties"]["fulfill_intent_key"] == "ai_7f3c:create_follow_up_task"
    assert [a["to"]["id"] for a in body["associations"]] == ["2077", "1001"]
    assert [a["types"][0]["associationTypeId"] for a in body["associations"]] == [216, 192]
    assert result.ref.url == "https://app.hubspot.com/contacts/4471234/record/0-3/2077"


def test_follow_up_task_without_its_deal_is_rejected() -> None:
    lone = call("crm.create_opportunity", "create_follow_up_task", OPPORTUNITY_PARAMS)
    with pytest.raises(ValidationRejected, match="prior.create_opportunity"):
        connector().execute(lone)


def test_lookup_reads_by_key_and_404_means_none(api: respx.MockRouter) -> None:
    api.get(DEAL_KEY_PATH).mock(
        side_effect=[
            httpx.Response(404, json=hubspot_error("OBJECT_NOT_FOUND")),
            httpx.Response(200, json=record("2077", fulfill_intent_key="ai_7f3c:create_opportunity")),
        ]
    )
    hub = connector()
    assert hub.lookup(DEAL_CALL) is None
    found = hub.lookup(DEAL_CALL)
    assert found is not None and found.ref.id == "2077" and found.created is False


def test_lookup_refuses_a_record_that_does_not_hold_the_key(api: respx.MockRouter) -> None:
    api.get(DEAL_KEY_PATH).respond(200, json=record("2077", fulfill_intent_key="someone-else"))
    with pytest.raises(Conflict):
        connector().lookup(DEAL_CALL)


def test_compensate_archives_and_404_is_already_gone(api: respx.MockRouter) -> None:
    route = api.delete("/crm/v3/objects/tasks/9001").mock(
        side_effect=[httpx.Response(204), httpx.Response(404, json=hubspot_error("OBJECT_NOT_FOUND"))]
    )
    result = StepResult(
        ref=ExternalRef(system="hubspot", object="task", id="9001"), created=True, summary="Created."
    )
    hub = connector()
    hub.compensate(TASK_CALL, result)
    hub.compensate(TASK_CALL, result)
    assert route.call_count == 2


# -- update_field ---------------------------------------------------------------------------------
def test_update_field_reads_then_patches(api: respx.MockRouter) -> None:
    read = api.get("/crm/v3/objects/deals/2001").respond(
        200, json=record("2001", dealstage="presentationscheduled")
    )
    patch = api.patch("/crm/v3/objects/deals/2001").respond(
        200, json=record("2001", dealstage="contractsent")
    )
    result = connector().execute(UPDATE_CALL)
    assert read.calls.last.request.url.params["properties"] == "dealstage"
    assert json.loads(patch.calls.last.request.content) == {"properties": {"dealstage": "contractsent"}}
    assert result.created is True
    assert result.undo["previous"] == "presentationscheduled"
    assert result.ref.url == "https://app.hubspot.com/contacts/4471234/record/0-3/2001"
    assert result.summary == "Set dealstage on the HubSpot deal 2001 to “contractsent”."


def test_update_field_with_a_stale_previous_value_writes_nothing(api: respx.MockRouter) -> None:
    api.get("/crm/v3/objects/deals/2001").respond(200, json=record("2001", dealstage="closedlost"))
    patch = api.patch("/crm/v3/objects/deals/2001").respond(200, json=record("2001"))
    with pytest.raises(StalePrecondition):
        connector().execute(UPDATE_CALL)
    assert patch.call_count == 0


@pytest.mark.parametrize(
    ("value", "stored", "sent"),
    [(True, "false", "true"), (12.0, "3", "12"), (None, "old", ""), (2.5, "1", "2.5")],
)
def test_update_field_values_are_sent_as_hubspot_strings(
    api: respx.MockRouter, value: Any, stored: str, sent: str
) -> None:
    params = {"object": "Account", "record_id": "1001", "field": "custom_flag", "value": value}
    api.get("/crm/v3/objects/companies/1001").respond(200, json=record("1001", custom_flag=stored))
    patch = api.patch("/crm/v3/objects/companies/1001").respond(200, json=record("1001"))
    connector().execute(call("crm.update_field", "update_field", params))
    assert json.loads(patch.calls.last.request.content) == {"properties": {"custom_flag": sent}}


def test_compensate_update_restores_only_our_value(api: respx.MockRouter) -> None:
    result = StepResult(
        ref=ExternalRef(system="hubspot", object="deal", id="2001"),
        created=True,
        undo={
            "object_type": "deals",
            "field": "dealstage",
            "previous": "presentationscheduled",
            "value": "contractsent",
            "restorable": True,
        },
        summary="Set.",
    )
    api.get("/crm/v3/objects/deals/2001").mock(
        side_effect=[
            httpx.Response(200, json=record("2001", dealstage="contractsent")),
            httpx.Response(200, json=record("2001", dealstage="presentationscheduled")),
            httpx.Response(200, json=record("2001", dealstage="closedwon")),
        ]
    )
    patch = api.patch("/crm/v3/objects/deals/2001").respond(200, json=record("2001"))
    hub = connector()
    hub.compensate(UPDATE_CALL, result)
    assert json.loads(patch.calls.last.request.content) == {
        "properties": {"dealstage": "presentationscheduled"}
    }
    hub.compensate(UPDATE_CALL, result)  # already restored: no write
    assert patch.call_count == 1
    with pytest.raises(Conflict):
        hub.compensate(UPDATE_CALL, result)  # someone changed it again: never clobber
    assert patch.call_count == 1


# -- auth -----------------------------------------------------------------------------------------
def test_oauth_401_refreshes_once_then_succeeds(api: respx.MockRouter) -> None:
    token = api.post("/oauth/v1/token").mock(
        side_effect=[
            httpx.Response(200, json={"access_token": "acc-1", "expires_in": 1800}),
            httpx.Response(200, json={"access_token": "acc-2", "expires_in": 1800}),
        ]
    )
    api.post("/crm/v3/objects/deals").mock(
        side_effect=[
            httpx.Response(401, json=hubspot_error("EXPIRED_AUTHENTICATION")),
            httpx.Response(201, json=record("2077")),
        ]
    )
    assert connector("oauth").execute(DEAL_CALL).ref.id == "2077"
    assert token.call_count == 2


def test_oauth_401_after_refresh_is_authentication_failed(api: respx.MockRouter) -> None:
    api.post("/oauth/v1/token").respond(200, json={"access_token": "acc", "expires_in": 1800})
    deals = api.post("/crm/v3/objects/deals").respond(401, json=hubspot_error("INVALID_AUTHENTICATION"))
    with pytest.raises(AuthenticationFailed):
        connector("oauth").execute(DEAL_CALL)
    assert deals.call_count == 2


def test_private_app_401_fails_without_a_token_request(api: respx.MockRouter) -> None:
    token = api.post("/oauth/v1/token").respond(500)
    api.post("/crm/v3/objects/tasks").respond(401, json=hubspot_error("INVALID_AUTHENTICATION"))
    with pytest.raises(AuthenticationFailed):
        connector().execute(TASK_CALL)
    assert token.call_count == 0


def test_expired_cached_token_is_refreshed_before_use(api: respx.MockRouter) -> None:
    now = [1_000_000.0]
    token = api.post("/oauth/v1/token").respond(200, json={"access_token": "acc", "expires_in": 1800})
    api.post("/crm/v3/objects/deals").respond(201, json=record("2077"))
    hub = connector("oauth", clock=lambda: now[0])
    hub.execute(DEAL_CALL)
    now[0] += 1800
    hub.execute(DEAL_CALL)
    assert token.call_count == 2


def test_bad_refresh_token_is_authentication_failed(api: respx.MockRouter) -> None:
    api.post("/oauth/v1/token").respond(
        400,
        json={
            "status": "BAD_REFRESH_TOKEN",
            "message": "missing or invalid refresh token",
            "correlationId": "x",
        },
    )
    with pytest.raises(AuthenticationFailed) as raised:
        connector("oauth").execute(DEAL_CALL)
    assert raised.value.provider_code == "BAD_REFRESH_TOKEN"


def test_missing_credentials_are_not_configured() -> None:
    hub = HubSpotConnector(httpx.Client(), make_credentials(private_app_token=None))
    with pytest.raises(NotConfigured, match="private_app_token"):
        hub.execute(TASK_CALL)


# -- errors and rate limits -----------------------------------------------------------------------
def test_429_carries_retry_after_policy_and_rate_limit_headers(api: respx.MockRouter) -> None:
    body = {
        "status": "error",
        "message": "You have reached your daily limit.",
        "errorType": "RATE_LIMIT",
        "correlationId": "c033cdaa-2c40-4a64-ae48-b4cec88dad24",
        "policyName": "DAILY",
        "requestId": "3d3e35b7-0dae-4b9f-a6e3-9c230cbcf8dd",
    }
    headers = {
        "Retry-After": "10",
        "X-HubSpot-RateLimit-Daily": "250000",
        "X-HubSpot-RateLimit-Daily-Remaining": "0",
        "X-HubSpot-RateLimit-Max": "100",
    }
    api.post("/crm/v3/objects/tasks").respond(429, json=body, headers=headers)
    hub = connector()
    with pytest.raises(RateLimitedError) as raised:
        hub.execute(TASK_CALL)
    # The daily quota is spent: a retry helps only after its reset (midnight in the account's time
    # zone, unknown here), so a day is asked for — never the header's 10 s.
    assert raised.value.retry_after == DAILY_RESET_WAIT_SECONDS == 86400.0
    assert raised.value.provider_code == "DAILY"
    assert "DAILY" in raised.value.detail
    assert hub.rate_limit["x-hubspot-ratelimit-daily-remaining"] == "0"


def _rate_limit_body(policy: str | None) -> dict[str, Any]:
    body = {"status": "error", "message": "You have reached your limit.", "errorType": "RATE_LIMIT"}
    return body if policy is None else {**body, "policyName": policy}


@pytest.mark.parametrize("policy", ["TEN_SECONDLY_ROLLING", "SOMETHING_NEW", None])
def test_429_without_retry_after_waits_the_ten_second_window(
    api: respx.MockRouter, policy: str | None
) -> None:
    """The burst limit is a 10 s rolling window: no Retry-After means 10 s, not a quick backoff."""
    api.post("/crm/v3/objects/tasks").respond(429, json=_rate_limit_body(policy))
    with pytest.raises(RateLimitedError) as raised:
        connector().execute(TASK_CALL)
    assert raised.value.retry_after == 10.0
    assert raised.value.code == "RETRIES_EXHAUSTED" and raised.value.retryable


def test_429_daily_without_retry_after_waits_a_day(api: respx.MockRouter) -> None:
    api.post("/crm/v3/objects/tasks").respond(429, json=_rate_limit_body("DAILY"))
    with pytest.raises(RateLimitedError) as raised:
        connector().execute(TASK_CALL)
    assert raised.value.retry_after == DAILY_RESET_WAIT_SECONDS


@pytest.mark.parametrize(("header", "expected"), [("120", 120.0), ("3600", 3600.0), ("0", 0.0)])
def test_429_retry_after_is_taken_as_given_not_cut(
    api: respx.MockRouter, header: str, expected: float
) -> None:
    api.post("/crm/v3/objects/tasks").respond(
        429, json=_rate_limit_body("TEN_SECONDLY_ROLLING"), headers={"Retry-After": header}
    )
    with pytest.raises(RateLimitedError) as raised:
        connector().execute(TASK_CALL)
    assert raised.value.retry_after == expected


def test_retry_after_as_an_http_date(api: respx.MockRouter) -> None:
    when = email.utils.formatdate(time.time() + 90, usegmt=True)
    api.post("/crm/v3/objects/tasks").respond(
        429, json=_rate_limit_body("TEN_SECONDLY_ROLLING"), headers={"Retry-After": when}
    )
    with pytest.raises(RateLimitedError) as raised:
        connector().execute(TASK_CALL)
    assert raised.value.retry_after is not None and 85.0 <= raised.value.retry_after <= 90.0


def test_503_passes_on_its_retry_after(api: respx.MockRouter) -> None:
    api.post("/crm/v3/objects/tasks").respond(503, headers={"Retry-After": "45"})
    with pytest.raises(ProviderUnavailable) as raised:
        connector().execute(TASK_CALL)
    assert raised.value.retry_after == 45.0


def test_read_timeout_on_a_create_is_outcome_unknown(api: respx.MockRouter) -> None:
    api.post("/crm/v3/objects/tasks").mock(side_effect=httpx.ReadTimeout("lost"))
    with pytest.raises(OutcomeUnknown):
        connector().execute(TASK_CALL)


def test_connect_error_is_a_plain_network_error(api: respx.MockRouter) -> None:
    api.post("/crm/v3/objects/tasks").mock(side_effect=httpx.ConnectError("refused"))
    with pytest.raises(NetworkError) as raised:
        connector().execute(TASK_CALL)
    assert not isinstance(raised.value, OutcomeUnknown)


@pytest.mark.parametrize("which", ["search", "read by key"])
def test_read_timeout_on_a_read_is_not_outcome_unknown(api: respx.MockRouter, which: str) -> None:
    """A search is a POST but no write: its lost answer is a plain network error."""
    if which == "search":
        api.post("/crm/v3/objects/tasks/search", name="task_search").mock(
            side_effect=httpx.ReadTimeout("slow")
        )
        lost = TASK_CALL
    else:
        api.get(DEAL_KEY_PATH).mock(side_effect=httpx.ReadTimeout("slow"))
        lost = DEAL_CALL
    with pytest.raises(NetworkError) as raised:
        connector().lookup(lost)
    assert not isinstance(raised.value, OutcomeUnknown)


def test_secrets_never_appear_in_errors_or_logs(
    api: respx.MockRouter, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    api.post("/oauth/v1/token").respond(200, json={"access_token": "acc-canary-55", "expires_in": 1800})
    api.post("/crm/v3/objects/deals").respond(401, json=hubspot_error("INVALID_AUTHENTICATION"))
    api.post("/crm/v3/objects/tasks").respond(403, json=hubspot_error("MISSING_SCOPES", f"token {TOKEN}"))
    raised: list[ConnectorError] = []
    for hub, step in ((connector("oauth"), DEAL_CALL), (connector(), TASK_CALL)):
        with pytest.raises(ConnectorError) as info:
            hub.execute(step)
        raised.append(info.value)
    for error in raised:
        text = f"{error} {error.detail} {error.seller_message} {error.as_dict()} {error!r}"
        for canary in (TOKEN, SECRET, REFRESH, "acc-canary-55"):
            assert canary not in text
    for canary in (TOKEN, SECRET, REFRESH, "acc-canary-55"):
        assert canary not in caplog.text
