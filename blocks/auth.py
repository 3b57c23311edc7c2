"""How the credentials blocks authenticate requests: one ``httpx.Auth`` per OAuth 2.0 grant type.

A block's ``get_client()`` hands out an ``httpx.Client`` whose ``auth`` is one of these; a connector
then only builds requests and reads answers::

    httpx.Auth
    ├── StaticTokenAuth           a token that does not expire (HubSpot private app)
    ├── OAuthTokenAuth            fetch a token, cache it, refresh it once on a 401
    │   ├── ClientCredentialsAuth     RFC 6749 §4.4 (Salesforce client credentials)
    │   ├── RefreshTokenAuth          RFC 6749 §6   (HubSpot OAuth, Google OAuth)
    │   └── JwtBearerAuth             RFC 7523, RS256 assertion signed with PyJWT
    │                                 (Salesforce JWT bearer, Google service account per subject)
    └── UnconfiguredAuth          the block lacks a field: every request is refused, nothing is sent

Token requests go through the same client, transport and timeouts as the request that needed the
token (the auth flow yields them, as ``httpx`` intends), so an injected ``MockTransport`` sees them too.

**Token cache.** One token per cache key (the JWT subject, else one for the whole auth), guarded by a
lock so connectors may be shared between threads; two threads that both find the cache empty may
both fetch a token (both are valid). A token is used until :data:`EXPIRY_MARGIN_SECONDS` before it
expires: after ``expires_in`` from the token answer, or after the grant's ``default_lifetime`` when the
provider gives none (Salesforce never does: see ``blocks.salesforce``). A 401 drops the token that
was refused, fetches one fresh token and sends the request again, once; a second 401 is returned to
the caller, whose error mapping makes it ``AuthenticationFailed``.

**Errors.** Blocks know nothing of the connectors' error tree, so failures are raised as
:class:`AuthError` (:class:`AuthNotConfigured`, :class:`TokenRequestFailed`) and mapped once, by
``connectors.http``. Their messages never hold a secret nor a provider's raw message: only the
provider's short error code. A transport failure of a token request is ``httpx``'s own exception;
the token request carries the :data:`TOKEN_REQUEST` extension so the mapping can tell it apart.

**Endpoints** (:class:`EndpointRule`). A block's credentials go only to its provider: every field of
a block whose name ends in ``_url`` or ``_uri`` must be an ``https://`` URL on one of the provider's
domains (the block's ``provider_domains``, each allowing itself and its subdomains) or on one of the
operator's ``FULFILL_PROVIDER_HOSTS``; plain ``http://`` — and any loopback host — only with
``FULFILL_ALLOW_LOOPBACK_PROVIDERS`` (the local emulators). A token endpoint (``token_url``,
``token_uri``) may carry a path; every other URL field is an origin (no path, query, fragment or user
information), so no field can steer a request to a path chosen on a shared provider domain. A block
that breaks the rule gets an :class:`UnconfiguredAuth` naming the field: nothing is sent. The rule is
checked again by the auth itself on every request before a credential is attached to it — the client
secret, assertion or refresh token of a token request, the bearer token of an API request — and on the
``instance_url`` of a Salesforce token answer before the bearer token is sent there. So a URL taken
from a provider's answer, or a client aimed elsewhere, cannot carry a credential off either.

**Subjects.** :class:`JwtBearerAuth` acts as the user a request names in its :data:`SUBJECT`
extension (``client.request(..., extensions={SUBJECT: "jordan@acme.example"})``), falling back to the
subject it was built with. Google's connector names the calendar's owner per call, so one client
serves every impersonated user, each with its own cached token.
"""

from __future__ import annotations

import functools
import ipaddress
import threading
import time
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import httpx
import jwt
from pydantic import SecretStr

from fulfill.settings import load_settings

#: Request extension naming the user a JWT-bearer token is requested for (domain-wide delegation).
SUBJECT = "fulfill_subject"
#: Request extension marking a token request (so a transport failure is not taken for the API call's).
TOKEN_REQUEST = "fulfill_token_request"
JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
#: A cached token is not used in the last minute of its life.
EXPIRY_MARGIN_SECONDS = 60.0
#: The client timeouts when the caller names none.
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=5.0)
_CODE_LIMIT = 64
#: Fields that are a token endpoint: a path is part of them. Every other URL field is an origin.
TOKEN_ENDPOINT_FIELDS = frozenset({"token_url", "token_uri"})
_HOST_LIMIT = 80

