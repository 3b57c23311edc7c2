"""The execution flow: admit → claim → steps → finish.

Execution never re-decides: the flow only checks that the intent is exactly what a human
approved (signature, TTL, kill switches, tenant configuration) and fulfils it, step by step,
with a checkpoint and a deterministic idempotency key before every external call. On a
permanent failure it undoes the finished steps, newest first, from their persisted records.
"""

from __future__ import annotations

import uuid
from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run as current_flow_run

from connectors.base import StepCall, StepResult, idempotency_key
from connectors.errors import ConnectorError, OutcomeUnknown
from flows.hooks import record_flow_end
from fulfill.executions import Failure, Lease, LeaseLost
from fulfill.intent import parse_intent
from tasks.admit import admit
from tasks.claim import ClaimRefused, claim
from tasks.connector_step import Halted, compensate_step, lookup_step, make_retry_condition, run_step
from tasks.plan import Plan, plan
from tasks.record import (
    checkpoint,
    finish,
    record_compensation,
    record_halt,
    record_step_failed,
    record_step_succeeded,
    step_records,
)


class ExecutionFailed(Exception):
    """Raised at the end of a run whose execution is FAILED, so the Prefect run is FAILED too
    (operators see it, and can rerun it from the UI/CLI). The message is seller-safe."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code

    def __reduce__(self) -> tuple[Any, ...]:
        code, _, message = str(self).partition(": ")
        return (ExecutionFailed, (code, message))


class AdmissionRejected(ExecutionFailed):
    """The intent itself was refused (schema, approval signature, conflicting content): nothing ran."""

    def __reduce__(self) -> tuple[Any, ...]:
        code, _, message = str(self).partition(": ")
        return (AdmissionRejected, (code, message))


@flow(
    name="execute-intent",
    on_failure=[record_flow_end],
    on_crashed=[record_flow_end],
    on_cancellation=[record_flow_end],
    validate_parameters=False,
)
def execute_intent(intent: dict[str, Any]) -> dict[str, Any]:
    """Execute one approved ActionIntentV1, exactly once.

    Args:
        intent: The intent exactly as approved (raw JSON object; the signature covers it).

    Returns:
        ``{"action_intent_id", "status", ...}`` — the execution's status after this run.

    Raises:
        ExecutionFailed: the intent was rejected, or its execution ended FAILED.
    """
    flow_run_id = current_flow_run.id
    admission = admit(intent, flow_run_id)
    if not admission.admitted:
        raise AdmissionRejected(admission.code or "VALIDATION_FAILED", admission.reason or "rejected")
    assert admission.action_intent_id and admission.tenant_id and admission.action_type
    owner = f"{flow_run_id or 'local'}/{uuid.uuid4().hex[:12]}"
    lease = claim(admission.action_intent_id, admission.tenant_id, admission.action_type, owner, flow_run_id)
    if isinstance(lease, ClaimRefused):
        return _refused(admission.action_intent_id, lease)
    return _fulfil(lease, intent)


def _refused(action_intent_id: str, refusal: ClaimRefused) -> dict[str, Any]:
    get_run_logger().info(
        "Nothing to execute for %s: %s (%s)", action_intent_id, refusal.reason, refusal.status
    )
    if refusal.reason == "KILL_SWITCH":
        raise ExecutionFailed("KILL_SWITCH", "Execution is paused by an operator; nothing was changed.")
    return {
        "action_intent_id": action_intent_id,
        "status": refusal.status,
        "executed": False,
        "reason": refusal.reason,
        "explanation": refusal.explanation,
        "external_refs": refusal.external_refs,
    }


def _fulfil(lease: Lease, raw: dict[str, Any]) -> dict[str, Any]:
    intent = parse_intent(raw)
    params = intent.normalized_parameters()
    the_plan: Plan | Failure = plan(lease, intent.action_type, params)
    if isinstance(the_plan, Failure):
        return _end(lease, "FAILED", the_plan.message, the_plan, [])
    done = {r["step"]: r for r in step_records(lease.action_intent_id, lease.generation)}
    completed: list[tuple[int, StepCall, StepResult]] = []
    for seq, step in enumerate(the_plan.steps):
        call = StepCall(
            action_intent_id=lease.action_intent_id,
            tenant_id=lease.tenant_id,
            account_id=intent.account_id,
            action_type=intent.action_type,
            step=step,
            idempotency_key=idempotency_key(lease.action_intent_id, step, lease.generation),
            params=params,
            prior={done_call.step: result.ref for _, done_call, result in completed},
        )
        record = done.get(step)
        if record is not None and record["status"] == "SUCCEEDED":
            completed.append((record["id"], call, StepResult.model_validate(record["result_json"])))
            continue
        try:
            checkpoint(lease, seq, the_plan.system, call)
            result = _call_with_reconcile(lease, call, the_plan.fingerprint)
        except Halted as halt:
            return _halted(lease, step, halt, completed)
        except LeaseLost as lost:
            return _lost(lease, lost, completed)
        except ConnectorError as error:
            record_step_failed(lease, step, error.as_dict())
            return _failed(lease, error, completed)
        record_id = record_step_succeeded(lease, step, result, step not in the_plan.self_ledgered_steps)
        completed.append((record_id, call, result))
    refs = [result.ref.model_dump(mode="json") for _, _, result in completed]
    explanation = " ".join(result.summary for _, _, result in completed)
    return _end(lease, "SUCCEEDED", explanation, None, refs)


def _call_with_reconcile(lease: Lease, call: StepCall, fingerprint: str) -> StepResult:
    """Run the step; when retries end without an answer, ask the provider whether it committed."""
    try:
        return run_step.with_options(retry_condition_fn=make_retry_condition(lease, call))(
            call, lease, cache_key=f"{call.idempotency_key}:{fingerprint}"
        )
    except ConnectorError as error:
        if not error.retryable:
            raise
        found = lookup_step(call, lease)
        if found is not None:
            return found
        raise


def _compensate(lease: Lease, completed: list[tuple[int, StepCall, StepResult]]) -> str:
    """Undo finished steps newest first; returns NONE, COMPENSATED or COMPENSATION_FAILED."""
    if not completed:
        return "NONE"
    outcome = "COMPENSATED"
    for record_id, call, result in reversed(completed):
        try:
            compensate_step(call, result)
        except ConnectorError as error:
            record_compensation(lease.tenant_id, record_id, False, error.as_dict())
            outcome = "COMPENSATION_FAILED"
        else:
            record_compensation(lease.tenant_id, record_id, True, None)
    return outcome


def _failed(
    lease: Lease, error: ConnectorError, completed: list[tuple[int, StepCall, StepResult]]
) -> dict[str, Any]:
    compensation = _compensate(lease, completed)
    ambiguous = isinstance(error, OutcomeUnknown)  # its code is AMBIGUOUS_OUTCOME
    message = error.seller_message
    if compensation == "COMPENSATED":
        message += " Everything done before the failure was undone."
    elif compensation == "COMPENSATION_FAILED":
        message += " Undoing the earlier steps failed too; a person will check."
    failure = Failure(
        error.code,
        message,
        needs_human=ambiguous or compensation == "COMPENSATION_FAILED",
        compensation=compensation,
    )
    return _end(lease, "FAILED", message, failure, [], next_generation=compensation != "NONE")


def _halted(
    lease: Lease, step: str, halt: Halted, completed: list[tuple[int, StepCall, StepResult]]
) -> dict[str, Any]:
    if halt.kind == "EXPIRED":
        compensation = _compensate(lease, completed)
        explanation = (
            "The approval expired before the action could finish; nothing was changed."
            if (compensation != "COMPENSATION_FAILED")
            else "The approval expired part-way and undoing failed."
        )
        return _end(lease, "EXPIRED", explanation, None, [], next_generation=compensation != "NONE")
    record_halt(lease, step, halt.reason)
    partial = bool(completed)
    message = "Execution is paused by an operator; " + (
        "some steps are done and the rest will run when it is resumed." if partial else "nothing was changed."
    )
    refs = [result.ref.model_dump(mode="json") for _, _, result in completed]
    return _end(lease, "FAILED", message, Failure("KILL_SWITCH", message, needs_human=partial), refs)


def _lost(lease: Lease, lost: LeaseLost, completed: list[tuple[int, StepCall, StepResult]]) -> dict[str, Any]:
    if lost.status != "CANCELLED":
        get_run_logger().warning(
            "Lease lost (%s); another executor owns %s", lost.status, lease.action_intent_id
        )
        return {"action_intent_id": lease.action_intent_id, "status": lost.status, "executed": False}
    compensation = _compensate(lease, completed)
    explanation = {
        "NONE": "Cancelled before any change was made.",
        "COMPENSATED": "Cancelled while executing; the steps already done were undone.",
        "COMPENSATION_FAILED": "Cancelled while executing; undoing the steps already done failed.",
    }[compensation]
    failure = Failure(
        "CANCELLED_BY_USER",
        explanation,
        needs_human=compensation == "COMPENSATION_FAILED",
        compensation=compensation,
    )
    return _end(lease, "CANCELLED", explanation, failure, [])


def _end(
    lease: Lease,
    status: str,
    explanation: str,
    failure: Failure | None,
    refs: list[dict[str, Any]],
    next_generation: bool = False,
) -> dict[str, Any]:
    final = finish(lease, status, explanation, failure, refs, next_generation)
    if final == "FAILED" and failure is not None:
        raise ExecutionFailed(failure.code, failure.message)
    return {
        "action_intent_id": lease.action_intent_id,
        "status": final,
        "executed": final == "SUCCEEDED",
        "explanation": explanation,
        "external_refs": refs,
    }
