"""The execution state machine: register, claim (lease), checkpoint, fenced finish, cancel.

Every function here runs inside the caller's transaction (``fulfill.db.transaction``) and
writes its ledger row in that same transaction, so a state change and its audit fact commit
together or not at all.

States: PENDING → EXECUTING → SUCCEEDED | FAILED | EXPIRED | CANCELLED.
SUCCEEDED, EXPIRED and CANCELLED never run again; FAILED may be rerun (finished steps are skipped).
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

import rfc8785
from sqlalchemy.orm import QueryableAttribute, defer
from sqlmodel import Session, col, select

from fulfill import ledger
from fulfill.db import db_now, insert_ignore, lock_clause
from fulfill.intent import ActionIntentV1
from fulfill.redaction import storable_text
from fulfill.states import (
    Compensation,
    ExecutionStatus,
    FailureCode,
    RefusalReason,
    StepStatus,
)
from fulfill.steps import StepCall, StepResult
from fulfill.tables import Execution, Outcome, Signal, StepRecord

TERMINAL = frozenset(
    {ExecutionStatus.SUCCEEDED, ExecutionStatus.FAILED, ExecutionStatus.EXPIRED, ExecutionStatus.CANCELLED}
)
NEVER_AGAIN = frozenset({ExecutionStatus.SUCCEEDED, ExecutionStatus.EXPIRED, ExecutionStatus.CANCELLED})
FINISH_EVENT: dict[ExecutionStatus, str] = {
    ExecutionStatus.SUCCEEDED: "ACTION_EXECUTED",
    ExecutionStatus.FAILED: "ACTION_FAILED",
    ExecutionStatus.EXPIRED: "ACTION_EXPIRED",
    ExecutionStatus.CANCELLED: "ACTION_CANCELLED",
}
#: Appended to a seller message while undoing is stopped by an operator control (and replaced once done).
UNDO_PAUSED = (
    " Undoing the steps already done is paused by an operator; it finishes when the pause is released,"
    " and a person will check."
)
UNDO_DONE: dict[Compensation, str] = {
    Compensation.NONE: " Nothing had to be undone.",
    Compensation.COMPENSATED: " Everything done before the failure was undone.",
    Compensation.COMPENSATION_FAILED: " Undoing the earlier steps failed too; a person will check.",
}
#: Appended to a seller message while a failed execution's earlier steps are still being undone (its
#: executor died part-way through the undo; the reconciler finishes it), and replaced once done.
UNDO_UNDER_WAY = " The steps already done are being undone."
EXPIRED_BEFORE_START = "The approval expired before the action could start; nothing was done."
SIGNAL_NAMESPACE = uuid.UUID("6f1c8f5e-3d0a-4c55-9a51-0c7e4c1f2a10")
#: How long a lease lasts without renewal. A live executor renews it every :data:`HEARTBEAT_SECONDS`
#: (``fulfill.heartbeat.keep_alive``) and at every write, so a lease runs out only when its executor
#: died (process killed, host lost): the reconciler then notices it within this time and takes over.
DEFAULT_LEASE_SECONDS = 15
#: How often a live executor renews its lease: five renewals per lease, so a starved host (two busy
#: cores, a slow database) that misses a beat or three still keeps a lease it is using.
HEARTBEAT_SECONDS = 3.0


class IntentConflict(Exception):
    """The same ``action_intent_id`` arrived with different content."""


class ExecutionNotFound(Exception):
    """No such intent for this tenant (another tenant's id looks exactly the same)."""


class AlreadyFinished(Exception):
    """The execution is terminal; the requested change is refused."""

    def __init__(self, status: ExecutionStatus) -> None:
        super().__init__(f"the execution is already {status}")
        self.status = status

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.status,))


class NotRerunnable(Exception):
    """Only a FAILED execution can be rerun; ``status`` is what it is now."""

    def __init__(self, status: ExecutionStatus) -> None:
        super().__init__(f"only a FAILED execution can be rerun; this one is {status}")
        self.status = status

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.status,))


class LeaseLost(Exception):
    """This executor no longer owns the execution (cancelled, taken over, or finished)."""

    def __init__(self, status: ExecutionStatus) -> None:
        super().__init__(f"lease lost: execution is {status}")
        self.status = status

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.status,))


@dataclass(frozen=True)
class Lease:
    """Proof of ownership used to fence every later write of this attempt."""

    action_intent_id: str
    tenant_id: str
    owner: str
    attempt: int
    generation: int


@dataclass(frozen=True)
class Failure:
    """The contract's failure object (status API §5)."""

    code: FailureCode
    message: str
    needs_human: bool = False
    compensation: Compensation = Compensation.NONE

    def as_dict(self) -> dict[str, Any]:
        """JSON form (plain strings)."""
        return {
            "code": str(self.code),
            "message": self.message,
            "needs_human": self.needs_human,
            "compensation": str(self.compensation),
        }


