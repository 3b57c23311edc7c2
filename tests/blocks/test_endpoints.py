"""Block endpoints cannot exfiltrate secrets (``blocks.auth.EndpointRule``).

The attack: an attacker who can edit a credentials block changes only an endpoint field (a Salesforce
``login_url``, a HubSpot ``token_url``, a Google ``token_uri``, …) to a host they listen on, and waits
for the next execution to send the client secret, refresh token, assertion or bearer token there.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from blocks.auth import StaticTokenAuth, UnconfiguredAuth
from blocks.google_calendar import GoogleCalendarCredentials
from blocks.hubspot import HubSpotCredentials
from blocks.salesforce import SalesforceCredentials
from connectors.base import ProviderRequest
from connectors.errors import NetworkError, NotConfigured
from connectors.http import ProviderClient
from tests.connectors.cases_google_calendar import private_key_pem

SECRET = "canary-endpoint-secret-5e1b"
MY_DOMAIN = "https://acme.my.salesforce.com"


class Listener:
    """A TCP listener on loopback that records whatever bytes reach it (and never answers)."""

    def __init__(self) -> None:
        self.server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(8)
        self.server.settimeout(0.2)
        self.received = bytearray()
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.getsockname()[1]}"

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self.server.accept()
            except OSError:
                continue
            self.connections += 1
            connection.settimeout(0.3)
            try:
                while chunk := connection.recv(65536):
                    self.received += chunk
            except OSError:
                pass
            connection.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.server.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    served = Listener()
    yield served
    served.close()


@pytest.fixture
def no_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    """A production worker: loopback endpoints are not enabled."""
    monkeypatch.delenv("FULFILL_ALLOW_LOOPBACK_PROVIDERS", raising=False)
    monkeypatch.delenv("FULFILL_PROVIDER_HOSTS", raising=False)


def salesforce(**fields: Any) -> SalesforceCredentials:
    values: dict[str, Any] = {"login_url": MY_DOMAIN, "client_id": "cid", "client_secret": SecretStr(SECRET)}
    return SalesforceCredentials(**(values | fields))


def send_write(block: Any, client: httpx.Client) -> None:
    line = ProviderClient(client, block, provider="Example")
    line.send(ProviderRequest("POST", "/services/data/v62.0/sobjects/Task", "create task", True, body={}))


def _recording(seen: list[httpx.Request]) -> Any:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={})

    return handler


# -- the attack ---------------------------------------------------------------------------------------
@pytest.mark.usefixtures("no_loopback")
def test_a_login_url_on_a_loopback_listener_receives_nothing(listener: Listener) -> None:
    block = salesforce(login_url=listener.url, instance_url=listener.url)
    with (
        block.get_client(timeout=httpx.Timeout(2.0)) as client,
        pytest.raises(NotConfigured, match="login_url") as raised,
    ):
        send_write(block, client)
    assert "FULFILL_ALLOW_LOOPBACK_PROVIDERS" in str(raised.value)
    assert SECRET not in str(raised.value)
    listener.close()
    assert listener.connections == 0 and bytes(listener.received) == b""


def test_with_loopback_enabled_the_same_block_reaches_the_listener(
    listener: Listener, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The control of the test above: the listener does receive the secret when loopback is enabled."""
    monkeypatch.setenv("FULFILL_ALLOW_LOOPBACK_PROVIDERS", "1")
    block = salesforce(login_url=listener.url, instance_url=listener.url)
    with block.get_client(timeout=httpx.Timeout(1.0)) as client, pytest.raises(NetworkError):
        send_write(block, client)
    listener.close()
    assert SECRET.encode() in bytes(listener.received)


@pytest.mark.usefixtures("no_loopback")
@pytest.mark.parametrize("login_url", ["https://evil.example", "https://salesforce.com.evil.example"])
def test_a_login_url_on_another_host_sends_nothing(login_url: str) -> None:
    seen: list[httpx.Request] = []
    block = salesforce(login_url=login_url)
    transport = httpx.MockTransport(_recording(seen))
    with block.get_client(transport=transport) as client, pytest.raises(NotConfigured, match="login_url"):
        send_write(block, client)
    assert seen == []


# -- every endpoint field of every block --------------------------------------------------------------
BLOCKS: list[tuple[type[Any], dict[str, Any], str]] = [
    (SalesforceCredentials, {"client_id": "c", "client_secret": SECRET, "login_url": MY_DOMAIN}, "login_url"),
    (
        SalesforceCredentials,
        {"client_id": "c", "client_secret": SECRET, "login_url": MY_DOMAIN},
        "instance_url",
    ),
    (HubSpotCredentials, {"private_app_token": SECRET}, "api_base_url"),
    (
        HubSpotCredentials,
        {"auth_mode": "oauth", "client_id": "c", "client_secret": SECRET, "refresh_token": SECRET},
        "token_url",
    ),
    (HubSpotCredentials, {"private_app_token": SECRET}, "app_url"),
    (
        GoogleCalendarCredentials,
        {
            "auth_mode": "oauth_refresh_token",
            "client_id": "c",
            "client_secret": SECRET,
            "refresh_token": SECRET,
        },
        "token_uri",
    ),
    (
        GoogleCalendarCredentials,
        {
            "auth_mode": "oauth_refresh_token",
            "client_id": "c",
            "client_secret": SECRET,
            "refresh_token": SECRET,
        },
        "api_base_url",
    ),
]
BAD_URLS = [
    ("https://evil.example", "not a"),
    ("https://googleapis.com.evil.example", "not a"),
    ("http://127.0.0.1:8771", "loopback"),
    ("http://localhost:8771", "loopback"),
    ("http://[::1]:8771", "loopback"),
    ("https://user:pw@api.hubapi.com", "user information"),
    ("evil.example", "absolute"),
]


