"""The transport pieces shared by the provider connectors (Salesforce, HubSpot, Google Calendar).

Only what is the same for every provider lives here: sending a :class:`ProviderRequest` through the
client's auth (``blocks.auth``) with the ONE mapping of failures to the error tree — no answer
(:func:`transport_error`) and no token (:func:`auth_error`) — reading JSON bodies and ``Retry-After``,
and the default error class of an HTTP status. Authentication itself (grants, token cache, refresh on
401) is the credentials block's ``httpx.Auth``; how each provider's error bodies are read and
classified stays in its own connector module.

**The approval's expiry at send time** (contract §1: no external call may START at or after
``expires_at_epoch``, nor be outstanding past it). The task that runs a step sets a deadline for the
call (:func:`send_deadline`, a context variable: a monotonic instant derived from the database clock's
time left). :func:`send` then checks it immediately before EVERY request leaves — the token request
and, after any token fetch, the provider request itself — and bounds each request's connect, write,
read and pool timeouts by the time left. A request that cannot start in time raises
:class:`DeadlinePassed` (nothing was sent: the execution ends EXPIRED). A request cut by the
deadline while in flight is a timeout: a write that may have been sent becomes
:class:`OutcomeUnknown` (never a success: the flow's lookup settles it — after expiry only as an
undo), anything else :class:`DeadlinePassed`. ``httpx`` applies a timeout to each network operation,
so a provider that trickles its answer byte by byte could hold a read up to one more timeout; the
answer of such a write is still never taken for a success after the deadline.
"""

from __future__ import annotations

import math
import time
from collections.abc import Generator, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from blocks.auth import (
    SUBJECT,
    TOKEN_REQUEST,
    AuthError,
    AuthNotConfigured,
    ClientFactory,
    Clock,
    TokenRequestFailed,
)
from connectors.base import ProviderRequest
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


#: Slack for timer granularity when telling whether a timeout came from the deadline.
DEADLINE_SLACK_SECONDS = 0.05
#: The monotonic instant no provider request may start at or be outstanding past (see module doc).
SEND_DEADLINE: ContextVar[float | None] = ContextVar("fulfill_send_deadline", default=None)


class DeadlinePassed(Exception):
    """The approval expired before a provider request could be sent (or while a read was in flight).

    Nothing this request would write was sent. Not a :class:`ConnectorError`: it is not the provider's
    answer but the end of the approval, and the task turns it into an EXPIRED halt.

    Args:
        detail: Which request could not be sent, for operators.
    """

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail

    def __reduce__(self) -> tuple[Any, ...]:
        return (DeadlinePassed, (self.detail,))


@contextmanager
def send_deadline(seconds_left: float | None) -> Iterator[None]:
    """Within the block, no provider request starts after ``seconds_left`` from now, nor outlives it.

    Args:
        seconds_left: The approval's time left (database clock), or ``None`` for no deadline (undoing
            our own work after expiry).
    """
    token = SEND_DEADLINE.set(None if seconds_left is None else time.monotonic() + seconds_left)
    try:
        yield
    finally:
        SEND_DEADLINE.reset(token)


def _bounded_by(request: httpx.Request, deadline: float) -> None:
    """The last check before ``request`` leaves: refuse it after the deadline, else cap its timeouts."""
    left = deadline - time.monotonic()
    what = "token request" if request.extensions.get(TOKEN_REQUEST) else f"{request.method} request"
    if left <= 0:
        raise DeadlinePassed(f"the approval expired before the {what} could be sent")
    configured = request.extensions.get("timeout") or {}
    request.extensions["timeout"] = {
        name: left if configured.get(name) is None else min(float(configured[name]), left)
        for name in ("connect", "read", "write", "pool")
    }


class _DeadlineAuth(httpx.Auth):
    """``auth`` with :func:`_bounded_by` applied to every request its flow sends (token fetches included)."""

    def __init__(self, auth: httpx.Auth, deadline: float) -> None:
        self._auth = auth
        self._deadline = deadline
        self.requires_request_body = auth.requires_request_body
        self.requires_response_body = auth.requires_response_body

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        flow = self._auth.auth_flow(request)
        outgoing = next(flow)
        while True:
            _bounded_by(outgoing, self._deadline)
            response = yield outgoing
            try:
                outgoing = flow.send(response)
            except StopIteration:
                return


# -- sending ------------------------------------------------------------------------------------
def build_request(client: httpx.Client, request: ProviderRequest) -> httpx.Request:
    """The ``httpx`` request for ``request``, as ``client`` would send it (before its auth signs it).

    Args:
        client: The connector's HTTP client (its default headers and timeouts apply).
        request: What the connector built.

    Returns:
        The request; :func:`send` sends exactly this, the dry run shows it.
    """
    return client.build_request(
        request.method,
        request.url,
        params=request.params or None,
        json=request.body,
        headers={"Accept": "application/json"},
        extensions={SUBJECT: request.subject} if request.subject else None,
    )