def intent_digest(raw: dict[str, Any]) -> str:
    """SHA-256 of the intent's canonical JSON: equal digests mean the same content."""
    return hashlib.sha256(rfc8785.dumps(raw)).hexdigest()


#: The intent document's column, as the ORM's loader options take it (SQLModel types it as its value).
_INTENT_DOCUMENT = cast("QueryableAttribute[Any]", Execution.intent_json)


def cache_fingerprint(execution: Execution) -> str:
    """What makes the cache keys of an execution's steps unique to it, beside their idempotency keys.

    The intent's digest and when it was received: a step cached for another registration of the same
    id (a database that was reset, say) is not taken for this one's.
    """
    created = execution.created_at.timestamp() if execution.created_at else 0
    return f"{execution.intent_sha256[:16]}-{int(created * 1_000_000)}"


def _locked(session: Session, action_intent_id: str) -> Execution | None:
    """The execution, locked for this transaction (``FOR UPDATE`` where the database has it).

    One read: ``populate_existing`` refreshes an instance the session already holds, and the intent
    document (up to a 1 MiB brief) is left unloaded — a fence reads the row several times per intent
    and never needs it; reading ``intent_json`` later in the transaction loads it then.
    """
    query = (
        select(Execution)
        .where(Execution.action_intent_id == action_intent_id)
        .options(defer(_INTENT_DOCUMENT))
        .execution_options(populate_existing=True)
    )
    if lock_clause(session):
        query = query.with_for_update()
    return session.exec(query).first()


def get(session: Session, tenant_id: str | None, action_intent_id: str) -> Execution:
    """An execution, tenant-scoped (``tenant_id=None`` only for admins and the engine itself).

    Raises:
        ExecutionNotFound: unknown id, or an id of another tenant.
    """
    row = session.get(Execution, action_intent_id)
    if row is None or (tenant_id is not None and row.tenant_id != tenant_id):
        raise ExecutionNotFound(action_intent_id)
    return row


def register(
    session: Session,
    raw: dict[str, Any],
    intent: ActionIntentV1,
    *,
    flow_run_id: str | None = None,
    now: datetime | None = None,
) -> tuple[Execution, bool]:
    """Record an admitted intent once (PENDING). Returns ``(execution, created)``.

    Args:
        now: The database clock, when the caller has already read it in this transaction.

    Raises:
        IntentConflict: the id exists with different content (or for another tenant).
    """
    digest = intent_digest(raw)
    now = now or db_now(session)
    inserted = insert_ignore(
        session,
        Execution,
        {
            "action_intent_id": intent.action_intent_id,
            "tenant_id": intent.tenant_id,
            "account_id": intent.account_id,
            "decision_id": intent.decision_id,
            "action_type": intent.action_type,
            "status": ExecutionStatus.PENDING,
            "explanation": "Approved and waiting to be executed.",
            "needs_human": False,
            "compensation": Compensation.NONE,
            "approved_by": intent.approval.approved_by,
            "approved_at": intent.approval.approved_at,
            "expires_at_epoch": intent.expires_at_epoch,
            "flow_run_id": flow_run_id,
            "intent_json": raw,
            "intent_sha256": digest,
            "attempt": 0,
            "generation": 0,
            "created_at": now,
            "updated_at": now,
        },
    )
    execution = _locked(session, intent.action_intent_id)
    assert execution is not None
    if execution.intent_sha256 != digest:
        raise IntentConflict(
            f"action_intent_id {intent.action_intent_id!r} was already received with different content"
        )
    if inserted:
        ledger.append(
            session,
            tenant_id=intent.tenant_id,
            action_intent_id=intent.action_intent_id,
            event_type="INTENT_RECEIVED",
            actor=intent.approval.approved_by,
            details={
                "decision_id": intent.decision_id,
                "account_id": intent.account_id,
                "action_type": intent.action_type,
                "approval_id": intent.approval.approval_id,
                "approved_by": intent.approval.approved_by,
                "approved_at": intent.approval.approved_at,
                "edited": intent.approval.edited,
                "key_id": intent.approval.key_id,
                "created_at": intent.created_at,
                "expires_at_epoch": intent.expires_at_epoch,
                "intent_sha256": digest,
            },
        )
    elif flow_run_id and not execution.flow_run_id:
        execution.flow_run_id = flow_run_id
        session.add(execution)
    return execution, inserted


