"""Request-shape tests of the Salesforce connector against documented responses (respx, no network)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
import respx
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from pydantic import SecretStr

from blocks.salesforce import SalesforceCredentials
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
    StalePrecondition,
    TransientError,
    ValidationRejected,
)
from connectors.salesforce import SalesforceConnector, external_id_for
from sandbox.salesforce import SEED_ACCOUNT_ID, SEED_OPPORTUNITY_ID, SalesforceEmulator

LOGIN = "https://acme.my.salesforce.com"
INSTANCE = "https://acme-prod.my.salesforce.com"
API = "/services/data/v62.0/sobjects"
ACCOUNT = SEED_ACCOUNT_ID  # a valid 18-character Account id (the emulated org's)
OPPORTUNITY = "006Hs00001xyz"
SECRET = "canary-consumer-secret-7f3c"
TOKEN = "00DHs0000000001!token-abc"
LIMITS = {"Sforce-Limit-Info": "api-usage=25/15000"}


@lru_cache(maxsize=1)
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def pem() -> str:
    return (
        rsa_key()
        .private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        .decode("ascii")
    )


def creds(**overrides: Any) -> SalesforceCredentials:
    values: dict[str, Any] = {
        "auth_mode": "client_credentials",
        "login_url": LOGIN,
        "client_id": "3MVG9-consumer-key",
        "client_secret": SecretStr(SECRET),
    }
    values.update(overrides)
    return SalesforceCredentials(**values)


def call(action_type: str, step: str, params: dict[str, Any], **extra: Any) -> StepCall:
    return StepCall(
        action_intent_id="ai_7f3c",
        tenant_id="acme",
        account_id=ACCOUNT,
        action_type=action_type,
        step=step,
        idempotency_key=idempotency_key("ai_7f3c", step),
        params=params,
        **extra,
    )


def sf_error(status: int, code: str, message: str = "msg", fields: list[str] | None = None) -> httpx.Response:
    return httpx.Response(status, json=[{"message": message, "errorCode": code, "fields": fields or []}])


def token_response() -> httpx.Response:
    return httpx.Response(
        200,
        json={
            "access_token": TOKEN,
            "instance_url": INSTANCE,
            "id": "https://login.salesforce.com/id/00DHs0000000001EAA/005Hs0000000001AAA",
            "token_type": "Bearer",
            "issued_at": "1764255731000",
            "signature": "c2lnbmF0dXJl",
        },
    )


TASK = {"subject": "Follow up on renewal pricing", "due_date": "2026-12-04", "priority": "High"}
TASK_KEY = external_id_for(idempotency_key("ai_7f3c", "create_task"))
TASK_PATH = f"{API}/Task/Fulfill_Intent_Key__c/{TASK_KEY}"
UPDATE = {
    "object": "Opportunity",
    "record_id": OPPORTUNITY,
    "field": "StageName",
    "value": "Negotiation/Review",
    "previous_value": "Proposal/Price Quote",
}
OPPORTUNITY_PARAMS = {
    "name": "Acme – 3-year renewal",
    "stage": "Prospecting",
    "close_date": "2027-01-31",
    "amount": 1234567.5,
    "currency": "EUR",
    "follow_up_task": {"subject": "Send 3-year quote", "due_date": "2026-12-05"},
}


# The describe answers of a multi-currency org (USD, EUR) whose Task and Opportunity hold the External ID +
# Unique key field, in Salesforce's documented shape (the emulator builds them; its own tests check them).
ORG = SalesforceEmulator(currencies=("USD", "EUR"))
QUERY = "/services/data/v62.0/query/"


def describe_body(sobject: str, emulator: SalesforceEmulator = ORG) -> dict[str, Any]:
    return emulator.describe(sobject)


def org_currency(code: str = "USD") -> httpx.Response:
    return httpx.Response(
        200,
        json={
            "totalSize": 1,
            "done": True,
            "records": [
                {
                    "attributes": {
                        "type": "Organization",
                        "url": "/services/data/v62.0/sobjects/Organization/00D",
                    },
                    "DefaultCurrencyIsoCode": code,
                }
            ],
        },
    )


def mock_org(router: respx.MockRouter, emulator: SalesforceEmulator = ORG, currency: str = "USD") -> None:
    """The org's describe and currency answers a fresh connector reads once."""
    for sobject in ("Task", "Opportunity", "Account", "Contact", "Lead"):
        router.get(f"{INSTANCE}{API}/{sobject}/describe", name=f"describe {sobject}").mock(
            return_value=httpx.Response(200, json=describe_body(sobject, emulator))
        )
    router.get(f"{INSTANCE}{QUERY}", name="query").mock(return_value=org_currency(currency))


@pytest.fixture
def mock() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as router:
        router.post(f"{LOGIN}/services/oauth2/token", name="token").mock(return_value=token_response())
        mock_org(router)
        yield router


