"""Scheduled flows: reconcile stale executions, sweep expired intents, relay signals.

* ``reconcile`` — an execution still EXECUTING after its lease expired lost its worker (crash,
  SIGKILL, node loss). It is re-run through ``execute-intent``: the claim takes over the expired
  lease, finished steps are skipped, and an interrupted step is retried with the SAME provider
  key (or found with ``lookup``), so the provider never gets a duplicate. What cannot be settled
  ends FAILED ``AMBIGUOUS_OUTCOME`` with ``needs_human``.
* ``expire-sweeper`` — PENDING intents past ``expires_at_epoch`` become EXPIRED (database clock).
* ``deliver-signals`` — the outbox relay: every terminal outcome's ``ACTION_EXECUTED`` /
  ``ACTION_FAILED`` signal is emitted as a Prefect event and to the configured sinks (signed
  webhooks, EventBridge; ``tasks/signals.py``) with its stable ``signal_id`` (at least once;
  consumers de-duplicate on it), retried with backoff, dead-lettered after ``max_attempts``.
"""

from __future__ import annotations

import contextvars
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import httpx
import sqlalchemy as sa
from prefect import flow, get_run_logger
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.objects import FlowRun, State, StateType
from prefect.exceptions import ObjectNotFound
from prefect.runtime import flow_run
from prefect.states import Cancelled, Completed, Failed
from sqlmodel import col, select

from flows.execute_intent import ExecutionFailed, ExecutionResult, execute_intent, settle_owed_undo
from fulfill import executions
from fulfill.controls import blocked_reason
from fulfill.db import db_now, get_engine, transaction
from fulfill.executions import LeaseLost
from fulfill.states import ExecutionStatus
from fulfill.tables import Execution, Signal
from tasks.anchor import anchor_ledger
from tasks.record import claim_undo
from tasks.signals import (
    BACKOFF_SECONDS,
    MAX_ATTEMPTS,
    OutgoingSignal,
    configured_sinks,
    deliver_to_all,
    next_delay,
)

BATCH = 100
#: Takeovers run at the same time by one reconciler pass (each waits mostly on the database and providers).
TAKEOVERS_AT_ONCE = 4
#: A PENDING intent whose run started (or ended) without claiming it for this long lost its executor
#: between admission and claim (admission takes milliseconds). A live run that claims after a takeover
#: is refused (claims are serialised), so a short grace costs nothing in correctness.
PENDING_GRACE_SECONDS = 10.0
#: A PENDING intent with no flow run yet: the intake may still be creating it.
NO_RUN_GRACE_SECONDS = 60.0
WAITING_STATES = frozenset({StateType.SCHEDULED, StateType.PENDING, StateType.PAUSED})
#: While watching, PENDING orphans are looked for this often, not at every pass (one Prefect API read
#: per look, and they wait ``pending_grace_seconds`` anyway).
ORPHANS_EVERY_SECONDS = 5.0


@flow(name="reconcile")
def reconcile(
    limit: int = BATCH,
    tenant_id: str | None = None,
    pending_grace_seconds: float = PENDING_GRACE_SECONDS,
    watch_seconds: float = 0,
    every_seconds: float = 2.0,
) -> list[ExecutionResult]:
    """Settle what runs left behind (optionally one tenant's), in three kinds.

    * EXECUTING with an expired lease: its worker died; re-run it (finished steps are skipped). A live
      executor renews its 15 s lease every 3 s (``fulfill.heartbeat``), so a lease runs out only
      when its executor is gone.
    * PENDING for longer than ``pending_grace_seconds`` whose Prefect run is not waiting to start
      (scheduled, late or pending — e.g. held by a paused work pool): the run died between
      registration and claim, or was never created; run it now (the claim expires it if its TTL passed).
    * An owed undo (cancelled mid-call, or an undo a kill switch stopped) whose lease is free and
      whose kill switches are released: finish undoing it.

    Args:
        watch_seconds: Keep watching this long from the run's scheduled start, a pass every
            ``every_seconds``, so a dead executor is taken over seconds after its lease runs out (the
            deployment: a minute per run, one run after another). A run that starts late watches only
            what is left of its window, and one whose window has passed makes one pass: a backlog of
            scheduled runs after downtime is worked off in seconds, not a minute each. ``0``: one pass.
        every_seconds: Pause between two passes while watching.

    Two reconcilers at once (a watching run overlapping the next, an operator's ``fulfill reconcile``)
    are safe: every takeover is a fenced claim in one transaction, so only one of them gets each lease.

    Returns:
        What every pass settled, in order.
    """
    if watch_seconds < 0:
        raise ValueError(f"watch_seconds: must be 0 (one pass) or more, not {watch_seconds}")
    if every_seconds <= 0:
        raise ValueError(f"every_seconds: must be more than 0, not {every_seconds}")
    watch_seconds = _window_left(watch_seconds)
    started = orphans_seen = time.monotonic()
    orphans = True  # the first pass looks for them; while watching, every ORPHANS_EVERY_SECONDS
    results: list[ExecutionResult] = []
    with _Takeovers(watching=watch_seconds > 0) as takeovers:
        while True:
            results += takeovers.guarded(
                "pass",
                partial(_reconcile_pass, limit, tenant_id, pending_grace_seconds, takeovers, orphans=orphans),
            )
            if (left := started + watch_seconds - time.monotonic()) <= 0:
                break
            time.sleep(min(every_seconds, left))
            orphans = time.monotonic() - orphans_seen >= ORPHANS_EVERY_SECONDS
            if orphans:
                orphans_seen = time.monotonic()
        results += takeovers.finish()
    get_run_logger().info("reconciled %d executions", len(results))
    if takeovers.failing:
        raise ReconcileIncomplete(takeovers.failing)
    return results


