"""Which connector and credentials block serve which provider name (tenant configuration names these)."""

from __future__ import annotations

import importlib
from typing import Any

import httpx
from prefect.blocks.core import Block

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

#: provider → ("module:ConnectorClass", "module:CredentialsBlockClass"), imported lazily
PROVIDERS = {
    "salesforce": ("connectors.salesforce:SalesforceConnector", "blocks.salesforce:SalesforceCredentials"),
    "hubspot": ("connectors.hubspot:HubSpotConnector", "blocks.hubspot:HubSpotCredentials"),
    "google_calendar": (
        "connectors.google_calendar:GoogleCalendarConnector",
        "blocks.google_calendar:GoogleCalendarCredentials",
    ),
}


def _load(provider: str, index: int) -> Any:
    try:
        module, _, name = PROVIDERS[provider][index].partition(":")
    except KeyError:
        raise NotConfigured(f"provider {provider!r} has no connector") from None
    return getattr(importlib.import_module(module), name)


def connector_class(provider: str) -> type[Connector]:
    """The connector class for a provider name."""
    cls: type[Connector] = _load(provider, 0)
    return cls


def block_class(provider: str) -> type[Block]:
    """The Prefect block class holding a provider's credentials (importing it registers its type)."""
    cls: type[Block] = _load(provider, 1)
    return cls


def build_connector(
    provider: str,
    credentials: Any,
    client: httpx.Client | None = None,
    *,
    timeout: httpx.Timeout | None = None,
) -> Connector:
    """Instantiate the provider's connector with its credentials block.

    Args:
        provider: A provider name, e.g. ``salesforce``.
        credentials: The provider's credentials block.
        client: An injected client (tests, the dry run); by default the block's ``get_client()``,
            which authenticates with the block's grant.
        timeout: The timeouts of the block's client, when ``client`` is not given.
    """
    cls: Any = connector_class(provider)
    if client is None:
        client = credentials.get_client(timeout=timeout)
    connector: Connector = cls(client, credentials)
    return connector