def record_rejection(
    session: Session, raw: Any, *, code: FailureCode, field: str | None, reason: str, actor: str = "system"
) -> None:
    """Ledger a rejected intent. No execution row is created, so a forgery cannot block the real intent.

    The document is hostile by definition: every text taken from it (or from the reason, which may
    quote it) is made storable on every backend — NUL becomes U+FFFD, a lone surrogate ``?``, and
    lengths are bounded — so the rejection itself is always ledgered.
    """

    def storable(value: str, limit: int) -> str:
        return storable_text(value[: limit * 2])[:limit]

    document = raw if isinstance(raw, dict) else {}
    claimed_tenant = document.get("tenant_id")
    tenant_id = (
        claimed_tenant
        if isinstance(claimed_tenant, str)
        and claimed_tenant.isascii()
        and claimed_tenant.replace("-", "").replace("_", "").isalnum()
        else "_unknown"
    )[:64]
    intent_id = document.get("action_intent_id")
    ledger.append(
        session,
        tenant_id=tenant_id,
        action_intent_id=storable(intent_id, 128) if isinstance(intent_id, str) and intent_id else None,
        event_type="INTENT_REJECTED",
        actor=storable(actor, 320),
        details={
            "code": storable(code, 64),
            "field": storable(field, 256) if field is not None else None,
            "reason": storable(reason, 500),
        },
    )


@dataclass(frozen=True)
class Refusal:
    """Why a claim did not start an attempt; ``execution`` is the current state."""

    reason: RefusalReason
    execution: Execution


def claim(
    session: Session,
    action_intent_id: str,
    *,
    owner: str,
    blocked: str | None,
    lease_seconds: int = DEFAULT_LEASE_SECONDS,
    flow_run_id: str | None = None,
) -> Lease | Refusal:
    """Take the execution for one attempt, or say why not — in one transaction.

    A claim that takes over an EXECUTING execution (its executor died) records in its
    ``EXECUTION_STARTED`` fact ``silent_for_seconds``: the time since that executor's last heartbeat
    or write (``updated_at``, database clock) — how long recovery took. ``None`` for any other claim.

    Args:
        session: Open transaction.
        action_intent_id: The intent.
        owner: Unique id of this executor (e.g. the flow run id plus a nonce).
        blocked: A kill-switch reason computed in the same transaction, or None.
        lease_seconds: How long the lease lasts without renewal.
        flow_run_id: The Prefect flow run doing the work.
    """
    execution = _locked(session, action_intent_id)
    if execution is None:
        raise ExecutionNotFound(action_intent_id)
    now = db_now(session)
    if execution.status in NEVER_AGAIN:
        return Refusal(RefusalReason.ALREADY_FINISHED, execution)
    if execution.compensation_pending:
        return Refusal(RefusalReason.COMPENSATING, execution)
    if (
        execution.status == ExecutionStatus.EXECUTING
        and execution.lease_until
        and execution.lease_until > now
    ):
        if execution.lease_owner == owner:  # this executor's claim again (its first commit went unanswered)
            return Lease(
                action_intent_id, execution.tenant_id, owner, execution.attempt, execution.generation
            )
        return Refusal(RefusalReason.BUSY, execution)
    if execution.status == ExecutionStatus.EXECUTING and execution.failure_code is not None:
        fail_mid_undo(session, execution)  # its executor died undoing a failed attempt: never re-run it
        return Refusal(RefusalReason.COMPENSATING, execution)
    if now.timestamp() >= execution.expires_at_epoch:
        if execution.status == ExecutionStatus.FAILED:
            return Refusal(RefusalReason.EXPIRED, execution)  # its failure stands; nothing runs again
        if execution.status == ExecutionStatus.EXECUTING and steps_of(
            session, action_intent_id, execution.generation
        ):
            _expire_mid_run(session, execution, now)  # its executor died part-way: undo what it did
        else:
            _expire(session, execution, now)
        return Refusal(RefusalReason.EXPIRED, execution)
    if blocked:
        halted(session, execution.tenant_id, action_intent_id, reason=blocked, before_step=None)
        execution.attempt += 1
        _terminal(
            session,
            execution,
            status=ExecutionStatus.FAILED,
            explanation="Execution is paused by an operator; nothing was done. It can be rerun later.",
            failure=Failure(
                FailureCode.KILL_SWITCH,
                "Execution is paused by an operator; nothing was changed.",
                needs_human=execution.needs_human,  # only a completed rerun clears a person's flag
            ),
            refs=[],
            attempt=execution.attempt,
            now=now,
        )
        return Refusal(RefusalReason.KILL_SWITCH, execution)
    taken_over = execution.status == ExecutionStatus.EXECUTING
    # A new run of a FAILED execution (an operator's rerun, or a retry from Prefect's UI or CLI).
    after_failure = execution.attempt if execution.status == ExecutionStatus.FAILED else None
    # The dead executor's last heartbeat or write: how long the execution went unattended.
    silent_for = (
        round((now - execution.updated_at).total_seconds(), 3)
        if taken_over and execution.updated_at is not None
        else None
    )
    execution.status = ExecutionStatus.EXECUTING
    execution.attempt += 1
    # A new attempt has not failed (yet): an earlier attempt's failure must not be taken for its own.
    execution.failure_code = None
    execution.failure_message = None
    execution.lease_owner = owner
    execution.lease_until = now + timedelta(seconds=lease_seconds)
    execution.updated_at = now
    execution.finished_at = None
    execution.explanation = "Executing."
    if flow_run_id:
        execution.flow_run_id = flow_run_id
    session.add(execution)
    ledger.append(
        session,
        tenant_id=execution.tenant_id,
        action_intent_id=action_intent_id,
        event_type="EXECUTION_STARTED",
        details={
            "attempt": execution.attempt,
            "generation": execution.generation,
            "flow_run_id": flow_run_id,
            "took_over_expired_lease": taken_over,
            "silent_for_seconds": silent_for,
            "after_failed_attempt": after_failure,
        },
    )
    return Lease(action_intent_id, execution.tenant_id, owner, execution.attempt, execution.generation)


