"""ExecutionService: the one entry point the CLI (and later the API) use.

Reads are tenant-scoped: pass ``tenant_id`` for a tenant's view (another tenant's id raises
``ExecutionNotFound`` exactly like an unknown id) or ``None`` for an admin/operator view.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import col, select

from fulfill import controls, executions, ledger
from fulfill.db import get_engine, transaction
from fulfill.executions import ExecutionNotFound
from fulfill.states import FailureCode
from fulfill.tables import ControlPublic, Execution
from fulfill.views import (
    ExecutionPage,
    ExecutionSummary,
    StatusBody,
    Timeline,
    decode_cursor,
    encode_cursor,
    iso,
    status_view,
    timeline_view,
)

MAX_PAGE = 200


class IntentRejected(Exception):
    """Admission refused the intent; ``code`` is a contract failure code, ``field`` the culprit."""

    def __init__(self, code: FailureCode, field: str | None, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.field = field
        self.reason = reason

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.code, self.field, self.reason))


class ExecutionService:
    """Execute intents and read their state.

    Args:
        engine: The ledger database; default ``FULFILL_DATABASE_URL``.
    """

    def __init__(self, engine: Engine | None = None) -> None:
        self._engine = engine

    @property
    def engine(self) -> Engine:
        """The database engine (resolved lazily so settings can change before first use)."""
        if self._engine is None:
            self._engine = get_engine()
        return self._engine

    def execute_action_intent(self, raw: dict[str, Any]) -> StatusBody:
        """Run the ``execute-intent`` flow in this process and return the resulting status.

        A SUCCEEDED intent submitted again executes nothing and returns the first outcome.

        Raises:
            IntentRejected: invalid schema, approval signature, or conflicting content.
        """
        from prefect.settings import temporary_settings

        from flows.execute_intent import AdmissionRejected, ExecutionFailed, execute_intent
        from tasks.admit import Rejected, verify_and_register

        # Received first (verified, registered, ledgered), then run by reference: the intent (up to
        # a 1 MiB brief) never travels as a flow-run parameter, which Prefect caps at 512 KiB.
        admission = verify_and_register(raw)
        if isinstance(admission, Rejected):
            raise IntentRejected(admission.code, admission.field, admission.reason)
        try:
            # In-process runs have no worker to watch them, so Prefect's flow heartbeat (zombie
            # detection) only costs time: a sync flow joins its heartbeat thread at exit (≈1 s per
            # run, measured). Crashes are still settled by the lease and the reconcile flow.
            # Deployment runs on workers keep the heartbeat.
            with temporary_settings(updates={"flows.heartbeat_frequency": None}):
                execute_intent(action_intent_id=admission.action_intent_id)
        except AdmissionRejected as rejected:
            raise IntentRejected(rejected.code, None, rejected.message) from None
        except ExecutionFailed:
            pass  # the execution is FAILED; its status below says why
        return self.get_execution_status(admission.action_intent_id)

    def get_execution_status(self, action_intent_id: str, tenant_id: str | None = None) -> StatusBody:
        """The contract status body. Raises ExecutionNotFound (also for another tenant's id)."""
        with transaction(self.engine) as session:
            execution = executions.get(session, tenant_id, action_intent_id)
            return status_view(execution, executions.steps_of(session, action_intent_id))

    def get_timeline(self, action_intent_id: str, tenant_id: str | None = None) -> Timeline:
        """Decision → approval → execution → outcome from the ledger."""
        with transaction(self.engine) as session:
            execution = executions.get(session, tenant_id, action_intent_id)
            rows = ledger.entries_for_intent(session, execution.tenant_id, action_intent_id)
            return timeline_view(execution, rows)

    def cancel_execution(self, action_intent_id: str, tenant_id: str | None, *, actor: str) -> StatusBody:
        """Cancel a PENDING/EXECUTING intent (raises AlreadyFinished when terminal)."""
        with transaction(self.engine) as session:
            executions.cancel(session, tenant_id, action_intent_id, actor=actor)
        return self.get_execution_status(action_intent_id, tenant_id)

    def list_executions(
        self,
        *,
        tenant_id: str | None,
        account_id: str | None = None,
        statuses: Sequence[str] | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> ExecutionPage:
        """Newest first, keyset-paginated, optionally filtered by account and status.

        ``statuses``: :class:`~fulfill.states.ExecutionStatus` values; an unknown one matches nothing.
        """
        limit = max(1, min(limit, MAX_PAGE))
        query = select(Execution)
        if tenant_id is not None:
            query = query.where(Execution.tenant_id == tenant_id)
        if account_id is not None:
            query = query.where(Execution.account_id == account_id)
        if statuses:
            query = query.where(col(Execution.status).in_(statuses))
        if cursor:
            created, intent_id = decode_cursor(cursor)
            query = query.where(
                sa.or_(
                    col(Execution.created_at) < created,
                    sa.and_(
                        col(Execution.created_at) == created, col(Execution.action_intent_id) < intent_id
                    ),
                )
            )
        query = query.order_by(col(Execution.created_at).desc(), col(Execution.action_intent_id).desc())
        query = query.limit(limit + 1)
        with transaction(self.engine) as session:
            rows = list(session.exec(query))
        page = rows[:limit]
        next_cursor = (
            encode_cursor(page[-1].created_at, page[-1].action_intent_id) if len(rows) > limit else None
        )
        return ExecutionPage(
            items=[
                ExecutionSummary(
                    action_intent_id=row.action_intent_id,
                    action_type=row.action_type,
                    status=row.status,
                    explanation=row.explanation,
                    created_at=iso(row.created_at) or "",
                    finished_at=iso(row.finished_at),
                )
                for row in page
            ],
            next_cursor=next_cursor,
        )

    def set_kill_switch(
        self, scope: str, key: str, *, enabled: bool, reason: str, actor: str
    ) -> ControlPublic:
        """Flip a tenant or action-type kill switch (ledgered)."""
        with transaction(self.engine) as session:
            row = controls.set_switch(session, scope, key, enabled=enabled, reason=reason, actor=actor)
            return ControlPublic.model_validate(row, from_attributes=True)

    def list_kill_switches(self, tenant_id: str | None = None) -> list[ControlPublic]:
        """Switches visible to the tenant (or all)."""
        with transaction(self.engine) as session:
            return controls.list_switches(session, tenant_id)


__all__ = ["ExecutionNotFound", "ExecutionService", "IntentRejected"]
