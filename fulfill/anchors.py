"""Signed checkpoints of the ledger's chain heads, kept outside the database.

A keyed chain (:mod:`fulfill.ledger`) stops anyone without the key from forging or re-chaining a
row, but not from deleting a chain's last rows (and its head row) or a whole tenant's chain: what is
left still verifies. A checkpoint records, per tenant, the last sequence number, its row hash and the
row count, is signed (HMAC-SHA256 with the checkpoint key derived from the ledger key) and is written
to object storage — ``ledger-anchors/`` in the data directory by default, an S3 bucket through
prefect-aws in production (the caller passes the :class:`~fulfill.storage.ObjectStore`).
``verify`` then reports a chain that ends before its anchored row, is missing, or no longer holds
the anchored hash.

Objects: ``ledger-anchors/latest.json`` (the newest checkpoint, overwritten) and an immutable copy
per checkpoint under ``ledger-anchors/history/`` (keep those in a bucket with Object Lock to stop a
rollback of ``latest.json``). Each checkpoint names the SHA-256 of the one before it.

A chain is anchored only after it verified against the previous checkpoint, so anchoring never
blesses tampering: a broken chain keeps its old anchor until an operator has dealt with it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import rfc8785
import sqlalchemy as sa
from sqlmodel import Session

from fulfill.db import db_now
from fulfill.ledger import Anchor, ChainReport, LedgerKey, ledger_key, verify_chains
from fulfill.storage import ObjectStore

FORMAT = "fulfill.ledger-checkpoint.v1"
PREFIX = "ledger-anchors"
LATEST = f"{PREFIX}/latest.json"
HISTORY = f"{PREFIX}/history"
ANCHOR_LOCK = 0x4C454447  # pg_advisory_xact_lock id: one anchoring at a time ("LEDG")
CHECKPOINT_TENANT = "*checkpoint*"  # the pseudo-tenant of a report about the checkpoint itself


class CheckpointInvalid(ValueError):
    """The stored checkpoint is unreadable or not signed with this ledger key."""


@dataclass(frozen=True)
class Checkpoint:
    """One signed checkpoint: every anchored tenant's chain head."""

    anchored_at: str
    key_id: str
    chains: Mapping[str, Anchor]
    previous_sha256: str | None = None


@dataclass(frozen=True)
class AnchorResult:
    """What one anchoring did: the tenants (newly) anchored, the chains that did not verify, where."""

    anchored: Mapping[str, Anchor]
    broken: list[ChainReport]
    location: str | None


def _body(checkpoint: Checkpoint) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "anchored_at": checkpoint.anchored_at,
        "key_id": checkpoint.key_id,
        "previous_sha256": checkpoint.previous_sha256,
        "chains": {
            tenant: {"seq": a.seq, "row_hash": a.row_hash, "rows": a.rows, "anchored_at": a.anchored_at}
            for tenant, a in sorted(checkpoint.chains.items())
        },
    }


def encode(checkpoint: Checkpoint, key: LedgerKey) -> bytes:
    """The checkpoint as stored: JCS JSON of its body plus ``mac`` = HMAC-SHA256(K_checkpoint, JCS(body))."""
    body = _body(checkpoint)
    mac = hmac.new(key.anchor, rfc8785.dumps(body), hashlib.sha256).hexdigest()
    return rfc8785.dumps({**body, "mac": mac}) + b"\n"