def expire_if_due(session: Session, action_intent_id: str) -> bool:
    """EXPIRED for a PENDING intent whose approval ran out (database clock); nothing else changes.

    Expiring makes no external call, so it needs no admission: an intent signed by a key that was
    rotated out since is expired like any other.
    """
    execution = _locked(session, action_intent_id)
    if execution is None or execution.status != ExecutionStatus.PENDING:
        return False
    now = db_now(session)
    if now.timestamp() < execution.expires_at_epoch:
        return False
    _expire(session, execution, now)
    return True


def _expire(session: Session, execution: Execution, now: datetime) -> None:
    """EXPIRED before any attempt started: nothing was done (``now``: the clock this transaction read)."""
    _terminal(
        session,
        execution,
        status=ExecutionStatus.EXPIRED,
        explanation=EXPIRED_BEFORE_START,
        failure=None,
        refs=[],
        attempt=execution.attempt,
        now=now,
    )


def _expire_mid_run(session: Session, execution: Execution, now: datetime) -> None:
    """EXPIRED for an execution whose executor died part-way (its lease ran out after the approval did).

    Steps were started, some perhaps committed: the undo is owed (``compensation_pending``), with the
    lease free, so the reconciler undoes them — confirming an in-flight step by lookup first — and
    records how it ended. A new attempt never starts after expiry.
    """
    _terminal(
        session,
        execution,
        status=ExecutionStatus.EXPIRED,
        explanation="The approval expired while the action was executing; the steps already done are being undone.",
        failure=None,
        refs=[],
        attempt=execution.attempt,  # the dead attempt's outcome: it recorded none
        now=now,
    )
    execution.compensation_pending = True


def fail_mid_undo(session: Session, execution: Execution) -> None:
    """FAILED for an execution whose executor died while undoing a failed attempt (:func:`step_failed`).

    The attempt's failure, recorded when its step failed, becomes the outcome (of that attempt: it
    recorded none), the ``ACTION_FAILED`` signal is written, and the undo stays owed
    (``compensation_pending``) with the lease free, so the reconciler finishes it — a step already
    undone is undone again harmlessly — and records how it ended (``finish_undo``). The failed step is
    never sent again.
    """
    assert execution.failure_code is not None
    code = FailureCode(execution.failure_code)
    message = (execution.failure_message or "") + UNDO_UNDER_WAY
    _terminal(
        session,
        execution,
        status=ExecutionStatus.FAILED,
        explanation=message,
        failure=Failure(code, message, needs_human=code == FailureCode.AMBIGUOUS_OUTCOME),
        refs=[],
        attempt=execution.attempt,
    )
    execution.compensation_pending = True


def halted(
    session: Session, tenant_id: str, action_intent_id: str, *, reason: str, before_step: str | None
) -> None:
    """Ledger EXECUTION_HALTED: an operator control stopped the execution before ``before_step``."""
    ledger.append(
        session,
        tenant_id=tenant_id,
        action_intent_id=action_intent_id,
        event_type="EXECUTION_HALTED",
        details={"reason": reason, "before_step": before_step},
    )


def fence(
    session: Session, lease: Lease, *, settling: bool = False, lease_seconds: int = DEFAULT_LEASE_SECONDS
) -> Execution:
    """Re-check ownership (and extend the lease) before a write of this attempt.

    :func:`fence_with_clock` also returns the database clock it read.

    Args:
        settling: Also accept an execution that is no longer EXECUTING but still owes the undo of
            its steps (``compensation_pending``: cancelled while a call was in flight, or an undo the
            reconciler took over). Recording what a call did and undoing it are allowed then; a new
            forward step is not.

    Raises:
        LeaseLost: cancelled, finished, or taken over by another executor.
    """
    return fence_with_clock(session, lease, settling=settling, lease_seconds=lease_seconds)[0]


