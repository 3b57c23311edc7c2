"""Run every provider emulator on loopback and describe the credentials blocks that point at them.

Used by ``fulfill sandbox serve``, the demo and the end-to-end tests. Nothing here ever
listens on or calls a non-loopback address.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import SecretStr

from blocks.google_calendar import GoogleCalendarCredentials
from blocks.hubspot import HubSpotCredentials
from blocks.salesforce import SalesforceCredentials
from sandbox.base import Emulator
from sandbox.google_calendar import GoogleCalendarEmulator
from sandbox.hubspot import PRIVATE_APP_TOKEN, HubSpotEmulator
from sandbox.salesforce import SalesforceEmulator

GOOGLE_CLIENT = ("fulfill-sandbox-client", "fulfill-sandbox-secret", "fulfill-sandbox-refresh")
SANDBOX_PORTAL_ID = "424242"


@dataclass
class Sandbox:
    """Three emulators served on loopback, and credentials blocks aimed at them."""

    salesforce: SalesforceEmulator
    hubspot: HubSpotEmulator
    google_calendar: GoogleCalendarEmulator
    urls: dict[str, str] = field(default_factory=dict)

    def emulators(self) -> dict[str, Emulator]:
        """Provider name → emulator."""
        return {
            "salesforce": self.salesforce,
            "hubspot": self.hubspot,
            "google_calendar": self.google_calendar,
        }

    def credentials(self) -> dict[str, Any]:
        """Provider name → an unsaved credentials block pointing at this sandbox."""
        sf, hs, gc = self.urls["salesforce"], self.urls["hubspot"], self.urls["google_calendar"]
        return {
            "salesforce": SalesforceCredentials(
                auth_mode="client_credentials",
                login_url=sf,
                instance_url=sf,
                client_id=self.salesforce.client_id,
                client_secret=SecretStr(self.salesforce.client_secret),
            ),
            "hubspot": HubSpotCredentials(
                auth_mode="private_app",
                private_app_token=SecretStr(PRIVATE_APP_TOKEN),
                api_base_url=hs,
                token_url=f"{hs}/oauth/v1/token",
                app_url=hs,
                portal_id=SANDBOX_PORTAL_ID,
            ),
            "google_calendar": GoogleCalendarCredentials(
                auth_mode="oauth_refresh_token",
                client_id=GOOGLE_CLIENT[0],
                client_secret=SecretStr(GOOGLE_CLIENT[1]),
                refresh_token=SecretStr(GOOGLE_CLIENT[2]),
                token_uri=f"{gc}/token",
                api_base_url=gc,
            ),
        }

    def save_credentials(self, prefix: str) -> dict[str, str]:
        """Save every credentials block as ``{prefix}-{provider}``; returns provider → block name."""
        names = {}
        for provider, block in self.credentials().items():
            names[provider] = f"{prefix}-{provider.replace('_', '-')}"
            block.save(names[provider], overwrite=True)
        return names

    def configure_tenant(
        self, tenant_id: str, *, crm: str, prefix: str, actor: str, name: str | None = None
    ) -> None:
        """Save the blocks and point ``tenant_id`` at this sandbox's ``crm`` and Google Calendar."""
        from fulfill.db import transaction
        from fulfill.tenants import configure

        blocks = self.save_credentials(prefix)
        with transaction() as session:
            configure(
                session,
                tenant_id,
                actor=actor,
                name=name,
                crm_provider=crm,
                crm_block=blocks[crm],
                calendar_provider="google_calendar",
                calendar_block=blocks["google_calendar"],
            )

    def shutdown(self) -> None:
        """Stop every server."""
        for emulator in self.emulators().values():
            emulator.shutdown()


def start_sandbox(host: str = "127.0.0.1", ports: dict[str, int] | None = None) -> Sandbox:
    """Start the three emulators on loopback (ephemeral ports unless given)."""
    ports = ports or {}
    google = GoogleCalendarEmulator()
    google.add_oauth_client(*GOOGLE_CLIENT, subject="sandbox@fulfill.local")
    sandbox = Sandbox(SalesforceEmulator(), HubSpotEmulator(), google)
    for name, emulator in sandbox.emulators().items():
        sandbox.urls[name] = emulator.serve(host, ports.get(name, 0))
    return sandbox
