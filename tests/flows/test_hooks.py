"""A cancel in the Prefect UI is a fulfill cancel: the execution is CANCELLED and its steps undone."""

from __future__ import annotations

import uuid
from types import SimpleNamespace
from typing import Any

import pytest
from prefect.states import Cancelled, Cancelling
from sqlmodel import select

from connectors.base import StepCall, idempotency_key
from flows.hooks import UI_CANCEL_ACTOR, record_flow_end
from flows.maintenance import reconcile
from fulfill import executions, ledger
from fulfill.db import transaction
from fulfill.intent import parse_intent
from fulfill.tables import Execution, InternalTask
from surfaces.service import ExecutionService
from tasks.admit import verify_and_register
from tasks.resolve import resolve_connector

pytestmark = pytest.mark.usefixtures("prefect_server")


def _started_with_one_step_done(engine: Any, intent: dict[str, Any], run_id: uuid.UUID) -> None:
    """A run of ``run_id`` claimed the intent and finished its one step at the provider."""
    assert verify_and_register(intent, flow_run_id=str(run_id)).admitted
    with transaction(engine) as session:
        lease = executions.claim(session, intent["action_intent_id"], owner=f"{run_id}/abc", blocked=None)
    assert isinstance(lease, executions.Lease)
    call = StepCall(
        action_intent_id=lease.action_intent_id,
        tenant_id=lease.tenant_id,
        account_id=intent["account_id"],
        action_type="internal.create_task",
        step="create_task",
        idempotency_key=idempotency_key(lease.action_intent_id, "create_task", lease.generation),
        params=parse_intent(intent).normalized_parameters(),
    )
    with transaction(engine) as session:
        executions.checkpoint(session, lease, seq=0, system="internal", call=call)
    result = resolve_connector(lease.tenant_id, "internal.create_task").execute(call)
    with transaction(engine) as session:
        executions.step_succeeded(session, lease, "create_task", result, write_ledger=False)


def _live_tasks(engine: Any, intent_id: str) -> list[InternalTask]:
    with transaction(engine) as session:
        rows = session.exec(select(InternalTask).where(InternalTask.action_intent_id == intent_id)).all()
        return [row for row in rows if row.voided_at is None]


@pytest.mark.parametrize("state", [Cancelled(), Cancelling()], ids=["cancelled", "cancelling"])
def test_a_run_cancelled_in_the_ui_cancels_the_execution_and_reconcile_undoes_it(
    engine: Any, make_intent: Any, tenant: str, state: Any
) -> None:
    intent = make_intent("internal.create_task", {"title": "Cancelled from the UI"})
    intent_id = intent["action_intent_id"]
    run_id = uuid.uuid4()
    _started_with_one_step_done(engine, intent, run_id)
    assert len(_live_tasks(engine, intent_id)) == 1

    record_flow_end(None, SimpleNamespace(id=run_id, parameters={"intent": intent}), state)

    service = ExecutionService(engine)
    status = service.get_execution_status(intent_id, tenant)
    assert status.status == "CANCELLED"
    assert status.failure is not None and status.failure.code == "CANCELLED_BY_USER"
    with transaction(engine) as session:
        row = session.get(Execution, intent_id)
        assert row is not None and row.compensation_pending and row.lease_owner is None
        actors = {e.actor for e in ledger.entries_for_intent(session, tenant, intent_id)}
    assert UI_CANCEL_ACTOR in actors
    with pytest.raises(executions.AlreadyFinished):
        service.cancel_execution(intent_id, tenant, actor="jordan@acme.example")

    results = reconcile(tenant_id=tenant)

    assert [(r.status, r.compensation) for r in results if r.action_intent_id == intent_id] == [
        ("CANCELLED", "COMPENSATED")
    ]
    assert _live_tasks(engine, intent_id) == [], "the finished step was undone"
    status = service.get_execution_status(intent_id, tenant)
    assert status.status == "CANCELLED" and status.failure and status.failure.compensation == "COMPENSATED"
    # The hook again (Prefect may call it twice: Cancelling, then Cancelled) changes nothing.
    record_flow_end(None, SimpleNamespace(id=run_id, parameters={"intent": intent}), Cancelled())
    assert service.get_execution_status(intent_id, tenant).status == "CANCELLED"


def test_a_run_cancelled_before_it_claimed_cancels_the_pending_intent(
    engine: Any, make_intent: Any, tenant: str
) -> None:
    intent = make_intent("internal.create_task", {"title": "Cancelled while waiting"})
    run_id = uuid.uuid4()
    assert verify_and_register(intent, flow_run_id=str(run_id)).admitted

    record_flow_end(
        None,
        SimpleNamespace(id=run_id, parameters={"action_intent_id": intent["action_intent_id"]}),
        Cancelled(),
    )

    assert (
        ExecutionService(engine).get_execution_status(intent["action_intent_id"], tenant).status
        == "CANCELLED"
    )
    assert reconcile(tenant_id=tenant) == []
    assert _live_tasks(engine, intent["action_intent_id"]) == []


def test_another_runs_cancellation_changes_nothing(engine: Any, make_intent: Any, tenant: str) -> None:
    intent = make_intent("internal.create_task", {"title": "Not yours"})
    _started_with_one_step_done(engine, intent, uuid.uuid4())

    record_flow_end(None, SimpleNamespace(id=uuid.uuid4(), parameters={"intent": intent}), Cancelled())

    assert (
        ExecutionService(engine).get_execution_status(intent["action_intent_id"], tenant).status
        == "EXECUTING"
    )
