"""Public read models (contract §5): what the API and CLI show. Built from rows, never the rows."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from fulfill.states import Compensation, ExecutionStatus, FailureCode, StepStatus
from fulfill.tables import Execution, LedgerEntry, StepRecord


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
    if execution.failure_code:
        failure = FailurePublic(
            code=execution.failure_code,
            message=execution.failure_message or "",
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
        explanation=execution.explanation,
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


def _ref_text(ref: Any) -> str:
    if not ref or not isinstance(ref, dict):
        return ""
    return f"{ref.get('system')} {ref.get('object')} {ref.get('id')}"


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
                    detail=f"{d.get('code')}: {d.get('reason')}",
                )
            )
        elif kind == "STEP_RETRY_SCHEDULED":
            retries[str(d.get("step"))] = retries.get(str(d.get("step")), 0) + 1
        elif kind == "EXECUTION_STARTED":
            retries.clear()
            attempt = d.get("attempt", 1)
            title = "Execution started" if attempt == 1 else f"Execution restarted (run {attempt})"
            events.append(TimelineEvent(at=row.at, stage="execution", title=title, detail=""))
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
                )
            )
        elif kind == "STEP_FAILED":
            error = _dict(d.get("error"))
            events.append(
                TimelineEvent(
                    at=row.at,
                    stage="execution",
                    title=f"Step {d.get('step')} failed",
                    detail=f"After {_times(max(_int(d.get('attempts')), retries.get(str(d.get('step')), 0) + 1))}: {error.get('error')} "
                    f"({error.get('provider_code') or error.get('status_code') or error.get('code')}).",
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
                )
            )
        elif kind == "EXECUTION_HALTED":
            events.append(
                TimelineEvent(
                    at=row.at,
                    stage="execution",
                    title="Halted by an operator control",
                    detail=str(d.get("reason")),
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
            detail = str(d.get("explanation") or "")
            if failure.get("code"):
                detail = f"{detail} [{failure['code']}; compensation {failure.get('compensation')}]"
            events.append(TimelineEvent(at=row.at, stage="outcome", title=title, detail=detail))
    return Timeline(action_intent_id=execution.action_intent_id, events=events)


def encode_cursor(created_at: datetime | None, action_intent_id: str) -> str:
    """Opaque keyset cursor."""
    raw = json.dumps([iso(created_at), action_intent_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """Inverse of :func:`encode_cursor`; raises ValueError on a malformed cursor."""
    try:
        created, intent_id = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        return datetime.fromisoformat(created.replace("Z", "+00:00")), str(intent_id)
    except Exception as exc:
        raise ValueError("cursor: malformed") from exc
