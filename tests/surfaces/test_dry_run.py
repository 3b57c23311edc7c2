"""``fulfill plan``: the dry run lists the exact requests, masks every secret, sends and writes nothing.

The tenant's blocks point at the emulators served on loopback by ``start_sandbox`` and hold canary
secrets that those emulators accept. The dry run must not send them a single request; the same
intent is then executed for real through the flow, and what the emulator actually received is
compared with what the dry run listed (an id only a provider's answer gives is a placeholder in the
plan: ``{id from create_opportunity}``).
"""

from __future__ import annotations

import copy
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
import sqlalchemy as sa
from pydantic import SecretStr
from sqlmodel import SQLModel, select

from blocks.google_calendar import GoogleCalendarCredentials
from blocks.hubspot import HubSpotCredentials
from blocks.salesforce import SalesforceCredentials
from connectors.base import StepCall
from connectors.internal import brief_object_key
from flows.execute_intent import execute_intent
from fulfill.db import transaction
from fulfill.tables import Execution, InternalAttachment
from fulfill.tenants import configure
from sandbox.local import SANDBOX_PORTAL_ID, Sandbox, start_sandbox
from surfaces.dry_run import PlanFailed, PlannedRequest, format_plan, plan_requests

pytestmark = pytest.mark.usefixtures("prefect_server")

RUN = uuid.uuid4().hex[:8]
CANARIES = {
    "salesforce": f"canary-sf-secret-{RUN}",
    "hubspot": f"canary-hs-secret-{RUN}",
    "hubspot_refresh": f"canary-hs-refresh-{RUN}",
    "google": f"canary-gc-secret-{RUN}",
    "google_refresh": f"canary-gc-refresh-{RUN}",
}
SF_CLIENT, HS_CLIENT, GC_CLIENT = "dry-run-sf-client", "dry-run-hs-client", "dry-run-gc-client"


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    """The loopback emulators, made to accept (only) the canary credentials."""
    served = start_sandbox()
    served.salesforce.client_id, served.salesforce.client_secret = SF_CLIENT, CANARIES["salesforce"]
    served.hubspot.clients[HS_CLIENT] = CANARIES["hubspot"]
    served.hubspot.refresh_tokens[CANARIES["hubspot_refresh"]] = HS_CLIENT
    served.google_calendar.add_oauth_client(
        GC_CLIENT, CANARIES["google"], CANARIES["google_refresh"], subject="jordan@acme.example"
    )
    try:
        yield served
    finally:
        served.shutdown()


@pytest.fixture(scope="module")
def block_names(sandbox: Sandbox, prefect_server: str) -> dict[str, str]:
    """Canary-holding credentials blocks aimed at the served emulators, saved to the test server."""
    sf, hs, gc = (sandbox.urls[p] for p in ("salesforce", "hubspot", "google_calendar"))
    blocks: dict[str, Any] = {
        "salesforce": SalesforceCredentials(
            auth_mode="client_credentials",
            login_url=sf,
            instance_url=sf,
            client_id=SF_CLIENT,
            client_secret=SecretStr(CANARIES["salesforce"]),
        ),
        "hubspot": HubSpotCredentials(
            auth_mode="oauth",
            client_id=HS_CLIENT,
            client_secret=SecretStr(CANARIES["hubspot"]),
            refresh_token=SecretStr(CANARIES["hubspot_refresh"]),
            api_base_url=hs,
            token_url=f"{hs}/oauth/v1/token",
            app_url=hs,
            portal_id=SANDBOX_PORTAL_ID,
        ),
        "google_calendar": GoogleCalendarCredentials(
            auth_mode="oauth_refresh_token",
            client_id=GC_CLIENT,
            client_secret=SecretStr(CANARIES["google"]),
            refresh_token=SecretStr(CANARIES["google_refresh"]),
            token_uri=f"{gc}/token",
            api_base_url=gc,
        ),
    }
    names = {}
    for provider, block in blocks.items():
        names[provider] = f"dry-run-{provider.replace('_', '-')}-{RUN}"
        block.save(names[provider], overwrite=True)
    return names


@pytest.fixture(autouse=True)
def fresh_emulators(sandbox: Sandbox) -> Iterator[None]:
    for emulator in sandbox.emulators().values():
        emulator.reset()
    yield


