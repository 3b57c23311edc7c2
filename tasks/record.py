"""Recording steps: checkpoints, step outcomes and the fenced finish (each its own transaction).

They run inside the ``execute-intent`` flow as plain calls, not Prefect tasks: each is one short
database transaction, and a Prefect task run around it cost more than the write itself (its states,
events and the server's records of them: issue 13, ``docs/benchmarks.md``). The external calls stay
Prefect tasks (``tasks.connector_step``). A record whose database connection dropped is written
again (:func:`recording`), as Prefect's task retries did before.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

import sqlalchemy as sa
from tenacity import RetryCallState, retry, retry_if_exception, stop_after_attempt, wait_fixed

from connectors.base import StepCall, StepResult
from fulfill import executions
from fulfill.db import get_engine, transaction
from fulfill.executions import Failure, Lease, LeaseLost
from fulfill.states import Compensation, ExecutionStatus

P = ParamSpec("P")
R = TypeVar("R")
#: How often a record whose database connection dropped is written again.
DROPPED_CONNECTION_RETRIES = 2
log = logging.getLogger("fulfill.records")


def dropped_connection(error: BaseException) -> bool:
    """Whether a record is written again after ``error``: only when the database connection dropped.

    A connection that drops inside the transaction rolls it back, so writing it again writes it once.
    A commit whose acknowledgement was lost (rarer: the drop falls exactly on the commit) is repeated
    harmlessly by most records — the same claim returns the same lease, a step already SUCCEEDED or
    COMPENSATED is left as it is, a second finish or finish-undo finds the execution settled — but a
    repeated ``halt`` or ``record-step-failed`` writes its ledger fact a second time. Every other error
    stands.
    """
    return isinstance(error, sa.exc.DBAPIError) and bool(error.connection_invalidated)


def recording(name: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """A fenced record ``name``: its own transaction, written again after a dropped connection."""

    def warn(state: RetryCallState) -> None:
        # The class only: a driver's message quotes the statement and its parameters.
        error = state.outcome.exception() if state.outcome is not None else None
        log.warning("%s: the database connection dropped (%s); writing it again", name, type(error).__name__)

    return retry(
        retry=retry_if_exception(dropped_connection),
        stop=stop_after_attempt(1 + DROPPED_CONNECTION_RETRIES),
        wait=wait_fixed(0.2),
        before_sleep=warn,
        reraise=True,
    )


@recording("checkpoint")
def checkpoint(lease: Lease, seq: int, system: str, call: StepCall) -> None:
    """CALL_STARTED with the deterministic key, before the step's first external call."""
    with transaction(get_engine()) as session:
        executions.checkpoint(session, lease, seq=seq, system=system, call=call)


@recording("record-step-succeeded")
def record_step_succeeded(lease: Lease, step: str, result: StepResult, write_ledger: bool) -> int:
    """Mark the step SUCCEEDED (the ledger row is skipped when the connector already wrote it).

    Returns:
        The step record's id (what compensation records against).
    """
    with transaction(get_engine()) as session:
        record = executions.step_succeeded(session, lease, step, result, write_ledger=write_ledger)
        assert record.id is not None
        return record.id


@recording("record-step-failed")
def record_step_failed(lease: Lease, step: str, error: dict[str, Any], failure: Failure) -> None:
    """Mark the step FAILED and the attempt as failing with ``failure`` (its undo follows)."""
    with transaction(get_engine()) as session:
        executions.step_failed(session, lease, step, error, failure)


@recording("record-compensation")
def record_compensation(tenant_id: str, record_id: int, ok: bool, error: dict[str, Any] | None) -> None:
    """Ledger COMPENSATED / COMPENSATION_FAILED for one step."""
    with transaction(get_engine()) as session:
        executions.step_compensated(session, tenant_id, record_id, ok=ok, error=error)


@recording("halt")
def record_halt(lease: Lease, step: str, reason: str) -> None:
    """Ledger EXECUTION_HALTED: an operator control stopped the run before ``step``."""
    with transaction(get_engine()) as session:
        executions.halted(session, lease.tenant_id, lease.action_intent_id, reason=reason, before_step=step)


@recording("finish")
def finish(
    lease: Lease,
    status: ExecutionStatus,
    explanation: str,
    failure: Failure | None,
    refs: list[dict[str, Any]],
    next_generation: bool = False,
    compensation_pending: bool = False,
) -> ExecutionStatus | LeaseLost:
    """Fenced terminal transition; returns the execution's final status.

    A cancellation (or take-over) that came first is RETURNED as :class:`LeaseLost`, not raised:
    it is an expected outcome of the race, not a failed task for operators to chase.
    """
    with transaction(get_engine()) as session:
        try:
            execution = executions.finish(
                session,
                lease,
                status=status,
                explanation=explanation,
                failure=failure,
                refs=refs,
                next_generation=next_generation,
                compensation_pending=compensation_pending,
            )
        except LeaseLost as lost:
            return lost
        return execution.status


@recording("finish-undo")
def finish_undo(lease: Lease, compensation: Compensation, explanation: str, halted: bool) -> ExecutionStatus:
    """Record how undoing a terminal execution's steps ended; returns the execution's status."""
    with transaction(get_engine()) as session:
        execution = executions.finish_undo(
            session, lease, compensation=compensation, explanation=explanation, halted=halted
        )
        return execution.status


def claim_undo(action_intent_id: str, owner: str) -> Lease | None:
    """Take over an owed undo whose lease is free (the reconciler)."""
    with transaction(get_engine()) as session:
        return executions.claim_undo(session, action_intent_id, owner=owner)


def step_records(action_intent_id: str, generation: int) -> list[dict[str, Any]]:
    """The steps already recorded for this generation (so a rerun skips finished ones)."""
    with transaction(get_engine()) as session:
        return [
            record.model_dump(mode="json")
            for record in executions.steps_of(session, action_intent_id, generation)
        ]
