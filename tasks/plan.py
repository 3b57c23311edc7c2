"""Plan: which connector fulfils the action for this tenant, and its ordered steps."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from connectors.errors import ConnectorError
from fulfill.executions import Failure, Lease
from fulfill.states import FailureCode
from tasks.resolve import resolve_connector


class Plan(BaseModel):
    """The steps of one action, and what makes their cache keys unique to this execution."""

    system: str
    steps: list[str]
    self_ledgered_steps: list[str]
    fingerprint: str


def plan(lease: Lease, action_type: str, params: dict[str, Any], fingerprint: str) -> Plan | Failure:
    """Resolve the tenant's connector, validate the parameters for it, and list the steps.

    ``fingerprint``: :func:`fulfill.executions.cache_fingerprint` of the execution (the claim reads it).
    """
    try:
        connector = resolve_connector(lease.tenant_id, action_type)
        connector.validate(action_type, params)
    except ConnectorError as error:
        code = FailureCode(error.code)
        return Failure(code, error.seller_message, needs_human=code == FailureCode.NOT_CONFIGURED)
    return Plan(
        system=connector.system,
        steps=connector.steps(action_type, params),
        self_ledgered_steps=sorted(getattr(connector, "self_ledgered_steps", ())),
        fingerprint=fingerprint,
    )