Clock = Callable[[], float]


# -- errors ---------------------------------------------------------------------------------------
class AuthError(Exception):
    """Authentication could not be arranged; ``detail`` is secret-free.

    Args:
        detail: What went wrong, for operators (never a secret or a provider's raw message).
    """

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.detail,))


class AuthNotConfigured(AuthError):
    """The block lacks a field its grant needs, or its private key is unreadable; nothing was sent."""


class TokenRequestFailed(AuthError):
    """The token endpoint answered, but with no usable token.

    Args:
        detail: Secret-free description.
        status_code: The token endpoint's HTTP status.
        error_code: The provider's short error code (``invalid_grant``, ``BAD_REFRESH_TOKEN``), if any.
        retry_after: The raw ``Retry-After`` header, if any.
        retryable: Whether asking again later may succeed (429, 5xx, a body that is not JSON).
    """

    def __init__(
        self,
        detail: str,
        *,
        status_code: int,
        error_code: str | None = None,
        retry_after: str | None = None,
        retryable: bool = False,
    ) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.error_code = error_code
        self.retry_after = retry_after
        self.retryable = retryable

    def __reduce__(self) -> tuple[Any, ...]:
        fields = (self.detail, self.status_code, self.error_code, self.retry_after, self.retryable)
        return (_rebuild_token_error, fields)


def _rebuild_token_error(
    detail: str, status_code: int, error_code: str | None, retry_after: str | None, retryable: bool
) -> TokenRequestFailed:
    return TokenRequestFailed(
        detail, status_code=status_code, error_code=error_code, retry_after=retry_after, retryable=retryable
    )


# -- where credentials may go ----------------------------------------------------------------------
def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class EndpointRule:
    """Which URLs may receive a provider's credentials (module doc, **Endpoints**).

    Args:
        provider: The provider as named in messages, e.g. ``"Salesforce"``.
        domains: The provider's own domains; each allows itself and its subdomains.
        extra_hosts: The operator's ``FULFILL_PROVIDER_HOSTS`` (same matching).
        allow_loopback: ``FULFILL_ALLOW_LOOPBACK_PROVIDERS``: loopback hosts, over http too.
    """

    provider: str
    domains: tuple[str, ...]
    extra_hosts: tuple[str, ...] = ()
    allow_loopback: bool = False

    @classmethod
    def from_settings(cls, provider: str, domains: tuple[str, ...]) -> EndpointRule:
        """The rule for ``provider`` with the operator's settings of this process."""
        settings = load_settings()
        return cls(provider, domains, settings.provider_hosts, settings.allow_loopback_providers)

    def host_problem(self, url: httpx.URL) -> str | None:
        """Why a request to ``url`` may not carry this provider's credentials, or ``None``."""
        host = url.host.rstrip(".")
        if not host:
            return "has no host"
        if url.userinfo:
            return "must not carry user information (user:password@)"
        if _is_loopback(host):
            if self.allow_loopback and url.scheme in ("http", "https"):
                return None
            return (
                "points at a loopback host, allowed only with FULFILL_ALLOW_LOOPBACK_PROVIDERS=1 (emulators)"
            )
        if url.scheme != "https":
            return "must be an https:// URL"
        if any(host == d or host.endswith(f".{d}") for d in (*self.domains, *self.extra_hosts)):
            return None
        return (
            f"points at {host[:_HOST_LIMIT]!r}, which is not a {self.provider} domain "
            f"({', '.join(self.domains)}) nor in FULFILL_PROVIDER_HOSTS"
        )

    def url_problem(self, value: str, *, origin: bool) -> str | None:
        """Why ``value`` may not be a configured endpoint (``origin``: no path allowed), or ``None``."""
        try:
            url = httpx.URL(value.strip())
        except (httpx.InvalidURL, TypeError):
            return "is not a URL"
        if not url.is_absolute_url:
            return "must be an absolute https:// URL"
        problem = self.host_problem(url)
        if problem:
            return problem
        if url.query or url.fragment:
            return "must not carry a query or fragment"
        if origin and url.path not in ("", "/"):
            return "must be an origin such as https://host, without a path"
        return None

    def refuse(self, request: httpx.Request, what: str) -> None:
        """Raise unless ``request`` may carry the credentials (``what`` names them in the message).

        Raises:
            AuthNotConfigured: the request's URL breaks the rule; nothing was sent.
        """
        problem = self.host_problem(request.url)
        if problem:
            raise AuthNotConfigured(
                f"refused to send the {what} of {self.provider}: the request URL {problem}"
            )