def fence_with_clock(
    session: Session, lease: Lease, *, settling: bool = False, lease_seconds: int = DEFAULT_LEASE_SECONDS
) -> tuple[Execution, datetime]:
    """:func:`fence`, and the database clock it read (the rest of the transaction's writes use it too:
    one clock read, and no early flush of the lease's update before the next statement)."""
    execution = _locked(session, lease.action_intent_id)
    assert execution is not None
    owned = execution.lease_owner == lease.owner and execution.attempt == lease.attempt
    live = execution.status == ExecutionStatus.EXECUTING or (settling and execution.compensation_pending)
    if not (owned and live):
        raise LeaseLost(execution.status)
    now = db_now(session)
    execution.lease_until = now + timedelta(seconds=lease_seconds)
    execution.updated_at = now
    session.add(execution)
    return execution, now


def heartbeat(session: Session, lease: Lease, *, lease_seconds: int = DEFAULT_LEASE_SECONDS) -> bool:
    """Renew a lease its executor is still using (``fulfill.heartbeat.keep_alive`` calls it every beat).

    Extends ``lease_until`` (and ``updated_at``: the last sign of life a takeover measures) only while
    this owner and attempt hold the execution and it is EXECUTING or still owes the undo of its steps —
    what :func:`fence` accepts when settling. Writes no ledger fact.

    Returns:
        ``False`` when the lease is lost (cancelled and settled, finished, or taken over): nothing changed.
    """
    try:
        fence(session, lease, settling=True, lease_seconds=lease_seconds)
    except LeaseLost:
        return False
    return True


def steps_of(session: Session, action_intent_id: str, generation: int | None = None) -> list[StepRecord]:
    """Step records of an intent (one generation, or all), in plan order."""
    query = select(StepRecord).where(StepRecord.action_intent_id == action_intent_id)
    if generation is not None:
        query = query.where(StepRecord.generation == generation)
    return list(session.exec(query.order_by(col(StepRecord.generation), col(StepRecord.seq))))


def _step(session: Session, lease: Lease, step: str) -> StepRecord | None:
    return session.exec(
        select(StepRecord).where(
            StepRecord.action_intent_id == lease.action_intent_id,
            StepRecord.generation == lease.generation,
            StepRecord.step == step,
        )
    ).first()


def checkpoint(session: Session, lease: Lease, *, seq: int, system: str, call: StepCall) -> StepRecord:
    """Record CALL_STARTED (with the deterministic key) before the first external call of a step."""
    _, now = fence_with_clock(session, lease)
    record = _step(session, lease, call.step)
    if record is None:
        record = StepRecord(
            tenant_id=lease.tenant_id,
            action_intent_id=lease.action_intent_id,
            generation=lease.generation,
            seq=seq,
            step=call.step,
            system=system,
            idempotency_key=call.idempotency_key,
            status=StepStatus.CALL_STARTED,
            call_json=call.model_dump(mode="json"),
            started_at=now,
        )
        session.add(record)
        session.flush()
        ledger.append(
            session,
            tenant_id=lease.tenant_id,
            action_intent_id=lease.action_intent_id,
            event_type="STEP_STARTED",
            details={"step": call.step, "system": system, "idempotency_key": call.idempotency_key},
        )
    return record


def count_attempt(session: Session, lease: Lease, step: str) -> int:
    """Count one provider call attempt of ``step``; returns the attempt number.

    Call it in the transaction that has just :func:`fence`-d ``lease`` (the guard before a call).
    """
    record = _step(session, lease, step)
    assert record is not None, "checkpoint() must precede the first call"
    record.attempts += 1
    session.add(record)
    return record.attempts


def step_succeeded(
    session: Session, lease: Lease, step: str, result: StepResult, *, write_ledger: bool = True
) -> StepRecord:
    """Mark a step SUCCEEDED with its result (idempotent: a second call changes nothing).

    Also after a cancellation that raced the call (``fence(settling=True)``): the write happened at
    the provider, so it is recorded, and then undone like every other finished step.
    """
    _, now = fence_with_clock(session, lease, settling=True)
    record = _step(session, lease, step)
    assert record is not None
    if record.status == StepStatus.SUCCEEDED:
        return record
    record.status = StepStatus.SUCCEEDED
    record.result_json = result.model_dump(mode="json")
    record.finished_at = now
    session.add(record)
    if write_ledger:
        append_step_succeeded(session, lease.tenant_id, lease.action_intent_id, record, result)
    return record