def _row_counts(engine: Any) -> dict[str, int]:
    with engine.connect() as connection:
        return {
            table.name: int(connection.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())
            for table in SQLModel.metadata.sorted_tables
        }


def _shown(planned: list[PlannedRequest]) -> str:
    return format_plan(planned) + json.dumps([p.model_dump(mode="json") for p in planned])


def _assert_no_canary(text: str) -> None:
    for name, canary in CANARIES.items():
        assert canary not in text, f"the {name} secret appears in the dry run's output"


def _form(request: httpx.Request) -> dict[str, str]:
    return dict(parse_qsl(request.content.decode(), keep_blank_values=True))


def _json_body(request: httpx.Request) -> Any:
    return json.loads(request.content) if request.content else None


def _matches(planned: Any, sent: Any) -> bool:
    """Whether a sent body is the planned one, a placeholder standing for any id."""
    if isinstance(planned, str) and planned.startswith("{id from "):
        return isinstance(sent, str) and bool(sent)
    if isinstance(planned, dict):
        return (
            isinstance(sent, dict)
            and planned.keys() == sent.keys()
            and all(_matches(planned[k], sent[k]) for k in planned)
        )
    if isinstance(planned, list):
        return (
            isinstance(sent, list)
            and len(planned) == len(sent)
            and all(_matches(p, q) for p, q in zip(planned, sent, strict=True))
        )
    return bool(planned == sent)


@dataclass(frozen=True)
class Case:
    provider: str
    action_type: str
    params: dict[str, Any]
    account_id: str
    expected: tuple[tuple[str, str, str], ...]  # (kind, method, path) in order


