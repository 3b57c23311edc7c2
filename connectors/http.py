"""HTTP and OAuth helpers shared by the provider connectors (Salesforce, HubSpot, Google Calendar).

Only what is the same for every provider lives here: sending with a bearer token and mapping transport
failures, reading JSON bodies and ``Retry-After``, the default error class of an HTTP status, the OAuth
token request and the classes of its errors, and RS256 JWT assertions. How each provider's error bodies
are read and classified stays in its own connector module.
"""

from __future__ import annotations

import base64
import json
import math
import time
from collections.abc import Mapping
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any, NoReturn, Protocol

import httpx
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from pydantic import SecretStr

from connectors.errors import (
    AuthenticationFailed,
    Conflict,
    ConnectorError,
    Forbidden,
    NetworkError,
    NotConfigured,
    NotFound,
    OutcomeUnknown,
    PermanentError,
    ProviderUnavailable,
    RateLimitedError,
    ValidationRejected,
)

# The error class of a 3xx/4xx status when a provider's error code says nothing more specific.
STATUS_ERRORS: Mapping[int, type[ConnectorError]] = {
    300: Conflict,
    400: ValidationRejected,
    401: AuthenticationFailed,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
}


class TransportErrorMapper(Protocol):
    """A connector's mapping of an ``httpx`` failure to a :class:`ConnectorError` (see :func:`transport_error`)."""

    def __call__(self, exc: httpx.HTTPError, *, write: bool, what: str) -> ConnectorError: ...


# -- sending ------------------------------------------------------------------------------------
def bearer_request(
    client: httpx.Client,
    method: str,
    url: str,
    *,
    token: str,
    write: bool,
    what: str,
    network_error: TransportErrorMapper,
    params: Mapping[str, str] | None = None,
    body: Any = None,
) -> httpx.Response:
    """Send one JSON request with ``Authorization: Bearer``; a transport failure becomes a connector error.

    Args:
        client: The connector's HTTP client.
        method: The HTTP method.
        url: The absolute URL.
        token: The access token.
        write: Whether the request changes something at the provider (passed to ``network_error``).
        what: The request as named in error messages, e.g. ``"PATCH Task"``.
        network_error: The connector's mapping of transport failures.
        params: Query parameters.
        body: The JSON body, if any.

    Returns:
        The answer, whatever its status.

    Raises:
        ConnectorError: from ``network_error`` when no answer arrived.
    """
    try:
        return client.request(
            method,
            url,
            params=params,
            json=body,
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
        )
    except httpx.HTTPError as exc:
        raise network_error(exc, write=write, what=what) from None


def may_have_been_sent(exc: httpx.HTTPError) -> bool:
    """Whether a failed request may have reached the provider (it did not fail while connecting).

    Args:
        exc: What ``httpx`` raised.

    Returns:
        ``False`` for connection and pool failures, which happen before anything is sent.
    """
    return not isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)


def transport_error(
    exc: httpx.HTTPError, *, write: bool, what: str, provider: str, host: str | None = None
) -> ConnectorError:
    """The error for a request that got no answer: after a possibly sent write, the outcome is unknown.

    Args:
        exc: What ``httpx`` raised.
        write: Whether the request changes something at the provider.
        what: The request as named in the message, e.g. ``"token request"``.
        provider: The provider as named in the no-answer message, e.g. ``"Salesforce"``.
        host: The name in the could-not-reach message, when it differs from ``provider``.

    Returns:
        :class:`OutcomeUnknown` for a write that may have been sent, else :class:`NetworkError`.
    """
    name = type(exc).__name__
    if write and may_have_been_sent(exc):
        return OutcomeUnknown(f"{what}: no answer from {provider} ({name}); the write may have happened")
    return NetworkError(f"{what}: could not reach {host or provider} ({name})")


# -- reading answers ----------------------------------------------------------------------------
def json_or_none(response: httpx.Response) -> Any:
    """The decoded JSON body of an answer, or ``None`` when it is not JSON (for reading error bodies)."""
    try:
        return response.json()
    except ValueError:
        return None


def json_object(response: httpx.Response, *, provider: str) -> dict[str, Any]:
    """The JSON object of a successful answer.

    Args:
        response: The provider's answer.
        provider: The provider as named in the error message, e.g. ``"Salesforce"``.

    Returns:
        The body when it is a JSON object, else an empty dict (e.g. for a JSON array).

    Raises:
        ProviderUnavailable: the body is not JSON at all.
    """
    try:
        body = response.json()
    except ValueError:
        raise ProviderUnavailable(
            f"{provider} answered with a body that is not JSON", status_code=response.status_code
        ) from None
    return body if isinstance(body, dict) else {}


def retry_after(response: httpx.Response) -> float | None:
    """The seconds a ``Retry-After`` header asks us to wait.

    Args:
        response: Any provider answer.

    Returns:
        The delay in seconds (never negative) from either a number of seconds (RFC 9110
        ``delay-seconds``) or an HTTP date (measured against this machine's clock; a date without
        a zone is read as UTC), or ``None`` when the header is absent or unreadable (``inf``/``nan``
        included).
    """
    value = response.headers.get("Retry-After", "").strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, moment.timestamp() - time.time())


def error_class_for_status(
    status: int,
    *,
    overrides: Mapping[int, type[ConnectorError]] | None = None,
    default: type[ConnectorError] = PermanentError,
) -> type[ConnectorError]:
    """The error class of a non-2xx status, for when the provider's error code decides nothing.

    Args:
        status: The HTTP status, 300 or more.
        overrides: A provider's classes for particular 3xx/4xx statuses, over :data:`STATUS_ERRORS`.
        default: The class of any other 3xx/4xx status.

    Returns:
        :class:`ProviderUnavailable` for 5xx, else the class the tables give.
    """
    if status >= 500:
        return ProviderUnavailable
    if overrides and status in overrides:
        return overrides[status]
    return STATUS_ERRORS.get(status, default)


