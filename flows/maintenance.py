"""Scheduled flows: reconcile stale executions, sweep expired intents, relay signals.

* ``reconcile`` — an execution still EXECUTING after its lease expired lost its worker (crash,
  SIGKILL, node loss). It is re-run through ``execute-intent``: the claim takes over the expired
  lease, finished steps are skipped, and an interrupted step is retried with the SAME provider
  key (or found with ``lookup``), so the provider never gets a duplicate. What cannot be settled
  ends FAILED ``AMBIGUOUS_OUTCOME`` with ``needs_human``.
* ``expire-sweeper`` — PENDING intents past ``expires_at_epoch`` become EXPIRED (database clock).
* ``deliver-signals`` — the outbox relay: every terminal outcome's ``ACTION_EXECUTED`` /
  ``ACTION_FAILED`` signal is emitted as a Prefect event with its stable ``signal_id``
  (at least once; consumers de-duplicate on it).
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.events import emit_event
from sqlmodel import col, select

from flows.execute_intent import ExecutionFailed, execute_intent
from fulfill.db import db_now, get_engine, transaction
from fulfill.tables import Execution, Signal

BATCH = 100


@flow(name="reconcile")
def reconcile(limit: int = BATCH, tenant_id: str | None = None) -> list[dict[str, Any]]:
    """Re-run executions whose lease expired without a terminal state (optionally one tenant's)."""
    with transaction(get_engine()) as session:
        now = db_now(session)
        query = select(Execution).where(Execution.status == "EXECUTING", col(Execution.lease_until) < now)
        if tenant_id is not None:
            query = query.where(Execution.tenant_id == tenant_id)
        stale = session.exec(query.limit(limit)).all()
        intents = [row.intent_json for row in stale]
    results = []
    for intent in intents:
        try:
            results.append(execute_intent(intent))
        except ExecutionFailed as failed:
            results.append(
                {"action_intent_id": intent.get("action_intent_id"), "status": "FAILED", "code": failed.code}
            )
    get_run_logger().info("reconciled %d stale executions", len(results))
    return results


@flow(name="expire-sweeper")
def expire_sweeper(limit: int = BATCH, tenant_id: str | None = None) -> list[dict[str, Any]]:
    """Expire PENDING intents whose approval ran out before any worker picked them up."""
    with transaction(get_engine()) as session:
        now = db_now(session)
        query = select(Execution).where(
            Execution.status == "PENDING", col(Execution.expires_at_epoch) <= int(now.timestamp())
        )
        if tenant_id is not None:
            query = query.where(Execution.tenant_id == tenant_id)
        pending = session.exec(query.limit(limit)).all()
        intents = [row.intent_json for row in pending]
    return [execute_intent(intent) for intent in intents]  # the claim records EXPIRED


@flow(name="deliver-signals")
def deliver_signals(limit: int = BATCH) -> int:
    """Emit undelivered outcome signals as Prefect events; returns how many were sent."""
    with transaction(get_engine()) as session:
        pending = session.exec(
            select(Signal)
            .where(col(Signal.delivered_at).is_(None))
            .order_by(col(Signal.created_at))
            .limit(limit)
        ).all()
        batch = [(row.signal_id, row.kind, row.payload) for row in pending]
    sent = 0
    for signal_id, kind, payload in batch:
        event = emit_event(
            event=f"fulfill.{kind.lower().replace('_', '.')}",
            resource={
                "prefect.resource.id": f"fulfill.intent.{payload['action_intent_id']}",
                "fulfill.tenant": str(payload["tenant_id"]),
                "fulfill.signal-id": signal_id,
            },
            payload=payload,
        )
        if event is None:
            continue
        with transaction(get_engine()) as session:
            row = session.get(Signal, signal_id)
            if row is not None:
                row.delivered_at = db_now(session)
                row.delivery_attempts += 1
                session.add(row)
        sent += 1
    return sent