@pytest.fixture
def connector() -> SalesforceConnector:
    return SalesforceConnector(httpx.Client(), creds())


def body_of(request: httpx.Request) -> Any:
    return json.loads(request.content)


# -- external id -----------------------------------------------------------------------------
def test_external_id_is_deterministic_hex_safe_in_a_path_segment() -> None:
    value = external_id_for("ai.v1:2026.json:create_task")
    assert value == external_id_for("ai.v1:2026.json:create_task")
    assert len(value) == 64 and set(value) <= set("0123456789abcdef")
    assert value != external_id_for("ai.v1:2026.json:create_follow_up_task")


# -- create_task -----------------------------------------------------------------------------
def test_create_task_upserts_on_the_external_id_with_the_documented_shape(
    mock: respx.MockRouter, connector: SalesforceConnector
) -> None:
    upsert = mock.patch(f"{INSTANCE}{TASK_PATH}").mock(
        return_value=httpx.Response(
            201,
            json={"id": "00THs0000001AAA", "success": True, "errors": [], "created": True},
            headers=LIMITS,
        )
    )
    result = connector.execute(call("crm.create_task", "create_task", TASK))

    form = parse_qs(mock["token"].calls.last.request.content.decode())
    assert form == {
        "grant_type": ["client_credentials"],
        "client_id": ["3MVG9-consumer-key"],
        "client_secret": [SECRET],
    }
    request = upsert.calls.last.request
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert request.headers["Content-Type"] == "application/json"
    assert body_of(request) == {
        "Subject": "Follow up on renewal pricing",
        "Priority": "High",
        "ActivityDate": "2026-12-04",
        "WhatId": ACCOUNT,
    }
    assert result.created is True
    assert result.ref == ExternalRef(
        system="salesforce",
        object="Task",
        id="00THs0000001AAA",
        url=f"{INSTANCE}/lightning/r/Task/00THs0000001AAA/view",
    )
    assert result.summary == "Created the task “Follow up on renewal pricing” in Salesforce."
    assert connector.limit_info == (25, 15000)


def test_upsert_that_matched_reports_not_created(
    mock: respx.MockRouter, connector: SalesforceConnector
) -> None:
    mock.patch(f"{INSTANCE}{TASK_PATH}").mock(
        return_value=httpx.Response(
            200, json={"id": "00THs0000001AAA", "success": True, "errors": [], "created": False}
        )
    )
    result = connector.execute(call("crm.create_task", "create_task", TASK))
    assert result.created is False and result.ref.id == "00THs0000001AAA"


def test_upsert_answering_204_reads_the_id_back(
    mock: respx.MockRouter, connector: SalesforceConnector
) -> None:
    mock.patch(f"{INSTANCE}{TASK_PATH}").mock(return_value=httpx.Response(204))
    read = mock.get(f"{INSTANCE}{TASK_PATH}", params={"fields": "Id"}).mock(
        return_value=httpx.Response(200, json={"attributes": {"type": "Task"}, "Id": "00THs0000001AAA"})
    )
    result = connector.execute(call("crm.create_task", "create_task", TASK))
    assert read.called and result.ref.id == "00THs0000001AAA" and result.created is False


def test_task_related_to_a_contact_uses_who_id(
    mock: respx.MockRouter, connector: SalesforceConnector
) -> None:
    upsert = mock.patch(f"{INSTANCE}{TASK_PATH}").mock(
        return_value=httpx.Response(201, json={"id": "00T1", "success": True, "errors": [], "created": True})
    )
    params = {
        **TASK,
        "description": "3-year quote",
        "related_to": {"object": "Contact", "id": "003Hs0000001AAA"},
    }
    connector.execute(call("crm.create_task", "create_task", params))
    body = body_of(upsert.calls.last.request)
    assert body["WhoId"] == "003Hs0000001AAA" and body["WhatId"] == ACCOUNT
    assert body["Description"] == "3-year quote"


def test_token_is_cached_between_calls(mock: respx.MockRouter, connector: SalesforceConnector) -> None:
    mock.patch(f"{INSTANCE}{TASK_PATH}").mock(
        return_value=httpx.Response(201, json={"id": "00T1", "success": True, "errors": [], "created": True})
    )
    connector.execute(call("crm.create_task", "create_task", TASK))
    connector.execute(call("crm.create_task", "create_task", TASK))
    assert mock["token"].call_count == 1


def test_invalid_session_refreshes_the_token_once(
    mock: respx.MockRouter, connector: SalesforceConnector
) -> None:
    upsert = mock.patch(f"{INSTANCE}{TASK_PATH}").mock(
        side_effect=[
            sf_error(401, "INVALID_SESSION_ID", "Session expired or invalid"),
            httpx.Response(201, json={"id": "00T1", "success": True, "errors": [], "created": True}),
        ]
    )
    assert connector.execute(call("crm.create_task", "create_task", TASK)).ref.id == "00T1"
    assert mock["token"].call_count == 2 and upsert.call_count == 2


