"""The ``httpx.Auth`` of each grant (``blocks.auth``): token cache and expiry, one refresh on 401,
per-subject tokens, instance routing, and the one mapping of auth failures to connector errors."""

from __future__ import annotations

import pickle
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
from pydantic import SecretStr

from blocks.auth import (
    SUBJECT,
    AuthNotConfigured,
    ClientCredentialsAuth,
    JwtBearerAuth,
    RefreshTokenAuth,
    StaticTokenAuth,
    TokenRequestFailed,
    UnconfiguredAuth,
)
from blocks.google_calendar import GoogleCalendarCredentials
from blocks.hubspot import HubSpotCredentials
from blocks.salesforce import SESSION_LIFETIME_SECONDS, SalesforceCredentials
from connectors.base import ProviderRequest
from connectors.errors import (
    AuthenticationFailed,
    NetworkError,
    NotConfigured,
    OutcomeUnknown,
    ProviderUnavailable,
    RateLimitedError,
)
from connectors.http import send
from tests.connectors.cases_google_calendar import private_key_pem

TOKEN_URL = "https://login.example/token"
API = "https://api.example"
SECRET = "canary-auth-secret-91d2"


class Provider:
    """A token endpoint and an API, answering from scripts; records every request."""

    def __init__(self, api: Callable[[httpx.Request], httpx.Response] | None = None) -> None:
        self.requests: list[httpx.Request] = []
        self.authorizations: list[str] = []  # as sent: a retried request is the same object
        self.tokens: list[dict[str, Any]] = []
        self.issued = 0
        self.api = api or (lambda request: httpx.Response(200, json={"ok": True}))
        self.lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        with self.lock:
            self.requests.append(request)
            if str(request.url) != TOKEN_URL:
                self.authorizations.append(request.headers.get("Authorization", ""))
            if str(request.url) == TOKEN_URL:
                self.issued += 1
                body = self.tokens.pop(0) if self.tokens else {"access_token": f"tok-{self.issued}"}
                return httpx.Response(200, json=body)
        return self.api(request)

    def token_requests(self) -> list[httpx.Request]:
        return [r for r in self.requests if str(r.url) == TOKEN_URL]

    def bearers(self) -> list[str]:
        return list(self.authorizations)


def client_credentials(clock: Callable[[], float] = lambda: 1000.0, **options: Any) -> ClientCredentialsAuth:
    values: dict[str, Any] = {"provider": "Example", "default_lifetime": 900.0, "clock": clock}
    values.update(options)
    return ClientCredentialsAuth(TOKEN_URL, client_id="cid", client_secret=SecretStr(SECRET), **values)


def get(client: httpx.Client, auth: httpx.Auth, **extensions: Any) -> httpx.Response:
    return client.get(f"{API}/thing", auth=auth, extensions=extensions or None)


# -- the cache and its expiry rule -------------------------------------------------------------------
def test_a_token_is_kept_for_its_expires_in_less_a_minute() -> None:
    now = [1000.0]
    provider = Provider()
    provider.tokens = [{"access_token": "a", "expires_in": 600}, {"access_token": "b", "expires_in": 600}]
    auth = client_credentials(clock=lambda: now[0])
    with httpx.Client(transport=httpx.MockTransport(provider)) as client:
        get(client, auth)
        now[0] += 600 - 61
        get(client, auth)
        now[0] += 1  # inside the last minute
        get(client, auth)
    assert provider.bearers() == ["Bearer a", "Bearer a", "Bearer b"]
    assert parse_qs(provider.token_requests()[0].content.decode()) == {
        "grant_type": ["client_credentials"],
        "client_id": ["cid"],
        "client_secret": [SECRET],
    }


def test_salesforce_tokens_without_expires_in_live_the_shortest_session_timeout() -> None:
    now = [1000.0]
    block = SalesforceCredentials(
        login_url="https://acme.my.salesforce.com", client_id="c", client_secret=SECRET
    )
    provider = Provider()
    auth = block.auth(clock=lambda: now[0])
    assert (
        isinstance(auth, ClientCredentialsAuth)
        and auth.token_url == "https://acme.my.salesforce.com/services/oauth2/token"
    )
    auth.token_url, auth.endpoints = TOKEN_URL, None  # about the token's lifetime, not its endpoint
    with httpx.Client(transport=httpx.MockTransport(provider)) as client:
        get(client, auth)
        now[0] += SESSION_LIFETIME_SECONDS - 61
        get(client, auth)
        now[0] += 2
        get(client, auth)
    assert SESSION_LIFETIME_SECONDS == 900
    assert provider.bearers() == ["Bearer tok-1", "Bearer tok-1", "Bearer tok-2"]


