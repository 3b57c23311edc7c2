"""Admission: schema, approval signature (verified again here: UI/CLI runs are untrusted), registration.

Where a refusal is recorded depends on whether the approval signature verified:

* it did (a signed intent refused later: beyond ``FULFILL_MAX_APPROVAL_TTL``, same id with other
  content, or a signed document the schema refuses): ``INTENT_REJECTED`` in the tenant's ledger
  chain, where its timeline shows it;
* it did not (bad or missing signature, unknown key, a document refused before its signature could
  be checked): the security log only (:mod:`fulfill.security_log`: bounded, rate-limited), never a
  tenant's chain or timeline — a forger chooses every word of such a document.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import Any, Literal, TypeAlias, overload

from pydantic import BaseModel, Field

from fulfill import executions, security_log
from fulfill.approval import ApprovalInvalid, TrustedKeys
from fulfill.db import db_now, get_engine, transaction
from fulfill.executions import IntentConflict
from fulfill.intent import MAX_INTENT_BYTES, IntentInvalid, check_envelope, load_intent_document, parse_intent
from fulfill.settings import load_settings
from fulfill.states import FailureCode

log = logging.getLogger("fulfill.security")


class Admitted(BaseModel):
    """The intent is valid, its approval verified, and it is registered (PENDING or further)."""

    admitted: Literal[True] = True
    action_intent_id: str
    tenant_id: str
    action_type: str
    created: bool = Field(description="First delivery (False: the same content was received before)")


class Rejected(BaseModel):
    """The intent was refused and the refusal recorded; no execution exists for it.

    Every text is bounded and storable: it may quote the hostile document.
    """

    admitted: Literal[False] = False
    code: FailureCode = Field(description="VALIDATION_FAILED, APPROVAL_INVALID or CONFLICT")
    reason: str
    field: str | None = Field(default=None, description="The offending field, when one is to blame")
    action_intent_id: str | None = Field(default=None, description="The id the document claims, if any")


#: The admission verdict; narrow it with ``isinstance`` (or on ``admitted``).
Admission: TypeAlias = Admitted | Rejected


def verify_and_register(raw: Any, *, flow_run_id: str | None = None) -> Admission:
    """Validate, verify the approval, and register the intent once; record a rejection otherwise.

    ``raw`` is the parsed JSON object, or its text/bytes (parsed by the safe loader). Anything the
    loader or the schema refuses — NUL, lone surrogates, huge numbers, deep nesting — is a
    ``VALIDATION_FAILED``, as is an expiry more than ``FULFILL_MAX_APPROVAL_TTL`` after receipt
    (checked after the signature, with the database clock). See the module docstring for where
    each refusal is recorded.
    """
    received = raw
    document: Any = None
    try:
        # Bounded, linear work before the signature (a forger pays for nothing else): the safe loader,
        # then the envelope alone — the parameters' models run only for a verified approval.
        document = load_intent_document(raw) if isinstance(raw, str | bytes) else raw
        check_envelope(document)
    except IntentInvalid as exc:
        if isinstance(document, dict) and _signed(document):  # e.g. a signed expiry beyond year 9999
            return _reject(document, FailureCode.VALIDATION_FAILED, exc.field, str(exc))
        claimed = document if isinstance(document, dict) else _claimed(raw)
        return _refuse_unverified(received, claimed, FailureCode.VALIDATION_FAILED, exc.field, str(exc))
    raw = document
    settings = load_settings()
    try:
        TrustedKeys.from_setting(settings.approval_keys).verify(raw)
    except ApprovalInvalid as exc:
        return _refuse_unverified(
            received, raw, FailureCode.APPROVAL_INVALID, "approval.signature", exc.reason
        )
    try:
        intent = parse_intent(raw)
    except IntentInvalid as exc:  # signed, yet the schema refuses it: the tenant's story
        return _reject(raw, FailureCode.VALIDATION_FAILED, exc.field, str(exc))
    try:
        with transaction(get_engine()) as session:
            now = db_now(session)
            too_late = _beyond_ttl(intent.expires_at_epoch, now, settings.max_approval_ttl)
            if too_late is None:
                _, created = executions.register(session, raw, intent, flow_run_id=flow_run_id, now=now)
    except IntentConflict as exc:
        return _reject(raw, FailureCode.CONFLICT, "action_intent_id", str(exc))
    if too_late is not None:
        return _reject(raw, FailureCode.VALIDATION_FAILED, too_late.field, str(too_late))
    return Admitted(
        action_intent_id=intent.action_intent_id,
        tenant_id=intent.tenant_id,
        action_type=intent.action_type,
        created=created,
    )


def _signed(document: dict[str, Any]) -> bool:
    """Whether a document the envelope check refused still carries a valid approval signature.

    Only documents the safe loader accepted get here (bounded size, depth and values), so verifying
    costs a forger no more than the signature check every submission gets.
    """
    try:
        TrustedKeys.from_setting(load_settings().approval_keys).verify(document)
    except Exception:  # hostile document or unusable keys: not verified
        return False
    return True


def _claimed(raw: Any) -> Any:
    """For a refused text's security-log row only: the tenant, id and key it claims, best effort."""
    if not isinstance(raw, str | bytes) or len(raw) > MAX_INTENT_BYTES:
        return raw
    try:
        document = json.loads(raw, parse_int=str)  # str: no int-conversion limit to hit
    except Exception:  # hostile by definition: bad UTF-8, huge integers, deep nesting, ...
        return {}
    if not isinstance(document, dict):
        return {}
    claimed = {key: document.get(key) for key in ("tenant_id", "action_intent_id")}
    approval = document.get("approval")
    if isinstance(approval, dict):
        claimed["approval"] = {"key_id": approval.get("key_id")}
    return claimed


