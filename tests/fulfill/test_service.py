"""ExecutionService reads: keyset pagination, filters, tenant scoping."""

from __future__ import annotations

from typing import Any

import pytest

from fulfill.executions import ExecutionNotFound
from fulfill.service import ExecutionService
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
    intent = make_intent("internal.log_note", {"body": "x"})
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
    assert body["expires_at"] == "2100-01-01T00:00:00Z"
    with pytest.raises(ExecutionNotFound):
        ExecutionService(engine).get_execution_status("ai_never_seen", tenant)
