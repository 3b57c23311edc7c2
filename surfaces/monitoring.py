"""Monitoring routes: ``GET /metrics`` (Prometheus text) and ``GET /connectors/health`` (contract §5).

Every metric is computed from the database at scrape time by one custom collector, so any replica
answers the same and nothing is lost on restart:

=================================================  ==========================================================
``fulfill_executions{status,action_type,tenant}``   executions by status (gauge)
``fulfill_steps_retried{tenant,system}``            steps that needed more than one attempt (gauge)
``fulfill_step_retries{tenant,system}``             retries beyond the first attempt, summed (gauge)
``fulfill_connector_errors{tenant,error_class}``    connector errors by class: failed steps and scheduled
                                                    retries, from the ledger (gauge)
``fulfill_signals{state}``                          outbox signals ``pending`` / ``retrying`` / ``dead_lettered``
``fulfill_step_duration_seconds{system}``           step latency, checkpoint → result (histogram)
``fulfill_connector_up{tenant,provider}``           the latest connector-health check: 1 ok, 0 failing
``fulfill_connector_check_latency_seconds{…}``      its latency
``fulfill_connector_check_age_seconds{…}``          how long ago it ran (alert when it stops)
=================================================  ==========================================================

Tenant ids are labels: one series per tenant and status/system. The lead mounts this router with
``app.include_router(monitoring.router)`` with the admin dependency of ``surfaces.routes``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.engine import Engine
from sqlmodel import col, func, select

from flows.health import latest_health
from fulfill.db import db_now, get_engine, transaction
from fulfill.states import StepStatus
from fulfill.tables import ConnectorHealth, ConnectorHealthPublic, Execution, LedgerEntry, Signal, StepRecord

#: Step latency buckets, seconds (provider calls: tens of ms to a late-commit window).
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
ERROR_EVENTS = ("STEP_FAILED", "STEP_RETRY_SCHEDULED")

# Authentication is applied where the router is mounted (surfaces/api.py: admin tokens only).
router = APIRouter(tags=["monitoring"])


class FulfillCollector(Collector):
    """Reads the database on every ``collect`` (one short read-only transaction)."""

    def __init__(self, engine: Engine | None = None) -> None:
        self._engine = engine

    def collect(self) -> Iterator[Metric]:
        with transaction(self._engine or get_engine()) as session:
            now = db_now(session)
            executions = GaugeMetricFamily(
                "fulfill_executions", "Executions by status", labels=["status", "action_type", "tenant"]
            )
            for status, action_type, tenant, count in session.exec(
                select(Execution.status, Execution.action_type, Execution.tenant_id, func.count()).group_by(
                    Execution.status, Execution.action_type, Execution.tenant_id
                )
            ):
                executions.add_metric([str(status), action_type, tenant], count)
            yield executions

            retried = GaugeMetricFamily(
                "fulfill_steps_retried",
                "Steps that needed more than one attempt",
                labels=["tenant", "system"],
            )
            retries = GaugeMetricFamily(
                "fulfill_step_retries",
                "Attempts beyond the first, summed over steps",
                labels=["tenant", "system"],
            )
            for tenant, system, steps, extra in session.exec(
                select(
                    StepRecord.tenant_id,
                    StepRecord.system,
                    func.count(),
                    func.sum(col(StepRecord.attempts) - 1),
                )
                .where(col(StepRecord.attempts) > 1)
                .group_by(StepRecord.tenant_id, StepRecord.system)
            ):
                retried.add_metric([tenant, system], steps)
                retries.add_metric([tenant, system], extra or 0)
            yield retried
            yield retries

            errors: Counter[tuple[str, str]] = Counter()
            for tenant, details in session.exec(
                select(LedgerEntry.tenant_id, LedgerEntry.details).where(
                    col(LedgerEntry.event_type).in_(ERROR_EVENTS)
                )
            ):
                error = (details or {}).get("error") or {}
                errors[(tenant, str(error.get("error") or "unknown"))] += 1
            connector_errors = GaugeMetricFamily(
                "fulfill_connector_errors",
                "Connector errors by class (failed steps and scheduled retries, from the ledger)",
                labels=["tenant", "error_class"],
            )
            for (tenant, error_class), count in sorted(errors.items()):
                connector_errors.add_metric([tenant, error_class], count)
            yield connector_errors

            undelivered = col(Signal.delivered_at).is_(None)
            states = {
                "pending": sa.and_(undelivered, col(Signal.dead_lettered_at).is_(None)),
                "retrying": sa.and_(
                    undelivered, col(Signal.dead_lettered_at).is_(None), col(Signal.delivery_attempts) > 0
                ),
                "dead_lettered": col(Signal.dead_lettered_at).is_not(None),
            }
            signals = GaugeMetricFamily(
                "fulfill_signals", "Outcome signals not yet delivered", labels=["state"]
            )
            for state, condition in states.items():
                signals.add_metric(
                    [state], session.exec(select(func.count()).select_from(Signal).where(condition)).one()
                )
            yield signals

            yield _latency(session)

            up = GaugeMetricFamily(
                "fulfill_connector_up", "Latest connector-health check (1 ok)", labels=["tenant", "provider"]
            )
            latency = GaugeMetricFamily(
                "fulfill_connector_check_latency_seconds",
                "Latency of the latest check",
                labels=["tenant", "provider"],
            )
            age = GaugeMetricFamily(
                "fulfill_connector_check_age_seconds",
                "Seconds since the latest check",
                labels=["tenant", "provider"],
            )
            for row in session.exec(select(ConnectorHealth)):
                labels = [row.tenant_id, row.provider]
                up.add_metric(labels, 1 if row.ok else 0)
                latency.add_metric(labels, (row.latency_ms or 0) / 1000)
                if row.checked_at is not None:
                    age.add_metric(labels, max((now - row.checked_at).total_seconds(), 0.0))
            yield up
            yield latency
            yield age


def _latency(session: Any) -> Metric:
    """Step latency (checkpoint → result) per provider system, from finished step records."""
    histogram = HistogramMetricFamily(
        "fulfill_step_duration_seconds", "Step latency, checkpoint to result", labels=["system"]
    )
    by_system: dict[str, list[float]] = {}
    for system, started, finished in session.exec(
        select(StepRecord.system, StepRecord.started_at, StepRecord.finished_at).where(
            col(StepRecord.started_at).is_not(None),
            col(StepRecord.finished_at).is_not(None),
            col(StepRecord.status).in_([StepStatus.SUCCEEDED, StepStatus.FAILED]),
        )
    ):
        by_system.setdefault(system, []).append(max((finished - started).total_seconds(), 0.0))
    for system, values in sorted(by_system.items()):
        buckets = [(str(bound), float(sum(1 for v in values if v <= bound))) for bound in LATENCY_BUCKETS]
        buckets.append(("+Inf", float(len(values))))
        histogram.add_metric([system], buckets, sum_value=sum(values))
    return histogram


def metrics_text(engine: Engine | None = None) -> bytes:
    """The Prometheus exposition of the database's figures now."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FulfillCollector(engine))
    return generate_latest(registry)


@router.get("/metrics", response_class=Response, summary="Prometheus metrics, computed from the database")
def metrics() -> Response:
    return Response(content=metrics_text(), media_type=CONTENT_TYPE_LATEST)


@router.get(
    "/connectors/health", response_model=list[ConnectorHealthPublic], summary="Latest connector checks"
)
def connectors_health(tenant_id: str | None = None) -> list[ConnectorHealthPublic]:
    """The latest ``connector-health`` check per tenant and provider (``?tenant_id=`` for one tenant)."""
    return latest_health(tenant_id)
