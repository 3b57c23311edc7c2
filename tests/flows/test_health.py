"""The connector-health flow: one cheap authenticated read per tenant and provider, recorded."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from flows.health import connector_health, latest_health
from fulfill.db import transaction
from fulfill.tenants import configure
from sandbox.local import Sandbox, start_sandbox

pytestmark = pytest.mark.usefixtures("prefect_server")


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    served = start_sandbox()
    try:
        yield served
    finally:
        served.shutdown()


@pytest.fixture(scope="module")
def block_names(sandbox: Sandbox, prefect_server: str) -> dict[str, str]:
    suffix = uuid.uuid4().hex[:8]
    names = {}
    for provider, block in sandbox.credentials().items():
        name = f"health-{provider.replace('_', '-')}-{suffix}"
        block.save(name, overwrite=True)
        names[provider] = name
    return names


def _configure(engine: Any, tenant: str, **providers: Any) -> None:
    with transaction(engine) as session:
        configure(session, tenant, actor="health-test", name="Health", **providers)


@pytest.mark.parametrize("crm", ["salesforce", "hubspot"])
def test_healthy_connectors_are_recorded_ok(
    engine: Any, tenant: str, sandbox: Sandbox, block_names: dict[str, str], crm: str
) -> None:
    _configure(
        engine,
        tenant,
        crm_provider=crm,
        crm_block=block_names[crm],
        calendar_provider="google_calendar",
        calendar_block=block_names["google_calendar"],
    )

    checked = connector_health(tenant_id=tenant)

    assert sorted((c.provider, c.ok, c.error_class) for c in checked) == sorted(
        [(crm, True, None), ("google_calendar", True, None)]
    )
    assert all(c.latency_ms is not None and c.checked_at is not None for c in checked)
    assert [(h.provider, h.ok) for h in latest_health(tenant)] == sorted(
        [(crm, True), ("google_calendar", True)]
    )


def test_a_broken_connector_is_recorded_with_its_error_class_and_the_latest_check_wins(
    engine: Any, tenant: str, block_names: dict[str, str]
) -> None:
    _configure(engine, tenant, crm_provider="salesforce", crm_block="no-such-block")
    [first] = connector_health(tenant_id=tenant)
    assert (first.provider, first.ok, first.error_class) == ("salesforce", False, "NotConfigured")

    from tasks.resolve import clear_cache

    _configure(engine, tenant, crm_provider="salesforce", crm_block=block_names["salesforce"])
    clear_cache()
    connector_health(tenant_id=tenant)

    [latest] = latest_health(tenant)
    assert (latest.ok, latest.error_class) == (True, None)
    assert latest.checked_at is not None and first.checked_at is not None
    assert latest.checked_at >= first.checked_at
