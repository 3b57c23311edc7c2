"""Connector calls as retryable Prefect tasks.

* ``run_step`` — one external write. Before EVERY attempt (retries included) it checks, in one
  database transaction, the kill switches, the TTL against the database clock, and the lease
  (a cancelled or taken-over execution raises ``LeaseLost``). Retries happen only for errors
  that say they are retryable (``retry_condition_fn``), with the same idempotency key; the
  result is persisted and cached under the step's key so a rerun skips a finished step.
* ``lookup_step`` — did an attempt whose answer was lost commit anyway?
* ``compensate_step`` — undo a committed step (retried on transient errors too).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from prefect import task
from prefect.client.schemas.objects import State, TaskRun
from prefect.context import TaskRunContext
from prefect.tasks import Task, exponential_backoff

from connectors.base import StepCall, StepResult
from connectors.errors import ConnectorError
from fulfill import executions
from fulfill.controls import blocked_reason
from fulfill.db import db_now, get_engine, transaction
from fulfill.executions import Lease
from tasks.resolve import resolve_connector

DEFAULT_RETRIES = 3
MAX_RETRY_AFTER_SECONDS = 60.0


class Halted(Exception):
    """An operator control or the TTL stopped the execution before an external call started.

    Args:
        kind: ``KILL_SWITCH`` or ``EXPIRED``.
        reason: Operator-facing sentence.
    """

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(f"{kind}: {reason}")
        self.kind = kind
        self.reason = reason

    def __reduce__(self) -> tuple[Any, ...]:
        return (Halted, (self.kind, self.reason))


def guard_external_call(lease: Lease, call: StepCall, *, count: bool) -> int:
    """The check before any external call: kill switches, TTL (database clock) and the lease.

    Returns:
        The attempt number when ``count`` is true (else 0).

    Raises:
        Halted: a kill switch is engaged or the approval expired.
        LeaseLost: the execution was cancelled or taken over.
    """
    with transaction(get_engine()) as session:
        reason = blocked_reason(session, lease.tenant_id, call.action_type)
        if reason:
            raise Halted("KILL_SWITCH", reason)
        execution = executions.fence(session, lease)
        if db_now(session).timestamp() >= execution.expires_at_epoch:
            raise Halted("EXPIRED", "the approval expired before this step could start")
        return executions.count_attempt(session, lease, call.step) if count else 0


def step_cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    """Cache key: the step's idempotency key (intent, step, generation) plus the execution's fingerprint."""
    return str(parameters["cache_key"])


def make_retry_condition(
    lease: Lease, call: StepCall
) -> Callable[[Task[..., Any], TaskRun, State[Any]], bool]:
    """A ``retry_condition_fn`` that retries only retryable ConnectorErrors and ledgers each retry."""

    def should_retry(task: Task[..., Any], task_run: TaskRun, state: State[Any]) -> bool:
        error = state.result(raise_on_failure=False)
        if not isinstance(error, ConnectorError) or not error.retryable:
            return False
        with transaction(get_engine()) as session:
            executions.step_retry_scheduled(
                session,
                lease.tenant_id,
                lease.action_intent_id,
                call.step,
                task_run.run_count,
                error.as_dict(),
            )
        if error.retry_after:
            # Honour Retry-After on top of the configured backoff (bounded).
            time.sleep(min(error.retry_after, MAX_RETRY_AFTER_SECONDS))
        return True

    return should_retry


@task(
    name="connector-step",
    retries=DEFAULT_RETRIES,
    retry_delay_seconds=exponential_backoff(backoff_factor=0.5),
    retry_jitter_factor=0.2,
    cache_key_fn=step_cache_key,
    persist_result=True,
    log_prints=False,
)
def run_step(call: StepCall, lease: Lease, cache_key: str) -> StepResult:
    """Perform one step through its connector (idempotent by the call's key)."""
    guard_external_call(lease, call, count=True)
    connector = resolve_connector(lease.tenant_id, call.action_type)
    return connector.execute(call)


@task(name="connector-lookup", retries=2, retry_delay_seconds=1)
def lookup_step(call: StepCall, lease: Lease) -> StepResult | None:
    """Ask the provider whether an attempt whose answer was lost committed."""
    guard_external_call(lease, call, count=False)
    return resolve_connector(lease.tenant_id, call.action_type).lookup(call)


def _compensation_retry(task: Task[..., Any], task_run: TaskRun, state: State[Any]) -> bool:
    error = state.result(raise_on_failure=False)
    return isinstance(error, ConnectorError) and error.retryable


@task(
    name="connector-compensate",
    retries=DEFAULT_RETRIES,
    retry_delay_seconds=exponential_backoff(backoff_factor=0.5),
    retry_condition_fn=_compensation_retry,
)
def compensate_step(call: StepCall, result: StepResult) -> None:
    """Undo a committed step (idempotent)."""
    resolve_connector(call.tenant_id, call.action_type).compensate(call, result)