def test_second_401_is_authentication_failed(mock: respx.MockRouter, connector: SalesforceConnector) -> None:
    mock.patch(f"{INSTANCE}{TASK_PATH}").mock(return_value=sf_error(401, "INVALID_SESSION_ID"))
    with pytest.raises(AuthenticationFailed) as raised:
        connector.execute(call("crm.create_task", "create_task", TASK))
    assert mock["token"].call_count == 2
    assert raised.value.provider_code == "INVALID_SESSION_ID" and not raised.value.retryable


def test_token_endpoint_refusal_never_shows_the_secret(
    mock: respx.MockRouter, connector: SalesforceConnector
) -> None:
    mock["token"].mock(
        return_value=httpx.Response(
            400, json={"error": "invalid_client", "error_description": f"bad {SECRET}"}
        )
    )
    with pytest.raises(AuthenticationFailed) as raised:
        connector.execute(call("crm.create_task", "create_task", TASK))
    assert raised.value.provider_code == "invalid_client"
    assert SECRET not in str(raised.value) and SECRET not in json.dumps(raised.value.as_dict())


def test_jwt_bearer_posts_a_signed_assertion() -> None:
    clock = 1_764_255_731.0
    connector = SalesforceConnector(
        httpx.Client(),
        creds(
            auth_mode="jwt_bearer",
            client_secret=None,
            username="integration@acme.example",
            private_key=SecretStr(pem()),
        ),
        clock=lambda: clock,
    )
    with respx.mock(assert_all_called=False) as router:
        token = router.post(f"{LOGIN}/services/oauth2/token").mock(return_value=token_response())
        mock_org(router)
        router.patch(f"{INSTANCE}{TASK_PATH}").mock(
            return_value=httpx.Response(
                201, json={"id": "00T1", "success": True, "errors": [], "created": True}
            )
        )
        connector.execute(call("crm.create_task", "create_task", TASK))
    form = parse_qs(token.calls.last.request.content.decode())
    assert form["grant_type"] == ["urn:ietf:params:oauth:grant-type:jwt-bearer"]
    header_b64, claims_b64, signature_b64 = form["assertion"][0].split(".")

    def decode(part: str) -> bytes:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))

    assert json.loads(decode(header_b64)) == {"alg": "RS256"}
    assert json.loads(decode(claims_b64)) == {
        "iss": "3MVG9-consumer-key",
        "sub": "integration@acme.example",
        "aud": "https://login.salesforce.com",
        "exp": int(clock) + 180,
    }
    rsa_key().public_key().verify(
        decode(signature_b64), f"{header_b64}.{claims_b64}".encode(), padding.PKCS1v15(), hashes.SHA256()
    )


def test_missing_credentials_are_not_configured() -> None:
    connector = SalesforceConnector(httpx.Client(), creds(client_secret=None))
    with respx.mock(assert_all_called=False) as router, pytest.raises(NotConfigured) as raised:
        connector.execute(call("crm.create_task", "create_task", TASK))
    assert "client_secret" in str(raised.value) and not router.calls


def test_missing_external_id_field_is_not_configured(
    mock: respx.MockRouter, connector: SalesforceConnector
) -> None:
    mock.patch(f"{INSTANCE}{TASK_PATH}").mock(
        return_value=sf_error(
            404,
            "NOT_FOUND",
            "Provided external ID field does not exist or is not accessible: Fulfill_Intent_Key__c",
        )
    )
    with pytest.raises(NotConfigured):
        connector.execute(call("crm.create_task", "create_task", TASK))


# -- error classification --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (sf_error(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded."), RateLimitedError),
        (sf_error(503, "SERVER_UNAVAILABLE"), ProviderUnavailable),
        (
            sf_error(400, "FIELD_CUSTOM_VALIDATION_EXCEPTION", "secret-ish provider text", ["Subject"]),
            ValidationRejected,
        ),
        (sf_error(400, "INVALID_FIELD", fields=["Bogus__c"]), ValidationRejected),
        (sf_error(400, "REQUIRED_FIELD_MISSING", fields=["CloseDate"]), ValidationRejected),
        (sf_error(400, "INSUFFICIENT_ACCESS_ON_CROSS_REFERENCE_ENTITY"), Forbidden),
        (sf_error(403, "INSUFFICIENT_ACCESS_OR_READONLY"), Forbidden),
        (sf_error(404, "ENTITY_IS_DELETED"), NotFound),
        (sf_error(400, "UNABLE_TO_LOCK_ROW"), TransientError),
        (httpx.Response(300, json=[f"{API}/Task/00T1", f"{API}/Task/00T2"]), Conflict),
        (httpx.Response(429, headers={"Retry-After": "12"}), RateLimitedError),
    ],
)
def test_error_responses_are_classified(
    mock: respx.MockRouter,
    connector: SalesforceConnector,
    response: httpx.Response,
    expected: type[Exception],
) -> None:
    mock.patch(f"{INSTANCE}{TASK_PATH}").mock(return_value=response)
    with pytest.raises(expected) as raised:
        connector.execute(call("crm.create_task", "create_task", TASK))
    assert "provider text" not in str(raised.value)


