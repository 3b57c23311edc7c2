"""Connector calls as retryable Prefect tasks.

* ``run_step`` — one external write. Before EVERY attempt (retries included) it checks, in one
  database transaction, the kill switches, the TTL against the database clock, and the lease
  (a cancelled or taken-over execution raises ``LeaseLost``). Retries happen only for errors
  that say they are retryable (``retry_condition_fn``), with the same idempotency key; the
  result is persisted and cached under the step's key so a rerun skips a finished step.
  The TTL is checked once more immediately before each provider request leaves (after any token
  fetch), and no request stays outstanding past the expiry: the time left on the database clock
  travels to the send path as a deadline (``connectors.http.send_deadline``) that refuses a request
  starting too late (``DeadlinePassed`` → ``Halted(EXPIRED)``) and caps every request's timeouts. A
  write cut in flight is ``OutcomeUnknown``: the flow's lookup — refused after expiry, so the undo's
  — settles it; it never counts as a success.
* ``lookup_step`` — did an attempt whose answer was lost commit anyway?
* ``compensate_step`` — undo a committed step (retried on transient errors too).

Retry policy of ``run_step`` (:func:`make_retry_condition`): never retry before the provider
allows, and never plan a wait that ends at or after the approval's ``expires_at_epoch``.

* An error that says when to come back (``retry_after``: ``Retry-After``, HubSpot's 10-second
  burst window, its daily reset) is retried only after waiting the FULL ``retry_after`` — no
  cap — and up to :data:`RATE_LIMIT_RETRIES` times, so a rate-limit window can be waited out.
  Other transient errors get :data:`DEFAULT_RETRIES` retries. Prefect's own backoff
  (:data:`RETRY_DELAYS`, jittered) comes on top of the wait; it only ever makes the retry later.
* Before a retry, the TTL left is read on the DATABASE clock (as :func:`guard_external_call`
  does). When the wait plus the longest backoff would reach the expiry, there is no retry: the
  error stands and the step fails with its own code (``RETRIES_EXHAUSTED`` for a rate limit).
  Nothing is ledgered then; a planned retry is ledgered ``STEP_RETRY_SCHEDULED`` with its wait.
* While waiting, the execution's lease (:data:`fulfill.executions.DEFAULT_LEASE_SECONDS`, 15 s) is
  renewed every :data:`LEASE_RENEWAL_SECONDS` (as often as the flow's heartbeat,
  ``fulfill.heartbeat.keep_alive``, which also runs), each time in its own transaction; a cancelled
  or taken-over execution (``LeaseLost``) ends the wait and the retries within those seconds. Waits
  go through the module-level :func:`sleep`, which tests replace.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from prefect import task
from prefect.client.schemas.objects import State, TaskRun
from prefect.context import TaskRunContext
from prefect.tasks import Task, exponential_backoff

from connectors.base import StepCall, StepResult
from connectors.errors import ConnectorError, OutcomeUnknown
from connectors.http import DeadlinePassed, send_deadline
from fulfill import executions
from fulfill.controls import blocked_reason
from fulfill.db import get_engine, transaction
from fulfill.executions import HEARTBEAT_SECONDS, Lease, LeaseLost
from fulfill.settings import load_settings
from fulfill.states import HaltKind
from tasks.resolve import resolve_connector

DEFAULT_RETRIES = 3
# Retries of an error carrying ``retry_after`` (a rate limit): each waits the full delay; the TTL bounds them.
RATE_LIMIT_RETRIES = 6
# Prefect's delay before retry n (the last repeats), jittered up to +RETRY_JITTER_FACTOR.
RETRY_DELAYS = [0.5, 1.0, 2.0]
RETRY_JITTER_FACTOR = 0.2
# A wait renews the lease (15 s) in chunks this long: well within it, and a cancellation ends the wait soon.
LEASE_RENEWAL_SECONDS = HEARTBEAT_SECONDS
# The longest Retry-After a lookup or an undo waits out (the flow's heartbeat keeps the lease meanwhile).
SHORT_RETRY_AFTER_SECONDS = 30.0
sleep = time.sleep  # module-level so tests can observe waits


class Halted(Exception):
    """An operator control or the TTL stopped the execution before an external call started.

    Args:
        kind: ``KILL_SWITCH`` or ``EXPIRED``.
        reason: Operator-facing sentence.
    """

    def __init__(self, kind: HaltKind, reason: str) -> None:
        super().__init__(f"{kind}: {reason}")
        self.kind = kind
        self.reason = reason

    def __reduce__(self) -> tuple[Any, ...]:
        return (Halted, (self.kind, self.reason))


def guard_external_call(lease: Lease, call: StepCall, *, count: bool, undoing: bool = False) -> int:
    """The check before any external call: kill switches, TTL (database clock) and the lease.

    Args:
        count: Count this as one attempt of the step (a forward call, not a lookup).
        undoing: The call undoes (or looks up in order to undo) our own earlier work: the kill
            switches still apply (contract §8: every external call stops, compensations included),
            the TTL does not, and the lease may belong to a cancelled execution that owes its undo.

    Returns:
        The attempt number when ``count`` is true (else 0).

    Raises:
        Halted: a kill switch is engaged or the approval expired.
        LeaseLost: the execution was cancelled or taken over.
    """
    return _guard(lease, call, count=count, undoing=undoing)[0]


def _guard(lease: Lease, call: StepCall, *, count: bool, undoing: bool = False) -> tuple[int, float | None]:
    """:func:`guard_external_call`, plus the approval's seconds left (``None`` when undoing: no TTL)."""
    with transaction(get_engine()) as session:
        reason = blocked_reason(session, lease.tenant_id, call.action_type)
        if reason:
            raise Halted(HaltKind.KILL_SWITCH, reason)
        # Measured from before the clock is read: the deadline errs early, never late.
        asked = time.monotonic()
        execution, now = executions.fence_with_clock(session, lease, settling=undoing)
        left = None if undoing else execution.expires_at_epoch - now.timestamp()
        if left is not None and left <= 0:
            raise Halted(HaltKind.EXPIRED, "the approval expired before this step could start")
        attempt = executions.count_attempt(session, lease, call.step) if count else 0
    return attempt, None if left is None else left - (time.monotonic() - asked)


