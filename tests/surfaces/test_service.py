"""ExecutionService reads: keyset pagination, filters, tenant scoping."""

from __future__ import annotations

import pickle
import time
from typing import Any

import pytest

from fulfill.executions import ExecutionNotFound
from fulfill.states import ExecutionStatus, FailureCode
from surfaces.service import ExecutionService, IntentRejected, InvalidRequest, TenantNotFound
from tasks.admit import verify_and_register


def test_keyset_pagination_newest_first_with_status_filter(
    engine: Any, make_intent: Any, tenant: str
) -> None:
    ids = []
    for n in range(5):
        intent = make_intent("internal.create_task", {"title": f"T{n}"})
        assert verify_and_register(intent).admitted
        ids.append(intent["action_intent_id"])
    service = ExecutionService(engine)
    seen: list[str] = []
    cursor = None
    while True:
        page = service.list_executions(
            tenant_id=tenant, account_id="001Hs00002abcDEF", limit=2, cursor=cursor
        )
        assert len(page.items) <= 2
        seen += [item.action_intent_id for item in page.items]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == list(reversed(ids)), "newest first, each exactly once"
    service.cancel_execution(ids[0], tenant, actor="jordan@acme.example")
    cancelled = service.list_executions(tenant_id=tenant, statuses=["CANCELLED"])
    assert [i.action_intent_id for i in cancelled.items] == [ids[0]]
    both = service.list_executions(tenant_id=tenant, statuses=["CANCELLED", "PENDING"], limit=50)
    assert len(both.items) == 5
    assert service.list_executions(tenant_id=tenant, account_id="another-account").items == []


def test_malformed_cursor_is_a_clear_error(engine: Any, tenant: str) -> None:
    with pytest.raises(ValueError, match="cursor"):
        ExecutionService(engine).list_executions(tenant_id=tenant, cursor="not-a-cursor")


def test_pending_status_body_has_the_contract_shape(engine: Any, make_intent: Any, tenant: str) -> None:
    expires = int(time.time()) + 86400
    intent = make_intent("internal.log_note", {"body": "x"}, expires_at_epoch=expires)
    assert verify_and_register(intent).admitted
    body = (
        ExecutionService(engine)
        .get_execution_status(intent["action_intent_id"], tenant)
        .model_dump(mode="json")
    )
    assert set(body) == {
        "action_intent_id",
        "tenant_id",
        "account_id",
        "decision_id",
        "action_type",
        "status",
        "explanation",
        "failure",
        "external_refs",
        "attempts",
        "approved_by",
        "approved_at",
        "expires_at",
        "created_at",
        "updated_at",
        "finished_at",
    }
    assert body["status"] == "PENDING" and body["failure"] is None and body["attempts"] == 0
    assert body["expires_at"] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expires))
    with pytest.raises(ExecutionNotFound):
        ExecutionService(engine).get_execution_status("ai_never_seen", tenant)


@pytest.mark.usefixtures("prefect_server")
def test_a_brief_above_prefects_parameter_limit_executes_by_reference(
    engine: Any, make_intent: Any, tenant: str, tmp_path: Any
) -> None:
    """Prefect refuses flow-run parameters over 512 KiB; a contract-sized brief (≤ 1 MiB) must still run."""
    from prefect.client.orchestration import get_client

    from fulfill import executions
    from fulfill.db import transaction

    content = "# Account brief\n" + "x" * (900 * 1024)
    intent = make_intent("internal.attach_brief", {"title": "Big brief", "content": content})

    status = ExecutionService(engine).execute_action_intent(intent)

    assert status.status == "SUCCEEDED", status
    with transaction(engine) as session:
        flow_run_id = executions.get(session, tenant, intent["action_intent_id"]).flow_run_id
    assert flow_run_id is not None
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(flow_run_id)
    assert run.parameters["action_intent_id"] == intent["action_intent_id"]
    assert run.parameters.get("intent") is None, "the intent's content is no flow-run parameter"
    stored = list((tmp_path / "data" / "objects").rglob("*"))
    assert any(p.is_file() and p.stat().st_size == len(content.encode()) for p in stored), stored


