"""Claim: one transaction takes the execution with a lease, or says why not.

The same transaction reads what the attempt's steps need from the database — the execution's cache
fingerprint and this generation's step records — so the flow reads nothing more before its first step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from fulfill import executions
from fulfill.controls import blocked_reason
from fulfill.db import get_engine, transaction
from fulfill.executions import Lease, Refusal
from fulfill.states import ExecutionStatus, RefusalReason
from tasks.record import recording


class ClaimRefused(BaseModel):
    """Why no attempt started, with the execution's current status and latest outcome."""

    reason: RefusalReason
    status: ExecutionStatus
    explanation: str = ""
    external_refs: list[dict[str, Any]] = []


@dataclass(frozen=True)
class Claimed:
    """A new attempt: its lease, and what its steps need, read in the claim's transaction."""

    lease: Lease
    #: :func:`fulfill.executions.cache_fingerprint` of the execution (part of every step's cache key).
    fingerprint: str
    #: This generation's step records, in plan order: a rerun skips the steps that already SUCCEEDED.
    records: list[dict[str, Any]]


@recording("claim")
def claim(
    action_intent_id: str, tenant_id: str, action_type: str, owner: str, flow_run_id: str | None
) -> Claimed | ClaimRefused:
    """Kill switches, TTL (database clock) and the lease, decided in one transaction."""
    with transaction(get_engine()) as session:
        outcome = executions.claim(
            session,
            action_intent_id,
            owner=owner,
            blocked=blocked_reason(session, tenant_id, action_type),
            flow_run_id=flow_run_id,
        )
        if isinstance(outcome, Refusal):
            latest = executions.latest_outcome(session, action_intent_id)
            return ClaimRefused(
                reason=outcome.reason,
                status=outcome.execution.status,
                explanation=outcome.execution.explanation,
                external_refs=latest.external_refs if latest else [],
            )
        execution = executions.get(session, None, action_intent_id)  # the claimed instance: no read
        records = executions.steps_of(session, action_intent_id, outcome.generation)
        return Claimed(
            lease=outcome,
            fingerprint=executions.cache_fingerprint(execution),
            records=[record.model_dump(mode="json") for record in records],
        )