def test_a_401_fetches_one_fresh_token_then_the_answer_stands() -> None:
    provider = Provider(api=lambda request: httpx.Response(401))
    with httpx.Client(transport=httpx.MockTransport(provider)) as client:
        response = get(client, client_credentials())
    assert response.status_code == 401
    assert provider.bearers() == ["Bearer tok-1", "Bearer tok-2"]


def test_a_static_token_is_never_refreshed() -> None:
    provider = Provider(api=lambda request: httpx.Response(401))
    with httpx.Client(transport=httpx.MockTransport(provider)) as client:
        assert get(client, StaticTokenAuth(SecretStr("pat-1"))).status_code == 401
    assert provider.bearers() == ["Bearer pat-1"] and not provider.token_requests()


def test_threads_share_one_cached_token() -> None:
    provider = Provider()
    auth = client_credentials()
    with httpx.Client(transport=httpx.MockTransport(provider)) as client:
        get(client, auth)
        threads = [threading.Thread(target=get, args=(client, auth)) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert provider.issued == 1 and provider.bearers() == ["Bearer tok-1"] * 9


# -- JWT bearer ------------------------------------------------------------------------------------
def test_jwt_bearer_keeps_one_token_per_subject_named_by_the_request() -> None:
    import jwt

    provider = Provider()
    auth = JwtBearerAuth(
        TOKEN_URL,
        private_key=SecretStr(private_key_pem()),
        claims={"iss": "robot@example", "aud": TOKEN_URL},
        subject="default@example",
        assertion_lifetime=3600,
        issued_at=True,
        provider="Example",
        default_lifetime=3600,
    )
    with httpx.Client(transport=httpx.MockTransport(provider)) as client:
        for subject in ("ann@example", "bob@example", "ann@example"):
            get(client, auth, **{SUBJECT: subject})
        get(client, auth)
    subjects = [
        jwt.decode(parse_qs(r.content.decode())["assertion"][0], options={"verify_signature": False})["sub"]
        for r in provider.token_requests()
    ]
    assert subjects == ["ann@example", "bob@example", "default@example"]
    assert provider.bearers() == ["Bearer tok-1", "Bearer tok-2", "Bearer tok-1", "Bearer tok-3"]


def test_an_unreadable_key_is_not_configured_and_not_echoed() -> None:
    auth = JwtBearerAuth(
        TOKEN_URL,
        private_key=SecretStr(f"-----BEGIN PRIVATE KEY-----\n{SECRET}\n-----END PRIVATE KEY-----\n"),
        claims={"iss": "x"},
        subject=None,
        assertion_lifetime=60,
        provider="Example",
        default_lifetime=60,
    )
    with pytest.raises(AuthNotConfigured) as raised:
        auth.assertion()
    assert SECRET not in str(raised.value)


# -- Salesforce: the token names the instance --------------------------------------------------------
def test_requests_go_to_the_instance_the_token_names() -> None:
    provider = Provider()
    provider.tokens = [{"access_token": "a", "instance_url": "https://acme-prod.example"}]
    auth = client_credentials(instance_base="https://acme.example")
    with httpx.Client(transport=httpx.MockTransport(provider)) as client:
        response = client.post("https://acme.example/services/data/x?q=1", json={"a": 1}, auth=auth)
        other = client.get("https://elsewhere.example/y", auth=auth)
    assert str(response.request.url) == "https://acme-prod.example/services/data/x?q=1"
    assert response.request.headers["Host"] == "acme-prod.example"
    assert response.request.content == b'{"a":1}'
    assert str(other.request.url) == "https://elsewhere.example/y"  # only the block's base is moved


# -- the blocks hand out configured clients ----------------------------------------------------------
@pytest.mark.parametrize(
    ("block", "auth_type", "base_url"),
    [
        (
            SalesforceCredentials(
                login_url="https://acme.my.salesforce.com", client_id="c", client_secret=SECRET
            ),
            ClientCredentialsAuth,
            "https://acme.my.salesforce.com",
        ),
        (
            SalesforceCredentials(auth_mode="jwt_bearer", client_id="c", username="u", private_key=SECRET),
            JwtBearerAuth,
            "https://login.salesforce.com",
        ),
        (SalesforceCredentials(client_id="c"), UnconfiguredAuth, "https://login.salesforce.com"),
        (HubSpotCredentials(private_app_token=SECRET), StaticTokenAuth, "https://api.hubapi.com"),
        (
            HubSpotCredentials(auth_mode="oauth", client_id="c", client_secret=SECRET, refresh_token=SECRET),
            RefreshTokenAuth,
            "https://api.hubapi.com",
        ),
        (
            GoogleCalendarCredentials(
                service_account_email="sa@example", private_key=SECRET, subject="u@example"
            ),
            JwtBearerAuth,
            "https://www.googleapis.com",
        ),
        (
            GoogleCalendarCredentials(
                auth_mode="oauth_refresh_token", client_id="c", client_secret=SECRET, refresh_token=SECRET
            ),
            RefreshTokenAuth,
            "https://www.googleapis.com",
        ),
    ],
)
def test_get_client_has_the_base_url_and_the_grants_auth(block: Any, auth_type: type, base_url: str) -> None:
    timeout = httpx.Timeout(7.0, connect=2.0)
    with block.get_client(timeout=timeout, transport=httpx.MockTransport(Provider())) as client:
        assert type(client.auth) is auth_type
        assert str(client.base_url).rstrip("/") == base_url
        assert client.timeout == timeout
        assert SECRET not in f"{client.auth!r} {vars(client.auth)!r}"


# -- one mapping of auth failures to the error tree ----------------------------------------------------
def _send_through(
    auth: httpx.Auth, handler: Callable[[httpx.Request], httpx.Response], *, write: bool
) -> None:
    request = ProviderRequest("POST" if write else "GET", f"{API}/thing", "write thing", write)
    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        send(client, request, auth=auth, provider="Example")


def _token_answer(response: httpx.Response) -> Callable[[httpx.Request], httpx.Response]:
    return lambda request: response if str(request.url) == TOKEN_URL else httpx.Response(200)


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (
            httpx.Response(400, json={"error": "invalid_client", "error_description": SECRET}),
            AuthenticationFailed,
        ),
        (httpx.Response(200, json={"token_type": "Bearer"}), AuthenticationFailed),
        (httpx.Response(503), ProviderUnavailable),
        (httpx.Response(200, text="<html>"), ProviderUnavailable),
        (httpx.Response(429, headers={"Retry-After": "12"}), RateLimitedError),
    ],
)
def test_token_endpoint_answers_are_classified(answer: httpx.Response, expected: type[Exception]) -> None:
    with pytest.raises(expected) as raised:
        _send_through(client_credentials(), _token_answer(answer), write=True)
    assert type(raised.value) is expected
    assert SECRET not in f"{raised.value} {raised.value.as_dict()}"  # type: ignore[attr-defined]
    if expected is RateLimitedError:
        assert raised.value.retry_after == 12.0  # type: ignore[attr-defined]
    if answer.status_code == 400:
        assert raised.value.provider_code == "invalid_client"  # type: ignore[attr-defined]


