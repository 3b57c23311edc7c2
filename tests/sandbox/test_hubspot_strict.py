"""The HubSpot emulator refuses what HubSpot refuses (docs/emulators.md, "HubSpot")."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from sandbox.hubspot import KEY_PROPERTY, PRIVATE_APP_TOKEN, HubSpotEmulator

API = "https://api.hubapi.com"
AUTH = {"Authorization": f"Bearer {PRIVATE_APP_TOKEN}"}


class Clock:
    def __init__(self) -> None:
        self.now = 1_790_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def emulator(clock: Clock) -> HubSpotEmulator:
    return HubSpotEmulator(clock=clock, index_delay=4.0, currencies=("EUR", "USD", "GBP"))


@pytest.fixture
def client(emulator: HubSpotEmulator) -> Iterator[httpx.Client]:
    with httpx.Client(transport=emulator.transport(), base_url=API, headers=AUTH) as http:
        yield http


def task(**properties: str) -> dict[str, Any]:
    return {"properties": {"hs_timestamp": "2026-12-03T12:00:00Z", **properties}}


def test_an_unknown_property_is_property_doesnt_exist(
    client: httpx.Client, emulator: HubSpotEmulator
) -> None:
    answer = client.post("/crm/v3/objects/tasks", json=task(colour="red"))
    assert answer.status_code == 400
    body = answer.json()
    assert body["status"] == "error" and body["category"] == "VALIDATION_ERROR"
    assert body["errors"] == [
        {
            "message": 'Property "colour" does not exist',
            "code": "PROPERTY_DOESNT_EXIST",
            "context": {"propertyName": ["colour"]},
        }
    ]
    patched = client.patch("/crm/v3/objects/deals/2001", json={"properties": {"not_a_field": "x"}})
    assert patched.status_code == 400 and patched.json()["errors"][0]["code"] == "PROPERTY_DOESNT_EXIST"
    assert emulator.live("tasks") == ()


def test_read_only_and_invalid_options_are_refused(client: httpx.Client) -> None:
    read_only = client.patch("/crm/v3/objects/deals/2001", json={"properties": {"hs_object_id": "7"}})
    assert read_only.json()["errors"][0]["code"] == "READ_ONLY_VALUE"
    currency = client.patch("/crm/v3/objects/deals/2001", json={"properties": {"deal_currency_code": "JPY"}})
    assert currency.status_code == 400 and currency.json()["errors"][0]["code"] == "INVALID_OPTION"
    assert client.patch(
        "/crm/v3/objects/deals/2001", json={"properties": {"deal_currency_code": "GBP"}}
    ).is_success


def test_association_category_and_type_are_checked(client: httpx.Client) -> None:
    def with_type(category: Any, type_id: Any) -> int:
        association = {
            "to": {"id": "1001"},
            "types": [{"associationCategory": category, "associationTypeId": type_id}],
        }
        return client.post(
            "/crm/v3/objects/tasks", json={**task(), "associations": [association]}
        ).status_code

    assert with_type("HUBSPOT_DEFINED", 192) == 201
    assert with_type("HUBSPOT_DEFINED", 216) == 400, "216 is task→deal; 1001 is a company"
    assert with_type("HUBSPOT_DEFINED", "192") == 400
    assert with_type("USER_DEFINED", 192) == 400, "no user-defined label exists in this portal"
    assert with_type("SOMETHING", 192) == 400


def test_search_shows_writes_only_after_the_index_delay(
    client: httpx.Client, clock: Clock, emulator: HubSpotEmulator
) -> None:
    created = client.post("/crm/v3/objects/tasks", json=task(**{KEY_PROPERTY: "k-1"})).json()
    query = {
        "filterGroups": [{"filters": [{"propertyName": KEY_PROPERTY, "operator": "EQ", "value": "k-1"}]}]
    }
    search = "/crm/v3/objects/tasks/search"
    assert client.post(search, json=query).json() == {"total": 0, "results": []}
    assert client.get(f"/crm/v3/objects/tasks/{created['id']}").status_code == 200, (
        "a read by id is consistent"
    )
    clock.now += 4.0
    found = client.post(search, json={**query, "properties": [KEY_PROPERTY]}).json()
    assert found["total"] == 1 and found["results"][0]["properties"][KEY_PROPERTY] == "k-1"
    client.delete(f"/crm/v3/objects/tasks/{created['id']}")
    assert client.post(search, json=query).json()["total"] == 1, "the archive is not indexed yet"
    clock.now += 4.0
    assert client.post(search, json=query).json()["total"] == 0
    bad = {"filterGroups": [{"filters": [{"propertyName": "nope", "operator": "EQ", "value": "x"}]}]}
    assert client.post(search, json=bad).status_code == 400
    assert client.post(search, json={"limit": 201}).status_code == 400


def test_archived_is_honoured_on_reads_and_lists(client: httpx.Client) -> None:
    created = client.post("/crm/v3/objects/tasks", json=task()).json()["id"]
    assert client.delete(f"/crm/v3/objects/tasks/{created}").status_code == 204
    assert client.get(f"/crm/v3/objects/tasks/{created}").status_code == 404
    archived = client.get(f"/crm/v3/objects/tasks/{created}", params={"archived": "true"})
    assert archived.status_code == 200 and archived.json()["archived"] is True
    assert client.get("/crm/v3/objects/tasks").json()["results"] == []
    listed = client.get("/crm/v3/objects/tasks", params={"archived": "true"}).json()["results"]
    assert [r["id"] for r in listed] == [created]


def test_account_details_leads_and_scopes() -> None:
    emulator = HubSpotEmulator(currencies=("EUR", "USD"), unreadable=frozenset({"leads"}))
    with httpx.Client(transport=emulator.transport(), base_url=API, headers=AUTH) as client:
        details = client.get("/account-info/v3/details").json()
        assert details["companyCurrency"] == "EUR" and details["additionalCurrencies"] == ["USD"]
        denied = client.get("/crm/v3/objects/leads/4001")
        assert denied.status_code == 403 and denied.json()["category"] == "MISSING_SCOPES"
    emulator = HubSpotEmulator()
    with httpx.Client(transport=emulator.transport(), base_url=API, headers=AUTH) as client:
        lead = client.get("/crm/v3/objects/leads/4001", params={"properties": "hs_lead_name"}).json()
        assert lead["properties"]["hs_lead_name"] == "Jordan at Acme"
        no_contact = client.post("/crm/v3/objects/leads", json={"properties": {"hs_lead_name": "New"}})
        assert no_contact.status_code == 400
        primary = {
            "to": {"id": "3001"},
            "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 578}],
        }
        made = client.post(
            "/crm/v3/objects/leads", json={"properties": {"hs_lead_name": "New"}, "associations": [primary]}
        )
        assert made.status_code == 201
