"""The ``connector-health`` flow: a cheap authenticated read per tenant and provider, recorded.

For every tenant with a CRM or calendar provider, the tenant's connector is resolved exactly as an
execution resolves it (``tasks.resolve``: credentials block, token grant) and asked to look up a
probe key that never exists — the same authenticated GET the connectors use to find a write after a
lost answer (Salesforce: record by External ID; HubSpot: record by unique property; Google
Calendar: event by id). "Not found" is healthy; a connector error is recorded by its class
(``AuthenticationFailed``, ``ProviderUnavailable``, ``NotConfigured``…) with the latency and the
database time of the check, one row per tenant and provider (``connector_health``), which
``GET /connectors/health`` and ``GET /metrics`` show. Nothing is ever written at a provider.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from prefect import flow, get_run_logger
from sqlmodel import col, select

from connectors.base import StepCall
from connectors.errors import ConnectorError
from fulfill.db import db_now, get_engine, transaction
from fulfill.tables import ConnectorHealth, ConnectorHealthPublic, Tenant
from tasks.resolve import resolve_connector

#: family → (an action type of that family, parameters enough to address the probe lookup)
PROBES: dict[str, tuple[str, dict[str, Any]]] = {
    "crm": ("crm.create_task", {"subject": "fulfill connector health probe"}),
    # The calendar probe reads the credentials' draft calendar (or subject); else the "primary" one.
    "calendar": (
        "calendar.draft_meeting",
        {"organizer": "primary", "title": "fulfill connector health probe"},
    ),
}


def probe(tenant_id: str, family: str) -> tuple[bool, str | None, float]:
    """``(ok, error_class, latency_ms)`` of one lookup through the tenant's connector."""
    action_type, params = PROBES[family]
    started = time.perf_counter()
    try:
        connector = resolve_connector(tenant_id, action_type)
        step = connector.steps(action_type, params)[0]
        call = StepCall(
            action_intent_id="fulfill-connector-health",
            tenant_id=tenant_id,
            account_id="fulfill-connector-health",
            action_type=action_type,
            step=step,
            idempotency_key=f"fulfill-health-{uuid.uuid4().hex}",
            params=params,
        )
        connector.lookup(call)
    except ConnectorError as error:
        return False, type(error).__name__, (time.perf_counter() - started) * 1000
    except Exception as error:  # a block that does not load, an unexpected answer: unhealthy, by class
        return False, type(error).__name__[:64], (time.perf_counter() - started) * 1000
    return True, None, (time.perf_counter() - started) * 1000


@flow(name="connector-health")
def connector_health(tenant_id: str | None = None) -> list[ConnectorHealthPublic]:
    """Check every configured tenant's CRM and calendar connector (optionally one tenant's)."""
    with transaction(get_engine()) as session:
        query = select(Tenant).order_by(col(Tenant.tenant_id))
        if tenant_id is not None:
            query = query.where(Tenant.tenant_id == tenant_id)
        targets = [
            (t.tenant_id, family, provider, block)
            for t in session.exec(query)
            for family, provider, block in (
                ("crm", t.crm_provider, t.crm_block),
                ("calendar", t.calendar_provider, t.calendar_block),
            )
            if provider
        ]
    checked: list[ConnectorHealthPublic] = []
    for tenant, family, provider, block in targets:
        ok, error_class, latency_ms = probe(tenant, family)
        with transaction(get_engine()) as session:
            row = session.get(ConnectorHealth, (tenant, provider)) or ConnectorHealth(
                tenant_id=tenant, provider=provider
            )
            row.block, row.ok, row.error_class = block, ok, error_class
            row.latency_ms = round(latency_ms, 3)
            row.checked_at = db_now(session)
            session.add(row)
            session.flush()
            checked.append(ConnectorHealthPublic.model_validate(row, from_attributes=True))
        if not ok:
            get_run_logger().warning(
                "connector %s of tenant %s is unhealthy: %s", provider, tenant, error_class
            )
    return checked


def latest_health(tenant_id: str | None = None) -> list[ConnectorHealthPublic]:
    """The latest check of every tenant's providers (optionally one tenant's)."""
    with transaction(get_engine()) as session:
        query = select(ConnectorHealth).order_by(
            col(ConnectorHealth.tenant_id), col(ConnectorHealth.provider)
        )
        if tenant_id is not None:
            query = query.where(ConnectorHealth.tenant_id == tenant_id)
        return [ConnectorHealthPublic.model_validate(r, from_attributes=True) for r in session.exec(query)]
