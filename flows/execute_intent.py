"""The execution flow: admit → claim → steps → finish.

Execution never re-decides: the flow only checks that the intent is exactly what a human
approved (signature, TTL, kill switches, tenant configuration) and fulfils it, step by step,
with a checkpoint and a deterministic idempotency key before every external call. On a
permanent failure it undoes the finished steps, newest first, from their persisted records.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any, Literal, NamedTuple, cast, overload

from prefect import Flow, get_run_logger
from prefect.client.schemas.objects import State
from prefect.runtime import flow_run as current_flow_run
from prefect.states import Cancelled
from pydantic import BaseModel, Field

from connectors.base import StepCall, StepResult, idempotency_key
from connectors.errors import ConnectorError
from flows.hooks import record_flow_end
from fulfill import executions
from fulfill.db import get_engine, transaction
from fulfill.executions import UNDO_DONE, UNDO_PAUSED, Failure, Lease, LeaseLost
from fulfill.heartbeat import keep_alive
from fulfill.intent import parse_intent
from fulfill.states import (
    Compensation,
    ExecutionStatus,
    FailureCode,
    HaltKind,
    RefusalReason,
    StepStatus,
)
from tasks.admit import Rejected, admit
from tasks.claim import Claimed, ClaimRefused, claim
from tasks.connector_step import (
    Halted,
    compensate_step,
    lookup_step,
    make_retry_condition,
    run_step,
    wait_until_settled,
)
from tasks.plan import Plan, plan
from tasks.record import (
    checkpoint,
    finish,
    finish_undo,
    record_compensation,
    record_halt,
    record_step_failed,
    record_step_succeeded,
    step_records,
)


class ExecutionFailed(Exception):
    """Raised at the end of a run whose execution is FAILED, so the Prefect run is FAILED too
    (operators see it, and can rerun it from the UI/CLI). The message is seller-safe.

    Pickles from its arguments (Prefect carries it across processes in the run's state).
    """

    def __init__(self, code: FailureCode, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.code, self.message))


class AdmissionRejected(ExecutionFailed):
    """The intent itself was refused (schema, approval signature, conflicting content): nothing ran."""


class ExecutionResult(BaseModel):
    """What one run of ``execute-intent`` did, or found: the flow's return value.

    Also one entry of the lists ``reconcile`` and ``expire-sweeper`` return. A FAILED ending
    raises :class:`ExecutionFailed` from ``execute-intent`` instead (the reconciler records it here
    with its ``code``).
    """

    action_intent_id: str
    status: ExecutionStatus = Field(description="The execution's status after this run")
    executed: bool = Field(default=False, description="This run completed the action (SUCCEEDED now)")
    reason: RefusalReason | None = Field(
        default=None, description="Why this run started no attempt (the claim was refused)"
    )
    code: FailureCode | None = Field(default=None, description="The failure code when it ended FAILED")
    explanation: str = ""
    external_refs: list[dict[str, Any]] = Field(default_factory=list)
    compensation: Compensation | None = Field(
        default=None, description="How undoing the finished steps ended, when this run undid any"
    )


class CompletedStep(NamedTuple):
    """A step of this generation that is done: its call, and what the provider answered."""

    call: StepCall
    result: StepResult


def run_state(result: ExecutionResult) -> ExecutionResult | State[ExecutionResult]:
    """The Prefect state a run ends in, matching the execution (the result travels as its data).

    * SUCCEEDED, and a run that found nothing to do for a PENDING/EXECUTING/SUCCEEDED intent:
      the result itself (Prefect makes it Completed).
    * CANCELLED: ``Cancelled`` — the action was cancelled; the UI shows it grey, not green.
    * EXPIRED: ``Cancelled(name="Expired")``. An expired approval is not a failure of the run
      (nothing is wrong to fix or retry — a Prefect "Retry" would only expire it again, and a
      Failed run would page operators for a seller's late approval) and not a success either
      (nothing was done). Prefect has no terminal "did not happen" type besides CANCELLED, whose
      semantics ("stopped on purpose, do not retry") fit; the name tells it apart in UI, API and
      automations (``prefect.flow-run.Expired`` events).
    * FAILED raises :class:`ExecutionFailed` instead (a Failed run).
    """
    if result.status == ExecutionStatus.CANCELLED:
        return Cancelled(message=result.explanation or "The execution was cancelled.", data=result)
    if result.status == ExecutionStatus.EXPIRED:
        return Cancelled(name="Expired", message=result.explanation or "The approval expired.", data=result)
    return result


def result_of(state: State[Any]) -> ExecutionResult:
    """The ``ExecutionResult`` of a finished ``execute-intent`` run state.

    A run ended Cancelled/Expired by :func:`run_state` still carries its result; a Failed run
    raises its exception (:class:`ExecutionFailed`), exactly as a direct call does.
    """
    if state.is_cancelled():
        value = state.result(raise_on_failure=False)
        if isinstance(value, ExecutionResult):
            return value
    value = state.result()
    if not isinstance(value, ExecutionResult):
        raise TypeError(f"execute-intent returned {type(value).__name__}, not an ExecutionResult")
    return value


class ExecuteIntentFlow(Flow[..., Any]):
    """``execute-intent``: its run ends in the Prefect state matching the execution (:func:`run_state`),
    while a direct call (in-process callers: the service, the reconciler, tests) still returns the
    :class:`ExecutionResult` — also for a CANCELLED or EXPIRED execution, whose run is Cancelled —
    and raises :class:`ExecutionFailed` for a FAILED one, as before.
    """

    @overload  # type: ignore[override]
    def __call__(
        self,
        *args: Any,
        return_state: Literal[False] = False,
        wait_for: Iterable[Any] | None = None,
        **kwargs: Any,
    ) -> ExecutionResult: ...

    @overload
    def __call__(
        self, *args: Any, return_state: Literal[True], wait_for: Iterable[Any] | None = None, **kwargs: Any
    ) -> State[Any]: ...

    def __call__(
        self, *args: Any, return_state: bool = False, wait_for: Iterable[Any] | None = None, **kwargs: Any
    ) -> ExecutionResult | State[Any]:
        state = cast("State[Any]", super().__call__(*args, return_state=True, wait_for=wait_for, **kwargs))
        return state if return_state else result_of(state)


def _execute_intent_flow(fn: Callable[..., Any]) -> ExecuteIntentFlow:
    return ExecuteIntentFlow(
        fn,
        name="execute-intent",
        on_failure=[record_flow_end],
        on_crashed=[record_flow_end],
        on_cancellation=[record_flow_end],
        validate_parameters=False,
    )


@_execute_intent_flow
def execute_intent(
    intent: dict[str, Any] | None = None, action_intent_id: str | None = None
) -> ExecutionResult | State[ExecutionResult]:
    """Execute one approved ActionIntentV1, exactly once.

    Args:
        intent: The intent exactly as approved (raw JSON object; the signature covers it).
        action_intent_id: Instead of ``intent``: the id of an intent already received (intake
            stores it first). Large intents (a brief of up to 1 MiB) travel this way, because
            Prefect refuses flow-run parameters over 512 KiB. The stored intent is verified again.

    Returns:
        The execution's status after this run, and whether this run executed it. The run ends
        Completed, Cancelled (CANCELLED) or Cancelled named "Expired" (EXPIRED): see :func:`run_state`;
        a direct call returns the :class:`ExecutionResult` in every case.

    Raises:
        ExecutionFailed: the intent was rejected, or its execution ended FAILED.
    """
    raw = intent if intent is not None else received_intent(action_intent_id)
    flow_run_id = current_flow_run.id
    admission = admit(raw, flow_run_id)
    if isinstance(admission, Rejected):
        raise AdmissionRejected(admission.code, admission.reason)
    owner = f"{flow_run_id or 'local'}/{uuid.uuid4().hex[:12]}"
    claimed = claim(
        admission.action_intent_id, admission.tenant_id, admission.action_type, owner, flow_run_id
    )
    if isinstance(claimed, ClaimRefused):
        return run_state(_refused(admission.action_intent_id, claimed))
    try:
        with keep_alive(claimed.lease):  # renews the lease while the steps run: only a dead executor loses it
            return run_state(_fulfil(claimed, raw))
    except LeaseLost as lost:
        return run_state(_lost(claimed.lease, lost))


def received_intent(action_intent_id: str | None) -> dict[str, Any]:
    """The raw intent stored when it was received (its signature is verified again by admission)."""
    if action_intent_id is None:
        raise AdmissionRejected(
            FailureCode.VALIDATION_FAILED, "pass the intent or the id of a received intent"
        )
    with transaction(get_engine()) as session:
        try:
            return dict(executions.get(session, None, action_intent_id).intent_json)
        except executions.ExecutionNotFound:
            raise AdmissionRejected(
                FailureCode.VALIDATION_FAILED, f"no intent {action_intent_id!r} was received"
            ) from None


def _refused(action_intent_id: str, refusal: ClaimRefused) -> ExecutionResult:
    get_run_logger().info(
        "Nothing to execute for %s: %s (%s)", action_intent_id, refusal.reason, refusal.status
    )
    if refusal.reason == RefusalReason.KILL_SWITCH:
        raise ExecutionFailed(
            FailureCode.KILL_SWITCH, "Execution is paused by an operator; nothing was changed."
        )
    return ExecutionResult(
        action_intent_id=action_intent_id,
        status=refusal.status,
        reason=refusal.reason,
        explanation=refusal.explanation,
        external_refs=refusal.external_refs,
    )


def _fulfil(claimed: Claimed, raw: dict[str, Any]) -> ExecutionResult:
    """The steps, then the fenced finish. Raises LeaseLost when cancelled or taken over meanwhile."""
    lease = claimed.lease
    intent = parse_intent(raw)
    params = intent.normalized_parameters()
    the_plan: Plan | Failure = plan(lease, intent.action_type, params, claimed.fingerprint)
    if isinstance(the_plan, Failure):
        return _end(lease, ExecutionStatus.FAILED, the_plan.message, the_plan, [])
    recorded = {r["step"]: r for r in claimed.records}
    completed: list[CompletedStep] = []
    for seq, step in enumerate(the_plan.steps):
        call = StepCall(
            action_intent_id=lease.action_intent_id,
            tenant_id=lease.tenant_id,
            account_id=intent.account_id,
            action_type=intent.action_type,
            step=step,
            idempotency_key=idempotency_key(lease.action_intent_id, step, lease.generation),
            params=params,
            prior={done.call.step: done.result.ref for done in completed},
        )
        record = recorded.get(step)
        if record is not None and record["status"] == StepStatus.SUCCEEDED:
            completed.append(CompletedStep(call, StepResult.model_validate(record["result_json"])))
            continue
        try:
            checkpoint(lease, seq, the_plan.system, call)
            result = _call_with_reconcile(lease, call, the_plan.fingerprint)
        except Halted as halt:
            return _halted(lease, step, halt, completed)
        except ConnectorError as error:
            record_step_failed(lease, step, error.as_dict(), _failure_of(error))
            return _failed(lease, error)
        # Recorded even if a cancellation raced the call: the write happened and must be undone.
        record_step_succeeded(lease, step, result, step not in the_plan.self_ledgered_steps)
        completed.append(CompletedStep(call, result))
    explanation = " ".join(done.result.summary for done in completed)
    return _end(lease, ExecutionStatus.SUCCEEDED, explanation, None, _refs(completed))


def _refs(completed: list[CompletedStep]) -> list[dict[str, Any]]:
    return [done.result.ref.model_dump(mode="json") for done in completed]


def _call_with_reconcile(lease: Lease, call: StepCall, fingerprint: str) -> StepResult:
    """Run the step; when retries end without an answer, ask the provider whether it committed."""
    try:
        return run_step.with_options(retry_condition_fn=make_retry_condition(lease, call))(
            call, lease, cache_key=f"{call.idempotency_key}:{fingerprint}"
        )
    except ConnectorError as error:
        if not error.retryable or not _answer_was_lost(lease, call.step):
            raise
        found = lookup_step(call, lease)
        if found is not None:
            return found
        raise


def _answer_was_lost(lease: Lease, step: str) -> bool:
    """Whether an attempt of ``step`` lost its answer (only then can a lookup find anything)."""
    records = step_records(lease.action_intent_id, lease.generation)
    return any(r["step"] == step and r.get("unsettled_until") for r in records)


def undo_steps(lease: Lease) -> tuple[Compensation, str | None]:
    """Undo this generation's steps newest first, from their persisted records.

    Covers finished steps and steps whose outcome is unknown (a call in flight when the run was
    cancelled, an answer lost): a step whose answer was lost is undone only after its late-commit
    window has passed, then confirmed by a lookup of its key, so a late commit is not left behind.
    Every external call checks the kill switches first; a switch stops the undo part-way.

    Returns:
        ``(compensation, halted)``: NONE / COMPENSATED / COMPENSATION_FAILED over every step of
        the generation, and the operator control's reason when a kill switch stopped the undo.
    """
    for record in reversed(step_records(lease.action_intent_id, lease.generation)):
        status, unsettled = record["status"], record.get("unsettled_until")
        if status not in (StepStatus.SUCCEEDED, StepStatus.CALL_STARTED) and not (
            status == StepStatus.FAILED and unsettled
        ):
            continue
        call = StepCall.model_validate(record["call_json"])
        result = StepResult.model_validate(record["result_json"]) if status == StepStatus.SUCCEEDED else None
        try:
            wait_until_settled(lease, datetime.fromisoformat(unsettled) if unsettled else None)
            undone = compensate_step(lease, call, result, confirm=unsettled is not None)
        except Halted as halt:
            record_halt(lease, f"undo {call.step}", halt.reason)
            return _compensation_so_far(lease), halt.reason
        except ConnectorError as error:
            record_compensation(lease.tenant_id, record["id"], False, error.as_dict())
            continue
        if undone:
            record_compensation(lease.tenant_id, record["id"], True, None)
    return _compensation_so_far(lease), None


def _compensation_so_far(lease: Lease) -> Compensation:
    statuses = {r["status"] for r in step_records(lease.action_intent_id, lease.generation)}
    if StepStatus.COMPENSATION_FAILED in statuses:
        return Compensation.COMPENSATION_FAILED
    return Compensation.COMPENSATED if StepStatus.COMPENSATED in statuses else Compensation.NONE


def _failure_of(error: ConnectorError) -> Failure:
    """How an attempt ends when a step fails with ``error``, before its earlier steps are undone."""
    ambiguous = error.code == FailureCode.AMBIGUOUS_OUTCOME  # OutcomeUnknown, OutcomeUnsettled
    return Failure(FailureCode(error.code), error.seller_message, needs_human=ambiguous)


def _failed(lease: Lease, error: ConnectorError) -> ExecutionResult:
    compensation, halted = undo_steps(lease)
    failed = _failure_of(error)
    message = failed.message
    if halted:
        message += UNDO_PAUSED
        compensation = Compensation.NONE
    elif compensation != Compensation.NONE:
        message += UNDO_DONE[compensation]
    failure = Failure(
        failed.code,
        message,
        needs_human=failed.needs_human or bool(halted) or compensation == Compensation.COMPENSATION_FAILED,
        compensation=compensation,
    )
    return _end(
        lease,
        ExecutionStatus.FAILED,
        message,
        failure,
        [],
        next_generation=compensation != Compensation.NONE,
        compensation_pending=bool(halted),
    )


def _halted(lease: Lease, step: str, halt: Halted, completed: list[CompletedStep]) -> ExecutionResult:
    if halt.kind == HaltKind.EXPIRED:
        compensation, halted = undo_steps(lease)
        if halted:
            explanation = "The approval expired part-way." + UNDO_PAUSED
        elif compensation == Compensation.COMPENSATION_FAILED:
            explanation = "The approval expired part-way and undoing failed."
        else:
            explanation = "The approval expired before the action could finish; nothing was changed."
        return _end(
            lease,
            ExecutionStatus.EXPIRED,
            explanation,
            None,
            [],
            next_generation=compensation != Compensation.NONE,
            compensation_pending=bool(halted),
            compensation=compensation,
        )
    record_halt(lease, step, halt.reason)
    partial = bool(completed)
    message = "Execution is paused by an operator; " + (
        "some steps are done and the rest will run when it is resumed." if partial else "nothing was changed."
    )
    failure = Failure(FailureCode.KILL_SWITCH, message, needs_human=partial)
    return _end(lease, ExecutionStatus.FAILED, message, failure, _refs(completed))


CANCELLED_EXPLANATION: dict[Compensation, str] = {
    Compensation.NONE: "Cancelled before any change was made.",
    Compensation.COMPENSATED: "Cancelled while executing; the steps already done were undone.",
    Compensation.COMPENSATION_FAILED: "Cancelled while executing; undoing the steps already done failed.",
}


def _lost(lease: Lease, lost: LeaseLost) -> ExecutionResult:
    """The execution was cancelled or taken over while this run held it."""
    if lost.status != ExecutionStatus.CANCELLED:
        get_run_logger().warning(
            "Lease lost (%s); another executor owns %s", lost.status, lease.action_intent_id
        )
        return ExecutionResult(action_intent_id=lease.action_intent_id, status=lost.status)
    try:
        return settle_cancelled(lease)
    except LeaseLost as again:
        get_run_logger().warning("Undo of %s taken over (%s)", lease.action_intent_id, again.status)
        return ExecutionResult(action_intent_id=lease.action_intent_id, status=again.status)


def settle_cancelled(lease: Lease) -> ExecutionResult:
    """Undo what a cancelled execution still owes, and record how it ended."""
    return settle_owed_undo(lease, ExecutionStatus.CANCELLED)


SETTLED_EXPLANATION: dict[ExecutionStatus, dict[Compensation, str]] = {
    ExecutionStatus.CANCELLED: CANCELLED_EXPLANATION,
    ExecutionStatus.FAILED: {
        Compensation.NONE: "The action failed; nothing had to be undone.",
        Compensation.COMPENSATED: "The action failed; everything done before the failure was undone.",
        Compensation.COMPENSATION_FAILED: (
            "The action failed and undoing the earlier steps failed; a person will check."
        ),
    },
    ExecutionStatus.EXPIRED: {
        Compensation.NONE: "The approval expired before the action could finish; nothing was changed.",
        Compensation.COMPENSATED: "The approval expired part-way; the steps already done were undone.",
        Compensation.COMPENSATION_FAILED: "The approval expired part-way and undoing failed.",
    },
}
PAUSED_PREFIX: dict[ExecutionStatus, str] = {
    ExecutionStatus.CANCELLED: "Cancelled while executing.",
    ExecutionStatus.FAILED: "The action failed.",
    ExecutionStatus.EXPIRED: "The approval expired part-way.",
}


def settle_owed_undo(lease: Lease, status: ExecutionStatus) -> ExecutionResult:
    """Undo what a terminal (CANCELLED, FAILED, EXPIRED) execution still owes; record how it ended.

    Run by the executor that was cancelled, or by the reconciler for an undo whose run died or that
    a kill switch stopped (once released).
    """
    with keep_alive(lease):
        compensation, halted = undo_steps(lease)
        explanation = SETTLED_EXPLANATION[status][compensation]
        if halted:
            explanation = PAUSED_PREFIX[status] + UNDO_PAUSED
        final = finish_undo(lease, compensation, explanation, bool(halted))
    return ExecutionResult(
        action_intent_id=lease.action_intent_id,
        status=final,
        explanation=explanation,
        compensation=compensation,
    )


def _end(
    lease: Lease,
    status: ExecutionStatus,
    explanation: str,
    failure: Failure | None,
    refs: list[dict[str, Any]],
    next_generation: bool = False,
    compensation_pending: bool = False,
    compensation: Compensation | None = None,
) -> ExecutionResult:
    final = finish(lease, status, explanation, failure, refs, next_generation, compensation_pending)
    if isinstance(final, LeaseLost):
        raise final  # cancelled meanwhile: execute_intent settles it (_lost)
    if final == ExecutionStatus.FAILED and failure is not None:
        raise ExecutionFailed(failure.code, failure.message)
    return ExecutionResult(
        action_intent_id=lease.action_intent_id,
        status=final,
        executed=final == ExecutionStatus.SUCCEEDED,
        explanation=explanation,
        external_refs=refs,
        compensation=failure.compensation if failure is not None else compensation,
    )
