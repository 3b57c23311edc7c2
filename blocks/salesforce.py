"""Credentials for writing to one tenant's Salesforce org, one block document per tenant.

Two server-to-server OAuth 2.0 flows, both documented by Salesforce (the username-password flow is
deprecated and not offered):

* ``client_credentials`` — a connected app / external client app with the client-credentials flow enabled
  and a run-as integration user; ``client_id`` + ``client_secret`` are exchanged at
  ``{login_url}/services/oauth2/token``. Salesforce requires the org's My Domain URL as ``login_url`` here
  (https://help.salesforce.com/s/articleView?id=sf.remoteaccess_oauth_client_credentials_flow.htm): the
  generic hosts ``login.salesforce.com`` / ``test.salesforce.com`` answer ``invalid_grant`` ("request not
  supported on this domain"). :meth:`SalesforceCredentials.configuration_problems` says so before anything
  is sent (the block stays loadable, so the operator gets the sentence instead of a load error).
* ``jwt_bearer`` — a JWT (``iss`` = consumer key, ``sub`` = username, ``aud`` = ``jwt_audience``) signed
  RS256 with ``private_key``, whose certificate is uploaded to the connected app
  (https://help.salesforce.com/s/articleView?id=sf.remoteaccess_oauth_jwt_flow.htm).

``login_url`` and ``instance_url`` can point at the local emulator (``sandbox.salesforce``).

:meth:`SalesforceCredentials.get_client` hands out a client that authenticates with the configured grant
(``blocks.auth``). The token answer names the instance the token is valid on (``instance_url``); requests
aimed at the block's base URL (``instance_url``, else ``login_url``) are sent there. Salesforce's token
answer carries no ``expires_in`` (the session lasts the org's session timeout, counted from the last
use), so a token is kept :data:`SESSION_LIFETIME_SECONDS` — the shortest timeout an org can set — and
a 401 before that fetches a fresh one once.
The org needs one custom field per written object (Task, Opportunity): a Text field marked
*External ID* and *Unique* named ``external_id_field`` — it holds each write's idempotency key.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

from prefect.blocks.core import Block
from pydantic import Field, HttpUrl, SecretStr

from blocks.auth import (
    BearerAuth,
    ClientCredentialsAuth,
    ClientFactory,
    Clock,
    JwtBearerAuth,
    UnconfiguredAuth,
    unconfigured,
)
from blocks.fields import empty_fields

DEFAULT_EXTERNAL_ID_FIELD = "Fulfill_Intent_Key__c"
DEFAULT_API_VERSION = "62.0"
#: How long a token is kept: Salesforce's answer has no expires_in; 15 minutes is the shortest session
#: timeout an org can set, so a cached token is never older than any org allows.
SESSION_LIFETIME_SECONDS = 900
# Salesforce rejects a JWT whose exp is more than 3 minutes away
# (https://help.salesforce.com/s/articleView?id=sf.remoteaccess_oauth_jwt_flow.htm).
JWT_LIFETIME_SECONDS = 180
#: Hosts of a My Domain (production, sandbox, developer, scratch, … all end so; Government Cloud Plus).
MY_DOMAIN_SUFFIXES = (".my.salesforce.com", ".my.salesforce.mil")
#: Hosts an emulator may listen on (the client-credentials rule does not apply to them).
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


class SalesforceCredentials(ClientFactory, Block):
    """How fulfill reaches one tenant's Salesforce org to create tasks and opportunities and update fields."""

    _block_type_name: ClassVar[str] = "Fulfill Salesforce Credentials"
    _block_type_slug: ClassVar[str] = "fulfill-salesforce-credentials"
    _description: ClassVar[str] = (
        "OAuth 2.0 client-credentials or JWT-bearer credentials of a Salesforce connected app that fulfill "
        "uses to create Tasks and Opportunities and update fields, idempotently, in one org."
    )
    _documentation_url: ClassVar[HttpUrl | None] = HttpUrl(
        "https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/intro_rest.htm"
    )
    provider_domains: ClassVar[tuple[str, ...]] = ("salesforce.com", "force.com", "cloudforce.com", "salesforce.mil")  # fmt: skip

    auth_mode: Literal["client_credentials", "jwt_bearer"] = Field(
        default="client_credentials",
        title="Authentication mode",
        description="'client_credentials' (consumer key + secret) or 'jwt_bearer' (consumer key + RSA key).",
    )
    login_url: str = Field(
        default="https://login.salesforce.com",
        title="Login URL",
        description=(
            "Where tokens are requested ({login_url}/services/oauth2/token): the org's My Domain URL, "
            "https://<your-domain>.my.salesforce.com (required for client credentials; the default "
            "login.salesforce.com serves the JWT-bearer flow only), https://test.salesforce.com for "
            "sandboxes with JWT bearer, or the emulator."
        ),
    )
    instance_url: str | None = Field(
        default=None,
        title="Instance URL",
        description="API base URL used only when the token response carries no instance_url. Optional.",
    )
    client_id: str | None = Field(
        default=None,
        title="Consumer key",
        description="The connected app's consumer key (OAuth client id); the JWT 'iss' in JWT-bearer mode.",
    )
    client_secret: SecretStr | None = Field(
        default=None,
        title="Consumer secret",
        description="The connected app's consumer secret. Client-credentials mode only.",
    )
    username: str | None = Field(
        default=None,
        title="Integration username",
        description="The Salesforce username to act as (the JWT 'sub'). JWT-bearer mode only.",
    )
    private_key: SecretStr | None = Field(
        default=None,
        title="Private key (PEM)",
        description="Unencrypted RSA private key (PEM) whose certificate is on the connected app. JWT only.",
    )
    jwt_audience: str = Field(
        default="https://login.salesforce.com",
        title="JWT audience",
        description=(
            "The JWT 'aud': https://login.salesforce.com, or https://test.salesforce.com for sandboxes."
        ),
    )
    api_version: str = Field(
        default=DEFAULT_API_VERSION,
        title="API version",
        description="REST API version used in /services/data/vXX.X/ paths, e.g. '62.0'.",
        pattern=r"^\d{2,3}\.\d$",
    )
    external_id_field: str = Field(
        default=DEFAULT_EXTERNAL_ID_FIELD,
        title="External ID field",
        description=(
            "API name of the External ID + Unique text field on Task and Opportunity that holds each "
            "write's idempotency key."
        ),
        pattern=r"^[A-Za-z][A-Za-z0-9_]*__c$",
    )

    def my_domain_problem(self) -> str | None:
        """Why ``login_url`` cannot serve the configured grant, as a sentence for an operator; else ``None``.

        The client-credentials flow works on the org's My Domain only
        (https://help.salesforce.com/s/articleView?id=sf.remoteaccess_oauth_client_credentials_flow.htm):
        a Salesforce host that is not ``*.my.salesforce.com`` (``login.salesforce.com``,
        ``test.salesforce.com``, an instance host) is refused. Loopback emulators and non-Salesforce hosts
        (an emulator, a proxy) are left alone. The JWT-bearer flow may use the generic login hosts.
        """
        if self.auth_mode != "client_credentials":
            return None
        parts = urlsplit(self.login_url.strip())
        host = (parts.hostname or "").lower()
        if host in LOOPBACK_HOSTS:
            return None
        if parts.scheme == "https" and host.endswith(MY_DOMAIN_SUFFIXES):
            return None
        salesforce = host.endswith(("salesforce.com", "salesforce.mil"))
        if host and parts.scheme in ("http", "https") and not salesforce:
            return None  # not a Salesforce host: an emulator or a proxy the operator chose
        shown = f" (not {parts.scheme}://{host})" if host else ""
        return (
            "Salesforce's client-credentials flow needs the org's My Domain login URL: set login_url to "
            "https://<your-domain>.my.salesforce.com (a sandbox: "
            f"https://<your-domain>--<sandbox>.sandbox.my.salesforce.com; Setup > My Domain shows it){shown}"
        )

    def configuration_problems(self) -> list[str]:
        """Every reason the block cannot authenticate yet, as sentences (field names, never values)."""
        problems = []
        missing = self.missing_fields()
        if missing:
            problems.append(f"Salesforce credentials lack {', '.join(missing)} for {self.auth_mode}")
        domain = self.my_domain_problem()
        if domain is not None:
            problems.append(domain)
        return problems

    def missing_fields(self) -> list[str]:
        """Names of the fields the chosen ``auth_mode`` needs but which are empty (never their values)."""
        if self.auth_mode == "client_credentials":
            return empty_fields(self, "client_id", "client_secret")
        return empty_fields(self, "client_id", "username", "private_key")

    @property
    def token_url(self) -> str:
        """The OAuth token endpoint: ``{login_url}/services/oauth2/token``."""
        return f"{self.login_url.rstrip('/')}/services/oauth2/token"

    @property
    def api_base_url(self) -> str:
        """Where API requests are aimed until a token names its instance: ``instance_url``, else ``login_url``."""
        return (self.instance_url or self.login_url).rstrip("/")

    def auth(self, *, clock: Clock = time.time) -> BearerAuth:
        """The ``httpx.Auth`` of the configured grant (refuses every request when a field is missing).

        Args:
            clock: Seconds since the epoch, for the JWT's ``exp`` and token expiry (tests).
        """
        missing = unconfigured("Salesforce", self.auth_mode, self.missing_fields())
        if missing is not None:
            return missing
        domain = self.my_domain_problem()
        if domain is not None:  # Salesforce would refuse the token request: send nothing
            return UnconfiguredAuth(domain)
        options: dict[str, Any] = {
            "provider": "Salesforce",
            "default_lifetime": SESSION_LIFETIME_SECONDS,
            "instance_base": self.api_base_url,
            "clock": clock,
        }
        if self.auth_mode == "client_credentials":
            # https://help.salesforce.com/s/articleView?id=sf.remoteaccess_oauth_client_credentials_flow.htm
            assert self.client_id is not None and self.client_secret is not None
            return ClientCredentialsAuth(
                self.token_url, client_id=self.client_id, client_secret=self.client_secret, **options
            )
        # https://help.salesforce.com/s/articleView?id=sf.remoteaccess_oauth_jwt_flow.htm
        assert self.client_id is not None and self.private_key is not None
        return JwtBearerAuth(
            self.token_url,
            private_key=self.private_key,
            claims={"iss": self.client_id, "aud": self.jwt_audience},
            subject=self.username,
            assertion_lifetime=JWT_LIFETIME_SECONDS,
            jwt_headers={"typ": None},  # Salesforce's documented header is {"alg": "RS256"} alone
            **options,
        )

    def client_base_url(self) -> str:
        """Where ``get_client()``'s client is aimed: ``api_base_url``."""
        return self.api_base_url
