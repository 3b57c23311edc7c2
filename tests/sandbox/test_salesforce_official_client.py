"""simple-salesforce, the official-in-practice Python client, keeps the Salesforce emulator and connector honest.

Two halves:

* the emulator, served on a real loopback port, is driven by ``simple_salesforce.Salesforce`` through
  create / read / update / delete / upsert by external id / describe / query and the error cases the
  connector relies on; when the client and the emulator disagree, the emulator is wrong;
* every request the connector describes (all action types and steps, the org reads, lookup and undo) is
  compared with the request simple-salesforce builds for the same operation: method, path, query and body
  field names — and the body's field names must be fields the object's describe says can be written.

simple-salesforce always speaks ``https://{instance}``; a ``requests`` adapter hands its requests to the
emulator's plain-HTTP loopback server unchanged otherwise.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import requests
from pydantic import SecretStr
from requests.adapters import BaseAdapter, HTTPAdapter
from simple_salesforce.api import Salesforce, SFType
from simple_salesforce.exceptions import (
    SalesforceExpiredSession,
    SalesforceMalformedRequest,
    SalesforceMoreThanOneRecord,
    SalesforceResourceNotFound,
)

from blocks.salesforce import SalesforceCredentials
from connectors.base import ExternalRef, ProviderRequest, StepCall, StepResult, idempotency_key
from connectors.salesforce import SalesforceConnector, external_id_for
from sandbox.salesforce import (
    SEED_ACCOUNT_ID,
    SEED_CONTACT_ID,
    SEED_LEAD_ID,
    SEED_OPPORTUNITY_ID,
    SalesforceEmulator,
)

KEY = "Fulfill_Intent_Key__c"
VERSION = "62.0"


def obj(sf: Salesforce, name: str) -> SFType:
    """``sf.Task`` etc., typed (simple-salesforce's ``__getattr__`` also serves its bulk APIs)."""
    resource = getattr(sf, name)
    assert isinstance(resource, SFType)
    return resource


class _ToLoopbackHttp(HTTPAdapter):
    """Sends simple-salesforce's ``https://127.0.0.1:port`` requests to the emulator's plain-HTTP server."""

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> requests.Response:
        assert request.url is not None and request.url.startswith("https://127.0.0.1:")
        request.url = "http://" + request.url.removeprefix("https://")
        return super().send(request, *args, **kwargs)


@pytest.fixture
def emulator() -> Iterator[tuple[SalesforceEmulator, str]]:
    served = SalesforceEmulator(currencies=("USD", "EUR"))
    base = served.serve()
    try:
        yield served, base
    finally:
        served.shutdown()


def session_token(base: str, emulator: SalesforceEmulator) -> str:
    response = httpx.post(
        f"{base}/services/oauth2/token",
        data={
            "grant_type": "client_credentials",
            "client_id": emulator.client_id,
            "client_secret": emulator.client_secret,
        },
        timeout=5,
    )
    assert response.status_code == 200
    return str(response.json()["access_token"])


def official(base: str, session_id: str) -> Salesforce:
    session = requests.Session()
    session.mount("https://127.0.0.1:", _ToLoopbackHttp())
    port = urlsplit(base).port
    return Salesforce(
        instance_url=f"https://127.0.0.1:{port}", session_id=session_id, session=session, version=VERSION
    )


@pytest.fixture
def sf(emulator: tuple[SalesforceEmulator, str]) -> Salesforce:
    served, base = emulator
    return official(base, session_token(base, served))


# -- the emulator, driven by the official client ----------------------------------------------
def test_create_read_update_delete(sf: Salesforce, emulator: tuple[SalesforceEmulator, str]) -> None:
    created = obj(sf, "Task").create({"Subject": "Call", "WhatId": SEED_ACCOUNT_ID, "Priority": "High"})
    assert created["success"] is True and created["id"].startswith("00T") and len(created["id"]) == 18
    task_id = created["id"]
    read = obj(sf, "Task").get(task_id[:15])  # a 15-character id names the same record
    assert read["Id"] == task_id and read["Subject"] == "Call" and read["Status"] == "Not Started"
    assert obj(sf, "Task").update(task_id, {"Subject": "Call back"}) == 204
    assert obj(sf, "Task").get(task_id)["Subject"] == "Call back"
    assert obj(sf, "Task").delete(task_id) == 204
    with pytest.raises(SalesforceResourceNotFound):
        obj(sf, "Task").get(task_id)
    with pytest.raises(SalesforceResourceNotFound) as again:
        obj(sf, "Task").delete(task_id)
    assert cast(list[dict[str, Any]], again.value.content)[0]["errorCode"] == "ENTITY_IS_DELETED"


def test_upsert_by_external_id_and_read_back(sf: Salesforce) -> None:
    value = external_id_for("ai_1:create_task")
    assert obj(sf, "Task").upsert(f"{KEY}/{value}", {"Subject": "Call", "WhatId": SEED_ACCOUNT_ID}) == 201
    assert obj(sf, "Task").upsert(f"{KEY}/{value}", {"Subject": "Call again"}) == 200
    found = obj(sf, "Task").get_by_custom_id(KEY, value)
    assert found["Subject"] == "Call again" and found[KEY] == value


def test_several_matches_are_300(sf: Salesforce, emulator: tuple[SalesforceEmulator, str]) -> None:
    served, _ = emulator
    served.insert("Task", {"Subject": "a", KEY: "dup"})
    served.insert("Task", {"Subject": "b", KEY: "dup"})
    with pytest.raises(SalesforceMoreThanOneRecord):
        obj(sf, "Task").upsert(f"{KEY}/dup", {"Subject": "c"})


def test_describe_and_query(sf: Salesforce) -> None:
    described = obj(sf, "Opportunity").describe()
    fields = {f["name"]: f for f in described["fields"]}
    assert described["keyPrefix"] == "006" and fields[KEY]["externalId"] and fields[KEY]["unique"]
    assert "Proposal/Price Quote" in [v["value"] for v in fields["StageName"]["picklistValues"]]
    active = sf.query("SELECT IsoCode FROM CurrencyType WHERE IsActive = true")
    assert [r["IsoCode"] for r in active["records"]] == ["USD", "EUR"] and active["done"] is True
    org = sf.query("SELECT DefaultCurrencyIsoCode FROM Organization")
    assert org["records"][0]["DefaultCurrencyIsoCode"] == "USD"
    opportunities = sf.query(
        f"SELECT Id, StageName FROM Opportunity WHERE AccountId = '{SEED_ACCOUNT_ID[:15]}'"
    )
    assert [r["Id"] for r in opportunities["records"]] == [SEED_OPPORTUNITY_ID]


@pytest.mark.parametrize(
    ("sobject", "fields", "code"),
    [
        (
            "Task",
            {"Subject": "s", "WhoId": SEED_LEAD_ID, "WhatId": SEED_ACCOUNT_ID},
            "FIELD_INTEGRITY_EXCEPTION",
        ),
        ("Task", {"Subject": "s", "WhatId": SEED_CONTACT_ID}, "FIELD_INTEGRITY_EXCEPTION"),
        ("Task", {"Subject": "s", "WhatId": "001Hs00002abcDEF"}, "MALFORMED_ID"),
        (
            "Opportunity",
            {"Name": "n", "StageName": "Won?", "CloseDate": "2027-01-31", "AccountId": SEED_ACCOUNT_ID},
            "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
        ),
        (
            "Opportunity",
            {
                "Name": "n",
                "StageName": "Prospecting",
                "CloseDate": "2027-01-31",
                "AccountId": SEED_ACCOUNT_ID,
                "CurrencyIsoCode": "JPY",
            },
            "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
        ),
        ("Opportunity", {"Name": "n"}, "REQUIRED_FIELD_MISSING"),
        ("Task", {"Subject": "s", "Bogus__c": 1}, "INVALID_FIELD"),
    ],
)
def test_refusals_are_malformed_requests_in_salesforce_error_shape(
    sf: Salesforce, sobject: str, fields: dict[str, Any], code: str
) -> None:
    with pytest.raises(SalesforceMalformedRequest) as raised:
        obj(sf, sobject).create(fields)
    (error,) = cast(list[dict[str, Any]], raised.value.content)
    assert set(error) == {"message", "errorCode", "fields"} and error["errorCode"] == code


def test_a_bad_session_is_expired(emulator: tuple[SalesforceEmulator, str]) -> None:
    _, base = emulator
    with pytest.raises(SalesforceExpiredSession):
        obj(official(base, "00D!not-a-session"), "Account").get(SEED_ACCOUNT_ID)


# -- every request the connector can send, against simple-salesforce's --------------------------
class _Recorder(BaseAdapter):
    """Records the requests simple-salesforce builds and answers each with a plausible success."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[requests.PreparedRequest] = []

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> requests.Response:
        self.sent.append(request)
        response = requests.Response()
        response.status_code = 200
        response._content = json.dumps({"id": "x", "success": True, "errors": [], "records": []}).encode()
        response.headers["Content-Type"] = "application/json"
        response.request = request
        response.url = str(request.url)
        return response

    def close(self) -> None:
        return None


def recording_client() -> tuple[Salesforce, _Recorder]:
    recorder = _Recorder()
    session = requests.Session()
    session.mount("https://", recorder)
    return Salesforce(instance_url=INSTANCE, session_id="00D!x", session=session, version=VERSION), recorder


INSTANCE = "https://acme.my.salesforce.com"
ORG = SalesforceEmulator(currencies=("USD", "EUR"))

CALLS: list[tuple[str, str, dict[str, Any]]] = [
    (
        "crm.create_task",
        "create_task",
        {"subject": "Follow up", "due_date": "2026-12-04", "priority": "High"},
    ),
    (
        "crm.create_task",
        "create_task",
        {"subject": "Call", "description": "d", "related_to": {"object": "Contact", "id": SEED_CONTACT_ID}},
    ),
    (
        "crm.create_task",
        "create_task",
        {"subject": "Call", "related_to": {"object": "Lead", "id": SEED_LEAD_ID}},
    ),
    (
        "crm.create_task",
        "create_task",
        {"subject": "Call", "related_to": {"object": "Opportunity", "id": SEED_OPPORTUNITY_ID}},
    ),
    (
        "crm.update_field",
        "update_field",
        {
            "object": "Opportunity",
            "record_id": SEED_OPPORTUNITY_ID,
            "field": "StageName",
            "value": "Negotiation/Review",
            "previous_value": "Proposal/Price Quote",
        },
    ),
    (
        "crm.create_opportunity",
        "create_opportunity",
        {
            "name": "Renewal",
            "stage": "Prospecting",
            "close_date": "2027-01-31",
            "amount": 1.5,
            "currency": "EUR",
        },
    ),
    (
        "crm.create_opportunity",
        "create_follow_up_task",
        {
            "name": "Renewal",
            "stage": "Prospecting",
            "close_date": "2027-01-31",
            "follow_up_task": {"subject": "Send the quote", "due_date": "2026-12-05"},
        },
    ),
]


def step_call(action_type: str, step: str, params: dict[str, Any]) -> StepCall:
    prior = {}
    if step == "create_follow_up_task":
        prior = {
            "create_opportunity": ExternalRef(
                system="salesforce", object="Opportunity", id=SEED_OPPORTUNITY_ID
            )
        }
    return StepCall(
        action_intent_id="ai_7f3c",
        tenant_id="acme",
        account_id=SEED_ACCOUNT_ID,
        action_type=action_type,
        step=step,
        idempotency_key=idempotency_key("ai_7f3c", step),
        params=params,
        prior=prior,
    )


def official_equivalent(sf: Salesforce, request: ProviderRequest) -> None:
    """Make simple-salesforce send the operation ``request`` stands for."""
    prefix = f"{INSTANCE}/services/data/v{VERSION}/"
    assert request.url.startswith(prefix), request.url
    rest = request.url.removeprefix(prefix)
    if rest == "query/":
        sf.query(request.params["q"])
        return
    _, sobject, *tail = rest.split("/")
    resource = obj(sf, sobject)
    if tail == ["describe"]:
        resource.describe()
    elif len(tail) == 2 and request.method == "PATCH":
        resource.upsert(f"{tail[0]}/{tail[1]}", request.body)
    elif len(tail) == 2:
        resource.get_by_custom_id(tail[0], tail[1], params=request.params or None)
    elif request.method == "GET":
        resource.get(tail[0], params=request.params or None)
    elif request.method == "PATCH":
        resource.update(tail[0], request.body)
    else:
        assert request.method == "DELETE"
        resource.delete(tail[0])


def _same(ours: ProviderRequest, theirs: requests.PreparedRequest) -> None:
    sent = urlsplit(str(theirs.url))
    assert theirs.method == ours.method, ours.purpose
    assert f"{sent.scheme}://{sent.netloc}{sent.path}" == ours.url, ours.purpose
    assert {k: v[0] for k, v in parse_qs(sent.query).items()} == ours.params, ours.purpose
    theirs_body = json.loads(cast(bytes | str, theirs.body)) if theirs.body else None
    if ours.body is None:
        assert theirs_body is None, ours.purpose
    else:
        assert isinstance(theirs_body, dict) and sorted(theirs_body) == sorted(ours.body), ours.purpose
    assert theirs.headers.get("Content-Type") == "application/json"


def _writable(sobject: str, body: Mapping[str, Any], *, create: bool) -> None:
    fields = {f["name"]: f for f in ORG.describe(sobject)["fields"]}
    for name in body:
        assert name in fields, f"{sobject}.{name} is no field"
        assert fields[name]["createable" if create else "updateable"], f"{sobject}.{name} is not writable"


@pytest.mark.parametrize(
    ("action_type", "step", "params"), CALLS, ids=[f"{c[1]}-{i}" for i, c in enumerate(CALLS)]
)
def test_every_described_request_is_what_simple_salesforce_sends(
    action_type: str, step: str, params: dict[str, Any]
) -> None:
    credentials = SalesforceCredentials(login_url=INSTANCE, client_id="k", client_secret=SecretStr("s"))
    connector = SalesforceConnector(httpx.Client(), credentials)
    call = step_call(action_type, step, params)
    connector.validate(action_type, params)
    requests_ = list(connector.describe(call))
    result = StepResult(
        ref=ExternalRef(system="salesforce", object="Task", id=SEED_OPPORTUNITY_ID), created=True, summary="x"
    )
    if step != "update_field":
        # lookup reads by the external id; compensate deletes the record
        sobject = "Opportunity" if step == "create_opportunity" else "Task"
        requests_.append(
            ProviderRequest(
                "GET",
                connector._upsert_path(sobject, external_id_for(call.idempotency_key)),
                "read by external id",
                False,
                params={"fields": "Id"},
            )
        )
        requests_.append(
            ProviderRequest("DELETE", connector._record_path(sobject, result.ref.id), "delete", True)
        )
    # a fresh connector reads the org first; a follow-up task runs on the one that did for its opportunity
    assert any(r.url.endswith("/describe") for r in requests_) is (step != "create_follow_up_task")
    for request in requests_:
        sf, recorder = recording_client()
        official_equivalent(sf, request)
        (theirs,) = recorder.sent
        _same(request, theirs)
        if request.body is not None:
            sobject = request.url.split("/sobjects/")[1].split("/")[0]
            _writable(sobject, request.body, create=request.method == "PATCH" and KEY in request.url)
    if step == "create_task" and params.get("related_to", {}).get("object") == "Lead":
        (upsert,) = [r for r in requests_ if r.method == "PATCH"]
        assert "WhatId" not in upsert.body
