"""Public read models (contract §5): what the API and CLI show. Built from rows, never the rows."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from fulfill.executions import UNDO_DONE
from fulfill.ledger import ChainReport, canonical_row, chain_hash
from fulfill.states import Compensation, ExecutionStatus, FailureCode, StepStatus
from fulfill.tables import Execution, LedgerEntry, LedgerPublic, StepRecord

# --- the explanation catalogue: one seller-readable sentence per status and failure code --------
STATUS_EXPLANATIONS: dict[ExecutionStatus, str] = {
    ExecutionStatus.PENDING: "Approved and waiting to start; nothing has been changed yet.",
    ExecutionStatus.EXECUTING: "In progress: the approved change is being made now.",
    ExecutionStatus.SUCCEEDED: "Done: the approved change was made.",
    ExecutionStatus.FAILED: "The approved change could not be completed.",
    ExecutionStatus.EXPIRED: "The approval expired before the change could be made; nothing was changed.",
    ExecutionStatus.CANCELLED: "Cancelled; no further change will be made.",
}
FAILURE_EXPLANATIONS: dict[FailureCode, str] = {
    FailureCode.APPROVAL_INVALID: "The approval could not be verified, so nothing was done.",
    FailureCode.VALIDATION_FAILED: "The connected system rejected the values in this action.",
    FailureCode.CONNECTOR_REJECTED: "The connected system refused the change.",
    FailureCode.RETRIES_EXHAUSTED: "The connected system was unavailable; we tried several times.",
    FailureCode.STALE_PRECONDITION: "The record changed after the action was approved, so nothing was changed.",
    FailureCode.KILL_SWITCH: "An operator has paused these actions; it will continue once they are resumed.",
    FailureCode.NOT_CONFIGURED: "This action's destination system is not connected for your team.",
    FailureCode.AMBIGUOUS_OUTCOME: "We could not confirm whether the change was made; a person will check.",
    FailureCode.CANCELLED_BY_USER: "Someone cancelled this action before it finished.",
    FailureCode.CONFLICT: "A different action arrived under the same id, so it was refused.",
}
_NOT_A_SENTENCE = re.compile(r"[{}<>\[\]\n\r\t`]|Traceback|Exception|Error:|SELECT |INSERT |https?://")


def seller_text(stored: str | None, fallback: str) -> str:
    """A stored sentence when it reads like one (short, no markup, JSON, code or URL), else ``fallback``.

    Stored explanations are written by fulfill (connector summaries, catalogue sentences); this is
    the last wall that keeps anything resembling a provider body or a stack trace out of a response.
    """
    if stored and len(stored) <= 500 and not _NOT_A_SENTENCE.search(stored):
        return stored
    return fallback


def explain_failure(code: Any) -> str:
    """The catalogue sentence of a failure code (an unknown code reads as a generic failure)."""
    try:
        return FAILURE_EXPLANATIONS[FailureCode(code)]
    except ValueError:
        return STATUS_EXPLANATIONS[ExecutionStatus.FAILED]


class FailurePublic(BaseModel):
    """Why an execution did not succeed, in words a seller can read."""

    code: FailureCode
    message: str
    needs_human: bool
    compensation: Compensation


class ExternalRefPublic(BaseModel):
    """A created or changed object in an external system."""

    system: str
    object: str
    id: str
    url: str | None = None


class StatusBody(BaseModel):
    """``GET /actions/{id}/status``: the contract's status body."""

    action_intent_id: str
    tenant_id: str
    account_id: str
    decision_id: str
    action_type: str
    status: ExecutionStatus
    explanation: str
    failure: FailurePublic | None
    external_refs: list[ExternalRefPublic]
    attempts: int = Field(
        description="Provider call attempts of the step that needed the most (retries count)"
    )
    approved_by: str
    approved_at: str
    expires_at: str
    created_at: str
    updated_at: str
    finished_at: str | None


class TimelineEvent(BaseModel):
    """One line of the seller-facing timeline."""

    at: str
    stage: Literal["decision", "approval", "execution", "outcome"]
    title: str
    detail: str
    links: list[ExternalRefPublic] = Field(
        default_factory=list, description="External objects this line created or changed (with their URL)"
    )


