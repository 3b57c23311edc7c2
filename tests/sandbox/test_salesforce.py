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
from sandbox.salesforce import (
    SEED_ACCOUNT_ID,
    SEED_CONTACT_ID,
    SEED_LEAD_ID,
    SEED_OPPORTUNITY_ID,
    SalesforceEmulator,
    canonical_id,
    id18,
)
from tests.conftest import VECTORS

ORIGIN = "https://acme.my.salesforce.com"
API = "/services/data/v62.0/sobjects"
KEY_FIELD = "Fulfill_Intent_Key__c"


@pytest.fixture
def emulator() -> SalesforceEmulator:
    return SalesforceEmulator(currencies=("USD", "EUR"))


def load_vector(name: str) -> dict[str, Any]:
    """A contract vector with the emulated org's ids: the vectors' own ids (16 and 13 characters) are not
    Salesforce ids, which a strict org refuses (the signature is not checked here)."""
    intent: dict[str, Any] = json.loads((VECTORS / name).read_text(encoding="utf-8"))
    intent["account_id"] = SEED_ACCOUNT_ID
    if intent["action_type"] == "crm.update_field":
        intent["parameters"]["record_id"] = SEED_OPPORTUNITY_ID
    return intent


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
    intent = load_vector(vector)
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
    intent = load_vector("valid-crm-create-opportunity.json")
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
    intent = load_vector("valid-crm-create-task.json")
    assert run(connector, intent)[0].created


def test_refreshes_after_the_session_is_revoked(emulator: SalesforceEmulator) -> None:
    connector = connector_for(emulator)
    intent = load_vector("valid-crm-create-task.json")
    run(connector, intent)
    emulator.revoke_tokens()
    assert run(connector, intent)[0].created is False


def test_served_on_loopback_and_fault_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FULFILL_ALLOW_LOOPBACK_PROVIDERS", "1")  # the emulator is the provider here
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
        intent = load_vector("valid-crm-create-task.json")
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


# -- as strict as Salesforce -----------------------------------------------------------------
def test_ids_have_a_checksum_and_both_forms_name_the_same_record(client: httpx.Client) -> None:
    assert id18("001xa000003DIlo") == "001xa000003DIloAAG"  # Salesforce's documented example
    for seeded in (SEED_ACCOUNT_ID, SEED_OPPORTUNITY_ID, SEED_CONTACT_ID, SEED_LEAD_ID):
        assert len(seeded) == 18 and canonical_id(seeded) == seeded == id18(seeded[:15])
    assert canonical_id("001Hs00002abcDEF") is None  # 16 characters: no Salesforce id
    assert canonical_id(SEED_ACCOUNT_ID[:15] + "AAA") is None  # wrong checksum
    headers = auth(client)
    short = client.get(f"{API}/Account/{SEED_ACCOUNT_ID[:15]}", headers=headers)
    assert short.status_code == 200 and short.json()["Id"] == SEED_ACCOUNT_ID
    assert client.get(f"{API}/Opportunity/{SEED_ACCOUNT_ID}", headers=headers).status_code == 404


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"WhatId": "001Hs00002abcDEF"}, "MALFORMED_ID"),
        ({"WhatId": SEED_CONTACT_ID}, "FIELD_INTEGRITY_EXCEPTION"),
        ({"WhoId": SEED_ACCOUNT_ID}, "FIELD_INTEGRITY_EXCEPTION"),
        ({"WhatId": id18("001Hs0000nothere")[:15]}, "INVALID_CROSS_REFERENCE_KEY"),
        ({"WhoId": SEED_LEAD_ID, "WhatId": SEED_ACCOUNT_ID}, "FIELD_INTEGRITY_EXCEPTION"),
        ({"Priority": "Urgent"}, "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"),
    ],
)
def test_task_references_and_picklists_are_checked(
    client: httpx.Client, emulator: SalesforceEmulator, fields: dict[str, str], code: str
) -> None:
    response = client.patch(
        f"{API}/Task/{KEY_FIELD}/k1", json={"Subject": "Call", **fields}, headers=auth(client)
    )
    assert response.status_code == 400
    (error,) = response.json()
    assert error["errorCode"] == code and set(error) == {"message", "errorCode", "fields"}
    assert error["fields"] and emulator.live_ids("Task") == ()


def test_task_on_a_lead_alone_and_references_stored_in_18_characters(
    client: httpx.Client, emulator: SalesforceEmulator
) -> None:
    headers = auth(client)
    lead = client.patch(
        f"{API}/Task/{KEY_FIELD}/k1", json={"Subject": "Call", "WhoId": SEED_LEAD_ID[:15]}, headers=headers
    )
    assert lead.status_code == 201
    contact = client.patch(
        f"{API}/Task/{KEY_FIELD}/k2",
        json={"Subject": "Call", "WhoId": SEED_CONTACT_ID, "WhatId": SEED_ACCOUNT_ID[:15]},
        headers=headers,
    )
    assert contact.status_code == 201
    task = emulator.record(contact.json()["id"])
    assert task is not None and task["WhatId"] == SEED_ACCOUNT_ID
    relate = client.patch(
        f"{API}/Task/{lead.json()['id']}", json={"WhatId": SEED_OPPORTUNITY_ID}, headers=headers
    )
    assert relate.status_code == 400 and relate.json()[0]["fields"] == ["WhatId"]