def _expired_at_send(exc: DeadlinePassed) -> Halted:
    return Halted(HaltKind.EXPIRED, exc.detail)


def step_cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    """Cache key: the step's idempotency key (intent, step, generation) plus the execution's fingerprint."""
    return str(parameters["cache_key"])


def make_retry_condition(
    lease: Lease, call: StepCall
) -> Callable[[Task[..., Any], TaskRun, State[Any]], bool]:
    """A ``retry_condition_fn``: retryable ConnectorErrors only, never early, within the TTL (module doc).

    It waits ``retry_after`` itself (renewing the lease) before answering ``True``, ledgers each
    planned retry, and answers ``False`` — no retry, the error stands — when the wait would reach
    the approval's expiry on the database clock, when the retries for this kind of error are used
    up, or when the lease is lost.
    """

    def should_retry(task: Task[..., Any], task_run: TaskRun, state: State[Any]) -> bool:
        error = state.result(raise_on_failure=False)
        if not isinstance(error, ConnectorError) or not error.retryable:
            return False
        retries_done = task_run.run_count - 1
        limit = DEFAULT_RETRIES if error.retry_after is None else RATE_LIMIT_RETRIES
        if retries_done >= limit:
            return False
        wait = error.retry_after or 0.0
        backoff = _longest_backoff(task, retries_done)
        try:
            with transaction(get_engine()) as session:
                execution, now = executions.fence_with_clock(session, lease)
                ttl_left = execution.expires_at_epoch - now.timestamp()
                if wait + backoff >= ttl_left:
                    return False  # the retry could not start before the approval expires
                executions.step_retry_scheduled(
                    session,
                    lease.tenant_id,
                    lease.action_intent_id,
                    call.step,
                    task_run.run_count,
                    error.as_dict(),
                    wait_seconds=wait,
                    backoff_seconds_max=backoff,
                )
        except LeaseLost:
            return False
        return _wait_keeping_lease(lease, wait)

    return should_retry


def _step_retry(task: Task[..., Any], task_run: TaskRun, state: State[Any]) -> bool:
    """``run_step``'s own retry condition: :func:`make_retry_condition` for the run's lease and call.

    So a plain ``run_step(...)`` retries nothing but retryable ConnectorErrors either (a ``Halted``
    or ``LeaseLost`` is final); the flow passes the same condition explicitly.
    """
    context = TaskRunContext.get()
    if context is None or not context.parameters:
        return False
    parameters = context.parameters
    return make_retry_condition(parameters["lease"], parameters["call"])(task, task_run, state)


def _longest_backoff(task: Task[..., Any], retries_done: int) -> float:
    """The longest delay Prefect adds before the next retry (its delay list, jitter included)."""
    delays = task.retry_delay_seconds
    if isinstance(delays, Sequence):
        delay = float(delays[min(retries_done, len(delays) - 1)]) if delays else 0.0
    else:
        delay = float(delays or 0.0)
    return delay * (1 + (task.retry_jitter_factor or 0.0))