def append_step_succeeded(
    session: Session, tenant_id: str, action_intent_id: str, record: StepRecord, result: StepResult
) -> None:
    """The STEP_SUCCEEDED ledger fact (also written by connectors that commit in our database)."""
    ledger.append(
        session,
        tenant_id=tenant_id,
        action_intent_id=action_intent_id,
        event_type="STEP_SUCCEEDED",
        details={
            "step": record.step,
            "attempts": max(record.attempts, 1),
            "external_ref": result.ref.model_dump(mode="json"),
            "created": result.created,
            "summary": result.summary,
            "idempotency_key": record.idempotency_key,
        },
    )


def step_failed(session: Session, lease: Lease, step: str, error: dict[str, Any], failure: Failure) -> None:
    """Mark a step FAILED (the error dict is already secret-free) and the execution as failing with ``failure``.

    From here the attempt only undoes its earlier steps and ends FAILED with ``failure``. The failure is
    kept on the execution (still EXECUTING) in this same transaction, so an executor that dies while
    undoing leaves a record of how the attempt ended: its takeover finishes the undo and that failure
    (:func:`fail_mid_undo`) instead of running the plan again, which would re-send the failed step
    after earlier steps may already have been undone.

    Raises:
        LeaseLost: finished or taken over meanwhile (a cancelled execution still records its step).
    """
    execution, now = fence_with_clock(session, lease, settling=True)
    record = _step(session, lease, step)
    if record is None:
        return
    if execution.status == ExecutionStatus.EXECUTING:
        execution.failure_code = failure.code
        execution.failure_message = failure.message
        execution.explanation = failure.message + UNDO_UNDER_WAY
        session.add(execution)
    record.status = StepStatus.FAILED
    record.error_json = error
    record.finished_at = now
    session.add(record)
    ledger.append(
        session,
        tenant_id=lease.tenant_id,
        action_intent_id=lease.action_intent_id,
        event_type="STEP_FAILED",
        details={"step": step, "attempts": record.attempts, "error": error},
    )


def step_retry_scheduled(
    session: Session,
    tenant_id: str,
    action_intent_id: str,
    step: str,
    attempt: int,
    error: dict[str, Any],
    *,
    wait_seconds: float,
    backoff_seconds_max: float,
) -> None:
    """Ledger that a transient failure will be retried (written from the retry condition).

    Args:
        wait_seconds: The wait the provider asked for (``Retry-After``), honoured in full.
        backoff_seconds_max: The longest backoff Prefect adds on top of it.
    """
    ledger.append(
        session,
        tenant_id=tenant_id,
        action_intent_id=action_intent_id,
        event_type="STEP_RETRY_SCHEDULED",
        details={
            "step": step,
            "attempt": attempt,
            "error": error,
            "wait_seconds": wait_seconds,
            "backoff_seconds_max": backoff_seconds_max,
        },
    )


def step_compensated(
    session: Session, tenant_id: str, record_id: int, *, ok: bool, error: dict[str, Any] | None = None
) -> None:
    """Record the outcome of undoing one step."""
    record = session.get(StepRecord, record_id)
    assert record is not None and record.tenant_id == tenant_id
    status = StepStatus.COMPENSATED if ok else StepStatus.COMPENSATION_FAILED
    if record.status == status:
        return  # recorded already (a repeated commit): one ledger fact per undo
    record.status = status
    record.error_json = error if not ok else record.error_json
    session.add(record)
    ledger.append(
        session,
        tenant_id=tenant_id,
        action_intent_id=record.action_intent_id,
        event_type="COMPENSATED" if ok else "COMPENSATION_FAILED",
        details={
            "step": record.step,
            "external_ref": (record.result_json or {}).get("ref"),
            **({"error": error} if error else {}),
        },
    )


def finish(
    session: Session,
    lease: Lease,
    *,
    status: ExecutionStatus,
    explanation: str,
    failure: Failure | None,
    refs: list[dict[str, Any]],
    next_generation: bool = False,
    compensation_pending: bool = False,
) -> Execution:
    """Fenced terminal transition: execution row, outcome, ledger fact and outbox signal together.

    Args:
        compensation_pending: Steps of this attempt still have to be undone (an operator control
            stopped the undo); the reconciler finishes it once the control is released.

    Raises:
        LeaseLost: the execution was cancelled (or taken over) meanwhile. After a cancellation the
            caller still holds the lease for undoing its steps (:func:`finish_undo`).
    """
    execution, now = fence_with_clock(session, lease)
    if next_generation and not compensation_pending:
        execution.generation += 1
    _terminal(
        session,
        execution,
        status=status,
        explanation=explanation,
        failure=failure,
        refs=refs,
        attempt=lease.attempt,
        now=now,
    )
    execution.compensation_pending = compensation_pending
    if compensation_pending:
        execution.needs_human = True  # an owed undo is always a person's business too
    return execution


