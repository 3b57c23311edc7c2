"""Credentials for drafting meetings in Google Calendar, one block document per tenant.

Two ways to authorise, both documented by Google:

* ``service_account`` — a service account with domain-wide delegation: a JWT signed (RS256) with the
  account's private key, ``sub`` set to the user whose calendar is written, exchanged at ``token_uri``
  (https://developers.google.com/identity/protocols/oauth2/service-account#httprest).
* ``oauth_refresh_token`` — an installed/web OAuth client's refresh token, exchanged at ``token_uri``
  (https://developers.google.com/identity/protocols/oauth2/web-server#offline).

``api_base_url`` and ``token_uri`` can point at the local emulator (``sandbox.google_calendar``).

:meth:`GoogleCalendarCredentials.get_client` hands out ONE client for every impersonated user: each
request names the user to act as in its ``blocks.auth.SUBJECT`` extension, and the service-account auth
keeps one token per user. Tokens are kept for their ``expires_in`` and refreshed once on a 401.

Whom to impersonate is operator configuration: service-account mode REQUIRES ``subject`` (the Workspace
user the drafts are written as). Without it :meth:`GoogleCalendarCredentials.auth` refuses every request,
so the intent's organizer can never choose whom domain-wide delegation acts as; the organizer only names
the calendar, and Google's ACLs decide whether ``subject`` may write there.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar, Literal

from prefect.blocks.core import Block
from pydantic import Field, HttpUrl, SecretStr

from blocks.auth import BearerAuth, ClientFactory, Clock, JwtBearerAuth, RefreshTokenAuth, unconfigured
from blocks.fields import empty_fields

CALENDAR_EVENTS_SCOPE = "https://www.googleapis.com/auth/calendar.events"
#: A Google access token lives an hour; the longest assertion Google accepts does too.
TOKEN_LIFETIME_SECONDS = 3600


class GoogleCalendarCredentials(ClientFactory, Block):
    """How fulfill reaches one tenant's Google Calendar to draft meetings (no invitation is ever sent)."""

    _block_type_name: ClassVar[str] = "Fulfill Google Calendar Credentials"
    _block_type_slug: ClassVar[str] = "fulfill-google-calendar-credentials"
    _description: ClassVar[str] = (
        "Service-account (domain-wide delegation) or OAuth refresh-token credentials that fulfill uses to "
        "draft meetings in Google Calendar without notifying anyone."
    )
    _documentation_url: ClassVar[HttpUrl | None] = HttpUrl(
        "https://developers.google.com/workspace/calendar/api/v3/reference/events/insert"
    )
    provider_domains: ClassVar[tuple[str, ...]] = ("googleapis.com", "accounts.google.com")

    auth_mode: Literal["service_account", "oauth_refresh_token"] = Field(
        default="service_account",
        title="Authentication mode",
        description="'service_account' (JWT bearer with domain-wide delegation) or 'oauth_refresh_token'.",
    )
    service_account_email: str | None = Field(
        default=None,
        title="Service account email",
        description="The service account's client_email (the JWT 'iss'). Service-account mode only.",
    )
    private_key: SecretStr | None = Field(
        default=None,
        title="Private key (PEM)",
        description="The service account's RSA private key in PEM form, as in its JSON key file.",
    )
    private_key_id: str | None = Field(
        default=None,
        title="Private key id",
        description="The key file's private_key_id, sent as the JWT 'kid' header. Optional.",
    )
    subject: str | None = Field(
        default=None,
        title="Impersonated user",
        description=(
            "Workspace user fulfill acts as (the JWT 'sub'). Required for service accounts: the intent's "
            "organizer is never impersonated."
        ),
    )
    client_id: str | None = Field(
        default=None,
        title="OAuth client id",
        description="OAuth client id. Refresh-token mode only.",
    )
    client_secret: SecretStr | None = Field(
        default=None,
        title="OAuth client secret",
        description="OAuth client secret. Refresh-token mode only.",
    )
    refresh_token: SecretStr | None = Field(
        default=None,
        title="OAuth refresh token",
        description="Long-lived refresh token with the calendar.events scope. Refresh-token mode only.",
    )
    scope: str = Field(
        default=CALENDAR_EVENTS_SCOPE,
        title="OAuth scope",
        description="Scope requested for the access token; calendar.events is the least that works.",
    )
    token_uri: str = Field(
        default="https://oauth2.googleapis.com/token",
        title="Token URI",
        description="Google's OAuth 2.0 token endpoint, or the emulator's /token for local runs.",
    )
    api_base_url: str = Field(
        default="https://www.googleapis.com",
        title="API base URL",
        description="Base URL of the Calendar API (without /calendar/v3), or the emulator's URL.",
    )
    draft_calendar_id: str | None = Field(
        default=None,
        title="Draft calendar id",
        description="A dedicated calendar for drafts; empty = the intent's organizer's calendar.",
    )

    def missing_fields(self) -> list[str]:
        """Names of the fields the chosen ``auth_mode`` needs but which are empty (never their values)."""
        if self.auth_mode == "service_account":
            # The impersonated user is configuration, never the intent's organizer (domain-wide delegation).
            return empty_fields(self, "service_account_email", "private_key", "subject")
        return empty_fields(self, "client_id", "client_secret", "refresh_token")

    def auth(self, *, clock: Clock = time.time) -> BearerAuth:
        """The ``httpx.Auth`` of the configured mode (refuses every request when a field is missing).

        Args:
            clock: Seconds since the epoch, for the JWT's ``iat``/``exp`` and token expiry (tests).
        """
        missing = unconfigured("Google Calendar", self.auth_mode, self.missing_fields())
        if missing is not None:
            return missing
        options: dict[str, Any] = {
            "provider": "Google",
            "default_lifetime": TOKEN_LIFETIME_SECONDS,
            "clock": clock,
        }
        if self.auth_mode == "service_account":
            # https://developers.google.com/identity/protocols/oauth2/service-account#authorizingrequests
            assert self.service_account_email and self.private_key is not None
            return JwtBearerAuth(
                self.token_uri,
                private_key=self.private_key,
                claims={"iss": self.service_account_email, "scope": self.scope, "aud": self.token_uri},
                subject=self.subject,
                assertion_lifetime=TOKEN_LIFETIME_SECONDS,
                issued_at=True,
                jwt_headers={"kid": self.private_key_id} if self.private_key_id else None,
                key_name="service account private key",
                **options,
            )
        # https://developers.google.com/identity/protocols/oauth2/web-server#offline
        return RefreshTokenAuth.of_client(self.token_uri, self, **options)

    def client_base_url(self) -> str:
        """Where ``get_client()``'s client is aimed: ``api_base_url``."""
        return self.api_base_url
