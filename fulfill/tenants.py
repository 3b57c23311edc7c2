"""Tenant configuration: which CRM / calendar serves a tenant and which Prefect block holds its credentials.

This is operator configuration, never part of an intent (contract §2).
"""

from __future__ import annotations

from sqlmodel import Session

from fulfill import ledger
from fulfill.db import db_now
from fulfill.tables import Tenant, TenantPublic

CRM_PROVIDERS = ("salesforce", "hubspot")
CALENDAR_PROVIDERS = ("google_calendar",)


def configure(
    session: Session,
    tenant_id: str,
    *,
    actor: str,
    name: str | None = None,
    crm_provider: str | None = None,
    crm_block: str | None = None,
    calendar_provider: str | None = None,
    calendar_block: str | None = None,
    storage_block: str | None = None,
) -> TenantPublic:
    """Create or update a tenant's connector configuration (ledgered as TENANT_CONFIGURED)."""
    if crm_provider is not None and crm_provider not in CRM_PROVIDERS:
        raise ValueError(f"crm_provider must be one of {CRM_PROVIDERS}")
    if calendar_provider is not None and calendar_provider not in CALENDAR_PROVIDERS:
        raise ValueError(f"calendar_provider must be one of {CALENDAR_PROVIDERS}")
    tenant = session.get(Tenant, tenant_id) or Tenant(tenant_id=tenant_id, created_at=db_now(session))
    changes = {
        "name": name,
        "crm_provider": crm_provider,
        "crm_block": crm_block,
        "calendar_provider": calendar_provider,
        "calendar_block": calendar_block,
        "storage_block": storage_block,
    }
    for field, value in changes.items():
        if value is not None:
            setattr(tenant, field, value or None if field != "name" else value)
    session.add(tenant)
    ledger.append(
        session,
        tenant_id=tenant_id,
        event_type="TENANT_CONFIGURED",
        actor=actor,
        details={k: v for k, v in changes.items() if v is not None},
    )
    return TenantPublic.model_validate(tenant, from_attributes=True)


def get_tenant(session: Session, tenant_id: str) -> Tenant | None:
    """A tenant's configuration, if any."""
    return session.get(Tenant, tenant_id)
