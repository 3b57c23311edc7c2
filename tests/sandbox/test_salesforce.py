"""The Salesforce emulator speaks the documented REST subset, and the connector runs the vectors on it."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from pydantic import SecretStr

from blocks.salesforce import SalesforceCredentials
from connectors.base import ExternalRef, StepCall, StepResult, idempotency_key
from connectors.errors import ValidationRejected
from connectors.salesforce import SalesforceConnector
from sandbox.base import Fault
from sandbox.salesforce import SEED_ACCOUNT_ID, SEED_OPPORTUNITY_ID, SalesforceEmulator
from tests.conftest import VECTORS

ORIGIN = "https://acme.my.salesforce.com"
API = "/services/data/v62.0/sobjects"
KEY_FIELD = "Fulfill_Intent_Key__c"


@pytest.fixture
def emulator() -> SalesforceEmulator:
    return SalesforceEmulator()


@pytest.fixture
def client(emulator: SalesforceEmulator) -> Iterator[httpx.Client]:
    with httpx.Client(transport=emulator.transport(), base_url=ORIGIN) as client:
        yield client


def token(client: httpx.Client) -> str:
    response = client.post(
        "/services/oauth2/token",
        data={
            "grant_type": "client_credentials",
            "client_id": "fulfill-emulator-client",
            "client_secret": "fulfill-emulator-secret",
        },
    )
    assert response.status_code == 200
    body = response.json()
    assert body["instance_url"] == ORIGIN and body["token_type"] == "Bearer"
    return str(body["access_token"])


def auth(client: httpx.Client) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(client)}"}


def b64(value: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def assertion(claims: dict[str, Any], key: rsa.RSAPrivateKey | None = None) -> str:
    signing_input = f"{b64({'alg': 'RS256'})}.{b64(claims)}"
    signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256()) if key else b"unsigned"
    return f"{signing_input}.{base64.urlsafe_b64encode(signature).decode().rstrip('=')}"


def good_claims(**overrides: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "iss": "fulfill-emulator-client",
        "sub": "integration@acme.example",
        "aud": "https://login.salesforce.com",
        "exp": int(time.time()) + 180,
    }
    claims.update(overrides)
    return claims


# -- token endpoint --------------------------------------------------------------------------
def test_client_credentials_with_basic_auth_and_wrong_secret(client: httpx.Client) -> None:
    ok = client.post(
        "/services/oauth2/token",
        data={"grant_type": "client_credentials"},
        auth=("fulfill-emulator-client", "fulfill-emulator-secret"),
    )
    assert ok.status_code == 200
    bad = client.post(
        "/services/oauth2/token",
        data={
            "grant_type": "client_credentials",
            "client_id": "fulfill-emulator-client",
            "client_secret": "nope",
        },
    )
    assert bad.status_code == 400 and bad.json()["error"] == "invalid_client"
    missing = client.post("/services/oauth2/token", data={})
    assert missing.json()["error"] == "invalid_request"


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({}, None),
        ({"iss": "someone-else"}, "invalid_client"),
        ({"aud": "https://evil.example"}, "invalid_grant"),
        ({"exp": int(time.time()) - 5}, "invalid_grant"),
        ({"sub": ""}, "invalid_grant"),
    ],
)
def test_jwt_bearer_checks_the_claims(
    client: httpx.Client, overrides: dict[str, Any], error: str | None
) -> None:
    claims = good_claims(**overrides)  # built at run time: a collection-time exp can lapse
    response = client.post(
        "/services/oauth2/token",
        data={"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": assertion(claims)},
    )
    if error is None:
        assert response.status_code == 200 and response.json()["access_token"]
    else:
        assert response.status_code == 400 and response.json()["error"] == error


def test_jwt_signature_is_checked_when_a_public_key_is_registered() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    emulator = SalesforceEmulator(jwt_public_key=key.public_key())
    with httpx.Client(transport=emulator.transport(), base_url=ORIGIN) as client:
        grant = "urn:ietf:params:oauth:grant-type:jwt-bearer"
        signed = client.post(
            "/services/oauth2/token", data={"grant_type": grant, "assertion": assertion(good_claims(), key)}
        )
        forged = client.post(
            "/services/oauth2/token", data={"grant_type": grant, "assertion": assertion(good_claims())}
        )
    assert signed.status_code == 200
    assert forged.status_code == 400 and forged.json()["error"] == "invalid_grant"


def test_api_without_a_valid_token_is_invalid_session(
    client: httpx.Client, emulator: SalesforceEmulator
) -> None:
    headers = auth(client)
    emulator.revoke_tokens()
    response = client.get(f"{API}/Account/{SEED_ACCOUNT_ID}", headers=headers)
    assert response.status_code == 401
    assert response.json() == [
        {"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID", "fields": []}
    ]


# -- records ---------------------------------------------------------------------------------
def test_seeded_records_and_field_selection(client: httpx.Client) -> None:
    headers = auth(client)
    response = client.get(
        f"{API}/Opportunity/{SEED_OPPORTUNITY_ID}", params={"fields": "StageName"}, headers=headers
    )
    assert response.status_code == 200
    assert response.json() == {
        "attributes": {"type": "Opportunity", "url": f"{API}/Opportunity/{SEED_OPPORTUNITY_ID}"},
        "Id": SEED_OPPORTUNITY_ID,
        "StageName": "Proposal/Price Quote",
    }
    assert response.headers["Sforce-Limit-Info"] == "api-usage=1/15000"
    bad = client.get(
        f"{API}/Opportunity/{SEED_OPPORTUNITY_ID}", params={"fields": "Nope__c"}, headers=headers
    )
    assert bad.status_code == 400 and bad.json()[0]["errorCode"] == "INVALID_FIELD"


def test_upsert_creates_then_updates_then_300_on_several_matches(
    client: httpx.Client, emulator: SalesforceEmulator
) -> None:
    headers = auth(client)
    path = f"{API}/Task/{KEY_FIELD}/abc123"
    created = client.patch(path, json={"Subject": "Call", "WhatId": SEED_ACCOUNT_ID}, headers=headers)
    assert created.status_code == 201
    task_id = created.json()["id"]
    assert created.json() == {"id": task_id, "success": True, "errors": [], "created": True}
    assert task_id.startswith("00T") and len(task_id) == 18
    updated = client.patch(path, json={"Subject": "Call back"}, headers=headers)
    assert (
        updated.status_code == 200 and updated.json()["id"] == task_id and updated.json()["created"] is False
    )
    task = emulator.record(task_id)
    assert task is not None
    assert task["Subject"] == "Call back" and task["Status"] == "Not Started" and task[KEY_FIELD] == "abc123"
    assert client.get(path, headers=headers).json()["Id"] == task_id

    emulator.insert("Task", {"Subject": "dup", KEY_FIELD: "abc123"})
    several = client.patch(path, json={"Subject": "x"}, headers=headers)
    assert several.status_code == 300 and len(several.json()) == 2
    assert client.get(path, headers=headers).status_code == 300


def test_upsert_rejections(client: httpx.Client, emulator: SalesforceEmulator) -> None:
    headers = auth(client)
    opp = f"{API}/Opportunity/{KEY_FIELD}/k1"
    missing = client.patch(opp, json={"Name": "Renewal"}, headers=headers)
    assert missing.status_code == 400
    assert missing.json()[0]["errorCode"] == "REQUIRED_FIELD_MISSING"
    assert missing.json()[0]["fields"] == ["StageName", "CloseDate"]
    unknown = client.patch(opp, json={"Name": "R", "Bogus__c": 1}, headers=headers)
    assert unknown.json()[0]["errorCode"] == "INVALID_FIELD"
    key_in_body = client.patch(f"{API}/Task/{KEY_FIELD}/k2", json={KEY_FIELD: "k2"}, headers=headers)
    assert key_in_body.status_code == 400
    no_field = client.patch(f"{API}/Task/Other_Key__c/k3", json={"Subject": "s"}, headers=headers)
    assert no_field.status_code == 404
    assert no_field.json()[0]["message"].startswith("Provided external ID field does not exist")
    emulator.add_validation_rule("Task", "Subject", "pricing", "Subject must not mention pricing")
    rule = client.patch(f"{API}/Task/{KEY_FIELD}/k4", json={"Subject": "Send PRICING"}, headers=headers)
    assert rule.status_code == 400
    assert rule.json() == [
        {
            "message": "Subject must not mention pricing",
            "errorCode": "FIELD_CUSTOM_VALIDATION_EXCEPTION",
            "fields": ["Subject"],
        }
    ]
    assert emulator.live_ids("Task") == ()


def test_patch_and_delete_by_id(client: httpx.Client, emulator: SalesforceEmulator) -> None:
    headers = auth(client)
    record = f"{API}/Opportunity/{SEED_OPPORTUNITY_ID}"
    activity = emulator.insert("Task", {"Subject": "Call", "WhatId": SEED_OPPORTUNITY_ID})
    assert client.patch(record, json={"StageName": "Closed Won"}, headers=headers).status_code == 204
    assert emulator.live("Opportunity")[0]["StageName"] == "Closed Won"
    assert client.delete(record, headers=headers).status_code == 204
    assert client.get(record, headers=headers).json()[0]["errorCode"] == "NOT_FOUND"
    assert activity not in emulator.live_ids("Task")
    again = client.delete(record, headers=headers)
    assert again.status_code == 404 and again.json()[0]["errorCode"] == "ENTITY_IS_DELETED"
    assert (
        client.patch(record, json={"StageName": "x"}, headers=headers).json()[0]["errorCode"]
        == "ENTITY_IS_DELETED"
    )
    assert client.delete(f"{API}/Task/00Tnothing", headers=headers).json()[0]["errorCode"] == "NOT_FOUND"


def test_daily_limit_answers_request_limit_exceeded() -> None:
    emulator = SalesforceEmulator(api_limit=1)
    with httpx.Client(transport=emulator.transport(), base_url=ORIGIN) as client:
        headers = auth(client)
        assert client.get(f"{API}/Account/{SEED_ACCOUNT_ID}", headers=headers).status_code == 200
        refused = client.get(f"{API}/Account/{SEED_ACCOUNT_ID}", headers=headers)
    assert refused.status_code == 403 and refused.json()[0]["errorCode"] == "REQUEST_LIMIT_EXCEEDED"
    assert refused.headers["Sforce-Limit-Info"] == "api-usage=1/1"


def test_reset_reseeds(client: httpx.Client, emulator: SalesforceEmulator) -> None:
    emulator.insert("Task", {"Subject": "x"})
    emulator.reset()
    assert emulator.live_ids("Task") == () and emulator.live_ids("Account") == (SEED_ACCOUNT_ID,)


# -- the connector against the emulator ------------------------------------------------------
def connector_for(
    emulator: SalesforceEmulator, base_url: str = ORIGIN, **overrides: Any
) -> SalesforceConnector:
    values: dict[str, Any] = {
        "login_url": base_url,
        "client_id": "fulfill-emulator-client",
        "client_secret": SecretStr("fulfill-emulator-secret"),
    }
    values.update(overrides)
    return SalesforceConnector(
        httpx.Client(transport=emulator.transport(), base_url=base_url), SalesforceCredentials(**values)
    )


def run(connector: SalesforceConnector, intent: dict[str, Any]) -> list[StepResult]:
    """Execute every step of an intent in order, as the flow does."""
    results: list[StepResult] = []
    prior: dict[str, ExternalRef] = {}
    connector.validate(intent["action_type"], intent["parameters"])
    for step in connector.steps(intent["action_type"], intent["parameters"]):
        result = connector.execute(
            StepCall(
                action_intent_id=intent["action_intent_id"],
                tenant_id=intent["tenant_id"],
                account_id=intent["account_id"],
                action_type=intent["action_type"],
                step=step,
                idempotency_key=idempotency_key(intent["action_intent_id"], step),
                params=intent["parameters"],
                prior=prior,
            )
        )
        prior[step] = result.ref
        results.append(result)
    return results


@pytest.mark.parametrize(
    "vector",
    [
        "valid-crm-create-task.json",
        "valid-crm-create-opportunity.json",
        "valid-crm-update-field-rotated-key.json",
    ],
)
def test_contract_vectors_run_against_the_emulator(emulator: SalesforceEmulator, vector: str) -> None:
    intent = json.loads((VECTORS / vector).read_text(encoding="utf-8"))
    connector = connector_for(emulator)
    results = run(connector, intent)
    assert results and all(r.created for r in results)
    assert run(connector, intent)[-1].ref.id == results[-1].ref.id  # rerun: same records, nothing new
    if intent["action_type"] == "crm.create_task":
        (task,) = emulator.live("Task")
        assert task["Subject"] == intent["parameters"]["subject"]  # unicode survives
        assert task["WhatId"] == SEED_ACCOUNT_ID
    elif intent["action_type"] == "crm.create_opportunity":
        (opp,) = [o for o in emulator.live("Opportunity") if o["Id"] != SEED_OPPORTUNITY_ID]
        (task,) = emulator.live("Task")
        assert opp["CurrencyIsoCode"] == "EUR" and task["WhatId"] == opp["Id"]
    else:
        record = emulator.record(SEED_OPPORTUNITY_ID)
        assert record is not None and record["StageName"] == "Negotiation/Review"
    assert connector.limit_info is not None and connector.limit_info[1] == 15000


def test_validation_rule_fails_the_second_step_and_the_first_is_compensated(
    emulator: SalesforceEmulator,
) -> None:
    emulator.add_validation_rule("Task", "Subject", "quote", "Tasks may not promise a quote")
    intent = json.loads((VECTORS / "valid-crm-create-opportunity.json").read_text(encoding="utf-8"))
    connector = connector_for(emulator)
    first = StepCall(
        action_intent_id=intent["action_intent_id"],
        tenant_id="acme",
        account_id=SEED_ACCOUNT_ID,
        action_type="crm.create_opportunity",
        step="create_opportunity",
        idempotency_key=idempotency_key(intent["action_intent_id"], "create_opportunity"),
        params=intent["parameters"],
    )
    opportunity = connector.execute(first)
    second = first.model_copy(
        update={
            "step": "create_follow_up_task",
            "idempotency_key": idempotency_key(intent["action_intent_id"], "create_follow_up_task"),
            "prior": {"create_opportunity": opportunity.ref},
        }
    )
    with pytest.raises(ValidationRejected) as raised:
        connector.execute(second)
    assert raised.value.provider_code == "FIELD_CUSTOM_VALIDATION_EXCEPTION" and not raised.value.retryable
    connector.compensate(first, opportunity)
    assert emulator.live_ids("Opportunity") == (SEED_OPPORTUNITY_ID,)
    assert emulator.live_ids("Task") == ()


def test_jwt_bearer_connector_against_the_emulator() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    emulator = SalesforceEmulator(jwt_public_key=key.public_key())
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    connector = connector_for(
        emulator,
        auth_mode="jwt_bearer",
        client_secret=None,
        username="integration@acme.example",
        private_key=SecretStr(pem),
    )
    intent = json.loads((VECTORS / "valid-crm-create-task.json").read_text(encoding="utf-8"))
    assert run(connector, intent)[0].created


def test_refreshes_after_the_session_is_revoked(emulator: SalesforceEmulator) -> None:
    connector = connector_for(emulator)
    intent = json.loads((VECTORS / "valid-crm-create-task.json").read_text(encoding="utf-8"))
    run(connector, intent)
    emulator.revoke_tokens()
    assert run(connector, intent)[0].created is False


def test_served_on_loopback_and_fault_endpoint() -> None:
    emulator = SalesforceEmulator()
    base = emulator.serve()
    try:
        connector = SalesforceConnector(
            httpx.Client(timeout=5),
            SalesforceCredentials(
                login_url=base,
                client_id="fulfill-emulator-client",
                client_secret=SecretStr("fulfill-emulator-secret"),
            ),
        )
        intent = json.loads((VECTORS / "valid-crm-create-task.json").read_text(encoding="utf-8"))
        (result,) = run(connector, intent)
        assert result.ref.url == f"{base}/lightning/r/Task/{result.ref.id}/view"
        emulator.inject(
            Fault(
                kind="status",
                path=r"^/services/data/",
                status=503,
                body=[{"errorCode": "SERVER_UNAVAILABLE", "message": "down", "fields": []}],
            )
        )
        with httpx.Client(timeout=5) as raw:
            assert raw.get(f"{base}{API}/Task/{result.ref.id}").status_code == 503
    finally:
        emulator.shutdown()