def endpoint_fields(block: object) -> list[str]:
    """The names of ``block``'s URL fields (``*_url``, ``*_uri``), in declaration order."""
    names = getattr(type(block), "model_fields", {})
    return [name for name in names if name.endswith(("_url", "_uri"))]


# -- the client a block hands out -----------------------------------------------------------------
class ClientFactory:
    """What every credentials block shares: ``get_client()`` from its base URL and its grant's auth.

    A block implements :meth:`auth` and :meth:`client_base_url` (the prefect-aws ``get_client()`` pattern)
    and names its provider's domains in ``provider_domains``. A subclass's ``auth()`` is wrapped when the
    class is made (``__init_subclass__``): the endpoint rule (module doc) is checked before the grant's
    auth is built, and that auth keeps the rule to check every request. A block cannot forget it.
    """

    #: The provider's own domains (each allows itself and its subdomains); a block sets them.
    provider_domains: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        grant = cls.__dict__.get("auth")
        if grant is not None and not getattr(grant, "_endpoint_checked", False):
            cls.auth = _checking_endpoints(grant)  # type: ignore[method-assign]

    def auth(self, *, clock: Clock = time.time) -> BearerAuth:
        """The ``httpx.Auth`` of the block's configured grant."""
        raise NotImplementedError

    def provider_name(self) -> str:
        """The provider as named in messages: the block type's name without ``Fulfill``/``Credentials``."""
        name = str(getattr(type(self), "_block_type_name", None) or type(self).__name__)
        return name.removeprefix("Fulfill ").removesuffix(" Credentials").removesuffix("Credentials")

    def endpoint_rule(self) -> EndpointRule:
        """The endpoint rule of this block's provider, with the operator's settings."""
        return EndpointRule.from_settings(self.provider_name(), self.provider_domains)

    def endpoint_problem(self) -> str | None:
        """The first URL field that breaks the endpoint rule, as a message naming it; ``None`` when all pass."""
        rule = self.endpoint_rule()
        for name in endpoint_fields(self):
            value = getattr(self, name, None)
            if value is None:
                continue
            problem = rule.url_problem(str(value), origin=name not in TOKEN_ENDPOINT_FIELDS)
            if problem:
                return f"{rule.provider} credentials: {name} {problem}"
        return None

    def client_base_url(self) -> str:
        """The provider's API base URL."""
        raise NotImplementedError

    def get_client(
        self, *, timeout: httpx.Timeout | None = None, transport: httpx.BaseTransport | None = None
    ) -> httpx.Client:
        """A new client with the provider's base URL and the block's auth; the caller closes it.

        Args:
            timeout: Client timeouts (default :data:`DEFAULT_TIMEOUT`).
            transport: A transport to use instead of the network (tests, the dry run).
        """
        return httpx.Client(
            base_url=self.client_base_url(),
            auth=self.auth(),
            timeout=timeout or DEFAULT_TIMEOUT,
            transport=transport,
        )


def _checking_endpoints(grant: Callable[..., BearerAuth]) -> Callable[..., BearerAuth]:
    """``grant`` (a block's ``auth``) behind the endpoint rule: refused when a URL field breaks it."""

    @functools.wraps(grant)
    def auth(self: ClientFactory, *, clock: Clock = time.time) -> BearerAuth:
        problem = self.endpoint_problem()
        if problem:
            return UnconfiguredAuth(problem)
        built = grant(self, clock=clock)
        built.endpoints = self.endpoint_rule()
        return built

    auth._endpoint_checked = True  # type: ignore[attr-defined]
    return auth


# -- bearer auths -----------------------------------------------------------------------------------
class BearerAuth(httpx.Auth):
    """Base of every auth here: requests carry ``Authorization: Bearer <token>``.

    ``endpoints``: the rule every request is checked against before a credential is attached (set by
    :class:`ClientFactory`; ``None`` for an auth built by hand, e.g. in tests, checks nothing).
    """

    endpoints: EndpointRule | None = None

    def apply(self, request: httpx.Request, access_token: str) -> None:
        """Set the request's ``Authorization`` header (the dry run calls it with a mask)."""
        request.headers["Authorization"] = f"Bearer {access_token}"

    def check_endpoint(self, request: httpx.Request, what: str) -> None:
        """Refuse (:class:`AuthNotConfigured`) a request that may not carry this block's ``what``."""
        if self.endpoints is not None:
            self.endpoints.refuse(request, what)

    def token_request(
        self, subject: str | None = None, *, cause: httpx.Request | None = None
    ) -> httpx.Request | None:
        """The request that fetches a token for ``subject``, or ``None`` when no token is fetched.

        Args:
            subject: The user the token is for (:data:`SUBJECT`), if the grant cares.
            cause: The request that needs the token: its timeouts and ``User-Agent`` carry over.

        Raises:
            AuthNotConfigured: the block cannot make one.
        """
        return None