def release_undo(session: Session, action_intent_id: str, owner: str) -> bool:
    """Free the lease of an owed undo whose holder is gone, so the reconciler can take it at once."""
    execution = _locked(session, action_intent_id)
    if execution is None or not execution.compensation_pending or execution.lease_owner != owner:
        return False
    execution.lease_owner = None
    execution.lease_until = None
    session.add(execution)
    return True


def release_dead_lease(session: Session, action_intent_id: str, owner: str) -> bool:
    """End the lease of an executor known to be gone (its Prefect run is final), so a takeover need not
    wait for the lease to run out. Only that executor's lease of an EXECUTING execution is released.

    ``updated_at`` is left alone: it stays the dead executor's last sign of life, which the takeover's
    ``silent_for_seconds`` is measured from.
    """
    execution = _locked(session, action_intent_id)
    if execution is None or execution.status != ExecutionStatus.EXECUTING or execution.lease_owner != owner:
        return False
    execution.lease_until = db_now(session)
    session.add(execution)
    return True


def claim_undo(
    session: Session, action_intent_id: str, *, owner: str, lease_seconds: int = DEFAULT_LEASE_SECONDS
) -> Lease | None:
    """Take over an undo that is owed (``compensation_pending``) and whose lease is free or expired."""
    execution = _locked(session, action_intent_id)
    if execution is None or not execution.compensation_pending:
        return None
    now = db_now(session)
    if execution.lease_until is not None and execution.lease_until > now:
        return None
    execution.lease_owner = owner
    execution.lease_until = now + timedelta(seconds=lease_seconds)
    execution.updated_at = now
    session.add(execution)
    return Lease(action_intent_id, execution.tenant_id, owner, execution.attempt, execution.generation)


def finish_undo(
    session: Session, lease: Lease, *, compensation: Compensation, explanation: str, halted: bool = False
) -> Execution:
    """Record how undoing a terminal execution's steps ended, and release its lease.

    ``halted``: an operator control stopped the undo part-way; it stays owed (the reconciler
    finishes it after release) and a person is flagged. ``needs_human`` is never cleared here.
    """
    execution, now = fence_with_clock(session, lease, settling=True)
    execution.needs_human = (
        execution.needs_human or halted or compensation == Compensation.COMPENSATION_FAILED
    )
    if not halted:
        execution.compensation = compensation
        execution.compensation_pending = False
        for pending in (UNDO_PAUSED, UNDO_UNDER_WAY):
            if execution.failure_message and execution.failure_message.endswith(pending):
                execution.failure_message = (
                    execution.failure_message.removesuffix(pending) + UNDO_DONE[compensation]
                )
        if compensation != Compensation.NONE:
            execution.generation += 1  # a rerun must not find the objects it deliberately undid
    execution.explanation = explanation
    execution.lease_owner = None
    execution.lease_until = None
    execution.updated_at = now
    session.add(execution)
    outcome = session.exec(
        select(Outcome).where(
            Outcome.action_intent_id == lease.action_intent_id, Outcome.attempt == execution.attempt
        )
    ).first()
    if outcome is not None:
        outcome.explanation = explanation
        if outcome.failure_json is not None:
            outcome.failure_json = {
                **outcome.failure_json,
                "message": execution.failure_message or outcome.failure_json.get("message"),
                "compensation": execution.compensation,
                "needs_human": execution.needs_human,
            }
        session.add(outcome)
    return execution


def mark_unsettled(session: Session, lease: Lease, step: str, *, seconds: float) -> None:
    """An attempt of ``step`` lost its answer: the provider may still commit it for ``seconds``."""
    record = _step(session, lease, step)
    if record is None:
        return
    until = db_now(session) + timedelta(seconds=seconds)
    if record.unsettled_until is None or record.unsettled_until < until:
        record.unsettled_until = until
        session.add(record)


