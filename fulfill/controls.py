"""Kill switches, in layers (checked before EVERY external call).

1. the global emergency stop: ``FULFILL_EMERGENCY_STOP`` (environment, read at every check);
2. per tenant and per action type: rows in ``controls``, flipped through the API/CLI;
3. Prefect-native: pausing the ``fulfill`` work pool holds new runs (see docs/operations.md).
"""

from __future__ import annotations

from sqlmodel import Session, select

from fulfill import ledger
from fulfill.db import db_now
from fulfill.settings import emergency_stop_engaged
from fulfill.tables import Control, ControlPublic

SYSTEM_TENANT = "_system"
SCOPES = ("tenant", "action_type")


def blocked_reason(session: Session, tenant_id: str, action_type: str) -> str | None:
    """Why no external call may start now for this tenant/action type, or ``None``."""
    if emergency_stop_engaged():
        return "the global emergency stop (FULFILL_EMERGENCY_STOP) is engaged"
    rows = session.exec(
        select(Control).where(
            ((Control.scope == "tenant") & (Control.key == tenant_id))
            | ((Control.scope == "action_type") & (Control.key == action_type))
        )
    )
    for row in rows:
        if not row.enabled:
            what = f"tenant {tenant_id}" if row.scope == "tenant" else f"action type {action_type}"
            because = f": {row.reason}" if row.reason else ""
            return f"the kill switch for {what} is engaged{because}"
    return None


def set_switch(session: Session, scope: str, key: str, *, enabled: bool, reason: str, actor: str) -> Control:
    """Flip a switch and ledger the change (on the tenant's chain, or the system chain for action types)."""
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}")
    row = session.get(Control, (scope, key), with_for_update=True)
    now = db_now(session)
    if row is None:
        row = Control(scope=scope, key=key)
    previous = row.enabled
    row.enabled = enabled
    row.reason = reason
    row.changed_by = actor
    row.changed_at = now
    session.add(row)
    ledger.append(
        session,
        tenant_id=key if scope == "tenant" else SYSTEM_TENANT,
        event_type="KILL_SWITCH_CHANGED",
        actor=actor,
        details={"scope": scope, "key": key, "enabled": enabled, "was_enabled": previous, "reason": reason},
    )
    return row


def list_switches(session: Session, tenant_id: str | None = None) -> list[ControlPublic]:
    """Switches visible to a tenant (its own and every action type), or all for an admin (``None``)."""
    query = select(Control)
    if tenant_id is not None:
        query = query.where((Control.scope == "action_type") | (Control.key == tenant_id))
    return [ControlPublic.model_validate(row, from_attributes=True) for row in session.exec(query)]