class Timeline(BaseModel):
    """``GET /actions/{id}/timeline``."""

    action_intent_id: str
    events: list[TimelineEvent]


class ExecutionSummary(BaseModel):
    """One row of ``GET /accounts/{account_id}/executions``."""

    action_intent_id: str
    action_type: str
    status: ExecutionStatus
    explanation: str
    created_at: str
    finished_at: str | None


class ExecutionPage(BaseModel):
    """A keyset page, newest first."""

    items: list[ExecutionSummary]
    next_cursor: str | None


class ChainVerification(BaseModel):
    """The hash-chain check behind an intent's ledger rows."""

    ok: bool = Field(description="The tenant's whole chain recomputes and every row of this intent is intact")
    chain_rows: int = Field(description="Rows of the tenant's chain that were recomputed")
    intent_rows_intact: bool = Field(description="Each of this intent's rows matches its own hash")
    broken_seq: int | None = Field(description="The first row (chain seq) that does not verify")
    reason: str | None


class IntentLedger(BaseModel):
    """``GET /actions/{id}/ledger``: an intent's full ledger rows, oldest first, and their verification."""

    action_intent_id: str
    tenant_id: str
    rows: list[LedgerPublic]
    verification: ChainVerification


def ledger_view(execution: Execution, rows: list[LedgerEntry], report: ChainReport) -> IntentLedger:
    """An intent's rows with its tenant's chain report and each row's own hash recomputed."""
    broken = [r.seq for r in rows if chain_hash(r.prev_hash, canonical_row(r)) != r.row_hash]
    intact = not broken
    broken_seq = report.broken_seq if not report.ok else (broken[0] if broken else None)
    reason = report.reason if not report.ok else (None if intact else "row content does not match its hash")
    return IntentLedger(
        action_intent_id=execution.action_intent_id,
        tenant_id=execution.tenant_id,
        rows=[LedgerPublic.model_validate(r, from_attributes=True) for r in rows],
        verification=ChainVerification(
            ok=report.ok and intact,
            chain_rows=report.rows,
            intent_rows_intact=intact,
            broken_seq=broken_seq,
            reason=reason,
        ),
    )


def iso(value: datetime | None) -> str | None:
    """RFC 3339 UTC with a Z (never raises: a value that cannot be shifted to UTC is shown as is)."""
    if value is None:
        return None
    try:
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    except (ValueError, OverflowError, OSError):
        return value.isoformat()


def epoch_iso(value: Any) -> str:
    """Unix seconds as RFC 3339 UTC; a stored value out of datetime's range is shown as its number."""
    try:
        return iso(datetime.fromtimestamp(value, UTC)) or ""
    except (TypeError, ValueError, OverflowError, OSError):
        return str(value)


def _int(value: Any, default: int = 1) -> int:
    """A count from stored details; anything that is not a small integer counts as ``default``."""
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10**9 else default


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def status_view(execution: Execution, steps: list[StepRecord]) -> StatusBody:
    """The contract's status body for one execution."""
    live = [s for s in steps if s.generation == execution.generation and s.status == StepStatus.SUCCEEDED]
    refs = [ExternalRefPublic(**s.result_json["ref"]) for s in live if s.result_json]
    failure = None
    if execution.failure_code and execution.status in (ExecutionStatus.FAILED, ExecutionStatus.CANCELLED):
        failure = FailurePublic(
            code=execution.failure_code,
            message=seller_text(execution.failure_message, explain_failure(execution.failure_code)),
            needs_human=execution.needs_human,
            compensation=execution.compensation,
        )
    return StatusBody(
        action_intent_id=execution.action_intent_id,
        tenant_id=execution.tenant_id,
        account_id=execution.account_id,
        decision_id=execution.decision_id,
        action_type=execution.action_type,
        status=execution.status,
        explanation=seller_text(
            execution.explanation, STATUS_EXPLANATIONS[ExecutionStatus(execution.status)]
        ),
        failure=failure,
        external_refs=refs,
        attempts=max([s.attempts for s in steps] or [execution.attempt and 1 or 0]),
        approved_by=execution.approved_by,
        approved_at=execution.approved_at,
        expires_at=epoch_iso(execution.expires_at_epoch),
        created_at=iso(execution.created_at) or "",
        updated_at=iso(execution.updated_at) or "",
        finished_at=iso(execution.finished_at),
    )