def _wait_keeping_lease(lease: Lease, seconds: float) -> bool:
    """Sleep ``seconds`` in chunks, renewing the lease after each; ``False`` once the lease is lost."""
    left = seconds
    while left > 0:
        chunk = min(left, LEASE_RENEWAL_SECONDS)
        sleep(chunk)
        left -= chunk
        try:
            with transaction(get_engine()) as session:
                executions.fence(session, lease)
        except LeaseLost:
            return False
    return True


@task(
    name="connector-step",
    retries=RATE_LIMIT_RETRIES,  # errors without retry_after stop after DEFAULT_RETRIES (make_retry_condition)
    retry_delay_seconds=RETRY_DELAYS,
    retry_jitter_factor=RETRY_JITTER_FACTOR,
    retry_condition_fn=_step_retry,
    cache_key_fn=step_cache_key,
    persist_result=True,
    log_prints=False,
)
def run_step(call: StepCall, lease: Lease, cache_key: str) -> StepResult:
    """Perform one step through its connector (idempotent by the call's key).

    An attempt whose answer was lost (:class:`OutcomeUnknown`) may still commit at the provider
    for a while: the step is marked unsettled until then, so an undo waits for it and confirms.
    """
    attempt, left = _guard(lease, call, count=True)
    try:
        with send_deadline(left):  # the last TTL check is at send time, after any token fetch
            connector = resolve_connector(lease.tenant_id, call.action_type)
            return connector.execute(call.model_copy(update={"attempt": max(attempt, 1)}))
    except DeadlinePassed as exc:
        raise _expired_at_send(exc) from None
    except OutcomeUnknown:
        with transaction(get_engine()) as session:
            executions.mark_unsettled(session, lease, call.step, seconds=load_settings().late_commit_seconds)
        raise


def _retryable_only(task: Task[..., Any], task_run: TaskRun, state: State[Any]) -> bool:
    """Retry condition of lookups and compensations: retryable ConnectorErrors only, never early.

    A wait the provider asks for (``retry_after``) is honoured in full when it is short (at most
    :data:`SHORT_RETRY_AFTER_SECONDS`); a longer one ends the retries — the lookup or undo then fails
    and a person is flagged, rather than holding a worker or calling too early. The lease is kept by
    the heartbeat of the work around it (``fulfill.heartbeat.keep_alive``), not by this wait.
    """
    error = state.result(raise_on_failure=False)
    if not isinstance(error, ConnectorError) or not error.retryable:
        return False
    if error.retry_after:
        if error.retry_after > SHORT_RETRY_AFTER_SECONDS:
            return False
        sleep(error.retry_after)
    return True


@task(
    name="connector-lookup",
    retries=2,
    retry_delay_seconds=1,
    retry_condition_fn=_retryable_only,
)
def lookup_step(call: StepCall, lease: Lease, undoing: bool = False) -> StepResult | None:
    """Ask the provider whether an attempt whose answer was lost committed (within the TTL unless undoing)."""
    _, left = _guard(lease, call, count=False, undoing=undoing)
    try:
        with send_deadline(left):
            return resolve_connector(lease.tenant_id, call.action_type).lookup(call)
    except DeadlinePassed as exc:
        raise _expired_at_send(exc) from None


@task(
    name="connector-compensate",
    retries=DEFAULT_RETRIES,
    retry_delay_seconds=exponential_backoff(backoff_factor=0.5),
    retry_condition_fn=_retryable_only,
)
def compensate_step(lease: Lease, call: StepCall, result: StepResult | None, confirm: bool) -> bool:
    """Undo what one step did at the provider (idempotent); returns whether anything was undone.

    Args:
        result: The step's recorded result, or ``None`` when its outcome is unknown.
        confirm: An attempt's answer was lost: after undoing the recorded result, look the step's
            key up and undo whatever a late commit left (the caller waited out the late-commit window).

    Raises:
        Halted: a kill switch is engaged (checked before every external call, retries included).
        LeaseLost: someone else owns the execution now.
    """
    connector = resolve_connector(call.tenant_id, call.action_type)
    undone = False
    if result is not None:
        guard_external_call(lease, call, count=False, undoing=True)
        connector.compensate(call, result)
        undone = True
    if confirm or result is None:
        guard_external_call(lease, call, count=False, undoing=True)
        found = connector.lookup(call)
        if found is not None:
            guard_external_call(lease, call, count=False, undoing=True)
            connector.compensate(call, found)
            undone = True
    return undone


def wait_until_settled(lease: Lease, unsettled_until: datetime | None) -> None:
    """Sleep until a lost answer's late-commit window has passed (database clock), keeping the lease."""
    if unsettled_until is None:
        return
    while True:
        with transaction(get_engine()) as session:
            _, now = executions.fence_with_clock(session, lease, settling=True)
            left = (unsettled_until - now).total_seconds()
        if left <= 0:
            return
        sleep(min(left, LEASE_RENEWAL_SECONDS))