def test_a_lost_token_request_is_never_an_unknown_outcome() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("lost", request=request)

    with pytest.raises(NetworkError) as raised:
        _send_through(client_credentials(), handler, write=True)
    assert not isinstance(raised.value, OutcomeUnknown) and "token request" in str(raised.value)


def test_a_lost_write_is_an_unknown_outcome() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if str(request.url) == TOKEN_URL:
            return httpx.Response(200, json={"access_token": "a"})
        raise httpx.ReadTimeout("lost", request=request)

    with pytest.raises(OutcomeUnknown):
        _send_through(client_credentials(), handler, write=True)


def test_an_unconfigured_block_sends_nothing() -> None:
    sent: list[httpx.Request] = []
    with pytest.raises(NotConfigured, match="client_secret"):
        _send_through(SalesforceCredentials(client_id="c").auth(), sent.append, write=False)  # type: ignore[arg-type]
    assert sent == []


def test_auth_errors_survive_pickling() -> None:
    error = TokenRequestFailed("refused", status_code=429, error_code="x", retry_after="3", retryable=True)
    revived = pickle.loads(pickle.dumps(error))
    assert (
        revived.detail,
        revived.status_code,
        revived.error_code,
        revived.retry_after,
        revived.retryable,
    ) == (
        "refused",
        429,
        "x",
        "3",
        True,
    )
    assert pickle.loads(pickle.dumps(AuthNotConfigured("lacks x"))).detail == "lacks x"
