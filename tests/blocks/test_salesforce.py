"""The Salesforce credentials block: documented fields, and secrets that never leak."""

from __future__ import annotations

import logging
import pickle

import httpx
import pytest
import respx
from pydantic import SecretStr, ValidationError

from blocks.salesforce import SalesforceCredentials
from connectors.base import StepCall
from connectors.errors import AuthenticationFailed, ConnectorError, NotConfigured, ValidationRejected
from connectors.salesforce import SalesforceConnector
from sandbox.salesforce import SEED_ACCOUNT_ID, SalesforceEmulator
from tests.connectors.cases_salesforce import TASK_PARAMS

CANARY = "CANARY-5e1b-do-not-leak"
LOGIN = "https://acme.my.salesforce.com"


def client_credentials_block() -> SalesforceCredentials:
    return SalesforceCredentials(
        login_url=LOGIN, client_id="3MVG9-key", client_secret=SecretStr(f"secret-{CANARY}")
    )


def jwt_block() -> SalesforceCredentials:
    return SalesforceCredentials(
        auth_mode="jwt_bearer",
        login_url=LOGIN,
        client_id="3MVG9-key",
        username="integration@acme.example",
        private_key=SecretStr(f"-----BEGIN PRIVATE KEY-----\n{CANARY}\n-----END PRIVATE KEY-----\n"),
    )


def call() -> StepCall:
    return StepCall(
        action_intent_id="ai_1",
        tenant_id="acme",
        account_id=SEED_ACCOUNT_ID,
        action_type="crm.create_task",
        step="create_task",
        idempotency_key="ai_1:create_task",
        params=TASK_PARAMS,
    )


def test_block_metadata_and_every_field_documented() -> None:
    assert SalesforceCredentials._block_type_name == "Fulfill Salesforce Credentials"
    assert SalesforceCredentials._description
    assert SalesforceCredentials.__doc__
    for name, info in SalesforceCredentials.model_fields.items():
        assert info.title, f"{name} has no title"
        assert info.description, f"{name} has no description"
    schema = SalesforceCredentials.model_json_schema()
    assert sorted(schema["secret_fields"]) == ["client_secret", "private_key"]


def test_defaults() -> None:
    block = SalesforceCredentials()
    assert block.auth_mode == "client_credentials"
    assert block.login_url == "https://login.salesforce.com"
    assert block.jwt_audience == "https://login.salesforce.com"
    assert block.external_id_field == "Fulfill_Intent_Key__c"
    assert block.api_version == "62.0"
    assert block.instance_url is None


@pytest.mark.parametrize(("field", "value"), [("api_version", "v62"), ("external_id_field", "Intent Key")])
def test_malformed_settings_are_refused(field: str, value: str) -> None:
    with pytest.raises(ValidationError):
        SalesforceCredentials(**{field: value})


def test_missing_fields_names_only_what_the_mode_needs() -> None:
    assert SalesforceCredentials().missing_fields() == ["client_id", "client_secret"]
    assert SalesforceCredentials(auth_mode="jwt_bearer", client_id="k", username=" ").missing_fields() == [
        "username",
        "private_key",
    ]
    assert client_credentials_block().missing_fields() == []
    assert jwt_block().missing_fields() == []


@pytest.mark.parametrize("block", [client_credentials_block(), jwt_block()])
def test_secrets_are_hidden_in_repr_str_and_dumps(block: SalesforceCredentials) -> None:
    for text in (repr(block), str(block), block.model_dump_json(), str(block.model_dump())):
        assert CANARY not in text


def test_secrets_never_reach_errors_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    errors: list[ConnectorError] = []
    with respx.mock(base_url=LOGIN) as api:
        api.post("/services/oauth2/token").respond(
            400, json={"error": "invalid_client", "error_description": f"invalid client secret-{CANARY}"}
        )
        with pytest.raises(AuthenticationFailed) as raised:
            SalesforceConnector(httpx.Client(), client_credentials_block()).execute(call())
        errors.append(raised.value)
    with pytest.raises(NotConfigured) as unreadable:  # the "key" is not PEM: refused without echoing it
        SalesforceConnector(httpx.Client(), jwt_block()).execute(call())
    errors.append(unreadable.value)
    for error in errors:
        logging.getLogger("test").error("failed: %s %r %s", error, error, error.as_dict())
        revived = pickle.loads(pickle.dumps(error))
        assert CANARY not in f"{error} {error!r} {error.seller_message} {error.as_dict()} {revived!r}"
    assert CANARY not in caplog.text


def test_provider_validation_messages_are_not_echoed(caplog: pytest.LogCaptureFixture) -> None:
    instance = "https://acme-prod.my.salesforce.com"
    with respx.mock() as api:
        api.post(f"{LOGIN}/services/oauth2/token").respond(
            200, json={"access_token": f"tok-{CANARY}", "instance_url": instance, "token_type": "Bearer"}
        )
        api.get(url__regex=rf"^{instance}/services/data/v62\.0/sobjects/\w+/describe$").mock(
            side_effect=lambda request: httpx.Response(
                200, json=SalesforceEmulator().describe(request.url.path.split("/")[-2])
            )
        )
        api.patch(url__startswith=f"{instance}/services/data/").respond(
            400,
            json=[
                {"message": f"echo {CANARY}", "errorCode": "FIELD_CUSTOM_VALIDATION_EXCEPTION", "fields": []}
            ],
        )
        with pytest.raises(ValidationRejected) as raised:
            SalesforceConnector(httpx.Client(), client_credentials_block()).execute(call())
    assert CANARY not in f"{raised.value} {raised.value!r} {raised.value.as_dict()}"


def test_not_configured_names_fields_not_values() -> None:
    block = SalesforceCredentials(auth_mode="jwt_bearer", client_id="k", private_key=SecretStr(f"k-{CANARY}"))
    with pytest.raises(NotConfigured) as raised:
        SalesforceConnector(httpx.Client(), block).execute(call())
    assert "username" in str(raised.value)
    assert CANARY not in str(raised.value)


@pytest.mark.parametrize(
    ("login_url", "refused"),
    [
        ("https://login.salesforce.com", True),
        ("https://test.salesforce.com", True),
        ("https://na1.salesforce.com", True),
        ("http://acme.my.salesforce.com", True),
        ("https://acme.my.salesforce.com", False),
        ("https://acme--uat.sandbox.my.salesforce.com", False),
        ("http://127.0.0.1:8771", False),
    ],
)
def test_client_credentials_need_my_domain(login_url: str, refused: bool) -> None:
    block = SalesforceCredentials(login_url=login_url, client_id="k", client_secret=SecretStr(CANARY))
    problem = block.my_domain_problem()
    assert (problem is not None) is refused
    if problem is not None:
        assert "set login_url to https://<your-domain>.my.salesforce.com" in problem and CANARY not in problem
        assert block.configuration_problems() == [problem]
        with respx.mock(assert_all_called=False) as router, pytest.raises(NotConfigured) as raised:
            SalesforceConnector(httpx.Client(), block).execute(call())
        assert not router.calls and "login_url" in raised.value.detail


def test_jwt_bearer_may_use_the_generic_login_host() -> None:
    block = SalesforceCredentials(
        auth_mode="jwt_bearer", client_id="k", username="u", private_key=SecretStr("pem")
    )
    assert block.my_domain_problem() is None and block.configuration_problems() == []