def test_rate_limit_carries_retry_after(mock: respx.MockRouter, connector: SalesforceConnector) -> None:
    mock.patch(f"{INSTANCE}{TASK_PATH}").mock(return_value=httpx.Response(429, headers={"Retry-After": "12"}))
    with pytest.raises(RateLimitedError) as raised:
        connector.execute(call("crm.create_task", "create_task", TASK))
    assert raised.value.retry_after == 12.0


def test_validation_error_names_the_field_not_the_message(
    mock: respx.MockRouter, connector: SalesforceConnector
) -> None:
    mock.patch(f"{INSTANCE}{TASK_PATH}").mock(
        return_value=sf_error(400, "FIELD_CUSTOM_VALIDATION_EXCEPTION", "Do not mention pricing", ["Subject"])
    )
    with pytest.raises(ValidationRejected) as raised:
        connector.execute(call("crm.create_task", "create_task", TASK))
    assert raised.value.provider_code == "FIELD_CUSTOM_VALIDATION_EXCEPTION"
    assert "Subject" in raised.value.detail and "pricing" not in raised.value.detail


def test_lost_write_response_is_outcome_unknown(
    mock: respx.MockRouter, connector: SalesforceConnector
) -> None:
    mock.patch(f"{INSTANCE}{TASK_PATH}").mock(side_effect=httpx.ReadTimeout("lost"))
    with pytest.raises(OutcomeUnknown):
        connector.execute(call("crm.create_task", "create_task", TASK))


def test_unsent_write_is_a_plain_network_error(
    mock: respx.MockRouter, connector: SalesforceConnector
) -> None:
    mock.patch(f"{INSTANCE}{TASK_PATH}").mock(side_effect=httpx.ConnectError("refused"))
    with pytest.raises(NetworkError) as raised:
        connector.execute(call("crm.create_task", "create_task", TASK))
    assert not isinstance(raised.value, OutcomeUnknown)


def test_read_timeout_on_a_read_is_not_outcome_unknown(
    mock: respx.MockRouter, connector: SalesforceConnector
) -> None:
    mock.get(f"{INSTANCE}{TASK_PATH}").mock(side_effect=httpx.ReadTimeout("slow"))
    with pytest.raises(NetworkError) as raised:
        connector.lookup(call("crm.create_task", "create_task", TASK))
    assert not isinstance(raised.value, OutcomeUnknown)


# -- lookup and compensate of creates --------------------------------------------------------
def test_lookup_reads_by_external_id(mock: respx.MockRouter, connector: SalesforceConnector) -> None:
    read = mock.get(f"{INSTANCE}{TASK_PATH}").mock(
        side_effect=[
            sf_error(404, "NOT_FOUND", "The requested resource does not exist"),
            httpx.Response(200, json={"attributes": {"type": "Task"}, "Id": "00T1"}),
        ]
    )
    step = call("crm.create_task", "create_task", TASK)
    assert connector.lookup(step) is None
    found = connector.lookup(step)
    assert found is not None and found.ref.id == "00T1" and found.created is False
    assert read.calls.last.request.url.params["fields"] == "Id"


def test_lookup_with_several_matches_is_a_conflict(
    mock: respx.MockRouter, connector: SalesforceConnector
) -> None:
    mock.get(f"{INSTANCE}{TASK_PATH}").mock(
        return_value=httpx.Response(300, json=[f"{API}/Task/1", f"{API}/Task/2"])
    )
    with pytest.raises(Conflict):
        connector.lookup(call("crm.create_task", "create_task", TASK))


@pytest.mark.parametrize(
    "gone", [httpx.Response(204), sf_error(404, "ENTITY_IS_DELETED"), sf_error(404, "NOT_FOUND")]
)
def test_compensate_deletes_and_tolerates_already_gone(
    mock: respx.MockRouter, connector: SalesforceConnector, gone: httpx.Response
) -> None:
    delete = mock.delete(f"{INSTANCE}{API}/Task/00T1").mock(return_value=gone)
    result = StepResult(
        ref=ExternalRef(system="salesforce", object="Task", id="00T1"), created=True, summary="Created."
    )
    connector.compensate(call("crm.create_task", "create_task", TASK), result)
    assert delete.called


