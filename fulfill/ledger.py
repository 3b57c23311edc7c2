"""The append-only ledger: one row per fact, chained per tenant.

``row_hash = sha256(prev_hash || JCS(row))`` where ``row`` is the canonical content
(tenant, seq, intent, type, time, actor, details). Appends lock the tenant's chain head, so
concurrent writers never fork a chain. ``verify_chains`` recomputes everything and reports
the first broken row (``fulfill ledger verify``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import rfc8785
from sqlmodel import Session, col, select

from fulfill.db import db_now, insert_ignore, lock_clause
from fulfill.redaction import redact
from fulfill.tables import LedgerBase, LedgerEntry, LedgerHead

GENESIS = "0" * 64
EVENT_TYPES = frozenset(
    {
        "INTENT_RECEIVED",
        "INTENT_REJECTED",
        "EXECUTION_STARTED",
        "STEP_STARTED",
        "STEP_SUCCEEDED",
        "STEP_RETRY_SCHEDULED",
        "STEP_FAILED",
        "COMPENSATED",
        "COMPENSATION_FAILED",
        "ACTION_EXECUTED",
        "ACTION_FAILED",
        "ACTION_EXPIRED",
        "ACTION_CANCELLED",
        "KILL_SWITCH_CHANGED",
        "EXECUTION_HALTED",
        "TENANT_CONFIGURED",
    }
)


HASHED_FIELDS = ("tenant_id", "seq", "action_intent_id", "event_type", "at", "actor", "details")


def canonical_row(row: LedgerBase) -> bytes:
    """The exact bytes a ledger row's hash covers: RFC 8785 JCS of :data:`HASHED_FIELDS`."""
    return rfc8785.dumps(row.model_dump(mode="json", include=set(HASHED_FIELDS)))


def chain_hash(prev_hash: str, canonical: bytes) -> str:
    """``sha256(prev_hash || canonical)`` as hex."""
    return hashlib.sha256(prev_hash.encode("ascii") + canonical).hexdigest()


def append(
    session: Session,
    *,
    tenant_id: str,
    event_type: str,
    action_intent_id: str | None = None,
    actor: str = "system",
    details: Mapping[str, Any] | None = None,
) -> LedgerEntry:
    """Append one fact to the tenant's chain inside the caller's transaction.

    Args:
        session: An open transaction; the row commits or rolls back with the caller's work.
        tenant_id: Whose chain.
        event_type: One of :data:`EVENT_TYPES`.
        action_intent_id: The intent this fact is about, if any.
        actor: ``system``, the approver, or the operator.
        details: JSON details; secret-looking keys are redacted before hashing.

    Returns:
        The new row.
    """
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown ledger event type {event_type!r}")
    clean = redact(dict(details or {}))
    insert_ignore(session, LedgerHead, {"tenant_id": tenant_id, "seq": 0, "row_hash": GENESIS})
    query = select(LedgerHead).where(LedgerHead.tenant_id == tenant_id)
    if lock_clause(session):
        query = query.with_for_update()
    head = session.exec(query).one()
    session.refresh(head)
    entry = LedgerEntry(
        tenant_id=tenant_id,
        seq=head.seq + 1,
        action_intent_id=action_intent_id,
        event_type=event_type,
        at=db_now(session).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        actor=actor,
        details=clean,
        prev_hash=head.row_hash,
        row_hash="",
    )
    entry.row_hash = chain_hash(head.row_hash, canonical_row(entry))
    session.add(entry)
    head.seq = entry.seq
    head.row_hash = entry.row_hash
    session.add(head)
    session.flush()
    return entry


def entries_for_intent(session: Session, tenant_id: str, action_intent_id: str) -> list[LedgerEntry]:
    """An intent's ledger rows, oldest first (tenant-scoped)."""
    query = (
        select(LedgerEntry)
        .where(LedgerEntry.tenant_id == tenant_id, LedgerEntry.action_intent_id == action_intent_id)
        .order_by(col(LedgerEntry.seq))
    )
    return list(session.exec(query))


@dataclass(frozen=True)
class ChainReport:
    """Verification result of one tenant's chain."""

    tenant_id: str
    rows: int
    ok: bool
    broken_seq: int | None = None
    broken_id: int | None = None
    reason: str | None = None


def verify_chains(session: Session, tenant_ids: Iterable[str] | None = None) -> list[ChainReport]:
    """Recompute every chain (or the given tenants') and report the first broken row of each."""
    if tenant_ids is None:
        tenant_ids = sorted(
            set(session.exec(select(LedgerHead.tenant_id)))
            | set(session.exec(select(LedgerEntry.tenant_id).distinct()))
        )
    reports = []
    for tenant_id in tenant_ids:
        reports.append(_verify_one(session, tenant_id))
    return reports


def _verify_one(session: Session, tenant_id: str) -> ChainReport:
    rows = session.exec(
        select(LedgerEntry).where(LedgerEntry.tenant_id == tenant_id).order_by(col(LedgerEntry.seq))
    )
    prev = GENESIS
    count = 0
    for count, row in enumerate(rows, start=1):
        broken = None
        if row.seq != count:
            broken = f"sequence gap: expected seq {count}, found {row.seq}"
        elif row.prev_hash != prev:
            broken = "prev_hash does not match the previous row's hash"
        else:
            if chain_hash(prev, canonical_row(row)) != row.row_hash:
                broken = "row content does not match its hash (edited after it was written)"
        if broken:
            return ChainReport(tenant_id, count, False, row.seq, row.id, broken)
        prev = row.row_hash
    head = session.get(LedgerHead, tenant_id)
    if head is not None and (head.seq != count or head.row_hash != prev):
        return ChainReport(tenant_id, count, False, head.seq, None, "chain head does not match the last row")
    return ChainReport(tenant_id, count, True)
