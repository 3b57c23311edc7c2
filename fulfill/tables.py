"""SQLModel tables, in Base / table / Public families.

``XBase`` holds the fields an integrator may see, ``X(XBase, table=True)`` adds storage-only
columns (leases, hashes, raw JSON), and ``XPublic`` is what the API and CLI serialise — table
rows are never serialised directly.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator
from sqlmodel import AutoString, Field, SQLModel

from fulfill.states import Compensation, ExecutionStatus, FailureCode, StepStatus, TokenRole


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: fulfill stores UTC-aware datetimes only")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class EnumString(TypeDecorator[str]):
    """A plain string column (``VARCHAR(length)``, no database enum) that reads back as ``enum`` members.

    Writes store the member's string; a value the enum does not know is refused on read, so a row
    never carries a status or code outside the contract.
    """

    impl = AutoString
    cache_ok = True

    def __init__(self, enum: type[StrEnum], length: int) -> None:
        super().__init__(length=length)
        self.enum = enum

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        return None if value is None else str(value)

    def process_result_value(self, value: str | None, dialect: Dialect) -> str | None:
        return None if value is None else self.enum(value)


def _ts(nullable: bool = True, **kwargs: Any) -> Any:
    return Field(default=None, sa_type=UtcDateTime, nullable=nullable, **kwargs)


JSONText = sa.JSON().with_variant(JSONB(), "postgresql")


# --- tenants -------------------------------------------------------------------------------
class TenantBase(SQLModel):
    tenant_id: str = Field(primary_key=True, max_length=64)
    name: str = Field(default="", max_length=255)
    crm_provider: str | None = Field(default=None, max_length=32, description="salesforce | hubspot")
    crm_block: str | None = Field(default=None, max_length=255, description="Prefect block document name")
    calendar_provider: str | None = Field(default=None, max_length=32, description="google_calendar")
    calendar_block: str | None = Field(default=None, max_length=255)
    storage_block: str | None = Field(
        default=None,
        max_length=255,
        description="prefect-aws S3Bucket block for briefs; none = local directory",
    )


class Tenant(TenantBase, table=True):
    __tablename__ = "tenants"
    created_at: datetime | None = _ts()


class TenantPublic(TenantBase):
    created_at: datetime | None = None


# --- executions ----------------------------------------------------------------------------
class ExecutionBase(SQLModel):
    action_intent_id: str = Field(primary_key=True, max_length=128)
    tenant_id: str = Field(index=True, max_length=64)
    account_id: str = Field(max_length=128)
    decision_id: str = Field(max_length=128)
    action_type: str = Field(max_length=64)
    status: ExecutionStatus = Field(
        sa_type=EnumString(ExecutionStatus, 16),
        description="PENDING EXECUTING SUCCEEDED FAILED EXPIRED CANCELLED",
    )
    explanation: str = Field(default="", sa_type=sa.Text)
    failure_code: FailureCode | None = Field(default=None, sa_type=EnumString(FailureCode, 32))
    failure_message: str | None = Field(default=None, sa_type=sa.Text)
    needs_human: bool = False
    compensation: Compensation = Field(default=Compensation.NONE, sa_type=EnumString(Compensation, 24))
    approved_by: str = Field(max_length=320)
    approved_at: str = Field(max_length=64)
    expires_at_epoch: int = Field(sa_type=sa.BigInteger)
    flow_run_id: str | None = Field(default=None, max_length=64)


class Execution(ExecutionBase, table=True):
    __tablename__ = "executions"
    __table_args__ = (
        # The status API's listing: an account's executions newest first, keyset-paginated on
        # (created_at, action_intent_id), optionally by status — each page is an ordered index range.
        sa.Index(
            "ix_executions_account_created_id", "tenant_id", "account_id", "created_at", "action_intent_id"
        ),
        sa.Index(
            "ix_executions_account_status_created_id",
            "tenant_id",
            "account_id",
            "status",
            "created_at",
            "action_intent_id",
        ),
        # The reconciler's watch (a pass every second or two): open executions only, by lease expiry.
        sa.Index("ix_executions_status_lease", "status", "lease_until"),
        sa.Index("ix_executions_undo_owed", "compensation_pending", "lease_until"),
    )

    intent_json: dict[str, Any] = Field(sa_type=JSONText)
    intent_sha256: str = Field(max_length=64)
    attempt: int = 0
    generation: int = 0
    lease_owner: str | None = Field(default=None, max_length=64)
    lease_until: datetime | None = _ts()
    compensation_pending: bool = Field(
        default=False,
        sa_column_kwargs={"server_default": sa.false()},
        description="Steps of this generation still have to be undone (cancel, failure, expiry); "
        "whoever holds the lease finishes it, else the reconciler",
    )
    created_at: datetime | None = _ts(nullable=False)
    updated_at: datetime | None = _ts(nullable=False)
    finished_at: datetime | None = _ts()


# --- steps (checkpoints) -------------------------------------------------------------------
class StepRecord(SQLModel, table=True):
    __tablename__ = "steps"
    __table_args__ = (sa.UniqueConstraint("action_intent_id", "generation", "step", name="uq_steps_key"),)

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: str = Field(index=True, max_length=64)
    action_intent_id: str = Field(index=True, max_length=128)
    generation: int = 0
    seq: int
    step: str = Field(max_length=64)
    system: str = Field(max_length=32)
    idempotency_key: str = Field(max_length=255)
    status: StepStatus = Field(
        sa_type=EnumString(StepStatus, 24), description="CALL_STARTED SUCCEEDED FAILED COMPENSATED …"
    )
    attempts: int = 0
    call_json: dict[str, Any] = Field(sa_type=JSONText)
    result_json: dict[str, Any] | None = Field(default=None, sa_type=JSONText)
    error_json: dict[str, Any] | None = Field(default=None, sa_type=JSONText)
    unsettled_until: datetime | None = _ts(
        description="An attempt's answer was lost: the provider may still commit it until this instant"
    )
    started_at: datetime | None = _ts()
    finished_at: datetime | None = _ts()


# --- outcomes ------------------------------------------------------------------------------
class Outcome(SQLModel, table=True):
    __tablename__ = "outcomes"
    __table_args__ = (sa.UniqueConstraint("action_intent_id", "attempt", name="uq_outcomes_attempt"),)

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: str = Field(index=True, max_length=64)
    action_intent_id: str = Field(index=True, max_length=128)
    attempt: int
    status: ExecutionStatus = Field(sa_type=EnumString(ExecutionStatus, 16))
    explanation: str = Field(sa_type=sa.Text)
    failure_json: dict[str, Any] | None = Field(default=None, sa_type=JSONText)
    external_refs: list[dict[str, Any]] = Field(default_factory=list, sa_type=JSONText)
    created_at: datetime | None = _ts(nullable=False)


# --- ledger --------------------------------------------------------------------------------
class LedgerBase(SQLModel):
    tenant_id: str = Field(max_length=64)
    seq: int
    action_intent_id: str | None = Field(default=None, max_length=128, index=True)
    event_type: str = Field(max_length=32)
    at: str = Field(max_length=40, description="RFC 3339 UTC with microseconds, database clock")
    actor: str = Field(max_length=320)
    details: dict[str, Any] = Field(default_factory=dict, sa_type=JSONText)


class LedgerEntry(LedgerBase, table=True):
    __tablename__ = "ledger"
    __table_args__ = (sa.UniqueConstraint("tenant_id", "seq", name="uq_ledger_tenant_seq"),)

    id: int | None = Field(default=None, primary_key=True)
    prev_hash: str = Field(max_length=64)
    row_hash: str = Field(max_length=64)


class LedgerPublic(LedgerBase):
    row_hash: str


class LedgerAppended(LedgerBase):
    """A row as :func:`fulfill.ledger.append` wrote it."""

    id: int
    prev_hash: str
    row_hash: str


class LedgerHead(SQLModel, table=True):
    """The tip of each tenant's chain; its row lock serialises appends per tenant."""

    __tablename__ = "ledger_heads"

    tenant_id: str = Field(primary_key=True, max_length=64)
    seq: int = 0
    row_hash: str = Field(max_length=64)


