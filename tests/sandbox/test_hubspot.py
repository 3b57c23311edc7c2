"""The HubSpot emulator speaks the documented subset faithfully: bodies, errors, uniqueness, auth."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from connectors.base import ExternalRef, StepCall, StepResult, idempotency_key
from connectors.errors import ProviderUnavailable
from connectors.hubspot import HubSpotConnector
from sandbox.base import Fault
from sandbox.hubspot import (
    OAUTH_CLIENT_ID,
    OAUTH_CLIENT_SECRET,
    OAUTH_REFRESH_TOKEN,
    PRIVATE_APP_TOKEN,
    HubSpotEmulator,
    rate_limit_fault,
)
from tests.connectors.cases_hubspot import OPPORTUNITY_PARAMS, make_credentials

API = "https://api.hubapi.com"
AUTH = {"Authorization": f"Bearer {PRIVATE_APP_TOKEN}"}


@pytest.fixture
def emulator() -> HubSpotEmulator:
    return HubSpotEmulator()


@pytest.fixture
def client(emulator: HubSpotEmulator) -> Iterator[httpx.Client]:
    with httpx.Client(transport=emulator.transport(), base_url=API, headers=AUTH) as http:
        yield http


def task(key: str, **extra: Any) -> dict[str, Any]:
    return {
        "properties": {
            "hs_task_subject": "Call",
            "hs_timestamp": "2026-12-03T12:00:00Z",
            "fulfill_intent_key": key,
        },
        **extra,
    }


def test_seeded_records(emulator: HubSpotEmulator, client: httpx.Client) -> None:
    deal = client.get("/crm/v3/objects/deals/2001", params={"properties": "dealstage"}).json()
    assert deal["properties"]["dealstage"] == "presentationscheduled"
    assert deal["id"] == "2001" and deal["archived"] is False
    assert client.get("/crm/v3/objects/companies/1001").json()["properties"]["name"] == "Acme Corp"
    assert emulator.associated("deals", "2001") == [("companies", "1001", 5)]


def deal(key: str) -> dict[str, Any]:
    return {"properties": {"dealname": "Acme", "dealstage": "qualifiedtobuy", "fulfill_intent_key": key}}


def test_create_with_association_then_read_by_unique_property(
    emulator: HubSpotEmulator, client: httpx.Client
) -> None:
    association = {
        "to": {"id": "1001"},
        "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 5}],
    }
    created = client.post("/crm/v3/objects/deals", json={**deal("k-1"), "associations": [association]})
    assert created.status_code == 201
    record_id = created.json()["id"]
    assert record_id.isdigit()
    assert emulator.associated("deals", record_id) == [("companies", "1001", 5)]
    by_key = client.get(
        "/crm/v3/objects/deals/k-1",
        params=[("idProperty", "fulfill_intent_key"), ("properties", "dealname"), ("properties", "nope")],
    )
    assert by_key.status_code == 200
    assert by_key.json()["id"] == record_id
    assert set(by_key.json()["properties"]) == {
        "hs_object_id",
        "hs_createdate",
        "hs_lastmodifieddate",
        "dealname",
    }, "repeated properties are honoured; an unknown name is left out"


def test_a_second_create_with_the_same_unique_value_is_a_409(
    emulator: HubSpotEmulator, client: httpx.Client
) -> None:
    first = client.post("/crm/v3/objects/deals", json=deal("k-1")).json()["id"]
    second = client.post("/crm/v3/objects/deals", json=deal("k-1"))
    assert second.status_code == 409
    body = second.json()
    assert body["status"] == "error" and body["category"] == "CONFLICT"
    assert set(body) == {"status", "message", "correlationId", "category"}
    assert first in body["message"]
    assert emulator.live("deals") == ("2001", first)


def test_tasks_have_no_unique_property_and_id_property_on_them_is_400(
    emulator: HubSpotEmulator, client: httpx.Client
) -> None:
    """HubSpot allows unique values on companies, contacts, deals, tickets, custom objects: not tasks."""
    first = client.post("/crm/v3/objects/tasks", json=task("k-1")).json()["id"]
    second = client.post("/crm/v3/objects/tasks", json=task("k-1"))
    assert second.status_code == 201, "the same value twice is accepted on a non-unique property"
    assert emulator.live("tasks") == (first, second.json()["id"])
    by_key = client.get("/crm/v3/objects/tasks/k-1", params={"idProperty": "fulfill_intent_key"})
    assert by_key.status_code == 400
    assert by_key.json()["category"] == "VALIDATION_ERROR"
    definition = client.get("/crm/v3/properties/tasks/fulfill_intent_key").json()
    assert definition["hasUniqueValue"] is False
    assert client.get("/crm/v3/properties/deals/fulfill_intent_key").json()["hasUniqueValue"] is True
    with pytest.raises(ValueError, match="tasks"):
        HubSpotEmulator(key_properties={"tasks": {"fulfill_intent_key": True}})


def test_archive_is_204_hides_the_record_and_frees_the_key(
    emulator: HubSpotEmulator, client: httpx.Client
) -> None:
    record_id = client.post("/crm/v3/objects/tasks", json=task("k-1")).json()["id"]
    assert client.delete(f"/crm/v3/objects/tasks/{record_id}").status_code == 204
    assert client.delete(f"/crm/v3/objects/tasks/{record_id}").status_code == 204
    missing = client.get(f"/crm/v3/objects/tasks/{record_id}")
    assert missing.status_code == 404
    assert missing.json()["category"] == "OBJECT_NOT_FOUND"
    assert emulator.live("tasks") == ()
    assert client.delete("/crm/v3/objects/tasks/424242").status_code == 404


def test_patch_updates_and_validates_enumerations(emulator: HubSpotEmulator, client: httpx.Client) -> None:
    ok = client.patch("/crm/v3/objects/deals/2001", json={"properties": {"dealstage": "contractsent"}})
    assert ok.status_code == 200
    assert emulator.property_value("deals", "2001", "dealstage") == "contractsent"
    bad = client.patch("/crm/v3/objects/deals/2001", json={"properties": {"dealstage": "won-ish"}})
    assert bad.status_code == 400
    assert bad.json()["category"] == "VALIDATION_ERROR"
    assert bad.json()["errors"][0]["context"]["propertyName"] == ["dealstage"]


def test_invalid_association_and_missing_required_property_are_400(client: httpx.Client) -> None:
    association = {
        "to": {"id": "999"},
        "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 192}],
    }
    assert (
        client.post("/crm/v3/objects/tasks", json=task("k-2", associations=[association])).status_code == 400
    )
    assert (
        client.post("/crm/v3/objects/tasks", json={"properties": {"hs_task_subject": "x"}}).status_code == 400
    )


def test_crm_needs_a_valid_bearer_token(emulator: HubSpotEmulator) -> None:
    with httpx.Client(transport=emulator.transport(), base_url=API) as anonymous:
        answer = anonymous.get("/crm/v3/objects/deals/2001")
    assert answer.status_code == 401
    assert answer.json()["category"] == "INVALID_AUTHENTICATION"


def test_oauth_refresh_token_grant_and_expiry(emulator: HubSpotEmulator) -> None:
    with httpx.Client(transport=emulator.transport(), base_url=API) as http:
        form = {
            "grant_type": "refresh_token",
            "client_id": OAUTH_CLIENT_ID,
            "client_secret": OAUTH_CLIENT_SECRET,
            "refresh_token": OAUTH_REFRESH_TOKEN,
        }
        granted = http.post("/oauth/v1/token", data=form)
        assert granted.status_code == 200
        body = granted.json()
        assert body["token_type"] == "bearer" and body["expires_in"] == 1800
        bearer = {"Authorization": f"Bearer {body['access_token']}"}
        assert http.get("/crm/v3/objects/deals/2001", headers=bearer).status_code == 200
        emulator.expire_access_tokens()
        expired = http.get("/crm/v3/objects/deals/2001", headers=bearer)
        assert expired.status_code == 401 and expired.json()["category"] == "EXPIRED_AUTHENTICATION"
        refused = http.post("/oauth/v1/token", data={**form, "refresh_token": "nope"})
        assert refused.status_code == 400 and refused.json()["status"] == "BAD_REFRESH_TOKEN"


def test_rate_limit_headers_and_fault(emulator: HubSpotEmulator, client: httpx.Client) -> None:
    answer = client.get("/crm/v3/objects/deals/2001")
    assert answer.headers["X-HubSpot-RateLimit-Max"] == "100"
    assert answer.headers["X-HubSpot-RateLimit-Interval-Milliseconds"] == "10000"
    assert int(answer.headers["X-HubSpot-RateLimit-Daily-Remaining"]) < 250000
    emulator.inject(rate_limit_fault("DAILY", retry_after=30))
    throttled = client.get("/crm/v3/objects/deals/2001")
    assert throttled.status_code == 429
    assert throttled.headers["Retry-After"] == "30"
    assert throttled.json()["policyName"] == "DAILY" and throttled.json()["errorType"] == "RATE_LIMIT"


def test_reset_reseeds(emulator: HubSpotEmulator, client: httpx.Client) -> None:
    client.post("/crm/v3/objects/tasks", json=task("k-1"))
    emulator.reset()
    assert emulator.live("tasks") == ()
    assert emulator.live("deals") == ("2001",)


def test_connector_against_the_served_emulator_on_loopback(
    emulator: HubSpotEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The whole deal → follow-up plan over real sockets, including a lost answer and its retry."""
    monkeypatch.setenv("FULFILL_ALLOW_LOOPBACK_PROVIDERS", "1")  # the block refuses loopback otherwise
    base = emulator.serve()
    try:
        creds = make_credentials("oauth", api_base_url=base, token_url=f"{base}/oauth/v1/token")
        with httpx.Client(timeout=5) as http:
            hub = HubSpotConnector(http, creds)
            calls: list[tuple[StepCall, StepResult]] = []
            prior: dict[str, ExternalRef] = {}
            for step in hub.steps("crm.create_opportunity", OPPORTUNITY_PARAMS):
                step_call = StepCall(
                    action_intent_id="ai_loop",
                    tenant_id="acme",
                    account_id="1001",
                    action_type="crm.create_opportunity",
                    step=step,
                    idempotency_key=idempotency_key("ai_loop", step),
                    params=OPPORTUNITY_PARAMS,
                    prior=prior,
                )
                result = hub.execute(step_call)
                prior = {**prior, step: result.ref}
                calls.append((step_call, result))
            deal_id = prior["create_opportunity"].id
            task_id = prior["create_follow_up_task"].id
            assert emulator.associated("tasks", task_id) == [
                ("deals", deal_id, 216),
                ("companies", "1001", 192),
            ]
            emulator.inject(Fault(kind="status", method="POST", path=r"^/crm/v3/objects/deals$", status=503))
            with pytest.raises(ProviderUnavailable):
                hub.execute(calls[0][0])
            assert hub.execute(calls[0][0]).ref.id == deal_id
            for step_call, result in reversed(calls):
                hub.compensate(step_call, result)
            assert emulator.live("tasks") == ()
            assert emulator.live("deals") == ("2001",)
    finally:
        emulator.shutdown()