def test_stage_picklist_and_currency_of_a_single_currency_org() -> None:
    emulator = SalesforceEmulator()  # single currency (USD): no CurrencyIsoCode anywhere
    with httpx.Client(transport=emulator.transport(), base_url=ORIGIN) as client:
        headers = auth(client)
        opp = {
            "Name": "R",
            "StageName": "Prospecting",
            "CloseDate": "2027-01-31",
            "AccountId": SEED_ACCOUNT_ID,
        }
        stage = client.patch(
            f"{API}/Opportunity/{KEY_FIELD}/k1", json={**opp, "StageName": "Won?"}, headers=headers
        )
        assert stage.json()[0]["errorCode"] == "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"
        currency = client.patch(
            f"{API}/Opportunity/{KEY_FIELD}/k1", json={**opp, "CurrencyIsoCode": "USD"}, headers=headers
        )
        assert currency.json()[0]["errorCode"] == "INVALID_FIELD"
        described = client.get(f"{API}/Opportunity/describe", headers=headers).json()
        assert "CurrencyIsoCode" not in {f["name"] for f in described["fields"]}
        org = client.get(
            "/services/data/v62.0/query/",
            params={"q": "SELECT DefaultCurrencyIsoCode FROM Organization"},
            headers=headers,
        ).json()
        assert org["records"][0]["DefaultCurrencyIsoCode"] == "USD" and org["totalSize"] == 1
        no_type = client.get(
            "/services/data/v62.0/query",
            params={"q": "SELECT IsoCode FROM CurrencyType WHERE IsActive = true"},
            headers=headers,
        )
        assert no_type.status_code == 400 and no_type.json()[0]["errorCode"] == "INVALID_TYPE"


def test_multi_currency_org_takes_only_active_currencies(client: httpx.Client) -> None:
    headers = auth(client)
    opp = {"Name": "R", "StageName": "Prospecting", "CloseDate": "2027-01-31", "AccountId": SEED_ACCOUNT_ID}
    refused = client.patch(
        f"{API}/Opportunity/{KEY_FIELD}/k1", json={**opp, "CurrencyIsoCode": "JPY"}, headers=headers
    )
    assert refused.json()[0]["errorCode"] == "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"
    accepted = client.patch(
        f"{API}/Opportunity/{KEY_FIELD}/k1", json={**opp, "CurrencyIsoCode": "EUR"}, headers=headers
    )
    assert accepted.status_code == 201
    active = client.get(
        "/services/data/v62.0/query/",
        params={"q": "SELECT IsoCode FROM CurrencyType WHERE IsActive = true"},
        headers=headers,
    ).json()
    assert [r["IsoCode"] for r in active["records"]] == ["USD", "EUR"]
    assert active["records"][0]["attributes"]["type"] == "CurrencyType"


def test_describe_reports_the_key_field_picklists_and_references(client: httpx.Client) -> None:
    described = client.get(f"{API}/Task/describe", headers=auth(client))
    assert described.status_code == 200
    body = described.json()
    assert body["name"] == "Task" and body["keyPrefix"] == "00T" and body["createable"] is True
    fields = {f["name"]: f for f in body["fields"]}
    assert fields[KEY_FIELD]["externalId"] is True and fields[KEY_FIELD]["unique"] is True
    assert fields["WhoId"]["referenceTo"] == ["Contact", "Lead"]
    assert [v["value"] for v in fields["Priority"]["picklistValues"]] == ["High", "Normal", "Low"]
    assert fields["Priority"]["restrictedPicklist"] is True


def test_a_key_field_that_is_not_unique_is_no_upsert_key() -> None:
    emulator = SalesforceEmulator(external_id_unique=False)
    with httpx.Client(transport=emulator.transport(), base_url=ORIGIN) as client:
        headers = auth(client)
        fields = {f["name"]: f for f in client.get(f"{API}/Task/describe", headers=headers).json()["fields"]}
        assert fields[KEY_FIELD]["externalId"] is False and fields[KEY_FIELD]["unique"] is False
        upsert = client.patch(f"{API}/Task/{KEY_FIELD}/k1", json={"Subject": "s"}, headers=headers)
        assert upsert.status_code == 404


def test_create_and_duplicate_external_id_value(client: httpx.Client) -> None:
    headers = auth(client)
    first = client.post(f"{API}/Task/", json={"Subject": "a", KEY_FIELD: "v1"}, headers=headers)
    assert first.status_code == 201 and first.json()["success"] is True
    second = client.post(f"{API}/Task", json={"Subject": "b", KEY_FIELD: "v1"}, headers=headers)
    assert second.status_code == 400 and second.json()[0]["errorCode"] == "DUPLICATE_VALUE"


def test_client_credentials_on_the_generic_login_host_is_refused(emulator: SalesforceEmulator) -> None:
    with httpx.Client(transport=emulator.transport(), base_url="https://login.salesforce.com") as client:
        response = client.post(
            "/services/oauth2/token",
            data={
                "grant_type": "client_credentials",
                "client_id": emulator.client_id,
                "client_secret": emulator.client_secret,
            },
        )
    assert response.status_code == 400 and response.json()["error"] == "invalid_grant"
