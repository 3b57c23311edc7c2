"""ExecutionService: the one entry point the CLI (and later the API) use.

Reads are tenant-scoped: pass ``tenant_id`` for a tenant's view (another tenant's id raises
``ExecutionNotFound`` exactly like an unknown id) or ``None`` for an admin/operator view.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import col, select

from deployments.launch import RunLauncher, rerun_key
from fulfill import controls, executions, ledger, security_log, tenants, tokens
from fulfill.db import get_engine, transaction
from fulfill.executions import ExecutionNotFound
from fulfill.intent import ACTION_TYPES
from fulfill.ledger import ChainReport
from fulfill.states import FailureCode
from fulfill.tables import (
    ApiTokenPublic,
    ControlPublic,
    Execution,
    LedgerHead,
    LedgerPublic,
    SecurityEventPublic,
    Tenant,
    TenantPublic,
    UtcDateTime,
)
from fulfill.tokens import CreatedToken, Principal
from fulfill.views import (
    STATUS_EXPLANATIONS,
    ExecutionPage,
    ExecutionSummary,
    IntentLedger,
    StatusBody,
    Timeline,
    decode_cursor,
    encode_cursor,
    iso,
    ledger_view,
    seller_text,
    status_view,
    timeline_view,
)

if TYPE_CHECKING:
    from tasks.anchor import AnchorSummary

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


class InvalidRequest(ValueError):
    """A request the service refuses before touching any data (bad scope, unknown action type, …)."""


class TenantNotFound(LookupError):
    """No configuration for this tenant."""


def _did_you_mean(value: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(value, choices, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


class InvalidCursor(ValueError):
    """A pagination cursor that is malformed or was not issued for this listing (tenant and account)."""


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
        from flows import result_storage
        from flows.execute_intent import AdmissionRejected, ExecutionFailed, execute_intent
        from flows.heartbeat import without_flow_heartbeat
        from tasks.admit import Rejected, verify_and_register

        # Received first (verified, registered, ledgered), then run by reference: the intent (up to
        # a 1 MiB brief) never travels as a flow-run parameter, which Prefect caps at 512 KiB.
        admission = verify_and_register(raw)
        if isinstance(admission, Rejected):
            raise IntentRejected(admission.code, admission.field, admission.reason)
        result_storage.read_once_a_minute()  # not two server reads per intent (flows/result_storage.py)
        try:
            # In-process runs have no worker to watch them, so Prefect's flow heartbeat (zombie
            # detection) only costs time: a sync flow joins its heartbeat thread at exit (≈1 s per
            # run, measured). Crashes are still settled by the lease and the reconcile flow.
            # Deployment runs on workers keep the heartbeat.
            with without_flow_heartbeat():
                execute_intent(action_intent_id=admission.action_intent_id)
        except AdmissionRejected as rejected:
            raise IntentRejected(rejected.code, None, rejected.message) from None
        except ExecutionFailed:
            pass  # the execution is FAILED; its status below says why
        return self.get_execution_status(admission.action_intent_id)

    def get_execution_status(self, action_intent_id: str, tenant_id: str | None = None) -> StatusBody:
        """The contract status body. Raises ExecutionNotFound (also for another tenant's id)."""
        with transaction(self.engine, tenant=tenant_id) as session:
            execution = executions.get(session, tenant_id, action_intent_id)
            return status_view(execution, executions.steps_of(session, action_intent_id))

    def get_timeline(self, action_intent_id: str, tenant_id: str | None = None) -> Timeline:
        """Decision → approval → execution → outcome from the ledger."""
        with transaction(self.engine, tenant=tenant_id) as session:
            execution = executions.get(session, tenant_id, action_intent_id)
            rows = ledger.entries_for_intent(session, execution.tenant_id, action_intent_id)
            return timeline_view(execution, rows)

    def cancel_execution(self, action_intent_id: str, tenant_id: str | None, *, actor: str) -> StatusBody:
        """Cancel a PENDING/EXECUTING intent (raises AlreadyFinished when terminal)."""
        with transaction(self.engine, tenant=tenant_id) as session:
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
        scope = (
            f"{tenant_id if tenant_id is not None else '*'}|{account_id if account_id is not None else '*'}"
        )
        if cursor:
            try:
                created, intent_id = decode_cursor(cursor, scope)
            except ValueError:
                raise InvalidCursor("cursor: malformed, or not from this listing") from None
            query = query.where(
                # A row comparison, so PostgreSQL starts the index range scan at the cursor.
                sa.tuple_(col(Execution.created_at), col(Execution.action_intent_id))
                < sa.tuple_(sa.literal(created, UtcDateTime(timezone=True)), sa.literal(intent_id))
            )
        query = query.order_by(col(Execution.created_at).desc(), col(Execution.action_intent_id).desc())
        query = query.limit(limit + 1)
        with transaction(self.engine, tenant=tenant_id) as session:
            rows = list(session.exec(query))
        page = rows[:limit]
        next_cursor = (
            encode_cursor(page[-1].created_at, page[-1].action_intent_id, scope)
            if len(rows) > limit
            else None
        )
        return ExecutionPage(
            items=[
                ExecutionSummary(
                    action_intent_id=row.action_intent_id,
                    action_type=row.action_type,
                    status=row.status,
                    explanation=seller_text(row.explanation, STATUS_EXPLANATIONS[row.status]),
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
        """Flip a tenant or action-type kill switch (ledgered).

        Any tenant id is accepted (a tenant may be stopped before its first intent; see
        :meth:`known_tenants` to warn about a misspelling); an action type must be one of the contract's.

        Raises:
            InvalidRequest: unknown scope or action type (checked before the database is touched).
        """
        if scope not in controls.SCOPES:
            raise InvalidRequest(f"scope must be one of {', '.join(controls.SCOPES)}, not {scope!r}")
        if scope == "action_type" and key not in ACTION_TYPES:
            raise InvalidRequest(
                f"unknown action type {key!r}{_did_you_mean(key, ACTION_TYPES)}; "
                f"one of: {', '.join(ACTION_TYPES)}"
            )
        with transaction(self.engine) as session:
            row = controls.set_switch(session, scope, key, enabled=enabled, reason=reason, actor=actor)
            return ControlPublic.model_validate(row, from_attributes=True)

    def list_kill_switches(self, tenant_id: str | None = None) -> list[ControlPublic]:
        """Switches visible to the tenant (or all)."""
        with transaction(self.engine, tenant=tenant_id) as session:
            return controls.list_switches(session, tenant_id)

    def ledger_for_intent(self, action_intent_id: str, tenant_id: str | None = None) -> IntentLedger:
        """An intent's full ledger rows with the verification of its tenant's hash chain.

        Raises:
            ExecutionNotFound: unknown id, or another tenant's.
        """
        from fulfill import anchors
        from tasks.anchor import anchor_store

        store = anchor_store()
        with transaction(self.engine, tenant=tenant_id) as session:
            execution = executions.get(session, tenant_id, action_intent_id)
            rows = ledger.entries_for_intent(session, execution.tenant_id, action_intent_id)
            reports = anchors.verify(session, store, [execution.tenant_id])
            report = next(r for r in reports if r.tenant_id == execution.tenant_id)
            problem = next((r for r in reports if r.tenant_id == anchors.CHECKPOINT_TENANT), None)
            if problem is not None and report.ok:  # the checkpoint itself does not authenticate
                report = replace(report, ok=False, reason=problem.reason)
            return ledger_view(execution, rows, report)

    # --- API tokens ------------------------------------------------------------------------
    def create_token(
        self, *, role: str, tenant_id: str | None, expires_in: Any, name: str = "", created_by: str = ""
    ) -> CreatedToken:
        """A new bearer token; the secret is in the answer and nowhere else (raises TokenError)."""
        with transaction(self.engine) as session:
            return tokens.create(
                session,
                role=role,
                tenant_id=tenant_id,
                expires_in=expires_in,
                name=name,
                created_by=created_by,
            )

    def authenticate(self, secret: str) -> Principal | None:
        """The principal of a valid, unrevoked, unexpired token; ``None`` otherwise."""
        with transaction(self.engine) as session:
            return tokens.verify(session, secret)

    def list_tokens(self, tenant_id: str | None = None) -> list[ApiTokenPublic]:
        """Every token (or one tenant's), newest first, without secrets."""
        with transaction(self.engine) as session:
            return tokens.list_tokens(session, tenant_id)

    def revoke_token(self, token_id: str) -> ApiTokenPublic:
        """Revoke a token at once (raises TokenNotFound)."""
        with transaction(self.engine) as session:
            return tokens.revoke(session, token_id)

    def known_tenants(self) -> list[str]:
        """Tenants that are configured or have a ledger chain (executions, refusals, switches)."""
        with transaction(self.engine) as session:
            configured = set(session.exec(select(Tenant.tenant_id)))
            chained = set(session.exec(select(LedgerHead.tenant_id)))
        return sorted((configured | chained) - {controls.SYSTEM_TENANT})

    def unknown_tenant_hint(self, tenant_id: str) -> str | None:
        """``None`` for a known tenant, else a one-line warning (with the closest known id)."""
        known = self.known_tenants()
        if tenant_id in known:
            return None
        return (
            f"tenant {tenant_id!r} is not configured and has no executions{_did_you_mean(tenant_id, known)}"
        )

    def rerun_execution(
        self, action_intent_id: str, tenant_id: str | None = None, *, actor: str = "operator"
    ) -> StatusBody:
        """Run a FAILED intent again in this process (finished steps are skipped) and return its status.

        The request is ledgered first (``RERUN_REQUESTED`` with ``actor``).

        Raises:
            ExecutionNotFound: unknown id (or another tenant's).
            NotRerunnable: the execution is not FAILED (SUCCEEDED, EXPIRED and CANCELLED never run again).
        """
        with transaction(self.engine) as session:
            executions.request_rerun(session, tenant_id, action_intent_id, actor=actor)
            raw = executions.get(session, tenant_id, action_intent_id).intent_json
        self.execute_action_intent(raw)
        return self.get_execution_status(action_intent_id, tenant_id)

    def request_rerun(
        self, action_intent_id: str, tenant_id: str | None, *, actor: str, launcher: RunLauncher
    ) -> tuple[StatusBody, str]:
        """Rerun a FAILED execution as a new run of the deployment (the API's rerun); ledgered with ``actor``.

        Asking again before that run started finds the same run (its idempotency key names the failed
        attempt it follows). Returns the status and the flow run id.

        Raises:
            ExecutionNotFound: unknown id (or another tenant's).
            NotRerunnable: the execution is not FAILED.
        """
        with transaction(self.engine, tenant=tenant_id) as session:
            after_attempt = executions.request_rerun(session, tenant_id, action_intent_id, actor=actor)
            execution = executions.get(session, tenant_id, action_intent_id)
            owner, action_type = execution.tenant_id, execution.action_type
        flow_run_id = launcher(
            action_intent_id,
            tenant_id=owner,
            action_type=action_type,
            idempotency_key=rerun_key(action_intent_id, after_attempt),
        )
        return self.get_execution_status(action_intent_id, tenant_id), flow_run_id

    def verify_ledger(self, tenant_ids: Sequence[str] | None = None) -> list[ChainReport]:
        """Recompute the keyed chains (every tenant's and every anchored one's, or the given ones')
        against the newest checkpoint; each report names the first broken or missing row.

        A checkpoint that does not authenticate comes first, as a failed report of the pseudo-tenant
        ``fulfill.anchors.CHECKPOINT_TENANT``.
        """
        from fulfill import anchors
        from tasks.anchor import anchor_store

        store = anchor_store()
        with transaction(self.engine) as session:
            return anchors.verify(session, store, tenant_ids)

    def anchor_ledger(self, tenant_ids: Sequence[str] | None = None) -> AnchorSummary:
        """Verify the chains and write a signed checkpoint of their heads outside the database.

        Raises:
            CheckpointInvalid: the stored checkpoint does not authenticate (nothing written).
        """
        from tasks.anchor import anchor_now

        return anchor_now(list(tenant_ids) if tenant_ids is not None else None)

    def security_log(
        self, *, tenant_id: str | None = None, action_intent_id: str | None = None, limit: int = 50
    ) -> list[SecurityEventPublic]:
        """Rejected submissions whose approval signature did not verify, newest first (operator view).

        ``tenant_id`` and ``action_intent_id`` filter on what the documents CLAIM: nothing in them
        is authenticated.
        """
        with transaction(self.engine) as session:
            return security_log.entries(
                session, tenant_id=tenant_id, action_intent_id=action_intent_id, limit=limit
            )

    def get_ledger_entries(self, action_intent_id: str, tenant_id: str | None = None) -> list[LedgerPublic]:
        """An intent's ledger rows, oldest first. Raises ExecutionNotFound (also for another tenant's id)."""
        with transaction(self.engine, tenant=tenant_id) as session:
            owner = executions.get(session, tenant_id, action_intent_id).tenant_id
            return [
                LedgerPublic.model_validate(row, from_attributes=True)
                for row in ledger.entries_for_intent(session, owner, action_intent_id)
            ]

    def set_tenant(
        self,
        tenant_id: str,
        *,
        actor: str,
        name: str | None = None,
        crm_provider: str | None = None,
        crm_block: str | None = None,
        calendar_provider: str | None = None,
        calendar_block: str | None = None,
        storage_block: str | None = None,
    ) -> TenantPublic:
        """Create or update a tenant's connector configuration (ledgered; ``""`` clears a block).

        Raises:
            InvalidRequest: an unknown CRM or calendar provider.
        """
        for value, allowed, what in (
            (crm_provider, tenants.CRM_PROVIDERS, "CRM provider"),
            (calendar_provider, tenants.CALENDAR_PROVIDERS, "calendar provider"),
        ):
            if value is not None and value not in allowed:
                raise InvalidRequest(f"{what} must be one of {', '.join(allowed)}, not {value!r}")
        with transaction(self.engine) as session:
            return tenants.configure(
                session,
                tenant_id,
                actor=actor,
                name=name,
                crm_provider=crm_provider,
                crm_block=crm_block,
                calendar_provider=calendar_provider,
                calendar_block=calendar_block,
                storage_block=storage_block,
            )

    def get_tenant(self, tenant_id: str) -> TenantPublic:
        """A tenant's connector configuration. Raises TenantNotFound."""
        with transaction(self.engine) as session:
            row = tenants.get_tenant(session, tenant_id)
            if row is None:
                raise TenantNotFound(f"tenant {tenant_id!r} is not configured")
            return TenantPublic.model_validate(row, from_attributes=True)


__all__ = [
    "ExecutionNotFound",
    "ExecutionService",
    "IntentRejected",
    "InvalidCursor",
    "InvalidRequest",
    "TenantNotFound",
]
