"""Which connector class serves which provider name (tenant configuration names these)."""

from __future__ import annotations

from typing import Any

import httpx

from connectors.base import Connector
from connectors.errors import NotConfigured

ACTION_FAMILY = {
    "crm.create_task": "crm",
    "crm.update_field": "crm",
    "crm.create_opportunity": "crm",
    "calendar.draft_meeting": "calendar",
    "internal.create_task": "internal",
    "internal.log_note": "internal",
    "internal.attach_brief": "internal",
}


def connector_class(provider: str) -> type[Connector]:
    """The connector class for a provider name (imported lazily)."""
    if provider == "salesforce":
        from connectors.salesforce import SalesforceConnector

        return SalesforceConnector
    if provider == "hubspot":
        from connectors.hubspot import HubSpotConnector

        return HubSpotConnector
    if provider == "google_calendar":
        from connectors.google_calendar import GoogleCalendarConnector

        return GoogleCalendarConnector
    raise NotConfigured(f"provider {provider!r} has no connector")


BLOCK_TYPE_SLUGS = {
    "salesforce": "fulfill-salesforce-credentials",
    "hubspot": "fulfill-hubspot-credentials",
    "google_calendar": "fulfill-google-calendar-credentials",
}


def block_type_slug(provider: str) -> str:
    """The Prefect block-type slug holding a provider's credentials."""
    try:
        return BLOCK_TYPE_SLUGS[provider]
    except KeyError:
        raise NotConfigured(f"provider {provider!r} has no credentials block type") from None


def build_connector(provider: str, credentials: Any, client: httpx.Client) -> Connector:
    """Instantiate the provider's connector with its credentials block and an injected client."""
    cls: Any = connector_class(provider)
    connector: Connector = cls(client, credentials)
    return connector