class StaticTokenAuth(BearerAuth):
    """A long-lived token sent as it is; a 401 is final (there is nothing to refresh).

    Args:
        token: The access token.
    """

    def __init__(self, token: SecretStr) -> None:
        self._token = token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        self.check_endpoint(request, "access token")
        self.apply(request, self._token.get_secret_value())
        yield request


class UnconfiguredAuth(BearerAuth):
    """Refuses every request: the block lacks what its grant needs. Nothing reaches the network.

    Args:
        detail: Which fields are missing (names, never values).
    """

    def __init__(self, detail: str) -> None:
        self._detail = detail

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        raise AuthNotConfigured(self._detail)

    def token_request(
        self, subject: str | None = None, *, cause: httpx.Request | None = None
    ) -> httpx.Request | None:
        raise AuthNotConfigured(self._detail)


def unconfigured(provider: str, auth_mode: str, missing: list[str]) -> UnconfiguredAuth | None:
    """An :class:`UnconfiguredAuth` naming ``missing`` fields, or ``None`` when nothing is missing."""
    if not missing:
        return None
    return UnconfiguredAuth(f"{provider} credentials lack {', '.join(missing)} for {auth_mode}")


@dataclass(frozen=True)
class AccessToken:
    """A token the endpoint granted, and until when it may be used."""

    value: str = field(repr=False)
    expires_at: float
    instance_url: str | None = None