def _window_left(watch_seconds: float) -> float:
    """Seconds left of a watch window that began at this run's scheduled start (if it has one)."""
    scheduled: datetime | None = flow_run.scheduled_start_time
    if scheduled is None:
        return watch_seconds
    late = (datetime.now(tz=UTC) - scheduled).total_seconds()
    return max(0.0, watch_seconds - max(0.0, late))


class ReconcileIncomplete(Exception):
    """A reconcile run ended with passes or takeovers that failed and did not succeed when tried again.

    Each was logged when it failed and the run went on (a dropped connection to the database or the
    Prefect API must not end a watching run for the minute it has left); the run then ends Failed, so
    it shows in the UI and alerts, and the next scheduled run tries them again.
    """

    def __init__(self, failing: dict[str, str]) -> None:
        self.failing = dict(failing)
        listed = "; ".join(f"{what}: {error}" for what, error in failing.items())
        super().__init__(f"{len(failing)} still failing at the end of the run ({listed})")


class _Takeovers:
    """The takeovers and undos one reconcile run has under way, up to :data:`TAKEOVERS_AT_ONCE` at a time.

    At once, because one takeover can wait long (a Retry-After, a HubSpot search settling): executors
    that died together must not queue behind it, and while watching, a pass does not wait for the
    takeovers the passes before it started (an intent already under way is not started twice). Each
    is its own subflow run, started from a thread that carries this run's context (so Prefect links it
    as a child of this run).
    """

    def __init__(self, *, watching: bool) -> None:
        self.watching = watching
        self.pool = ThreadPoolExecutor(max_workers=TAKEOVERS_AT_ONCE, thread_name_prefix="takeover")
        self.running: dict[str, Future[ExecutionResult | None]] = {}  # in the order started
        #: What failed (a pass, or an intent's takeover) and has not succeeded since: its last error.
        self.failing: dict[str, str] = {}

    def guarded(self, what: str, work: Callable[[], list[ExecutionResult]]) -> list[ExecutionResult]:
        """Run one pass; a failure is logged and remembered, and the run goes on to the next pass."""
        try:
            results = work()
        except Exception as exc:  # noqa: BLE001 — any error: the next pass tries again
            self._failed(what, exc)
            return []
        self.failing.pop(what, None)
        return results

    def _failed(self, what: str, exc: BaseException) -> None:
        self.failing[what] = f"{type(exc).__name__}: {exc}"
        get_run_logger().warning("%s failed (%s); the next pass tries again", what, self.failing[what])

    def __enter__(self) -> _Takeovers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.pool.shutdown(wait=True)

    def busy(self, action_intent_id: str) -> bool:
        """Whether this intent's takeover or undo is under way here."""
        return action_intent_id in self.running

    def start(self, action_intent_id: str, work: Callable[[], ExecutionResult | None]) -> None:
        """Start ``work`` for an intent not already under way."""
        if not self.busy(action_intent_id):
            self.running[action_intent_id] = self.pool.submit(contextvars.copy_context().run, work)

    def collect(self, *, wait: bool) -> list[ExecutionResult]:
        """Results of what has finished (everything, with ``wait``), in the order it was started."""
        done: list[ExecutionResult] = []
        for intent_id, future in list(self.running.items()):
            if wait or future.done():
                del self.running[intent_id]
                try:
                    result = future.result()
                except Exception as exc:  # noqa: BLE001 — its lease runs out again; the next pass retries it
                    self._failed(intent_id, exc)
                    continue
                self.failing.pop(intent_id, None)
                if result is not None:
                    done.append(result)
        return done

    def finish(self) -> list[ExecutionResult]:
        """Wait for everything still under way."""
        return self.collect(wait=True)