# -- create_opportunity ----------------------------------------------------------------------
def test_create_opportunity_body_and_follow_up_on_the_opportunity(
    mock: respx.MockRouter, connector: SalesforceConnector
) -> None:
    opp_key = external_id_for(idempotency_key("ai_7f3c", "create_opportunity"))
    task_key = external_id_for(idempotency_key("ai_7f3c", "create_follow_up_task"))
    opp = mock.patch(f"{INSTANCE}{API}/Opportunity/Fulfill_Intent_Key__c/{opp_key}").mock(
        return_value=httpx.Response(
            201, json={"id": "006NEW", "success": True, "errors": [], "created": True}
        )
    )
    task = mock.patch(f"{INSTANCE}{API}/Task/Fulfill_Intent_Key__c/{task_key}").mock(
        return_value=httpx.Response(
            201, json={"id": "00TNEW", "success": True, "errors": [], "created": True}
        )
    )
    assert connector.steps("crm.create_opportunity", OPPORTUNITY_PARAMS) == [
        "create_opportunity",
        "create_follow_up_task",
    ]
    first = connector.execute(call("crm.create_opportunity", "create_opportunity", OPPORTUNITY_PARAMS))
    assert body_of(opp.calls.last.request) == {
        "Name": "Acme – 3-year renewal",
        "StageName": "Prospecting",
        "CloseDate": "2027-01-31",
        "AccountId": ACCOUNT,
        "Amount": 1234567.5,
        "CurrencyIsoCode": "EUR",
    }
    assert first.ref.object == "Opportunity" and first.ref.id == "006NEW"
    second = connector.execute(
        call(
            "crm.create_opportunity",
            "create_follow_up_task",
            OPPORTUNITY_PARAMS,
            prior={"create_opportunity": first.ref},
        )
    )
    assert body_of(task.calls.last.request) == {
        "Subject": "Send 3-year quote",
        "Priority": "Normal",
        "ActivityDate": "2026-12-05",
        "WhatId": "006NEW",
    }
    assert (
        second.summary == "Created the follow-up task “Send 3-year quote” on the opportunity in Salesforce."
    )


def test_opportunity_without_currency_sends_no_currency_iso_code(
    mock: respx.MockRouter, connector: SalesforceConnector
) -> None:
    opp_key = external_id_for(idempotency_key("ai_7f3c", "create_opportunity"))
    opp = mock.patch(f"{INSTANCE}{API}/Opportunity/Fulfill_Intent_Key__c/{opp_key}").mock(
        return_value=httpx.Response(
            201, json={"id": "006NEW", "success": True, "errors": [], "created": True}
        )
    )
    params = {"name": "Renewal", "stage": "Prospecting", "close_date": "2027-01-31"}
    assert connector.steps("crm.create_opportunity", params) == ["create_opportunity"]
    connector.execute(call("crm.create_opportunity", "create_opportunity", params))
    assert "CurrencyIsoCode" not in body_of(opp.calls.last.request)
    assert "Amount" not in body_of(opp.calls.last.request)


def test_follow_up_without_the_opportunity_is_rejected(connector: SalesforceConnector) -> None:
    with pytest.raises(ValidationRejected, match="prior.create_opportunity"):
        connector.execute(call("crm.create_opportunity", "create_follow_up_task", OPPORTUNITY_PARAMS))


# -- update_field ----------------------------------------------------------------------------
def record(stage: Any) -> httpx.Response:
    return httpx.Response(
        200,
        json={"attributes": {"type": "Opportunity"}, "Id": OPPORTUNITY, "StageName": stage},
        headers={"Sforce-Limit-Info": "api-usage=30/15000"},
    )


def test_update_field_reads_then_patches_and_keeps_the_value_before(
    mock: respx.MockRouter, connector: SalesforceConnector
) -> None:
    read = mock.get(f"{INSTANCE}{API}/Opportunity/{OPPORTUNITY}").mock(
        return_value=record("Proposal/Price Quote")
    )
    patch = mock.patch(f"{INSTANCE}{API}/Opportunity/{OPPORTUNITY}").mock(return_value=httpx.Response(204))
    result = connector.execute(call("crm.update_field", "update_field", UPDATE))
    assert read.calls.last.request.url.params["fields"] == "StageName"
    assert body_of(patch.calls.last.request) == {"StageName": "Negotiation/Review"}
    assert result.created is True
    assert result.undo["previous"] == "Proposal/Price Quote"
    assert result.ref.url == f"{INSTANCE}/lightning/r/Opportunity/{OPPORTUNITY}/view"
    assert result.summary == (
        "Changed StageName on the Opportunity from “Proposal/Price Quote” to “Negotiation/Review” "
        "in Salesforce."
    )
    assert connector.limit_info == (30, 15000)


