"""The HubSpot credentials block: documented fields, and secrets that never leak."""

from __future__ import annotations

import logging

import httpx
import pytest
import respx

from blocks.hubspot import HubSpotCredentials
from connectors.base import StepCall
from connectors.errors import AuthenticationFailed, ConnectorError, NotConfigured, ProviderUnavailable
from connectors.hubspot import HubSpotConnector
from tests.connectors.cases_hubspot import TASK_PARAMS, portal_facts

CANARY = "CANARY-4d9a-do-not-leak"
API = "https://api.hubapi.com"


def private_app_block() -> HubSpotCredentials:
    return HubSpotCredentials(private_app_token=f"pat-na1-{CANARY}", api_base_url=API, portal_id="4471234")


def oauth_block() -> HubSpotCredentials:
    return HubSpotCredentials(
        auth_mode="oauth",
        client_id="0f1e2d3c-client",
        client_secret=f"secret-{CANARY}",
        refresh_token=f"refresh-{CANARY}",
        api_base_url=API,
        token_url=f"{API}/oauth/v1/token",
    )


def call() -> StepCall:
    return StepCall(
        action_intent_id="ai_1",
        tenant_id="acme",
        account_id="1001",
        action_type="crm.create_task",
        step="create_task",
        idempotency_key="ai_1:create_task",
        params=TASK_PARAMS,
    )


def test_block_metadata_and_every_field_documented() -> None:
    assert HubSpotCredentials._block_type_name == "Fulfill HubSpot Credentials"
    assert HubSpotCredentials._description
    assert HubSpotCredentials.__doc__
    for name, info in HubSpotCredentials.model_fields.items():
        assert info.title, f"{name} has no title"
        assert info.description, f"{name} has no description"
    schema = HubSpotCredentials.model_json_schema()
    assert sorted(schema["secret_fields"]) == ["client_secret", "private_app_token", "refresh_token"]


def test_defaults_point_at_hubspot() -> None:
    block = HubSpotCredentials()
    assert block.api_base_url == "https://api.hubapi.com"
    assert block.token_url == "https://api.hubapi.com/oauth/v1/token"
    assert block.app_url == "https://app.hubspot.com"
    assert block.intent_key_property == "fulfill_intent_key"
    assert block.auth_mode == "private_app"


def test_missing_fields_names_only_what_the_mode_needs() -> None:
    assert HubSpotCredentials().missing_fields() == ["private_app_token"]
    assert HubSpotCredentials(auth_mode="oauth", client_id=" ").missing_fields() == [
        "client_id",
        "client_secret",
        "refresh_token",
    ]
    assert private_app_block().missing_fields() == []
    assert oauth_block().missing_fields() == []


@pytest.mark.parametrize("block", [private_app_block(), oauth_block()])
def test_secrets_are_hidden_in_repr_str_and_dumps(block: HubSpotCredentials) -> None:
    for text in (repr(block), str(block), block.model_dump_json(), str(block.model_dump())):
        assert CANARY not in text


def test_secrets_never_reach_errors_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    errors: list[ConnectorError] = []
    with respx.mock(base_url=API) as api:
        api.post("/oauth/v1/token").respond(
            400,
            json={"status": "BAD_REFRESH_TOKEN", "message": f"bad refresh-{CANARY}", "correlationId": "c"},
        )
        api.post("/crm/v3/objects/tasks/search").respond(200, json={"total": 0, "results": []})
        api.post("/crm/v3/objects/tasks").respond(
            503, json={"status": "error", "message": f"echo pat-na1-{CANARY}", "category": "INTERNAL_ERROR"}
        )
        for block, expected in (
            (oauth_block(), AuthenticationFailed),
            (private_app_block(), ProviderUnavailable),
        ):
            with pytest.raises(expected) as raised:
                HubSpotConnector(httpx.Client(), block, facts=portal_facts()).execute(call())
            errors.append(raised.value)
    for error in errors:
        logging.getLogger("test").error("failed: %s %r %s", error, error, error.as_dict())
    assert CANARY not in caplog.text
    for error in errors:
        assert CANARY not in f"{error} {error!r} {error.seller_message} {error.as_dict()}"


def test_not_configured_names_fields_not_values() -> None:
    block = HubSpotCredentials(auth_mode="oauth", client_id="x", client_secret=f"s-{CANARY}")
    with pytest.raises(NotConfigured) as raised:
        HubSpotConnector(httpx.Client(), block, facts=portal_facts()).execute(call())
    assert "refresh_token" in str(raised.value)
    assert CANARY not in str(raised.value)