def _reconcile_pass(
    limit: int, tenant_id: str | None, pending_grace_seconds: float, takeovers: _Takeovers, *, orphans: bool
) -> list[ExecutionResult]:
    """One look at every kind :func:`reconcile` settles (PENDING orphans only when ``orphans``).

    Its queries select open executions only — EXECUTING, PENDING, an undo owed — each bounded by
    ``limit``; they stay cheap however many finished executions there are as long as they read index
    ranges (``status, lease_until`` and ``compensation_pending, lease_until``).
    """
    with transaction(get_engine()) as session:
        now = db_now(session)
        scoped = (Execution.tenant_id == tenant_id) if tenant_id is not None else sa.true()
        stale = session.exec(
            select(Execution.action_intent_id, Execution.flow_run_id)
            .where(Execution.status == ExecutionStatus.EXECUTING, col(Execution.lease_until) < now, scoped)
            .limit(limit)
        ).all()
        held = session.exec(
            select(Execution.action_intent_id, Execution.flow_run_id, Execution.lease_owner)
            .where(
                Execution.status == ExecutionStatus.EXECUTING,
                col(Execution.lease_until) >= now,
                col(Execution.flow_run_id).is_not(None),
                scoped,
            )
            .limit(limit)
        ).all()
        pending = (
            session.exec(
                select(Execution.action_intent_id, Execution.flow_run_id, Execution.updated_at)
                .where(
                    Execution.status == ExecutionStatus.PENDING,
                    col(Execution.updated_at) < now - timedelta(seconds=pending_grace_seconds),
                    scoped,
                )
                .limit(limit)
            ).all()
            if orphans
            else []
        )
    for intent_id, run_id in [*stale, *_dead_executors(held), *_orphans(pending, now)]:
        takeovers.start(intent_id, partial(_take_over, intent_id, run_id))
    results = takeovers.collect(wait=not takeovers.watching)  # one pass: undos owed after its reruns too
    with transaction(get_engine()) as session:  # after the reruns: a takeover past expiry leaves an undo owed
        now = db_now(session)
        owed = [
            (intent_id, ExecutionStatus(status))
            for intent_id, status, row_tenant, action_type in session.exec(
                select(
                    Execution.action_intent_id, Execution.status, Execution.tenant_id, Execution.action_type
                )
                .where(
                    col(Execution.compensation_pending).is_(True),
                    sa.or_(col(Execution.lease_until).is_(None), col(Execution.lease_until) < now),
                    scoped,
                )
                .limit(limit)
            )
            if blocked_reason(session, row_tenant, action_type) is None
        ]
    for intent_id, status in owed:
        takeovers.start(intent_id, partial(_finish_undo, intent_id, status))
    results += takeovers.collect(wait=not takeovers.watching)
    if results:
        get_run_logger().info("this pass reconciled %d executions", len(results))
    return results


def _take_over(action_intent_id: str, flow_run_id: str | None) -> ExecutionResult:
    """Re-run an execution a dead executor left, then give the dead executor's Prefect run its final state."""
    return _settle_run(flow_run_id, _rerun(action_intent_id))


def _rerun(action_intent_id: str) -> ExecutionResult:
    try:
        return execute_intent(action_intent_id=action_intent_id)
    except ExecutionFailed as failed:
        return ExecutionResult(
            action_intent_id=action_intent_id,
            status=ExecutionStatus.FAILED,
            code=failed.code,
            explanation=failed.message,
        )


