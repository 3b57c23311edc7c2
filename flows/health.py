"""The ``connector-health`` flow: each tenant's connector self-check, recorded.

For every tenant with a CRM or calendar provider, the tenant's connector is resolved exactly as an
execution resolves it (``tasks.resolve``: credentials block, token grant) and asked to check the live
org/portal (``Connector.check``, read-only: field definitions, uniqueness, My Domain, currencies, the
calendar — ``tasks.check``). Healthy means reached and every action type of the family enabled; else the
row records the connector error's class (``AuthenticationFailed``, ``ProviderUnavailable``,
``NotConfigured``…) or ``ActionTypesDisabled`` (a precondition failed; ``fulfill tenant check`` says
which and what to set up), with the latency and the database time of the check, one row per tenant and
provider (``connector_health``), which ``GET /connectors/health`` and ``GET /metrics`` show. Nothing is
ever written at a provider.
"""

from __future__ import annotations

import time

from prefect import flow, get_run_logger
from sqlmodel import col, select

from fulfill.db import db_now, get_engine, transaction
from fulfill.tables import ConnectorHealth, ConnectorHealthPublic, Tenant
from tasks.check import check_family

DISABLED = "ActionTypesDisabled"


def probe(tenant_id: str, family: str) -> tuple[bool, str | None, float]:
    """``(ok, error_class, latency_ms)`` of one family's self-check through the tenant's connector."""
    started = time.perf_counter()
    checked = check_family(tenant_id, family)
    latency_ms = (time.perf_counter() - started) * 1000
    if checked.error_class is not None:
        return False, checked.error_class, latency_ms
    if checked.disabled:
        get_run_logger().warning(
            "tenant %s: %s not enabled: %s",
            tenant_id,
            ", ".join(checked.disabled),
            "; ".join(fix for fixes in checked.fixes.values() for fix in fixes),
        )
        return False, DISABLED, latency_ms
    return True, None, latency_ms


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