# --- security log (rejected submissions whose approval signature did not verify) ----------------
class SecurityEventBase(SQLModel):
    """A refused submission nobody authenticated: kept apart from every tenant's ledger and timeline.

    Every text comes from (or quotes) a possibly forged document: bounded and made storable.
    """

    id: int | None = Field(default=None, primary_key=True)
    at: datetime | None = _ts(nullable=False, description="Database clock; the last one for a counted row")
    code: FailureCode = Field(
        sa_type=EnumString(FailureCode, 32), description="VALIDATION_FAILED or APPROVAL_INVALID"
    )
    claimed_tenant_id: str | None = Field(
        default=None, max_length=64, description="The tenant the document claims (not verified)"
    )
    claimed_intent_id: str | None = Field(
        default=None, max_length=128, index=True, description="The action_intent_id it claims (not verified)"
    )
    key_id: str | None = Field(default=None, max_length=64, description="The approval key_id it claims")
    field: str | None = Field(default=None, max_length=256)
    reason: str = Field(max_length=500)
    document_sha256: str | None = Field(
        default=None, max_length=64, description="SHA-256 of what was received"
    )
    count: int = Field(default=1, description="Submissions this row stands for (more than 1: counted only)")


class SecurityEvent(SecurityEventBase, table=True):
    __tablename__ = "security_log"
    __table_args__ = (sa.Index("ix_security_log_minute_tenant", "minute", "claimed_tenant_id"),)

    minute: str = Field(max_length=16, description="YYYY-MM-DDTHH:MM (UTC): the rate-limit window")
    bucket: str | None = Field(
        default=None,
        max_length=96,
        unique=True,
        description="Set on a counted row only: the window and claimed tenant (or *) it counts",
    )