def _dead_executors(held: Sequence[tuple[str, str | None, str | None]]) -> list[tuple[str, str | None]]:
    """EXECUTING intents whose lease is live but whose Prefect run already ended (crashed, killed, …).

    A flow-run process killed outright runs no hook; its worker reports the run Crashed. Its lease is
    released here so the takeover happens now, not when the lease (minutes) runs out.
    """
    runs = {run_id: (intent_id, owner) for intent_id, run_id, owner in held if run_id and owner}
    if not runs:
        return []
    try:
        ids = [uuid.UUID(run_id) for run_id in runs]
    except ValueError:
        return []
    dead: list[tuple[str, str | None]] = []
    current = flow_run.get_id()
    for run in _flow_runs(ids).values():
        run_id = str(run.id)
        intent_id, owner = runs[run_id]
        if run_id == current or run.state is None or not run.state.is_final():
            continue
        if owner is None or not owner.startswith(f"{run_id}/"):
            continue  # another executor holds it now
        with transaction(get_engine()) as session:
            if executions.release_dead_lease(session, intent_id, owner):
                get_run_logger().warning(
                    "%s: its run %s ended %s while executing; taking it over now",
                    intent_id,
                    run_id,
                    run.state.type,
                )
                dead.append((intent_id, run_id))
    return dead


def _flow_runs(ids: list[uuid.UUID]) -> dict[uuid.UUID, FlowRun]:
    """The Prefect runs with these ids (those that exist), in one API read."""
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)))
    return {run.id: run for run in runs}


def orphan_state(result: ExecutionResult, by: str | None) -> State[Any]:
    """The final state for a run whose worker was lost, matching how the reconciler ended its execution.

    The same mapping as :func:`flows.execute_intent.run_state` (EXPIRED and CANCELLED are Cancelled
    runs, FAILED a Failed one), with a message that says who finished the execution.
    """
    message = (
        f"Its worker was lost; the reconciler (run {by or 'unknown'}) ended the execution {result.status}."
    )
    if result.status == ExecutionStatus.SUCCEEDED:
        return Completed(message=message)
    if result.status == ExecutionStatus.CANCELLED:
        return Cancelled(message=message)
    if result.status == ExecutionStatus.EXPIRED:
        return Cancelled(name="Expired", message=message)
    return Failed(message=message)


def _settle_run(flow_run_id: str | None, result: ExecutionResult) -> ExecutionResult:
    """Give the intent's earlier Prefect run, left RUNNING/PENDING by its dead worker, a final state.

    Only a run that is not final yet is touched (a Crashed or Failed run already says what happened),
    and only once the execution is terminal; the reconciler's own run is never changed here.
    """
    terminal = {
        ExecutionStatus.SUCCEEDED,
        ExecutionStatus.FAILED,
        ExecutionStatus.CANCELLED,
        ExecutionStatus.EXPIRED,
    }
    current = flow_run.get_id()
    if not flow_run_id or flow_run_id == current or result.status not in terminal:
        return result
    try:
        run_id = uuid.UUID(flow_run_id)
        with get_client(sync_client=True) as client:
            run = client.read_flow_run(run_id)
            if run.state is not None and run.state.is_final():
                return result
            client.set_flow_run_state(run_id, orphan_state(result, current), force=True)
    except (ValueError, ObjectNotFound):
        return result
    except httpx.HTTPError as exc:  # the execution is settled; only its old run's display is left behind
        get_run_logger().warning(
            "%s is %s, but its orphaned run %s could not be given a final state (%s: %s)",
            result.action_intent_id,
            result.status,
            flow_run_id,
            type(exc).__name__,
            exc,
        )
        return result
    get_run_logger().info("settled the orphaned run %s of %s", flow_run_id, result.action_intent_id)
    return result


def _orphans(
    pending: Sequence[tuple[str, str | None, datetime | None]], now: datetime
) -> list[tuple[str, str | None]]:
    """PENDING intents whose run died between registration and claim, or was never created.

    A run still waiting to start (scheduled, late, pending, paused: a paused work pool holds it) is not
    an orphan. An intent with no run yet is given :data:`NO_RUN_GRACE_SECONDS` (the intake may still be
    creating it — slowly, on a busy SQLite-backed Prefect server — and a paused pool must hold it then
    too); one whose run started or ended without claiming it is an orphan after the pass's grace.
    One Prefect API read for all of them.
    """
    runs: dict[uuid.UUID, str] = {}
    orphans: list[tuple[str, str | None]] = []
    for intent_id, run_id, updated_at in pending:
        try:
            runs[uuid.UUID(run_id or "")] = intent_id
        except ValueError:
            quiet = (now - updated_at).total_seconds() if updated_at is not None else NO_RUN_GRACE_SECONDS
            if quiet >= NO_RUN_GRACE_SECONDS:
                orphans.append((intent_id, run_id))
    if not runs:
        return orphans
    found = _flow_runs(list(runs))
    for key, intent_id in runs.items():
        run = found.get(key)
        if run is None or run.state is None or run.state.type not in WAITING_STATES:
            orphans.append((intent_id, str(key)))
    return orphans