CASES = {
    "salesforce-opportunity+follow_up": Case(
        "salesforce",
        "crm.create_opportunity",
        {
            "name": "Acme – 3-year renewal",
            "stage": "Prospecting",
            "close_date": "2027-01-31",
            "amount": 120000,
            "follow_up_task": {"subject": "Send the quote", "due_date": "2026-12-05"},
        },
        "001Hs00002abcDEIAY",
        (
            ("auth", "POST", "/services/oauth2/token"),
            ("read", "GET", "/services/data/v62.0/sobjects/Opportunity/describe"),
            ("read", "GET", "/services/data/v62.0/sobjects/Task/describe"),
            ("write", "PATCH", "/services/data/v62.0/sobjects/Opportunity/Fulfill_Intent_Key__c/"),
            ("write", "PATCH", "/services/data/v62.0/sobjects/Task/Fulfill_Intent_Key__c/"),
        ),
    ),
    "salesforce-update_field": Case(
        "salesforce",
        "crm.update_field",
        {
            "object": "Opportunity",
            "record_id": "006Hs00001xyzABIAY",
            "field": "StageName",
            "value": "Negotiation/Review",
            "previous_value": "Proposal/Price Quote",
        },
        "001Hs00002abcDEIAY",
        (
            ("auth", "POST", "/services/oauth2/token"),
            ("read", "GET", "/services/data/v62.0/sobjects/Opportunity/describe"),
            ("read", "GET", "/services/data/v62.0/sobjects/Opportunity/006Hs00001xyzABIAY"),
            ("write", "PATCH", "/services/data/v62.0/sobjects/Opportunity/006Hs00001xyzABIAY"),
        ),
    ),
    "hubspot-task": Case(
        "hubspot",
        "crm.create_task",
        {"subject": "Book the pricing call", "due_date": "2026-12-04", "priority": "High"},
        "1001",
        (
            ("auth", "POST", "/oauth/v1/token"),
            # The portal self-check a fresh connector runs once (connectors.hubspot.HubSpotConnector.check)
            ("read", "GET", "/crm/v3/properties/tasks/fulfill_intent_key"),
            ("read", "GET", "/crm/v3/properties/deals/fulfill_intent_key"),
            ("read", "GET", "/account-info/v3/details"),
            *(
                ("read", "GET", f"/crm/v3/objects/{kind}")
                for kind in ("companies", "deals", "contacts", "leads")
            ),
            ("read", "POST", "/crm/v3/objects/tasks/search"),  # tasks have no unique property: search first
            ("write", "POST", "/crm/v3/objects/tasks"),
        ),
    ),
    "google_calendar-draft": Case(
        "google_calendar",
        "calendar.draft_meeting",
        {
            "title": "Renewal pricing review",
            "start": "2026-12-03T16:00:00+01:00",
            "end": "2026-12-03T16:30:00+01:00",
            "organizer": "jordan@acme.example",
            "attendees": ["cfo@customer.example"],
        },
        "001Hs00002abcDEF",
        (
            ("auth", "POST", "/token"),
            ("write", "POST", "/calendar/v3/calendars/jordan%40acme.example/events"),
        ),
    ),
}


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_plan_lists_the_real_requests_and_sends_nothing(
    engine: Any,
    make_intent: Any,
    tenant: str,
    sandbox: Sandbox,
    block_names: dict[str, str],
    case: Case,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    family = "calendar" if case.provider == "google_calendar" else "crm"
    with transaction(engine) as session:
        configure(
            session,
            tenant,
            actor="test",
            **{f"{family}_provider": case.provider, f"{family}_block": block_names[case.provider]},
        )
    intent = make_intent(case.action_type, case.params, account_id=case.account_id)
    served = sandbox.emulators()[case.provider]
    before = _row_counts(engine)

    planned = plan_requests(copy.deepcopy(intent))

    # Nothing was sent, nothing was written.
    assert served.requests == [], "the dry run reached the (loopback) provider"
    assert all(e.requests == [] for e in sandbox.emulators().values())
    assert _row_counts(engine) == before, "the dry run wrote to the database"
    with transaction(engine) as session:
        assert session.get(Execution, intent["action_intent_id"]) is None
    # Every secret masked, wherever it could show.
    text = format_plan(planned)
    _assert_no_canary(_shown(planned))
    out, err = capsys.readouterr()
    _assert_no_canary(out + err + caplog.text)
    assert "NOT verified" in text and intent["action_intent_id"] in text
    assert [(p.kind, p.method) for p in planned] == [(kind, method) for kind, method, _ in case.expected]
    for request, (_, _, path) in zip(planned, case.expected, strict=True):
        assert httpx.URL(request.url).raw_path.decode().startswith(path), request.url
        if request.kind == "auth":
            assert request.idempotency_key is None
            assert request.body["client_secret"] == "***"
            assert request.body.get("refresh_token", "***") == "***"
        else:
            assert request.idempotency_key == f"{intent['action_intent_id']}:{request.step}"
            assert request.headers["authorization"] == "Bearer ***"

    # The same intent, executed for real: the provider receives exactly what the dry run listed.
    assert execute_intent(intent).status == "SUCCEEDED"
    real = list(served.requests)
    assert [(r.method, str(r.url)) for r in real] == [(p.method, p.url) for p in planned]
    for sent, plan in zip(real, planned, strict=True):
        if plan.kind == "auth":
            form = _form(sent)
            assert set(form) == set(plan.body)
            assert {k: v for k, v in form.items() if plan.body[k] != "***"} == {
                k: v for k, v in plan.body.items() if v != "***"
            }
            assert any(canary in form.values() for canary in CANARIES.values()), (
                "the real run used the secret"
            )
        else:
            assert _matches(plan.body, _json_body(sent)), f"{plan.step}: the dry run's body is the real body"
        # A placeholder is not as long as the id it stands for.
        varying = {"authorization"} | ({"content-length"} if "{id from " in json.dumps(plan.body) else set())
        real_headers = {k.lower(): v for k, v in sent.headers.items() if k.lower() not in varying}
        planned_headers = {k.lower(): v for k, v in plan.headers.items() if k.lower() not in varying}
        assert real_headers == planned_headers


def test_internal_brief_is_described_without_writing(engine: Any, make_intent: Any, tenant: str) -> None:
    from fulfill.settings import load_settings

    intent = make_intent(
        "internal.attach_brief", {"title": "Acme account brief", "content": "# Acme\n\nARR 1.2M"}
    )
    objects = load_settings().data_dir / "objects"
    before = _row_counts(engine)

    planned = plan_requests(intent)

    assert _row_counts(engine) == before
    assert not objects.exists() or not any(objects.rglob("*")), "the dry run stored the brief"
    assert [(p.step, p.system, p.method) for p in planned] == [
        ("store_brief", "object_storage", "PUT"),
        ("create_attachment", "internal", "INSERT"),
    ]
    call = StepCall(
        action_intent_id=intent["action_intent_id"],
        tenant_id=tenant,
        account_id=intent["account_id"],
        action_type="internal.attach_brief",
        step="store_brief",
        idempotency_key=f"{intent['action_intent_id']}:store_brief",
        params=intent["parameters"],
    )
    key = brief_object_key(call)
    assert planned[0].body["object_key"] == key and planned[0].url.endswith(key)
    assert planned[1].url == "internal://internal_attachments"
    assert planned[1].body["object_key"] == key
    assert planned[1].body["idempotency_key"] == f"{intent['action_intent_id']}:create_attachment"
    assert "NOT verified" in format_plan(planned)
    # Executed for real, the brief lands exactly where the dry run said.
    assert execute_intent(intent).status == "SUCCEEDED"
    with transaction(engine) as session:
        row = session.exec(
            select(InternalAttachment).where(
                InternalAttachment.action_intent_id == intent["action_intent_id"]
            )
        ).one()
    assert row.object_key == key
    assert (objects / key).is_file()


# -- pure planning (no server, no database): injected configuration and block ----------------
def _unsigned(action_type: str, parameters: dict[str, Any], **extra: Any) -> dict[str, Any]:
    intent = {
        "schema_version": "action_intent.v1",
        "action_intent_id": f"ai_plan_{uuid.uuid4().hex[:8]}",
        "tenant_id": "acme",
        "account_id": "001Hs00002abcDEF",
        "decision_id": "dec_1",
        "action_type": action_type,
        "parameters": parameters,
        "approval": {
            "approval_id": "apr_1",
            "approved_by": "jordan@acme.example",
            "approved_at": "2026-11-27T15:02:11Z",
            "edited": False,
            "key_id": "unknown-key",
        },
        "created_at": "2026-11-27T15:00:00Z",
        "expires_at_epoch": int(time.time()) + 3600,
    }
    intent.update(extra)
    return intent


SALESFORCE = SalesforceCredentials(
    login_url="https://acme.my.salesforce.com",
    client_id="cid",
    client_secret=SecretStr(CANARIES["salesforce"]),
)


def _salesforce_tenant(tenant_id: str) -> dict[str, str]:
    return {"crm_provider": "salesforce", "crm_block": "acme-salesforce"}


def test_plan_needs_no_approval_signature_and_never_opens_a_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the dry run opened a network connection")

    monkeypatch.setattr(httpx.HTTPTransport, "handle_request", no_network)
    intent = _unsigned(
        "crm.create_task", {"subject": "Call back", "related_to": {"object": "Contact", "id": "003A"}}
    )
    assert "signature" not in intent["approval"]

    planned = plan_requests(
        intent, tenant_config_lookup=_salesforce_tenant, load_block=lambda provider, name: SALESFORCE
    )

    assert [p.kind for p in planned] == ["auth", "read", "write"]  # the org's Task describe, once
    assert planned[0].url == "https://acme.my.salesforce.com/services/oauth2/token"
    assert planned[2].body == {
        "Subject": "Call back",
        "Priority": "Normal",
        "WhoId": "003A",
        "WhatId": "001Hs00002abcDEF",
    }
    assert "instance URL assumed" in planned[2].note
    _assert_no_canary(_shown(planned))


def test_update_field_plan_reads_then_writes_any_field() -> None:
    intent = _unsigned(
        "crm.update_field",
        {
            "object": "Account",
            "record_id": "001A",
            "field": "Tier__c",
            "value": "Gold",
            "previous_value": "Silver",
        },
    )

    planned = plan_requests(
        intent, tenant_config_lookup=_salesforce_tenant, load_block=lambda provider, name: SALESFORCE
    )

    assert [(p.kind, p.method) for p in planned] == [
        ("auth", "POST"),
        ("read", "GET"),  # the org's Account describe, once per connector
        ("read", "GET"),
        ("write", "PATCH"),
    ]
    assert planned[1].url.endswith("/sobjects/Account/describe")
    assert planned[2].url.endswith("/sobjects/Account/001A?fields=Tier__c")
    assert "previous_value" in planned[3].note  # the write depends on what the read finds
    assert planned[3].body == {"Tier__c": "Gold"}


def test_invalid_intent_or_missing_configuration_fails_the_plan() -> None:
    with pytest.raises(PlanFailed) as invalid:
        plan_requests(
            _unsigned("crm.create_task", {"subject": "x", "colour": "red"}),
            tenant_config_lookup=_salesforce_tenant,
        )
    assert invalid.value.code == "VALIDATION_FAILED" and invalid.value.field == "parameters.colour"
    with pytest.raises(PlanFailed) as unconfigured:
        plan_requests(
            _unsigned("crm.create_task", {"subject": "x"}), tenant_config_lookup=lambda tenant_id: None
        )
    assert unconfigured.value.code == "NOT_CONFIGURED"
    with pytest.raises(PlanFailed) as rejected:
        plan_requests(
            _unsigned("crm.create_task", {"subject": "x", "priority": "Low"}, account_id="not numeric"),
            tenant_config_lookup=lambda tenant_id: {"crm_provider": "hubspot", "crm_block": "b"},
            load_block=lambda provider, name: HubSpotCredentials(private_app_token=SecretStr("pat-x")),
        )
    assert rejected.value.code == "VALIDATION_FAILED"
    assert "pat-x" not in str(rejected.value)


def test_ids_only_an_answer_gives_are_placeholders() -> None:
    intent = _unsigned(
        "crm.create_opportunity",
        {
            "name": "Renewal",
            "stage": "Prospecting",
            "close_date": "2027-01-31",
            "follow_up_task": {"subject": "Send the quote"},
        },
    )

    planned = plan_requests(
        intent, tenant_config_lookup=_salesforce_tenant, load_block=lambda provider, name: SALESFORCE
    )

    assert [(p.kind, p.step) for p in planned] == [
        ("auth", "create_opportunity"),
        ("read", "create_opportunity"),  # the org's describes, once per connector
        ("read", "create_opportunity"),
        ("write", "create_opportunity"),
        ("write", "create_follow_up_task"),
    ]
    assert planned[4].body["WhatId"] == "{id from create_opportunity}"
    assert "{id from create_opportunity} stands for the id" in planned[4].note
    assert planned[3].purpose == "upsert Opportunity"
    assert "upsert Opportunity" in format_plan(planned)


def test_service_account_plan_shows_one_masked_assertion_per_impersonated_user() -> None:
    from tests.connectors.cases_google_calendar import make_credentials, private_key_pem

    block = make_credentials(
        token_uri="https://oauth2.googleapis.com/token", api_base_url="https://www.googleapis.com"
    )
    intent = _unsigned(
        "calendar.draft_meeting",
        {
            "title": "Pricing review",
            "start": "2026-12-03T16:00:00+01:00",
            "end": "2026-12-03T16:30:00+01:00",
            "organizer": "jordan@acme.example",
        },
    )

    planned = plan_requests(
        intent,
        tenant_config_lookup=lambda tenant_id: {
            "calendar_provider": "google_calendar",
            "calendar_block": "b",
        },
        load_block=lambda provider, name: block,
    )

    assert [p.kind for p in planned] == ["auth", "write"]
    assert planned[0].body["assertion"] == "***"
    assert planned[1].url == (
        "https://www.googleapis.com/calendar/v3/calendars/jordan%40acme.example/events?sendUpdates=none"
    )
    assert "attendees" not in planned[1].body
    text = _shown(planned)
    for line in private_key_pem().splitlines():
        if len(line) >= 16:
            assert line not in text


def test_a_block_lacking_a_field_fails_the_plan_before_any_request() -> None:
    with pytest.raises(PlanFailed) as failed:
        plan_requests(
            _unsigned("crm.create_task", {"subject": "x"}),
            tenant_config_lookup=_salesforce_tenant,
            load_block=lambda provider, name: SalesforceCredentials(client_id="cid"),
        )
    assert failed.value.code == "NOT_CONFIGURED" and "client_secret" in failed.value.message
    assert failed.value.requests == []