def decode(data: bytes, key: LedgerKey) -> Checkpoint:
    """Parse and authenticate a stored checkpoint.

    Raises:
        CheckpointInvalid: not JSON of the format, or its ``mac`` does not verify under ``key``.
    """
    try:
        document = json.loads(data)
        mac = document.pop("mac")
        if document.get("format") != FORMAT or not isinstance(mac, str):
            raise ValueError("unknown format")
        expected = hmac.new(key.anchor, rfc8785.dumps(document), hashlib.sha256).hexdigest()
    except (ValueError, KeyError, TypeError, AttributeError, rfc8785.CanonicalizationError):
        raise CheckpointInvalid("is not a fulfill ledger checkpoint") from None
    if not hmac.compare_digest(mac, expected):
        other = document.get("key_id") != key.key_id
        raise CheckpointInvalid(
            "is not signed with this ledger key: "
            + ("it names another key (the key changed?)" if other else "it was forged or altered")
        )
    try:
        chains = {
            str(tenant): Anchor(int(a["seq"]), str(a["row_hash"]), int(a["rows"]), str(a["anchored_at"]))
            for tenant, a in document["chains"].items()
        }
        return Checkpoint(
            anchored_at=str(document["anchored_at"]),
            key_id=str(document["key_id"]),
            chains=chains,
            previous_sha256=document.get("previous_sha256"),
        )
    except (KeyError, TypeError, ValueError, AttributeError):
        raise CheckpointInvalid("is signed but malformed") from None


def read(store: ObjectStore, key: LedgerKey) -> tuple[Checkpoint | None, bytes | None]:
    """The newest checkpoint and its stored bytes, or ``(None, None)`` before the first anchoring.

    Raises:
        CheckpointInvalid: see :func:`decode`.
    """
    data = store.get(LATEST)
    if data is None:
        return None, None
    return decode(data, key), data


def verify(
    session: Session,
    store: ObjectStore,
    tenant_ids: Iterable[str] | None = None,
    *,
    key: LedgerKey | None = None,
) -> list[ChainReport]:
    """Verify the chains against the newest checkpoint (see :func:`fulfill.ledger.verify_chains`).

    A checkpoint that does not authenticate is reported as a failed pseudo-tenant
    (:data:`CHECKPOINT_TENANT`) first; the chains are then verified without anchors.
    """
    key = key or ledger_key()
    try:
        checkpoint, _ = read(store, key)
    except CheckpointInvalid as exc:
        problem = ChainReport(
            CHECKPOINT_TENANT, 0, False, reason=f"the ledger checkpoint {store.url(LATEST)} {exc}"
        )
        return [problem, *verify_chains(session, tenant_ids, key=key)]
    anchors = checkpoint.chains if checkpoint is not None else None
    return verify_chains(session, tenant_ids, key=key, anchors=anchors)


def anchor(
    session: Session,
    store: ObjectStore,
    tenant_ids: Iterable[str] | None = None,
    *,
    key: LedgerKey | None = None,
) -> AnchorResult:
    """Verify the chains (every tenant's, or the given ones') and write a new checkpoint.

    Chains that verify get their current head anchored; a chain that does not keeps its previous
    anchor. Tenants not verified this time (another's ``tenant_ids``) keep theirs too. Runs inside
    ``session``'s transaction; on PostgreSQL an advisory lock serialises concurrent anchorings (on
    SQLite the write transaction already does).

    Raises:
        CheckpointInvalid: the stored checkpoint does not authenticate: nothing is written (an
            operator must look at it; anchoring over it would forget what it anchored).
    """
    key = key or ledger_key()
    if session.get_bind().dialect.name == "postgresql":
        session.execute(sa.text("SELECT pg_advisory_xact_lock(:id)"), {"id": ANCHOR_LOCK})
    previous, previous_bytes = read(store, key)
    chains = dict(previous.chains) if previous is not None else {}
    reports = verify_chains(session, tenant_ids, key=key, anchors=chains)
    now = db_now(session).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    anchored: dict[str, Anchor] = {}
    for report in reports:
        if report.ok and report.rows and report.head_hash is not None:
            anchored[report.tenant_id] = Anchor(report.rows, report.head_hash, report.rows, now)
    chains.update(anchored)
    checkpoint = Checkpoint(
        anchored_at=now,
        key_id=key.key_id,
        chains=chains,
        previous_sha256=hashlib.sha256(previous_bytes).hexdigest() if previous_bytes else None,
    )
    data = encode(checkpoint, key)
    stamp = now.replace(":", "").replace("-", "")
    store.put(f"{HISTORY}/{stamp}-{secrets.token_hex(4)}.json", data, "application/json")
    store.put(LATEST, data, "application/json")
    return AnchorResult(anchored, [r for r in reports if not r.ok], store.url(LATEST))