def _finish_undo(action_intent_id: str, status: ExecutionStatus) -> ExecutionResult | None:
    lease = claim_undo(action_intent_id, f"reconcile/{uuid.uuid4().hex[:12]}")
    if lease is None:
        return None  # someone else holds it, or it is settled
    try:
        return settle_owed_undo(lease, status)
    except LeaseLost:
        return None


@flow(name="expire-sweeper")
def expire_sweeper(limit: int = BATCH, tenant_id: str | None = None) -> list[ExecutionResult]:
    """Expire PENDING intents whose approval ran out before any worker picked them up."""
    with transaction(get_engine()) as session:
        now = db_now(session)
        query = select(Execution.action_intent_id).where(
            Execution.status == ExecutionStatus.PENDING,
            col(Execution.expires_at_epoch) <= int(now.timestamp()),
        )
        if tenant_id is not None:
            query = query.where(Execution.tenant_id == tenant_id)
        pending = session.exec(query.limit(limit)).all()
    expired: list[ExecutionResult] = []
    for intent_id in pending:  # one transaction each: a bad row does not stop the sweep
        with transaction(get_engine()) as session:
            if executions.expire_if_due(session, intent_id):
                expired.append(
                    ExecutionResult(
                        action_intent_id=intent_id,
                        status=ExecutionStatus.EXPIRED,
                        explanation=executions.EXPIRED_BEFORE_START,
                    )
                )
    anchor_ledger([tenant_id] if tenant_id is not None else None)  # checkpoints of the ledger's heads
    return expired


@flow(name="deliver-signals")
def deliver_signals(
    limit: int = BATCH,
    max_attempts: int = MAX_ATTEMPTS,
    backoff_seconds: float = BACKOFF_SECONDS,
    tenant_id: str | None = None,
) -> int:
    """Deliver due outcome signals to every sink (a Prefect event, plus the configured webhooks and
    EventBridge bus); returns how many were delivered.

    At least once, with the stable ``signal_id``: a signal counts as delivered only when every sink
    took it, so a sink may see it again after another sink failed (consumers de-duplicate). A
    failed attempt is retried on a later run after an exponential backoff (``backoff_seconds``,
    doubling, at most an hour); after ``max_attempts`` it is dead-lettered (``dead_lettered_at``,
    ``last_error``), shown by ``GET /metrics`` and redelivered only when an operator clears it.
    """
    sinks = configured_sinks()
    with transaction(get_engine()) as session:
        now = db_now(session)
        pending = session.exec(
            select(Signal)
            .where(
                col(Signal.delivered_at).is_(None),
                col(Signal.dead_lettered_at).is_(None),
                sa.or_(col(Signal.next_attempt_at).is_(None), col(Signal.next_attempt_at) <= now),
                (Signal.tenant_id == tenant_id) if tenant_id is not None else sa.true(),
            )
            .order_by(col(Signal.created_at))
            .limit(limit)
        ).all()
        batch = [OutgoingSignal(row.signal_id, row.kind, dict(row.payload)) for row in pending]
    sent = 0
    logger = get_run_logger()
    for signal in batch:
        error = deliver_to_all(sinks, signal)
        with transaction(get_engine()) as session:
            row = session.get(Signal, signal.signal_id)
            if row is None or row.delivered_at is not None:
                continue
            now = db_now(session)
            row.delivery_attempts += 1
            if error is None:
                row.delivered_at = now
                row.next_attempt_at = None
                row.last_error = None
                sent += 1
            else:
                row.last_error = error
                if row.delivery_attempts >= max_attempts:
                    row.dead_lettered_at = now
                    row.next_attempt_at = None
                    logger.error(
                        "signal %s dead-lettered after %d attempts: %s",
                        signal.signal_id,
                        row.delivery_attempts,
                        error,
                    )
                else:
                    row.next_attempt_at = now + next_delay(row.delivery_attempts, backoff_seconds)
                    logger.warning(
                        "signal %s not delivered (attempt %d): %s",
                        signal.signal_id,
                        row.delivery_attempts,
                        error,
                    )
            session.add(row)
    return sent