def test_a_rejected_intent_raises_intent_rejected_with_its_code(
    engine: Any, make_intent: Any, tenant: str
) -> None:
    intent = make_intent("internal.create_task", {"title": "Tampered"})
    intent["parameters"]["title"] = "Edited after approval"
    with pytest.raises(IntentRejected) as raised:
        ExecutionService(engine).execute_action_intent(intent)
    assert raised.value.code is FailureCode.APPROVAL_INVALID
    assert str(raised.value) == f"APPROVAL_INVALID: {raised.value.reason}"
    again = pickle.loads(pickle.dumps(raised.value))
    assert (again.code, again.field, again.reason) == (
        raised.value.code,
        raised.value.field,
        raised.value.reason,
    )


def test_status_filters_take_enum_members(engine: Any, make_intent: Any, tenant: str) -> None:
    intent = make_intent("internal.create_task", {"title": "Filter"})
    assert verify_and_register(intent).admitted
    service = ExecutionService(engine)
    pending = service.list_executions(tenant_id=tenant, statuses=[ExecutionStatus.PENDING])
    assert [i.action_intent_id for i in pending.items] == [intent["action_intent_id"]]
    assert pending.items[0].status is ExecutionStatus.PENDING
    assert service.list_executions(tenant_id=tenant, statuses=["NOT_A_STATUS"]).items == []


# --- what the CLI used to do with its own transactions -------------------------------------------
def test_rerun_of_an_unknown_id_raises_execution_not_found(
    engine: Any, make_intent: Any, tenant: str
) -> None:
    service = ExecutionService(engine)
    with pytest.raises(ExecutionNotFound):
        service.rerun_execution("ai_never_seen")
    intent = make_intent("internal.create_task", {"title": "Someone else's"})
    assert verify_and_register(intent).admitted
    with pytest.raises(ExecutionNotFound):
        service.rerun_execution(intent["action_intent_id"], "another-tenant")


def test_ledger_entries_and_verification(engine: Any, make_intent: Any, tenant: str) -> None:
    intent = make_intent("internal.create_task", {"title": "Ledgered"})
    assert verify_and_register(intent).admitted
    service = ExecutionService(engine)
    rows = service.get_ledger_entries(intent["action_intent_id"], tenant)
    assert [r.event_type for r in rows] == ["INTENT_RECEIVED"] and rows[0].row_hash
    with pytest.raises(ExecutionNotFound):
        service.get_ledger_entries(intent["action_intent_id"], "another-tenant")
    (report,) = service.verify_ledger([tenant])
    assert (report.tenant_id, report.ok, report.rows) == (tenant, True, 1)
    assert tenant in [r.tenant_id for r in service.verify_ledger()]


def test_tenant_configuration_round_trip(engine: Any, tenant: str) -> None:
    service = ExecutionService(engine)
    with pytest.raises(TenantNotFound):
        service.get_tenant(tenant)
    service.set_tenant(tenant, actor="ops@acme.example", crm_provider="salesforce", crm_block="sf")
    service.set_tenant(tenant, actor="ops@acme.example", name="Acme")
    shown = service.get_tenant(tenant)
    assert (shown.name, shown.crm_provider, shown.crm_block) == ("Acme", "salesforce", "sf")
    with pytest.raises(InvalidRequest, match="CRM provider"):
        service.set_tenant(tenant, actor="ops@acme.example", crm_provider="salesfrce")
    assert service.get_tenant(tenant).crm_provider == "salesforce"


def test_kill_switches_refuse_unknown_scopes_and_action_types(engine: Any, tenant: str) -> None:
    service = ExecutionService(engine)
    with pytest.raises(InvalidRequest, match="scope must be one of tenant, action_type"):
        service.set_kill_switch("tenants", tenant, enabled=False, reason="", actor="ops")
    with pytest.raises(InvalidRequest, match=r"did you mean 'internal\.log_note'"):
        service.set_kill_switch("action_type", "internal.log_nte", enabled=False, reason="", actor="ops")
    assert all(s.key not in ("internal.log_nte", tenant) for s in service.list_kill_switches())


def test_an_unknown_tenant_is_named_with_the_closest_known_one(engine: Any, tenant: str) -> None:
    service = ExecutionService(engine)
    assert service.unknown_tenant_hint(tenant) is not None
    service.set_tenant(tenant, actor="ops@acme.example")
    assert service.unknown_tenant_hint(tenant) is None
    assert tenant in service.known_tenants()
    assert f"did you mean {tenant!r}" in (service.unknown_tenant_hint(tenant[:-1]) or "")
