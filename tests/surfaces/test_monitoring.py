"""GET /metrics (figures from the database at scrape time) and GET /connectors/health."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from flows.execute_intent import execute_intent
from fulfill import ledger
from fulfill.db import transaction
from fulfill.tables import ConnectorHealth, Signal
from surfaces import monitoring

pytestmark = pytest.mark.usefixtures("prefect_server")


@pytest.fixture
def client(engine: Any) -> TestClient:
    app = FastAPI()
    app.include_router(monitoring.router)
    return TestClient(app)


def _samples(text: str, name: str, **labels: str) -> list[float]:
    return [
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    ]


def test_metrics_count_executions_signals_errors_and_latency(
    client: TestClient, engine: Any, make_intent: Any, tenant: str
) -> None:
    execute_intent(make_intent("internal.create_task", {"title": "Counted"}))
    execute_intent(make_intent("internal.create_task", {"title": "Late"}, expires_at_epoch=1_000_000_000))
    with transaction(engine) as session:
        ledger.append(
            session,
            tenant_id=tenant,
            action_intent_id=None,
            event_type="STEP_RETRY_SCHEDULED",
            details={"step": "create_task", "attempt": 1, "error": {"error": "ProviderUnavailable"}},
        )
        row = session.exec(Signal.__table__.select().where(Signal.tenant_id == tenant)).first()  # type: ignore[attr-defined]
        dead = session.get(Signal, row.signal_id)
        assert dead is not None
        dead.dead_lettered_at = datetime.now(UTC)
        session.add(dead)

    response = client.get("/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    by = {"tenant": tenant, "action_type": "internal.create_task"}
    assert _samples(text, "fulfill_executions", status="SUCCEEDED", **by) == [1.0]
    assert _samples(text, "fulfill_executions", status="EXPIRED", **by) == [1.0]
    assert _samples(text, "fulfill_connector_errors", tenant=tenant, error_class="ProviderUnavailable") == [
        1.0
    ]
    assert _samples(text, "fulfill_signals", state="dead_lettered")[0] >= 1.0
    assert _samples(text, "fulfill_signals", state="pending")[0] >= 1.0
    assert _samples(text, "fulfill_step_duration_seconds_count", system="internal")[0] >= 1.0


def test_connector_health_shows_the_latest_check_per_tenant_and_provider(
    client: TestClient, engine: Any, tenant: str
) -> None:
    with transaction(engine) as session:
        session.add(
            ConnectorHealth(
                tenant_id=tenant,
                provider="salesforce",
                block="acme-sf",
                ok=False,
                error_class="AuthenticationFailed",
                latency_ms=12.5,
                checked_at=datetime.now(UTC),
            )
        )

    body = client.get("/connectors/health", params={"tenant_id": tenant}).json()

    assert [(h["tenant_id"], h["provider"], h["ok"], h["error_class"], h["latency_ms"]) for h in body] == [
        (tenant, "salesforce", False, "AuthenticationFailed", 12.5)
    ]
    text = client.get("/metrics").text
    assert _samples(text, "fulfill_connector_up", tenant=tenant, provider="salesforce") == [0.0]
    assert _samples(
        text, "fulfill_connector_check_latency_seconds", tenant=tenant, provider="salesforce"
    ) == [0.0125]
