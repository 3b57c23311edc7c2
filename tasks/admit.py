"""Admission: schema, approval signature (verified again here: UI/CLI runs are untrusted), registration."""

from __future__ import annotations

from typing import Any

from prefect import task
from pydantic import BaseModel

from fulfill import executions
from fulfill.approval import ApprovalInvalid, TrustedKeys
from fulfill.db import get_engine, transaction
from fulfill.executions import IntentConflict
from fulfill.intent import IntentInvalid, parse_intent
from fulfill.settings import load_settings


class Admission(BaseModel):
    """The admission verdict. ``code`` is a contract failure code when rejected."""

    admitted: bool
    action_intent_id: str | None = None
    tenant_id: str | None = None
    action_type: str | None = None
    created: bool = False
    code: str | None = None
    field: str | None = None
    reason: str | None = None


def verify_and_register(raw: Any, *, flow_run_id: str | None = None) -> Admission:
    """Validate, verify the approval, and register the intent once; ledger a rejection otherwise."""
    try:
        intent = parse_intent(raw)
    except IntentInvalid as exc:
        return _reject(raw, "VALIDATION_FAILED", exc.field, str(exc))
    try:
        TrustedKeys.from_setting(load_settings().approval_keys).verify(raw)
    except ApprovalInvalid as exc:
        return _reject(raw, "APPROVAL_INVALID", "approval.signature", exc.reason)
    try:
        with transaction(get_engine()) as session:
            _, created = executions.register(session, raw, intent, flow_run_id=flow_run_id)
    except IntentConflict as exc:
        return _reject(raw, "CONFLICT", "action_intent_id", str(exc))
    return Admission(
        admitted=True,
        action_intent_id=intent.action_intent_id,
        tenant_id=intent.tenant_id,
        action_type=intent.action_type,
        created=created,
    )


def _reject(raw: Any, code: str, field: str | None, reason: str) -> Admission:
    with transaction(get_engine()) as session:
        executions.record_rejection(session, raw, code=code, field=field, reason=reason)
    document = raw if isinstance(raw, dict) else {}
    intent_id = document.get("action_intent_id")
    return Admission(
        admitted=False,
        action_intent_id=intent_id if isinstance(intent_id, str) else None,
        code=code,
        field=field,
        reason=reason,
    )


@task(name="admit")
def admit(raw: dict[str, Any], flow_run_id: str | None = None) -> Admission:
    """Prefect task wrapper of :func:`verify_and_register`."""
    return verify_and_register(raw, flow_run_id=flow_run_id)