def _restart(started: dict[str, Any]) -> str:
    """Why an attempt after the first started (an ``EXECUTION_STARTED`` fact's details)."""
    if started.get("took_over_expired_lease"):
        silent = started.get("silent_for_seconds")
        after = f" for {silent:.0f} s" if isinstance(silent, int | float) else ""
        return f"The run executing it stopped answering{after}; this run took it over. Finished steps are not repeated."
    if started.get("after_failed_attempt") is not None:
        return (
            f"A new run after run {started['after_failed_attempt']} failed (a rerun); "
            "finished steps are not repeated."
        )
    return ""


def _ref_text(ref: Any) -> str:
    if not ref or not isinstance(ref, dict):
        return ""
    return f"{ref.get('system')} {ref.get('object')} {ref.get('id')}"


def _links(ref: Any) -> list[ExternalRefPublic]:
    """A stored external reference as a link (nothing when it is not a complete reference)."""
    if not isinstance(ref, dict):
        return []
    try:
        return [ExternalRefPublic.model_validate(ref)]
    except ValueError:
        return []


def _times(n: int) -> str:
    return "1 attempt" if n == 1 else f"{n} attempts"


def timeline_view(execution: Execution, rows: list[LedgerEntry]) -> Timeline:
    """Decision → approval → execution → outcome, retries collapsed into their step's line."""
    intent = _dict(execution.intent_json)
    events: list[TimelineEvent] = []
    retries: dict[str, int] = {}
    for row in rows:
        d = _dict(row.details)
        kind = row.event_type
        if kind == "INTENT_RECEIVED":
            events.append(
                TimelineEvent(
                    at=str(d.get("created_at") or intent.get("created_at")),
                    stage="decision",
                    title=f"Proposed: {execution.action_type}",
                    detail=f"Decision {execution.decision_id} on account {execution.account_id}.",
                )
            )
            edited = " (edited before approval)" if d.get("edited") else ""
            events.append(
                TimelineEvent(
                    at=str(d.get("approved_at")),
                    stage="approval",
                    title=f"Approved by {d.get('approved_by')}{edited}",
                    detail=f"Approval {d.get('approval_id')}, signed with key {d.get('key_id')}; received {row.at}.",
                )
            )
        elif kind == "INTENT_REJECTED":
            events.append(
                TimelineEvent(
                    at=row.at,
                    stage="approval",
                    title="Rejected before execution",
                    detail=explain_failure(d.get("code")),
                )
            )
        elif kind == "STEP_RETRY_SCHEDULED":
            retries[str(d.get("step"))] = retries.get(str(d.get("step")), 0) + 1
        elif kind == "EXECUTION_STARTED":
            retries.clear()
            attempt = d.get("attempt", 1)
            title = "Execution started" if attempt == 1 else f"Execution restarted (run {attempt})"
            events.append(TimelineEvent(at=row.at, stage="execution", title=title, detail=_restart(d)))
        elif kind == "STEP_SUCCEEDED":
            attempts = max(_int(d.get("attempts")), retries.get(str(d.get("step")), 0) + 1)
            how = "succeeded" if attempts == 1 else f"succeeded after {_times(attempts)}"
            reused = (
                "" if d.get("created", True) else " (found the earlier attempt's result; nothing duplicated)"
            )
            events.append(
                TimelineEvent(
                    at=row.at,
                    stage="execution",
                    title=str(d.get("summary") or d.get("step")),
                    detail=f"Step {d.get('step')} {how}{reused}. {_ref_text(d.get('external_ref'))}".strip(),
                    links=_links(d.get("external_ref")),
                )
            )
        elif kind == "STEP_FAILED":
            error = _dict(d.get("error"))
            events.append(
                TimelineEvent(
                    at=row.at,
                    stage="execution",
                    title=f"Step {d.get('step')} failed",
                    detail=f"After {_times(max(_int(d.get('attempts')), retries.get(str(d.get('step')), 0) + 1))}: "
                    f"{explain_failure(error.get('code'))}",
                )
            )
        elif kind in {"COMPENSATED", "COMPENSATION_FAILED"}:
            what = "Undid" if kind == "COMPENSATED" else "Could not undo"
            events.append(
                TimelineEvent(
                    at=row.at,
                    stage="execution",
                    title=f"{what} step {d.get('step')}",
                    detail=_ref_text(d.get("external_ref")),
                    links=_links(d.get("external_ref")),
                )
            )
        elif kind == "RERUN_REQUESTED":
            events.append(
                TimelineEvent(
                    at=row.at,
                    stage="execution",
                    title="Rerun requested",
                    detail=f"{row.actor} asked to run it again; finished steps are not repeated.",
                )
            )
        elif kind == "EXECUTION_HALTED":
            events.append(
                TimelineEvent(
                    at=row.at,
                    stage="execution",
                    title="Halted by an operator control",
                    detail=FAILURE_EXPLANATIONS[FailureCode.KILL_SWITCH],
                )
            )
        elif kind in {"ACTION_EXECUTED", "ACTION_FAILED", "ACTION_EXPIRED", "ACTION_CANCELLED"}:
            title = {
                "ACTION_EXECUTED": "Succeeded",
                "ACTION_FAILED": "Failed",
                "ACTION_EXPIRED": "Expired",
                "ACTION_CANCELLED": "Cancelled",
            }[kind]
            failure = _dict(d.get("failure"))
            status = {
                "ACTION_EXECUTED": ExecutionStatus.SUCCEEDED,
                "ACTION_FAILED": ExecutionStatus.FAILED,
                "ACTION_EXPIRED": ExecutionStatus.EXPIRED,
                "ACTION_CANCELLED": ExecutionStatus.CANCELLED,
            }[kind]
            detail = seller_text(str(d.get("explanation") or ""), STATUS_EXPLANATIONS[status])
            if failure.get("code") and explain_failure(failure["code"]) not in detail:
                detail = f"{detail} {explain_failure(failure['code'])}"
            try:
                compensation = Compensation(failure.get("compensation") or "NONE")
            except ValueError:
                compensation = Compensation.NONE
            # The undo's sentence (the executor's), unless the stored explanation already holds it.
            undo = UNDO_DONE[compensation].strip() if compensation is not Compensation.NONE else ""
            if undo and undo not in detail:
                detail = f"{detail} {undo}"
            refs = d.get("external_refs")
            links = [link for ref in refs for link in _links(ref)] if isinstance(refs, list) else []
            events.append(TimelineEvent(at=row.at, stage="outcome", title=title, detail=detail, links=links))
    return Timeline(action_intent_id=execution.action_intent_id, events=events)


def _scope_tag(scope: str) -> str:
    return hashlib.sha256(scope.encode("utf-8")).hexdigest()[:16]


def encode_cursor(created_at: datetime | None, action_intent_id: str, scope: str = "") -> str:
    """Opaque keyset cursor, bound to the listing it came from (``scope``: e.g. tenant and account)."""
    raw = json.dumps([iso(created_at), action_intent_id, _scope_tag(scope)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, scope: str = "") -> tuple[datetime, str]:
    """Inverse of :func:`encode_cursor`; raises ValueError on a malformed cursor or one of another listing.

    Both answer the same error, so a cursor taken from another tenant's listing reveals nothing.
    """
    try:
        created, intent_id, tag = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not isinstance(tag, str) or tag != _scope_tag(scope) or not isinstance(intent_id, str):
            raise ValueError("scope")
        when = datetime.fromisoformat(created.replace("Z", "+00:00"))
        if when.tzinfo is None:
            raise ValueError("naive")
        return when, intent_id
    except Exception as exc:
        raise ValueError("cursor: malformed, or not from this listing") from exc