class OAuthTokenAuth(BearerAuth):
    """Fetches a token from an OAuth 2.0 token endpoint, caches it, refreshes it once on a 401.

    Subclasses give the grant's form (:meth:`grant`).

    Args:
        token_url: The token endpoint.
        provider: The provider as named in error messages, e.g. ``"Salesforce"``.
        default_lifetime: Seconds a token lives when the answer carries no ``expires_in``.
        error_field: The JSON member of an error answer holding its code: ``error`` per RFC 6749,
            ``status`` for HubSpot.
        instance_base: When set, a token answer's ``instance_url`` (Salesforce) replaces this origin in
            the requests the token authorises: the token is valid on that instance only.
        clock: Seconds since the epoch (injectable for expiry tests).
    """

    requires_response_body = True

    def __init__(
        self,
        token_url: str,
        *,
        provider: str,
        default_lifetime: float,
        error_field: str = "error",
        instance_base: str | None = None,
        clock: Clock = time.time,
    ) -> None:
        self.token_url = token_url
        self._provider = provider
        self._default_lifetime = default_lifetime
        self._error_field = error_field
        self._instance_base = httpx.URL(instance_base) if instance_base else None
        self._clock = clock
        self._lock = threading.Lock()
        self._tokens: dict[str, AccessToken] = {}

    # -- what a grant defines ----------------------------------------------------------------
    def grant(self, subject: str | None) -> dict[str, str]:
        """The form fields of the grant (``grant_type`` and its credentials)."""
        raise NotImplementedError

    def cache_key(self, subject: str | None) -> str:
        """Which cached token serves ``subject``: one token for the whole auth unless overridden."""
        return ""

    # -- the flow ----------------------------------------------------------------------------
    def token_request(
        self, subject: str | None = None, *, cause: httpx.Request | None = None
    ) -> httpx.Request:
        """The form-encoded POST of the grant, as the flow sends it (the dry run shows it, masked)."""
        extensions: dict[str, Any] = {TOKEN_REQUEST: True}
        headers = {"Accept": "application/json"}
        if cause is not None:
            # The same timeouts as the request that needs the token, and the client's User-Agent.
            if "timeout" in cause.extensions:
                extensions["timeout"] = cause.extensions["timeout"]
            if "User-Agent" in cause.headers:
                headers["User-Agent"] = cause.headers["User-Agent"]
        return httpx.Request(
            "POST", self.token_url, data=self.grant(subject), headers=headers, extensions=extensions
        )

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        self.check_endpoint(request, "access token")  # before a token is fetched for it
        subject = request.extensions.get(SUBJECT)
        key = self.cache_key(subject)
        token = self._cached(key)
        if token is None:
            token = yield from self._fetch(subject, key, request)
        response = yield self._authorised(request, token)
        if response.status_code != 401:
            return
        self._forget(key, token)
        token = yield from self._fetch(subject, key, request)
        yield self._authorised(request, token)

    def _cached(self, key: str) -> AccessToken | None:
        with self._lock:
            token = self._tokens.get(key)
        if token is None or token.expires_at - EXPIRY_MARGIN_SECONDS <= self._clock():
            return None
        return token

    def _forget(self, key: str, token: AccessToken) -> None:
        with self._lock:
            if self._tokens.get(key) is token:  # another thread may have stored a newer one
                del self._tokens[key]

    def _fetch(
        self, subject: str | None, key: str, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, AccessToken]:
        token_request = self.token_request(subject, cause=request)
        self.check_endpoint(token_request, "credentials")
        response = yield token_request
        token = self._read_token(response)
        with self._lock:
            self._tokens[key] = token
        return token

    def _read_token(self, response: httpx.Response) -> AccessToken:
        endpoint = f"{self._provider}'s token endpoint"
        status = response.status_code
        if status != 200:
            code = self._error_code(response)
            if status == 429:
                detail = f"{endpoint} throttled us"
            elif status >= 500:
                detail = f"{endpoint} answered {status}"
            else:
                detail = f"{endpoint} refused the credentials ({code or status})"
            raise TokenRequestFailed(
                detail,
                status_code=status,
                error_code=code,
                retry_after=response.headers.get("Retry-After"),
                retryable=status == 429 or status >= 500,
            )
        try:
            body = response.json()
        except ValueError:
            raise TokenRequestFailed(
                f"{endpoint} answered with a body that is not JSON", status_code=status, retryable=True
            ) from None
        body = body if isinstance(body, dict) else {}
        value = body.get("access_token")
        if not isinstance(value, str) or not value:
            raise TokenRequestFailed(f"{endpoint} answered without an access_token", status_code=status)
        expires_in = body.get("expires_in")
        lifetime = (
            float(expires_in)
            if isinstance(expires_in, int | float) and not isinstance(expires_in, bool) and expires_in > 0
            else self._default_lifetime
        )
        instance = body.get("instance_url")
        instance = instance if isinstance(instance, str) and instance else None
        if instance is not None and self.endpoints is not None:
            problem = self.endpoints.url_problem(instance, origin=True)
            if problem:  # the token would follow it: refused before it is cached or sent
                raise AuthNotConfigured(f"{endpoint} answered an instance_url that {problem}")
        return AccessToken(value, self._clock() + lifetime, instance)

    def _error_code(self, response: httpx.Response) -> str | None:
        try:
            body = response.json()
        except ValueError:
            return None
        code = body.get(self._error_field) if isinstance(body, dict) else None
        return code[:_CODE_LIMIT] if isinstance(code, str) else None

    def _authorised(self, request: httpx.Request, token: AccessToken) -> httpx.Request:
        request = self._on_instance(request, token.instance_url)
        self.check_endpoint(request, "access token")
        self.apply(request, token.value)
        return request

    def _on_instance(self, request: httpx.Request, instance_url: str | None) -> httpx.Request:
        """``request`` sent to the token's instance when it was aimed at the configured base."""
        base = self._instance_base
        if base is None or instance_url is None:
            return request
        target, url = httpx.URL(instance_url), request.url
        if (url.scheme, url.host, url.port) != (base.scheme, base.host, base.port):
            return request
        if (target.scheme, target.host, target.port) == (base.scheme, base.host, base.port):
            return request
        headers = httpx.Headers(request.headers)
        del headers["Host"]
        return httpx.Request(
            request.method,
            url.copy_with(scheme=target.scheme, host=target.host, port=target.port),
            headers=headers,
            content=request.content,
            extensions=request.extensions,
        )


