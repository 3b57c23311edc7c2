"""Credentials for writing tasks, deals and field updates to HubSpot, one block document per tenant.

Two ways to authorise, both documented by HubSpot:

* ``private_app`` — a private app's access token, sent as ``Authorization: Bearer …``
  (https://developers.hubspot.com/docs/guides/apps/private-apps/overview). It does not expire.
* ``oauth`` — a public app's refresh token, exchanged for short-lived access tokens with a
  form-encoded ``POST /oauth/v1/token`` (``grant_type=refresh_token``)
  (https://developers.hubspot.com/docs/api-reference/legacy/authentication/oauth-tokens/v1/refresh-oauth-token).

The portal must hold a custom property named ``intent_key_property`` on tasks and on deals: fulfill
writes each step's idempotency key there. Where it has "require unique values" (``hasUniqueValue:
true``; HubSpot allows it on deals, never on tasks), HubSpot's uniqueness check makes a retried create
return the first record instead of a copy; elsewhere a create searches for its key first, and
``search_settle_seconds`` is how long HubSpot's search may take to show a record after a create whose
answer was lost (``connectors.hubspot``).

``api_base_url`` and ``token_url`` can point at the local emulator (``sandbox.hubspot``).
:meth:`HubSpotCredentials.get_client` hands out a client that authenticates with the configured mode
(``blocks.auth``): the private-app token as it is, or OAuth access tokens kept for their ``expires_in``
(:data:`TOKEN_LIFETIME_SECONDS` when the answer has none) and refreshed once on a 401.
"""

from __future__ import annotations

import time
from typing import ClassVar, Literal

from prefect.blocks.core import Block
from pydantic import Field, HttpUrl, SecretStr

from blocks.auth import (
    BearerAuth,
    ClientFactory,
    Clock,
    RefreshTokenAuth,
    StaticTokenAuth,
    unconfigured,
)
from blocks.fields import empty_fields

#: An OAuth access token's life when the token answer gives no expires_in (HubSpot's are 30 minutes).
TOKEN_LIFETIME_SECONDS = 1800


class HubSpotCredentials(ClientFactory, Block):
    """How fulfill reaches one tenant's HubSpot portal to create tasks and deals and update fields."""

    _block_type_name: ClassVar[str] = "Fulfill HubSpot Credentials"
    _block_type_slug: ClassVar[str] = "fulfill-hubspot-credentials"
    _description: ClassVar[str] = (
        "A HubSpot private-app token or OAuth refresh token that fulfill uses to create tasks and deals "
        "and to update fields in one portal, exactly once per approved action."
    )
    _documentation_url: ClassVar[HttpUrl | None] = HttpUrl(
        "https://developers.hubspot.com/docs/api-reference/crm-objects-v3/guide"
    )
    provider_domains: ClassVar[tuple[str, ...]] = ("hubapi.com", "hubspot.com")

    auth_mode: Literal["private_app", "oauth"] = Field(
        default="private_app",
        title="Authentication mode",
        description="'private_app' (a private app's access token) or 'oauth' (a public app's refresh token).",
    )
    private_app_token: SecretStr | None = Field(
        default=None,
        title="Private app access token",
        description="The private app's access token (pat-…). Private-app mode only.",
    )
    client_id: str | None = Field(
        default=None,
        title="OAuth client id",
        description="The public app's client id. OAuth mode only.",
    )
    client_secret: SecretStr | None = Field(
        default=None,
        title="OAuth client secret",
        description="The public app's client secret. OAuth mode only.",
    )
    refresh_token: SecretStr | None = Field(
        default=None,
        title="OAuth refresh token",
        description="Refresh token from the app's installation in this portal. OAuth mode only.",
    )
    api_base_url: str = Field(
        default="https://api.hubapi.com",
        title="API base URL",
        description="Base URL of the HubSpot API, or the emulator's URL for local runs.",
    )
    token_url: str = Field(
        default="https://api.hubapi.com/oauth/v1/token",
        title="Token URL",
        description="HubSpot's OAuth token endpoint, or the emulator's /oauth/v1/token for local runs.",
    )
    app_url: str = Field(
        default="https://app.hubspot.com",
        title="App URL",
        description="Base URL of the HubSpot web app, used to build links a seller can open "
        "(https://app-eu1.hubspot.com for EU portals).",
    )
    portal_id: str | None = Field(
        default=None,
        title="Portal (Hub) id",
        description="The numeric HubSpot account id; needed for record links. Empty = no links.",
    )
    intent_key_property: str = Field(
        default="fulfill_intent_key",
        title="Idempotency key property",
        description="Internal name of the custom single-line text property on tasks and deals that holds "
        "each step's idempotency key ('require unique values' on deals; HubSpot allows none on tasks).",
    )
    search_settle_seconds: float = Field(
        default=10.0,
        ge=0,
        le=300,
        title="Search settle window (seconds)",
        description="How long HubSpot's CRM search may take to show a record after it was written. After "
        "a create whose answer was lost, a search is trusted only once this has passed; a record it still "
        "does not show is left to a person (AMBIGUOUS_OUTCOME), never created twice.",
    )
    deal_pipeline: str = Field(
        default="default",
        title="Deal pipeline",
        description="Internal id of the pipeline new deals go into; the stage must belong to it.",
    )

    def missing_fields(self) -> list[str]:
        """Names of the fields the chosen ``auth_mode`` needs but which are empty (never their values)."""
        if self.auth_mode == "private_app":
            return empty_fields(self, "private_app_token")
        return empty_fields(self, "client_id", "client_secret", "refresh_token")

    def auth(self, *, clock: Clock = time.time) -> BearerAuth:
        """The ``httpx.Auth`` of the configured mode (refuses every request when a field is missing).

        Args:
            clock: Seconds since the epoch, for token expiry (tests).
        """
        missing = unconfigured("HubSpot", self.auth_mode, self.missing_fields())
        if missing is not None:
            return missing
        if self.auth_mode == "private_app":
            assert self.private_app_token is not None
            return StaticTokenAuth(self.private_app_token)
        # https://developers.hubspot.com/docs/api-reference/legacy/authentication/oauth-tokens/v1/refresh-oauth-token
        return RefreshTokenAuth.of_client(
            self.token_url,
            self,
            provider="HubSpot",
            default_lifetime=TOKEN_LIFETIME_SECONDS,
            error_field="status",  # HubSpot's token errors carry their code in status (BAD_REFRESH_TOKEN)
            clock=clock,
        )

    def client_base_url(self) -> str:
        """Where ``get_client()``'s client is aimed: ``api_base_url``."""
        return self.api_base_url