def test_stale_previous_value_writes_nothing(mock: respx.MockRouter, connector: SalesforceConnector) -> None:
    mock.get(f"{INSTANCE}{API}/Opportunity/{OPPORTUNITY}").mock(return_value=record("Closed Lost"))
    patch = mock.patch(f"{INSTANCE}{API}/Opportunity/{OPPORTUNITY}").mock(return_value=httpx.Response(204))
    with pytest.raises(StalePrecondition):
        connector.execute(call("crm.update_field", "update_field", UPDATE))
    assert not patch.called


def test_update_already_applied_is_reused_without_writing(
    mock: respx.MockRouter, connector: SalesforceConnector
) -> None:
    mock.get(f"{INSTANCE}{API}/Opportunity/{OPPORTUNITY}").mock(return_value=record("Negotiation/Review"))
    patch = mock.patch(f"{INSTANCE}{API}/Opportunity/{OPPORTUNITY}").mock(return_value=httpx.Response(204))
    result = connector.execute(call("crm.update_field", "update_field", UPDATE))
    assert not patch.called and result.created is False
    assert result.undo["previous"] == "Proposal/Price Quote"
    found = connector.lookup(call("crm.update_field", "update_field", UPDATE))
    assert found is not None and found.ref.id == OPPORTUNITY


def test_update_missing_record_is_not_found(mock: respx.MockRouter, connector: SalesforceConnector) -> None:
    mock.get(f"{INSTANCE}{API}/Opportunity/{OPPORTUNITY}").mock(return_value=sf_error(404, "NOT_FOUND"))
    with pytest.raises(NotFound):
        connector.execute(call("crm.update_field", "update_field", UPDATE))


def test_compensate_restores_the_previous_value(
    mock: respx.MockRouter, connector: SalesforceConnector
) -> None:
    mock.get(f"{INSTANCE}{API}/Opportunity/{OPPORTUNITY}").mock(
        side_effect=[record("Negotiation/Review"), record("Proposal/Price Quote")]
    )
    patch = mock.patch(f"{INSTANCE}{API}/Opportunity/{OPPORTUNITY}").mock(return_value=httpx.Response(204))
    step = call("crm.update_field", "update_field", UPDATE)
    result = StepResult(
        ref=ExternalRef(system="salesforce", object="Opportunity", id=OPPORTUNITY),
        created=True,
        undo={"previous": "Proposal/Price Quote", "value": "Negotiation/Review"},
        summary="Changed.",
    )
    connector.compensate(step, result)
    assert body_of(patch.calls.last.request) == {"StageName": "Proposal/Price Quote"}
    connector.compensate(step, result)  # already restored: no second write
    assert patch.call_count == 1


def test_compensate_leaves_a_field_changed_again_alone(
    mock: respx.MockRouter, connector: SalesforceConnector
) -> None:
    mock.get(f"{INSTANCE}{API}/Opportunity/{OPPORTUNITY}").mock(return_value=record("Closed Won"))
    patch = mock.patch(f"{INSTANCE}{API}/Opportunity/{OPPORTUNITY}").mock(return_value=httpx.Response(204))
    result = StepResult(
        ref=ExternalRef(system="salesforce", object="Opportunity", id=OPPORTUNITY),
        created=True,
        undo={"previous": "Proposal/Price Quote", "value": "Negotiation/Review"},
        summary="Changed.",
    )
    with pytest.raises(Conflict):
        connector.compensate(call("crm.update_field", "update_field", UPDATE), result)
    assert not patch.called


def test_numbers_compare_as_an_approver_means_them(
    mock: respx.MockRouter, connector: SalesforceConnector
) -> None:
    amount = {**UPDATE, "field": "Amount", "value": 300000, "previous_value": 250000}
    mock.get(f"{INSTANCE}{API}/Opportunity/{OPPORTUNITY}").mock(
        return_value=httpx.Response(200, json={"Id": OPPORTUNITY, "Amount": 250000.0})
    )
    patch = mock.patch(f"{INSTANCE}{API}/Opportunity/{OPPORTUNITY}").mock(return_value=httpx.Response(204))
    connector.execute(call("crm.update_field", "update_field", amount))
    assert body_of(patch.calls.last.request) == {"Amount": 300000}