# -- OAuth token endpoint -----------------------------------------------------------------------
def oauth_error_code(response: httpx.Response, *, field: str = "error") -> str | None:
    """The short error code of an OAuth token-endpoint error body (e.g. ``invalid_grant``).

    Args:
        response: The token endpoint's answer.
        field: The JSON member holding the code: ``error`` per RFC 6749, ``status`` for HubSpot.

    Returns:
        At most 64 characters of the code, or ``None`` when the body is not a JSON object holding one.
    """
    body = json_or_none(response)
    code = body.get(field) if isinstance(body, dict) else None
    return code[:64] if isinstance(code, str) else None


def raise_token_endpoint_error(response: httpx.Response, *, what: str, code: str | None) -> NoReturn:
    """Raise the error class of a token endpoint's non-200 answer.

    Args:
        response: The token endpoint's answer.
        what: How the endpoint is named in the message, e.g. ``"token endpoint"``.
        code: The provider's error code read from the body, if any.

    Raises:
        RateLimitedError: on 429, with the ``Retry-After`` delay.
        ProviderUnavailable: on 5xx.
        AuthenticationFailed: on any other status: the credentials were refused.
    """
    status = response.status_code
    if status == 429:
        raise RateLimitedError(
            f"{what} throttled us", status_code=429, provider_code=code, retry_after=retry_after(response)
        )
    if status >= 500:
        raise ProviderUnavailable(f"{what} answered {status}", status_code=status, provider_code=code)
    raise AuthenticationFailed(
        f"{what} refused the credentials ({code or status})", status_code=status, provider_code=code
    )


def request_access_token(
    client: httpx.Client,
    url: str,
    form: Mapping[str, str],
    *,
    provider: str,
    network_error: TransportErrorMapper,
    endpoint: str = "token endpoint",
    error_field: str = "error",
) -> tuple[str, dict[str, Any]]:
    """POST a form-encoded OAuth grant to a token endpoint and return the access token it grants.

    Args:
        client: The connector's HTTP client.
        url: The token endpoint.
        form: The grant's form fields (``grant_type`` and its credentials).
        provider: The provider as named when the answer is not JSON, e.g. ``"Google"``.
        network_error: The connector's mapping of transport failures; called with ``write=False``.
        endpoint: How the endpoint is named in error messages, e.g. ``"HubSpot's token endpoint"``.
        error_field: The JSON member of an error answer holding its code (see :func:`oauth_error_code`).

    Returns:
        The non-empty access token and the whole JSON object of the 200 answer (for ``expires_in`` etc.).

    Raises:
        ConnectorError: from ``network_error`` when the endpoint cannot be reached; from
            :func:`raise_token_endpoint_error` when it answers other than 200;
            :class:`AuthenticationFailed` when a 200 answer holds no access token.
    """
    try:
        response = client.post(url, data=form, headers={"Accept": "application/json"})
    except httpx.HTTPError as exc:
        raise network_error(exc, write=False, what="token request") from None
    if response.status_code != 200:
        raise_token_endpoint_error(
            response, what=endpoint, code=oauth_error_code(response, field=error_field)
        )
    body = json_object(response, provider=provider)
    token = body.get("access_token")
    if not isinstance(token, str) or not token:
        raise AuthenticationFailed("the token endpoint answered without an access_token", status_code=200)
    return token, body


def refresh_token_grant(
    client_id: str | None, client_secret: SecretStr | None, refresh_token: SecretStr | None
) -> dict[str, str]:
    """The form of an OAuth 2.0 refresh-token grant (RFC 6749 §6) with the client credentials in the body.

    Args:
        client_id: The OAuth client id.
        client_secret: The OAuth client secret; set (the block's ``missing_fields()`` was checked).
        refresh_token: The long-lived refresh token; set likewise.

    Returns:
        The form fields, ready for :func:`request_access_token`.
    """
    assert client_secret is not None and refresh_token is not None
    return {
        "grant_type": "refresh_token",
        "client_id": str(client_id),
        "client_secret": client_secret.get_secret_value(),
        "refresh_token": refresh_token.get_secret_value(),
    }


def sign_rs256_jwt(
    private_key_pem: str,
    claims: Mapping[str, Any],
    *,
    headers: Mapping[str, str] | None = None,
    key_name: str = "JWT private key",
) -> str:
    """A compact JWT signed RS256 (RSASSA-PKCS1-v1_5 with SHA-256), as OAuth JWT-bearer grants expect.

    Args:
        private_key_pem: An unencrypted RSA private key in PEM form.
        claims: The JWT claims set.
        headers: Header members after ``alg`` (e.g. ``typ``, ``kid``), in the order given.
        key_name: How the key is named in error messages, e.g. ``"service account private key"``.

    Returns:
        ``header.claims.signature``, each part unpadded base64url.

    Raises:
        NotConfigured: the key is not a readable unencrypted PEM key, or not an RSA key.
    """
    try:
        key = serialization.load_pem_private_key(private_key_pem.encode(), password=None)
    except (ValueError, TypeError):
        raise NotConfigured(f"the {key_name} is not a readable unencrypted PEM key") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise NotConfigured(f"the {key_name} is not an RSA key")
    header = {"alg": "RS256", **(headers or {})}
    signing_input = f"{_b64url_json(header)}.{_b64url_json(claims)}".encode("ascii")
    signature = key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input.decode('ascii')}.{_b64url(signature)}"


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _b64url_json(value: Mapping[str, Any]) -> str:
    return _b64url(json.dumps(value, separators=(",", ":")).encode("utf-8"))
