"""Anchoring the ledger outside the database: where the checkpoints go, and the maintenance task.

The store is ``FULFILL_LEDGER_ANCHOR_BLOCK`` (a prefect-aws ``S3Bucket`` block; give the bucket
versioning and Object Lock) or, by default, the data directory (``$FULFILL_DATA_DIR/ledger-anchors``).
"""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task
from pydantic import BaseModel

from fulfill import anchors
from fulfill.db import get_engine, transaction
from fulfill.settings import load_settings
from fulfill.storage import LocalObjectStore, ObjectStore, S3ObjectStore


def anchor_store() -> ObjectStore:
    """Where checkpoints are written and read (see the module docstring)."""
    settings = load_settings()
    if settings.ledger_anchor_block:
        from prefect_aws.s3 import S3Bucket

        return S3ObjectStore.from_block(S3Bucket.load(settings.ledger_anchor_block))
    return LocalObjectStore(Path(settings.data_dir))


class AnchorSummary(BaseModel):
    """One anchoring: the tenants anchored (with their sequence number), the broken chains, where."""

    anchored: dict[str, int]
    broken: dict[str, str]
    location: str | None


def anchor_now(tenant_ids: list[str] | None = None) -> AnchorSummary:
    """Verify and anchor the chains (every tenant's, or the given ones') in one transaction."""
    store = anchor_store()
    with transaction(get_engine()) as session:
        result = anchors.anchor(session, store, tenant_ids)
    return AnchorSummary(
        anchored={tenant: a.seq for tenant, a in result.anchored.items()},
        broken={r.tenant_id: f"seq {r.broken_seq}: {r.reason}" for r in result.broken},
        location=result.location,
    )


@task(name="anchor-ledger")
def anchor_ledger(tenant_ids: list[str] | None = None) -> AnchorSummary:
    """Prefect task of :func:`anchor_now`; a broken chain is logged as an error (it keeps its old anchor)."""
    summary = anchor_now(tenant_ids)
    logger = get_run_logger()
    logger.info("anchored %d ledger chains at %s", len(summary.anchored), summary.location)
    for tenant, problem in summary.broken.items():
        logger.error("ledger chain of tenant %s does not verify (not anchored): %s", tenant, problem)
    return summary