# -- validation ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("action_type", "params", "field"),
    [
        ("crm.create_task", {}, "parameters.subject"),
        ("crm.create_task", {**TASK, "priority": "Urgent"}, "parameters.priority"),
        ("crm.create_task", {**TASK, "due_date": "2026-02-30"}, "parameters.due_date"),
        ("crm.create_task", {**TASK, "description": "x" * 32001}, "parameters.description"),
        ("crm.create_task", {**TASK, "related_to": {"object": "Account"}}, "parameters.related_to.id"),
        ("crm.create_task", {**TASK, "owner": "me"}, "parameters.owner"),
        ("crm.update_field", {**UPDATE, "record_id": "006/../x"}, "parameters.record_id"),
        ("crm.update_field", {**UPDATE, "field": "Stage Name"}, "parameters.field"),
        ("crm.update_field", {**UPDATE, "field": "Id"}, "parameters.field"),
        ("crm.update_field", {**UPDATE, "value": {"nested": 1}}, "parameters.value"),
        ("crm.update_field", {k: v for k, v in UPDATE.items() if k != "value"}, "parameters.value"),
        ("crm.create_opportunity", {**OPPORTUNITY_PARAMS, "name": "x" * 121}, "parameters.name"),
        ("crm.create_opportunity", {**OPPORTUNITY_PARAMS, "amount": "1000"}, "parameters.amount"),
        ("crm.create_opportunity", {**OPPORTUNITY_PARAMS, "currency": "eur"}, "parameters.currency"),
        ("crm.create_opportunity", {**OPPORTUNITY_PARAMS, "stage": ""}, "parameters.stage"),
    ],
)
def test_validate_names_the_field(
    connector: SalesforceConnector, action_type: str, params: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValidationRejected) as raised:
        connector.validate(action_type, params)
    assert field in str(raised.value)


def test_validate_accepts_the_contract_examples(connector: SalesforceConnector) -> None:
    connector.validate(
        "crm.create_task", {**TASK, "related_to": {"object": "Opportunity", "id": OPPORTUNITY}}
    )
    connector.validate("crm.update_field", {**UPDATE, "value": None})
    connector.validate("crm.create_opportunity", OPPORTUNITY_PARAMS)


def test_foreign_action_types_and_steps_are_rejected(connector: SalesforceConnector) -> None:
    with pytest.raises(ValidationRejected, match="action_type"):
        connector.steps("calendar.draft_meeting", {})
    with pytest.raises(ValidationRejected, match="step"):
        connector.execute(call("crm.create_task", "create_opportunity", TASK))


# -- issue 10: a task on a lead, My Domain, currencies, the org check ---------------------------
def test_task_related_to_a_lead_names_the_lead_alone(
    mock: respx.MockRouter, connector: SalesforceConnector
) -> None:
    upsert = mock.patch(f"{INSTANCE}{TASK_PATH}").mock(
        return_value=httpx.Response(201, json={"id": "00T1", "success": True, "errors": [], "created": True})
    )
    params = {**TASK, "related_to": {"object": "Lead", "id": "00QHs00004lmnUVMAY"}}
    connector.execute(call("crm.create_task", "create_task", params))
    body = body_of(upsert.calls.last.request)
    assert body["WhoId"] == "00QHs00004lmnUVMAY" and "WhatId" not in body  # Salesforce: WhatId empty


def test_related_to_id_must_be_of_the_named_object(connector: SalesforceConnector) -> None:
    with pytest.raises(ValidationRejected, match=r"parameters\.related_to\.id: is not a Lead id"):
        connector.validate(
            "crm.create_task", {**TASK, "related_to": {"object": "Lead", "id": "003Hs0000001AAA"}}
        )


@pytest.mark.parametrize("login", ["https://login.salesforce.com", "https://test.salesforce.com"])
def test_client_credentials_without_my_domain_sends_nothing_and_says_what_to_set(login: str) -> None:
    connector = SalesforceConnector(httpx.Client(), creds(login_url=login))
    with respx.mock(assert_all_called=False) as router, pytest.raises(NotConfigured) as raised:
        connector.execute(call("crm.create_task", "create_task", TASK))
    assert not router.calls
    assert "login_url" in raised.value.detail and "my.salesforce.com" in raised.value.detail
    assert SECRET not in str(raised.value)
    check = connector.check()
    assert not any(check.enabled(a) for a in connector.action_types)
    assert "My Domain" in check.problems("crm.create_task")[0]


def emulated(emulator: SalesforceEmulator) -> SalesforceConnector:
    client = httpx.Client(transport=emulator.transport(), base_url=LOGIN)
    return SalesforceConnector(
        client, creds(client_id="fulfill-emulator-client", client_secret=SecretStr("fulfill-emulator-secret"))
    )


def writes(emulator: SalesforceEmulator) -> list[httpx.Request]:
    return [
        r
        for r in emulator.requests
        if r.method in ("PATCH", "POST", "DELETE") and "/oauth2/" not in r.url.path
    ]