class ClientCredentialsAuth(OAuthTokenAuth):
    """The client-credentials grant (RFC 6749 §4.4), credentials in the form body.

    Args:
        token_url: The token endpoint.
        client_id: The OAuth client id.
        client_secret: The OAuth client secret.
        **options: See :class:`OAuthTokenAuth`.
    """

    grant_type = "client_credentials"

    def __init__(self, token_url: str, *, client_id: str, client_secret: SecretStr, **options: Any) -> None:
        super().__init__(token_url, **options)
        self._client_id = client_id
        self._client_secret = client_secret

    def grant(self, subject: str | None) -> dict[str, str]:
        return {
            "grant_type": self.grant_type,
            "client_id": self._client_id,
            "client_secret": self._client_secret.get_secret_value(),
        }


class RefreshTokenAuth(ClientCredentialsAuth):
    """The refresh-token grant (RFC 6749 §6): the client's credentials and the refresh token in the form body.

    Args:
        token_url: The token endpoint.
        client_id: The OAuth client id.
        client_secret: The OAuth client secret.
        refresh_token: The long-lived refresh token.
        **options: See :class:`OAuthTokenAuth`.
    """

    grant_type = "refresh_token"

    def __init__(self, token_url: str, *, refresh_token: SecretStr, **options: Any) -> None:
        super().__init__(token_url, **options)
        self._refresh_token = refresh_token

    @classmethod
    def of_client(cls, token_url: str, client: OAuthClient, **options: Any) -> RefreshTokenAuth:
        """The grant of a block holding an OAuth client and its refresh token (all set: ``missing_fields()``)."""
        assert client.client_id and client.client_secret is not None and client.refresh_token is not None
        return cls(
            token_url,
            client_id=client.client_id,
            client_secret=client.client_secret,
            refresh_token=client.refresh_token,
            **options,
        )

    def grant(self, subject: str | None) -> dict[str, str]:
        return super().grant(subject) | {"refresh_token": self._refresh_token.get_secret_value()}


class OAuthClient(Protocol):
    """A block holding an OAuth client and its refresh token (HubSpot ``oauth``, Google ``oauth_refresh_token``)."""

    client_id: str | None
    client_secret: SecretStr | None
    refresh_token: SecretStr | None


class JwtBearerAuth(OAuthTokenAuth):
    """The JWT-bearer grant (RFC 7523): an assertion signed RS256 (PyJWT) with the block's private key.

    Args:
        token_url: The token endpoint.
        private_key: An unencrypted RSA private key in PEM form.
        claims: The fixed claims, e.g. ``iss``, ``aud``, ``scope``.
        subject: The ``sub`` claim when a request names none in its :data:`SUBJECT` extension.
        assertion_lifetime: Seconds from now to the assertion's ``exp``.
        issued_at: Whether the assertion carries ``iat`` (Google requires it).
        jwt_headers: JWT header members besides ``alg``; ``{"typ": None}`` leaves out ``typ``.
        key_name: How the key is named in error messages.
        **options: See :class:`OAuthTokenAuth`.
    """

    def __init__(
        self,
        token_url: str,
        *,
        private_key: SecretStr,
        claims: Mapping[str, str],
        subject: str | None,
        assertion_lifetime: int,
        issued_at: bool = False,
        jwt_headers: Mapping[str, str | None] | None = None,
        key_name: str = "JWT private key",
        **options: Any,
    ) -> None:
        super().__init__(token_url, **options)
        self._private_key = private_key
        self._claims = dict(claims)
        self._subject = subject
        self._assertion_lifetime = assertion_lifetime
        self._issued_at = issued_at
        self._jwt_headers = dict(jwt_headers or {})
        self._key_name = key_name

    def cache_key(self, subject: str | None) -> str:
        return subject or self._subject or ""

    def grant(self, subject: str | None) -> dict[str, str]:
        return {"grant_type": JWT_BEARER_GRANT, "assertion": self.assertion(subject)}

    def assertion(self, subject: str | None = None) -> str:
        """The signed assertion for ``subject`` (else the default subject).

        Raises:
            AuthNotConfigured: the key is not a readable unencrypted RSA key in PEM form.
        """
        now = int(self._clock())
        claims: dict[str, Any] = dict(self._claims)
        sub = subject or self._subject
        if sub:
            claims["sub"] = sub
        if self._issued_at:
            claims["iat"] = now
        claims["exp"] = now + self._assertion_lifetime
        try:
            return jwt.encode(
                claims, self._private_key.get_secret_value(), algorithm="RS256", headers=self._jwt_headers
            )
        except (jwt.PyJWTError, ValueError, TypeError):
            raise AuthNotConfigured(
                f"the {self._key_name} is not a readable unencrypted RSA PEM key"
            ) from None