def send(
    client: httpx.Client, request: ProviderRequest, *, auth: httpx.Auth, provider: str
) -> httpx.Response:
    """Send one request through ``auth``; failing to get an answer or a token is a connector error.

    Args:
        client: The connector's HTTP client.
        request: What the connector built.
        auth: The credentials block's auth (it fetches, caches and refreshes the token).
        provider: The provider as named in messages, e.g. ``"Salesforce"``.

    Returns:
        The answer, whatever its status (a 401 after one refresh included).

    Raises:
        ConnectorError: :func:`auth_error` when no token could be had, :func:`transport_error` when no
            answer arrived; :class:`OutcomeUnknown` for a write cut in flight by the deadline.
        DeadlinePassed: the deadline (:func:`send_deadline`) came before the request could be sent,
            or cut a request that writes nothing.
    """
    deadline = SEND_DEADLINE.get()
    try:
        return client.send(
            build_request(client, request), auth=auth if deadline is None else _DeadlineAuth(auth, deadline)
        )
    except AuthError as exc:
        raise auth_error(exc) from None
    except httpx.HTTPError as exc:
        if (
            deadline is not None
            and isinstance(exc, httpx.TimeoutException)
            and time.monotonic() >= deadline - DEADLINE_SLACK_SECONDS
        ):
            raise _cut(exc, request, provider) from None
        if _is_token_request(exc):
            raise transport_error(exc, write=False, what="token request", provider=provider) from None
        raise transport_error(exc, write=request.write, what=request.purpose, provider=provider) from None


class ProviderClient:
    """A connector's line to its provider: the client, the auth requests go through, the provider's name.

    Args:
        client: The block's ``get_client()``, or any injected client (tests): one without an auth of
            its own sends through the block's ``auth()``.
        credentials: The provider's credentials block.
        provider: The provider as named in messages, e.g. ``"Salesforce"``.
        clock: Seconds since the epoch, for the block's auth when the client has none (tests).
    """

    def __init__(
        self, client: httpx.Client, credentials: ClientFactory, *, provider: str, clock: Clock = time.time
    ) -> None:
        self.client = client
        self.auth = client.auth or credentials.auth(clock=clock)
        self.provider = provider

    def send(self, request: ProviderRequest) -> httpx.Response:
        """:func:`send` ``request`` through this line's client and auth."""
        return send(self.client, request, auth=self.auth, provider=self.provider)


def _cut(exc: httpx.TimeoutException, request: ProviderRequest, provider: str) -> Exception:
    """What a request cut at the deadline becomes: a write that may have been sent is unknown, not done."""
    if request.write and not _is_token_request(exc) and may_have_been_sent(exc):
        return OutcomeUnknown(
            f"{request.purpose}: {provider} had not answered when the approval expired; the write may have happened"
        )
    what = "token request" if _is_token_request(exc) else request.purpose
    return DeadlinePassed(f"{what}: the approval expired before {provider} answered; nothing was written")


def _is_token_request(exc: httpx.HTTPError) -> bool:
    try:
        return bool(exc.request.extensions.get(TOKEN_REQUEST))
    except RuntimeError:  # no request attached
        return False


def auth_error(exc: AuthError) -> ConnectorError:
    """The connector error of an authentication failure (``blocks.auth``): the one mapping of them.

    Args:
        exc: What the block's auth raised.

    Returns:
        :class:`NotConfigured` for a block that lacks a field or holds an unreadable key;
        :class:`RateLimitedError` for a throttled token request (with its ``Retry-After``);
        :class:`ProviderUnavailable` for an outage or an unreadable answer;
        :class:`AuthenticationFailed` when the credentials were refused.
    """
    if isinstance(exc, AuthNotConfigured) or not isinstance(exc, TokenRequestFailed):
        return NotConfigured(exc.detail)
    status, code = exc.status_code, exc.error_code
    if status == 429:
        wait = parse_retry_after(exc.retry_after)
        return RateLimitedError(exc.detail, status_code=status, provider_code=code, retry_after=wait)
    if exc.retryable:
        return ProviderUnavailable(exc.detail, status_code=status, provider_code=code)
    return AuthenticationFailed(exc.detail, status_code=status, provider_code=code)


def may_have_been_sent(exc: httpx.HTTPError) -> bool:
    """Whether a failed request may have reached the provider (it did not fail while connecting).

    Args:
        exc: What ``httpx`` raised.

    Returns:
        ``False`` for connection and pool failures, which happen before anything is sent.
    """
    return not isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)


def transport_error(exc: httpx.HTTPError, *, write: bool, what: str, provider: str) -> ConnectorError:
    """The error for a request that got no answer: after a possibly sent write, the outcome is unknown.

    Args:
        exc: What ``httpx`` raised.
        write: Whether the request changes something at the provider.
        what: The request as named in the message, e.g. ``"token request"``.
        provider: The provider as named in the message, e.g. ``"Salesforce"``.

    Returns:
        :class:`OutcomeUnknown` for a write that may have been sent, else :class:`NetworkError`.
    """
    name = type(exc).__name__
    if write and may_have_been_sent(exc):
        return OutcomeUnknown(f"{what}: no answer from {provider} ({name}); the write may have happened")
    return NetworkError(f"{what}: could not reach {provider} ({name})")


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
    return parse_retry_after(response.headers.get("Retry-After"))


def parse_retry_after(header: str | None) -> float | None:
    """The seconds of a ``Retry-After`` value (see :func:`retry_after`), or ``None`` when unreadable."""
    value = (header or "").strip()
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