def _terminal(
    session: Session,
    execution: Execution,
    *,
    status: ExecutionStatus,
    explanation: str,
    failure: Failure | None,
    refs: list[dict[str, Any]],
    attempt: int,
    actor: str = "system",
    now: datetime | None = None,
) -> None:
    """The terminal transition's rows; ``now``: the database clock if this transaction has read it."""
    now = now or db_now(session)
    execution.status = status
    execution.explanation = explanation
    execution.failure_code = failure.code if failure else None
    execution.failure_message = failure.message if failure else None
    execution.needs_human = failure.needs_human if failure else False
    execution.compensation = failure.compensation if failure else Compensation.NONE
    execution.lease_owner = None
    execution.lease_until = None
    execution.updated_at = now
    execution.finished_at = now
    session.add(execution)
    failure_json = failure.as_dict() if failure else None
    session.add(
        Outcome(
            tenant_id=execution.tenant_id,
            action_intent_id=execution.action_intent_id,
            attempt=attempt,
            status=status,
            explanation=explanation,
            failure_json=failure_json,
            external_refs=refs,
            created_at=now,
        )
    )
    event = FINISH_EVENT[status]
    ledger.append(
        session,
        tenant_id=execution.tenant_id,
        action_intent_id=execution.action_intent_id,
        event_type=event,
        actor=actor,
        details={
            "attempt": attempt,
            "explanation": explanation,
            "failure": failure_json,
            "external_refs": refs,
        },
    )
    kind = "ACTION_EXECUTED" if status == ExecutionStatus.SUCCEEDED else "ACTION_FAILED"
    signal_id = str(uuid.uuid5(SIGNAL_NAMESPACE, f"{execution.action_intent_id}:{attempt}:{status}"))
    session.add(
        Signal(
            signal_id=signal_id,
            tenant_id=execution.tenant_id,
            action_intent_id=execution.action_intent_id,
            kind=kind,
            payload={
                "signal_id": signal_id,
                "type": kind,
                "action_intent_id": execution.action_intent_id,
                "tenant_id": execution.tenant_id,
                "account_id": execution.account_id,
                "decision_id": execution.decision_id,
                "action_type": execution.action_type,
                "status": str(status),
                "reason": failure_json["code"]
                if failure_json
                else (None if status == ExecutionStatus.SUCCEEDED else str(status)),
                "explanation": explanation,
                "external_refs": refs,
                "at": now.isoformat(),
            },
            created_at=now,
        )
    )


def latest_outcome(session: Session, action_intent_id: str) -> Outcome | None:
    """The most recent terminal outcome of an intent (the first SUCCEEDED one is also the last)."""
    return session.exec(
        select(Outcome)
        .where(Outcome.action_intent_id == action_intent_id)
        .order_by(col(Outcome.attempt).desc())
    ).first()


def cancel(session: Session, tenant_id: str | None, action_intent_id: str, *, actor: str) -> Execution:
    """Cancel a PENDING or EXECUTING intent; no further external call starts.

    Raises:
        ExecutionNotFound: unknown or another tenant's id.
        AlreadyFinished: the execution is terminal.
    """
    execution = _locked(session, action_intent_id)
    if execution is None or (tenant_id is not None and execution.tenant_id != tenant_id):
        raise ExecutionNotFound(action_intent_id)
    if execution.status in TERMINAL:
        raise AlreadyFinished(execution.status)
    was_executing = execution.status == ExecutionStatus.EXECUTING
    owner, until = execution.lease_owner, execution.lease_until
    _terminal(
        session,
        execution,
        status=ExecutionStatus.CANCELLED,
        explanation=(
            "Cancelled while executing; completed steps are being undone."
            if was_executing
            else "Cancelled before it started; nothing was done."
        ),
        failure=Failure(FailureCode.CANCELLED_BY_USER, f"Cancelled by {actor}.", needs_human=False),
        refs=[],
        attempt=execution.attempt,
        actor=actor,
    )
    if was_executing:
        # The executor keeps its lease to record a call already in flight and to undo its steps;
        # if it is gone, the reconciler takes the undo over once that lease expires.
        execution.compensation_pending = True
        execution.lease_owner, execution.lease_until = owner, until
    return execution


def request_rerun(session: Session, tenant_id: str | None, action_intent_id: str, *, actor: str) -> int:
    """Ledger an operator's rerun of a FAILED execution (``RERUN_REQUESTED``, with who) before it starts.

    The rerun itself is an ordinary attempt (``claim``): finished steps are skipped, a kill switch still
    refuses it, and ``needs_human`` is cleared only when it completes.

    Returns:
        The number of attempts so far: one rerun request per failed attempt (a repeated click while
        that rerun has not started yet asks for the same run).

    Raises:
        ExecutionNotFound: unknown or another tenant's id.
        NotRerunnable: it is not FAILED (still pending or running, or SUCCEEDED/EXPIRED/CANCELLED).
    """
    execution = _locked(session, action_intent_id)
    if execution is None or (tenant_id is not None and execution.tenant_id != tenant_id):
        raise ExecutionNotFound(action_intent_id)
    if execution.status != ExecutionStatus.FAILED or execution.compensation_pending:
        raise NotRerunnable(execution.status)
    ledger.append(
        session,
        tenant_id=execution.tenant_id,
        action_intent_id=action_intent_id,
        event_type="RERUN_REQUESTED",
        actor=actor,
        details={"after_attempt": execution.attempt},
    )
    return execution.attempt


def attach_flow_run(session: Session, action_intent_id: str, flow_run_id: str) -> None:
    """Remember the Prefect run that executes a received intent (first one wins)."""
    execution = _locked(session, action_intent_id)
    if execution is not None and not execution.flow_run_id:
        execution.flow_run_id = flow_run_id
        session.add(execution)