def test_opportunity_currency_in_a_single_currency_org() -> None:
    emulator = SalesforceEmulator(corporate_currency="USD")
    connector = emulated(emulator)
    params = {**OPPORTUNITY_PARAMS, "currency": "EUR"}
    with pytest.raises(ValidationRejected, match=r"parameters\.currency: .* USD; EUR cannot be recorded"):
        connector.execute(call("crm.create_opportunity", "create_opportunity", params))
    assert writes(emulator) == []
    usd = connector.execute(
        call("crm.create_opportunity", "create_opportunity", {**params, "currency": "USD"})
    )
    record = emulator.record(usd.ref.id)
    assert record is not None and "CurrencyIsoCode" not in record and record["Amount"] == 1234567.5


def test_opportunity_currency_in_a_multi_currency_org() -> None:
    emulator = SalesforceEmulator(currencies=("USD", "EUR"))
    connector = emulated(emulator)
    with pytest.raises(ValidationRejected, match=r"parameters\.currency: JPY is not an active currency"):
        connector.execute(
            call("crm.create_opportunity", "create_opportunity", {**OPPORTUNITY_PARAMS, "currency": "JPY"})
        )
    assert writes(emulator) == []
    eur = connector.execute(call("crm.create_opportunity", "create_opportunity", OPPORTUNITY_PARAMS))
    record = emulator.record(eur.ref.id)
    assert record is not None and record["CurrencyIsoCode"] == "EUR"


def test_stage_outside_the_org_picklist_is_refused_before_writing() -> None:
    emulator = SalesforceEmulator(currencies=("USD", "EUR"))
    connector = emulated(emulator)
    params = {**OPPORTUNITY_PARAMS, "stage": "Signed"}
    with pytest.raises(ValidationRejected, match=r"parameters\.stage"):
        connector.execute(call("crm.create_opportunity", "create_opportunity", params))
    assert writes(emulator) == []


def test_org_is_described_once_per_connector_instance() -> None:
    emulator = SalesforceEmulator()
    connector = emulated(emulator)
    connector.execute(call("crm.create_task", "create_task", TASK))
    connector.execute(call("crm.create_task", "create_task", {**TASK, "subject": "again"}))
    described = [r for r in emulator.requests if r.url.path.endswith("/describe")]
    assert [r.url.path for r in described] == [f"{API}/Task/describe"]


def test_check_on_a_ready_org() -> None:
    connector = emulated(SalesforceEmulator(currencies=("USD", "EUR")))
    result = connector.check()
    assert dict(result.guarantees) == dict.fromkeys(
        ["crm.create_opportunity", "crm.create_task", "crm.update_field"], Guarantee.PROVIDER_KEY
    )
    assert all(p.ok for p in result.preconditions)
    names = [p.name for p in result.preconditions]
    assert "Task can be created and Task.Fulfill_Intent_Key__c is an External ID and Unique" in names
    assert "multi-currency org; active currencies: USD, EUR" in names
    assert connector.last_check is result


@pytest.mark.parametrize(
    ("emulator", "fix"),
    [
        (
            SalesforceEmulator(external_id_unique=False),
            "Mark Task.Fulfill_Intent_Key__c as External ID and Unique",
        ),
        (
            SalesforceEmulator(external_id_objects=("Opportunity",)),
            "Create a Text field Fulfill_Intent_Key__c",
        ),
    ],
    ids=["not-unique", "missing"],
)
def test_without_the_key_field_creates_are_disabled_and_refused_before_any_write(
    emulator: SalesforceEmulator, fix: str
) -> None:
    connector = emulated(emulator)
    result = connector.check()
    assert result.guarantees["crm.create_task"] is Guarantee.DISABLED
    assert result.guarantees["crm.create_opportunity"] is Guarantee.DISABLED
    assert result.guarantees["crm.update_field"] is Guarantee.PROVIDER_KEY
    assert result.problems("crm.create_task")[0].startswith(fix)
    assert not any(r.method != "GET" for r in emulator.requests if "/oauth2/" not in r.url.path)
    fresh = emulated(emulator)
    with pytest.raises(NotConfigured) as raised:
        fresh.execute(call("crm.create_task", "create_task", TASK))
    assert fix in raised.value.detail and raised.value.code == "NOT_CONFIGURED"
    assert writes(emulator) == []


def test_update_field_checks_the_field_and_restricted_values_before_writing() -> None:
    emulator = SalesforceEmulator()
    connector = emulated(emulator)
    base = {**UPDATE, "record_id": SEED_OPPORTUNITY_ID}
    with pytest.raises(ValidationRejected, match=r"parameters\.field: Bogus__c is not a field"):
        connector.execute(call("crm.update_field", "update_field", {**base, "field": "Bogus__c"}))
    with pytest.raises(ValidationRejected, match=r"parameters\.value"):
        connector.execute(call("crm.update_field", "update_field", {**base, "value": "Signed"}))
    assert writes(emulator) == []
    result = connector.execute(call("crm.update_field", "update_field", base))
    assert result.created is True
