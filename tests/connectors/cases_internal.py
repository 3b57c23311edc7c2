"""Conformance cases for the internal-systems adapter (database + local object storage)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlmodel import select

from connectors.base import ExternalRef, StepCall, StepResult
from connectors.internal import InternalConnector
from fulfill.db import make_engine, transaction, upgrade
from fulfill.storage import LocalObjectStore
from fulfill.tables import InternalAttachment, InternalNote, InternalTask
from tests.connectors.conformance import ConformanceCase


class _DropAfterCommit(InternalConnector):
    """Simulates a crash after the commit: the write lands, the caller never hears back."""

    drop_next = False

    def execute(self, call: StepCall) -> StepResult:
        result = super().execute(call)
        if self.drop_next:
            self.drop_next = False
            from connectors.errors import OutcomeUnknown

            raise OutcomeUnknown("worker lost the answer after commit")
        return result


class InternalEnv:
    def __init__(self, tmp_path: Path, table: Any) -> None:
        self.engine = make_engine(f"sqlite:///{tmp_path / 'internal.db'}")
        upgrade(self.engine)
        self.store = LocalObjectStore(tmp_path / "objects")
        self.connector = _DropAfterCommit(self.engine, self.store)
        self.table = table

    def observe(self) -> Any:
        if self.table is None:
            return tuple(sorted(str(p.relative_to(self.store.root)) for p in self.store.root.rglob("*.*")))
        with transaction(self.engine) as session:
            rows = session.exec(select(self.table.id).where(self.table.voided_at.is_(None)))  # type: ignore[union-attr]
            return tuple(sorted(rows))

    def drop_next_write(self) -> None:
        self.connector.drop_next = True

    def fail_next(self, status: int, body: Any, headers: dict[str, str]) -> None:
        raise AssertionError("the internal adapter has no HTTP errors to classify")

    def stored_brief(self) -> dict[str, ExternalRef]:
        call = StepCall(
            action_intent_id="ai_conf_0001",
            tenant_id="acme",
            account_id="001Hs00002abcDEF",
            action_type="internal.attach_brief",
            step="store_brief",
            idempotency_key="ai_conf_0001:store_brief",
            params=BRIEF,
        )
        return {"store_brief": InternalConnector(self.engine, self.store).execute(call).ref}


BRIEF = {"title": "Account brief", "content": "# Acme\n\nARR 1.2M", "content_type": "text/markdown"}

CASES = [
    ConformanceCase(
        id="internal:internal.create_task",
        action_type="internal.create_task",
        step="create_task",
        params={"title": "Prepare QBR deck", "assignee": "sam@acme.example", "due_date": "2026-12-01"},
        make_env=lambda tmp: InternalEnv(tmp, InternalTask),
        bad_params={"title": ""},
        bad_field="title",
    ),
    ConformanceCase(
        id="internal:internal.log_note",
        action_type="internal.log_note",
        step="log_note",
        params={"body": "Customer prefers a 3-year deal.", "title": "Call notes"},
        make_env=lambda tmp: InternalEnv(tmp, InternalNote),
        bad_params={"title": "no body"},
        bad_field="body",
    ),
    ConformanceCase(
        id="internal:internal.attach_brief:store_brief",
        action_type="internal.attach_brief",
        step="store_brief",
        params=BRIEF,
        make_env=lambda tmp: InternalEnv(tmp, None),
        bad_params={"title": "x", "content": "x" * (1024 * 1024 + 1)},
        bad_field="content",
    ),
    ConformanceCase(
        id="internal:internal.attach_brief:create_attachment",
        action_type="internal.attach_brief",
        step="create_attachment",
        params=BRIEF,
        make_env=lambda tmp: InternalEnv(tmp, InternalAttachment),
        bad_params={"title": "x", "content": "y", "content_type": "not a mime type"},
        bad_field="content_type",
        prior=lambda env: env.stored_brief(),  # type: ignore[attr-defined]
    ),
]
