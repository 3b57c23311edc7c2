"""The security log: rejected submissions whose approval signature did not verify.

Nobody authenticated such a document, so nothing in it may reach a tenant's ledger chain or the
timeline of the intent it names: it is kept here instead, apart from every tenant, with every text
bounded and made storable, and rate-limited. Per claimed tenant and minute (database clock) the first
``FULFILL_SECURITY_LOG_PER_MINUTE`` refusals are stored one by one; beyond that, and beyond
:data:`GLOBAL_FACTOR` times as many across all tenants, each is only counted on one row per window
(``count``), so a flood adds at most a bounded number of rows per minute.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, func, select

from fulfill.db import db_now, insert_ignore
from fulfill.redaction import storable_text
from fulfill.states import FailureCode
from fulfill.tables import SecurityEvent, SecurityEventPublic

GLOBAL_FACTOR = 10  # all claimed tenants together: ten tenants' worth of rows per minute
UNKNOWN_TENANT = "_unknown"
ALL_TENANTS = "*"
MAX_LIST = 1000


def storable(value: Any, limit: int) -> str | None:
    """``value`` as bounded text every backend stores (NUL → U+FFFD, lone surrogate → ``?``); None if not text."""
    if not isinstance(value, str):
        return None
    return storable_text(value[: limit * 2])[:limit]


def claimed_tenant(document: Any) -> str:
    """The tenant a document claims, if it is a plausible id; else ``_unknown``."""
    claimed = document.get("tenant_id") if isinstance(document, dict) else None
    if (
        isinstance(claimed, str)
        and 0 < len(claimed) <= 64
        and claimed.isascii()
        and claimed.replace("-", "").replace("_", "").isalnum()
    ):
        return claimed
    return UNKNOWN_TENANT


def document_digest(raw: Any) -> str | None:
    """SHA-256 of what was received: the bytes as sent, or the parsed object's sorted JSON (best effort)."""
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogatepass")
    if isinstance(raw, bytes):
        return hashlib.sha256(raw).hexdigest()
    try:
        text = json.dumps(raw, sort_keys=True, ensure_ascii=True, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError):
        return None
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def record(
    session: Session,
    raw: Any,
    document: Any,
    *,
    code: FailureCode,
    field: str | None,
    reason: str,
    per_minute: int,
) -> SecurityEvent:
    """Log one refused, unauthenticated submission (stored, or counted beyond the rate limit).

    Args:
        session: An open transaction.
        raw: What was received (text, bytes or the parsed object), for its digest.
        document: The parsed object when there is one (its claimed tenant, intent id and key id).
        code: ``VALIDATION_FAILED`` or ``APPROVAL_INVALID``.
        field: The offending field, if any.
        reason: Why it was refused (may quote the document: bounded here).
        per_minute: Rows stored one by one per claimed tenant and minute.

    Returns:
        The row stored, or the counting row that took it.
    """
    now = db_now(session)
    minute = now.strftime("%Y-%m-%dT%H:%M")
    tenant = claimed_tenant(document)
    doc = document if isinstance(document, dict) else {}
    approval = doc.get("approval")
    key_id = approval.get("key_id") if isinstance(approval, dict) else None
    in_window = (col(SecurityEvent.minute) == minute, col(SecurityEvent.bucket).is_(None))
    everyone = session.exec(select(func.count()).select_from(SecurityEvent).where(*in_window)).one()
    bucket: str | None = None
    if everyone >= per_minute * GLOBAL_FACTOR:
        bucket = f"{minute}|{ALL_TENANTS}"
    else:
        mine = session.exec(
            select(func.count())
            .select_from(SecurityEvent)
            .where(*in_window, SecurityEvent.claimed_tenant_id == tenant)
        ).one()
        if mine >= per_minute:
            bucket = f"{minute}|{tenant}"
    if bucket is None:
        event = SecurityEvent(
            at=now,
            minute=minute,
            code=code,
            claimed_tenant_id=tenant,
            claimed_intent_id=storable(doc.get("action_intent_id"), 128) or None,
            key_id=storable(key_id, 64),
            field=storable(field, 256),
            reason=storable(reason, 500) or "",
            document_sha256=document_digest(raw),
        )
        session.add(event)
        session.flush()
        return event
    counted_tenant = None if bucket.endswith(f"|{ALL_TENANTS}") else tenant
    insert_ignore(
        session,
        SecurityEvent,
        {
            "at": now,
            "minute": minute,
            "code": code,
            "claimed_tenant_id": counted_tenant,
            "reason": "more refusals than FULFILL_SECURITY_LOG_PER_MINUTE in this minute"
            + ("" if counted_tenant else " across all claimed tenants")
            + ": counted, not stored",
            "count": 0,
            "bucket": bucket,
        },
    )
    session.execute(
        sa.update(SecurityEvent)
        .where(col(SecurityEvent.bucket) == bucket)
        .values(count=col(SecurityEvent.count) + 1, at=now)
    )
    row = session.exec(select(SecurityEvent).where(col(SecurityEvent.bucket) == bucket)).one()
    session.refresh(row)
    return row


def entries(
    session: Session,
    *,
    tenant_id: str | None = None,
    action_intent_id: str | None = None,
    limit: int = 50,
) -> list[SecurityEventPublic]:
    """Newest first; optionally only those claiming a tenant or an intent id."""
    query = select(SecurityEvent)
    if tenant_id is not None:
        query = query.where(SecurityEvent.claimed_tenant_id == tenant_id)
    if action_intent_id is not None:
        query = query.where(SecurityEvent.claimed_intent_id == action_intent_id)
    query = query.order_by(col(SecurityEvent.at).desc(), col(SecurityEvent.id).desc())
    rows = session.exec(query.limit(max(1, min(limit, MAX_LIST))))
    return [SecurityEventPublic.model_validate(row, from_attributes=True) for row in rows]