def _beyond_ttl(expires_at_epoch: int, received: datetime, max_ttl: int) -> IntentInvalid | None:
    """Contract §1: an expiry more than ``max_ttl`` seconds after receipt is refused."""
    lifetime = expires_at_epoch - int(received.timestamp())
    if lifetime <= max_ttl:
        return None
    return IntentInvalid(
        "expires_at_epoch",
        f"is {lifetime} seconds after receipt; the longest accepted approval lifetime is "
        f"{max_ttl} seconds (FULFILL_MAX_APPROVAL_TTL)",
    )


@overload
def _printable(value: str, limit: int) -> str: ...
@overload
def _printable(value: Any, limit: int) -> str | None: ...
def _printable(value: Any, limit: int) -> str | None:
    """``value`` as text safe to return and serialise (no NUL, no lone surrogate, bounded)."""
    if not isinstance(value, str):
        return None
    text = value[:limit].encode("utf-8", "replace").decode("utf-8")
    return text.replace("\x00", "\ufffd")


def _reject(raw: Any, code: FailureCode, field: str | None, reason: str) -> Rejected:
    """A refusal of a document whose approval signature verified: ledgered in the tenant's chain."""
    with transaction(get_engine()) as session:
        executions.record_rejection(session, raw, code=code, field=field, reason=reason)
    return _rejected(raw, code, field, reason)


def _refuse_unverified(
    received: Any, document: Any, code: FailureCode, field: str | None, reason: str
) -> Rejected:
    """A refusal nobody authenticated: the security log (rate-limited), never a tenant's chain."""
    with transaction(get_engine()) as session:
        event = security_log.record(
            session,
            received,
            document,
            code=code,
            field=field,
            reason=reason,
            per_minute=load_settings().security_log_per_minute,
        )
    if event.count == 1:  # the table is the record; a line for log-based alerting
        log.info(
            "refused an unauthenticated intent: %s %s (security log %s, claimed tenant %r)",
            code,
            event.field,
            event.id,
            event.claimed_tenant_id,
        )
    return _rejected(document, code, field, reason)


def _rejected(raw: Any, code: FailureCode, field: str | None, reason: str) -> Rejected:
    document = raw if isinstance(raw, dict) else {}
    return Rejected(
        action_intent_id=_printable(document.get("action_intent_id"), 128),
        code=code,
        field=_printable(field, 256),
        reason=_printable(reason, 1000),
    )


def admit(raw: dict[str, Any], flow_run_id: str | None = None) -> Admission:
    """The flow's admission (a plain call: :func:`verify_and_register` for the run ``flow_run_id``)."""
    return verify_and_register(raw, flow_run_id=flow_run_id)