class SecurityEventPublic(SecurityEventBase):
    minute: str


# --- controls (kill switches) --------------------------------------------------------------
class ControlBase(SQLModel):
    scope: str = Field(primary_key=True, max_length=16, description="tenant | action_type")
    key: str = Field(primary_key=True, max_length=64)
    enabled: bool = True
    reason: str = Field(default="", max_length=1000)
    changed_by: str = Field(default="system", max_length=320)


class Control(ControlBase, table=True):
    __tablename__ = "controls"
    changed_at: datetime | None = _ts()


class ControlPublic(ControlBase):
    changed_at: datetime | None = None


# --- signals outbox ------------------------------------------------------------------------
class Signal(SQLModel, table=True):
    __tablename__ = "signals"

    signal_id: str = Field(primary_key=True, max_length=64)
    tenant_id: str = Field(index=True, max_length=64)
    action_intent_id: str = Field(index=True, max_length=128)
    kind: str = Field(max_length=32, description="ACTION_EXECUTED | ACTION_FAILED")
    payload: dict[str, Any] = Field(sa_type=JSONText)
    created_at: datetime | None = _ts(nullable=False)
    delivered_at: datetime | None = _ts()
    delivery_attempts: int = 0
    next_attempt_at: datetime | None = _ts(
        description="Not retried before this instant (exponential backoff after a failed delivery)"
    )
    dead_lettered_at: datetime | None = _ts(description="Delivery given up after the last attempt")
    last_error: str | None = Field(default=None, sa_type=sa.Text, description="Why the last attempt failed")


# --- internal systems (the internal adapter's own records) ---------------------------------
class InternalRecordBase(SQLModel):
    tenant_id: str = Field(index=True, max_length=64)
    account_id: str = Field(max_length=128)
    action_intent_id: str = Field(max_length=128)
    idempotency_key: str = Field(unique=True, max_length=255)
    title: str = Field(default="", max_length=255)


class InternalTask(InternalRecordBase, table=True):
    __tablename__ = "internal_tasks"
    id: int | None = Field(default=None, primary_key=True)
    assignee: str | None = Field(default=None, max_length=255)
    due_date: str | None = Field(default=None, max_length=10)
    description: str | None = Field(default=None, sa_type=sa.Text)
    created_at: datetime | None = _ts()
    voided_at: datetime | None = _ts()


class InternalNote(InternalRecordBase, table=True):
    __tablename__ = "internal_notes"
    id: int | None = Field(default=None, primary_key=True)
    body: str = Field(sa_type=sa.Text)
    created_at: datetime | None = _ts()
    voided_at: datetime | None = _ts()


class InternalAttachment(InternalRecordBase, table=True):
    __tablename__ = "internal_attachments"
    id: int | None = Field(default=None, primary_key=True)
    content_type: str = Field(max_length=255)
    storage: str = Field(max_length=16, description="local | s3")
    object_key: str = Field(max_length=1024)
    size_bytes: int
    sha256: str = Field(max_length=64)
    created_at: datetime | None = _ts()
    voided_at: datetime | None = _ts()


# --- API bearer tokens ---------------------------------------------------------------------
class ApiTokenBase(SQLModel):
    token_id: str = Field(primary_key=True, max_length=32, description="Public id, tok_…")
    tenant_id: str | None = Field(default=None, index=True, max_length=64, description="None: admin")
    role: TokenRole = Field(sa_type=EnumString(TokenRole, 16), description="viewer | operator | admin")
    name: str = Field(default="", max_length=255)
    created_by: str = Field(default="", max_length=320)


class ApiToken(ApiTokenBase, table=True):
    """A bearer token of the status API; only the SHA-256 of its secret is stored."""

    __tablename__ = "api_tokens"
    secret_sha256: str = Field(max_length=64)
    created_at: datetime | None = _ts(nullable=False)
    expires_at: datetime | None = _ts(nullable=False)
    revoked_at: datetime | None = _ts()


class ApiTokenPublic(ApiTokenBase):
    created_at: datetime | None = None
    expires_at: datetime | None = None
    revoked_at: datetime | None = None


# --- connector health (the connector-health flow's latest check per tenant and provider) ----
class ConnectorHealthBase(SQLModel):
    tenant_id: str = Field(primary_key=True, max_length=64)
    provider: str = Field(
        primary_key=True, max_length=32, description="salesforce | hubspot | google_calendar"
    )
    block: str | None = Field(default=None, max_length=255, description="The credential block checked")
    ok: bool = False
    error_class: str | None = Field(
        default=None, max_length=64, description="The connector error class when the check failed"
    )
    latency_ms: float | None = None


class ConnectorHealth(ConnectorHealthBase, table=True):
    __tablename__ = "connector_health"
    checked_at: datetime | None = _ts(nullable=False)


class ConnectorHealthPublic(ConnectorHealthBase):
    checked_at: datetime | None = None
