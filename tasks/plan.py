"""Plan: which connector fulfils the action for this tenant, and its ordered steps."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from connectors.errors import ConnectorError
from fulfill import executions
from fulfill.db import get_engine, transaction
from fulfill.executions import Failure, Lease
from fulfill.states import FailureCode
from tasks.resolve import resolve_connector


class Plan(BaseModel):
    """The steps of one action, and what makes their cache keys unique to this execution."""

    system: str
    steps: list[str]
    self_ledgered_steps: list[str]
    fingerprint: str


def plan(lease: Lease, action_type: str, params: dict[str, Any]) -> Plan | Failure:
    """Resolve the tenant's connector, validate the parameters for it, and list the steps (one read)."""
    try:
        connector = resolve_connector(lease.tenant_id, action_type)
        connector.validate(action_type, params)
    except ConnectorError as error:
        code = FailureCode(error.code)
        return Failure(code, error.seller_message, needs_human=code == FailureCode.NOT_CONFIGURED)
    with transaction(get_engine()) as session:
        execution = executions.get(session, lease.tenant_id, lease.action_intent_id)
        created = execution.created_at.timestamp() if execution.created_at else 0
        fingerprint = f"{execution.intent_sha256[:16]}-{int(created * 1_000_000)}"
    return Plan(
        system=connector.system,
        steps=connector.steps(action_type, params),
        self_ledgered_steps=sorted(getattr(connector, "self_ledgered_steps", ())),
        fingerprint=fingerprint,
    )