@pytest.mark.usefixtures("no_loopback")
@pytest.mark.parametrize(("cls", "fields", "name"), BLOCKS)
@pytest.mark.parametrize(("url", "why"), BAD_URLS)
def test_every_endpoint_field_is_refused_off_the_provider(
    cls: type[Any], fields: dict[str, Any], name: str, url: str, why: str
) -> None:
    block = cls(**(fields | {name: url}))
    auth = block.auth()
    assert isinstance(auth, UnconfiguredAuth)
    problem = block.endpoint_problem()
    assert problem is not None and f" {name} " in problem and why in problem
    assert SECRET not in problem


@pytest.mark.usefixtures("no_loopback")
@pytest.mark.parametrize(
    ("cls", "fields", "name", "url"),
    [
        (SalesforceCredentials, {}, "login_url", "http://acme.my.salesforce.com"),
        (HubSpotCredentials, {}, "api_base_url", "http://api.hubapi.com"),
        (GoogleCalendarCredentials, {}, "token_uri", "http://oauth2.googleapis.com/token"),
    ],
)
def test_plain_http_is_refused_even_on_the_providers_domain(
    cls: type[Any], fields: dict[str, Any], name: str, url: str
) -> None:
    problem = cls(**(fields | {name: url})).endpoint_problem()
    assert problem is not None and name in problem and "https://" in problem


@pytest.mark.usefixtures("no_loopback")
@pytest.mark.parametrize(
    ("cls", "name", "url"),
    [
        # Apex REST of another org on the same shared domain would read a POSTed secret.
        (SalesforceCredentials, "login_url", "https://evil.my.salesforce.com/services/apexrest/x"),
        (SalesforceCredentials, "instance_url", "https://acme.my.salesforce.com/x?y=1"),
        (HubSpotCredentials, "api_base_url", "https://api.hubapi.com/somewhere"),
        (GoogleCalendarCredentials, "token_uri", "https://oauth2.googleapis.com/token?redirect=x"),
    ],
)
def test_a_base_url_is_an_origin_and_no_url_carries_a_query(cls: type[Any], name: str, url: str) -> None:
    problem = cls(**{name: url}).endpoint_problem()
    assert problem is not None and name in problem


@pytest.mark.usefixtures("no_loopback")
def test_the_defaults_and_provider_hosts_pass() -> None:
    assert SalesforceCredentials().endpoint_problem() is None
    assert salesforce(instance_url="https://acme--uat.sandbox.my.salesforce.com").endpoint_problem() is None
    assert HubSpotCredentials(app_url="https://app-eu1.hubspot.com").endpoint_problem() is None
    assert GoogleCalendarCredentials().endpoint_problem() is None
    assert (
        GoogleCalendarCredentials(token_uri="https://accounts.google.com/o/oauth2/token").endpoint_problem()
        is None
    )


def test_the_operator_allowlist_admits_a_proxy_over_https_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FULFILL_ALLOW_LOOPBACK_PROVIDERS", raising=False)
    monkeypatch.setenv("FULFILL_PROVIDER_HOSTS", "crm-proxy.acme.example")
    assert HubSpotCredentials(api_base_url="https://eu.crm-proxy.acme.example").endpoint_problem() is None
    problem = HubSpotCredentials(api_base_url="http://crm-proxy.acme.example").endpoint_problem()
    assert problem is not None and "https://" in problem


# -- at request time: before any credential is attached -------------------------------------------------
@pytest.mark.usefixtures("no_loopback")
def test_an_instance_url_from_the_token_answer_off_salesforce_gets_no_bearer_token() -> None:
    seen: list[httpx.Request] = []

    def provider(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path == "/services/oauth2/token":
            return httpx.Response(200, json={"access_token": SECRET, "instance_url": "https://evil.example"})
        return httpx.Response(201, json={"id": "00T", "success": True})

    block = salesforce()
    with block.get_client(transport=httpx.MockTransport(provider)) as client:
        with pytest.raises(NotConfigured, match="instance_url") as raised:
            send_write(block, client)
        assert SECRET not in str(raised.value)
    assert [r.url.host for r in seen] == ["acme.my.salesforce.com"]  # the token request only


@pytest.mark.usefixtures("no_loopback")
@pytest.mark.parametrize(
    "block",
    [
        salesforce(),
        HubSpotCredentials(private_app_token=SecretStr(SECRET)),
        GoogleCalendarCredentials(
            auth_mode="service_account",
            service_account_email="robot@acme.iam.gserviceaccount.com",
            private_key=SecretStr(private_key_pem()),
            subject="drafts@acme.example",
        ),
    ],
)
def test_a_request_aimed_elsewhere_is_refused_before_any_credential_is_attached(block: Any) -> None:
    """A client aimed elsewhere, or a URL taken from an answer: neither token nor grant is sent."""
    seen: list[httpx.Request] = []
    transport = httpx.MockTransport(_recording(seen))
    with httpx.Client(base_url="https://evil.example", transport=transport) as client:
        line = ProviderClient(client, block, provider="Example")
        with pytest.raises(NotConfigured, match="evil.example"):
            line.send(ProviderRequest("GET", "/x", "read", False))
    assert seen == []


def test_an_auth_built_by_hand_checks_nothing() -> None:
    """The rule is the block's: an auth made outside a block (tests, tools) carries none."""
    auth = StaticTokenAuth(SecretStr(SECRET))
    assert auth.endpoints is None
