"""The status API over HTTP (contract §5): bearer auth, roles, tenant isolation, errors, explanations."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from connectors.base import StepCall, idempotency_key
from connectors.internal import InternalConnector
from fulfill import executions
from fulfill.controls import blocked_reason
from fulfill.db import transaction
from fulfill.intent import parse_intent
from fulfill.storage import LocalObjectStore
from fulfill.tables import ApiToken, Execution
from surfaces.api import create_app
from surfaces.intake import ApprovalIntake
from surfaces.service import ExecutionService

NOT_FOUND_INTENT = {
    "error": {"code": "NOT_FOUND", "field": "action_intent_id", "message": "no execution with this id"}
}


def _launcher(
    action_intent_id: str, *, tenant_id: str, action_type: str, idempotency_key: str | None = None
) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, idempotency_key or action_intent_id))


@pytest.fixture
def service(engine: Any) -> ExecutionService:
    return ExecutionService(engine)


@pytest.fixture
def client(service: ExecutionService) -> TestClient:
    return TestClient(create_app(ApprovalIntake(launcher=_launcher), service=service))


def bearer(service: ExecutionService, role: str, tenant: str | None, **kwargs: Any) -> dict[str, str]:
    created = service.create_token(role=role, tenant_id=tenant, expires_in=timedelta(hours=1), **kwargs)
    return {"Authorization": f"Bearer {created.secret}"}


def register(engine: Any, raw: dict[str, Any]) -> str:
    with transaction(engine) as session:
        executions.register(session, raw, parse_intent(raw))
    return str(raw["action_intent_id"])


def succeed(engine: Any, raw: dict[str, Any], tmp_path: Path) -> str:
    """Execute an internal.create_task intent through the domain calls the flow makes (no Prefect)."""
    intent_id = register(engine, raw)
    with transaction(engine) as session:
        lease = executions.claim(
            session,
            intent_id,
            owner="test/1",
            blocked=blocked_reason(session, raw["tenant_id"], raw["action_type"]),
        )
    assert isinstance(lease, executions.Lease)
    call = StepCall(
        action_intent_id=intent_id,
        tenant_id=raw["tenant_id"],
        account_id=raw["account_id"],
        action_type=raw["action_type"],
        step="create_task",
        idempotency_key=idempotency_key(intent_id, "create_task"),
        params=parse_intent(raw).normalized_parameters(),
    )
    with transaction(engine) as session:
        executions.checkpoint(session, lease, seq=0, system="internal", call=call)
    step = InternalConnector(engine, LocalObjectStore(tmp_path / "objects")).execute(call)
    with transaction(engine) as session:
        executions.step_succeeded(session, lease, "create_task", step, write_ledger=False)  # self-ledgered
        executions.finish(
            session,
            lease,
            status="SUCCEEDED",
            explanation=step.summary,
            failure=None,
            refs=[step.ref.model_dump(mode="json")],
        )
    return intent_id


def other_tenant(make_intent: Any, unique: str) -> dict[str, Any]:
    return make_intent(
        "internal.create_task",
        {"title": "Theirs"},
        tenant_id=f"b-{unique}",
        action_intent_id=f"ai_b_{unique}",
    )


# --- reads ---------------------------------------------------------------------------------
def test_a_viewer_reads_status_timeline_and_executions_of_its_tenant(
    client: TestClient, service: ExecutionService, engine: Any, make_intent: Any, tenant: str, tmp_path: Path
) -> None:
    intent_id = succeed(engine, make_intent("internal.create_task", {"title": "Renewal call"}), tmp_path)
    auth = bearer(service, "viewer", tenant)

    status = client.get(f"/actions/{intent_id}/status", headers=auth)
    timeline = client.get(f"/actions/{intent_id}/timeline", headers=auth)
    page = client.get("/accounts/001Hs00002abcDEF/executions", headers=auth)

    assert status.status_code == 200, status.text
    body = status.json()
    assert body["status"] == "SUCCEEDED" and body["tenant_id"] == tenant and body["failure"] is None
    assert body["explanation"] and "Renewal call" in body["explanation"]
    assert body["external_refs"][0]["system"] == "internal"
    assert timeline.status_code == 200
    events = timeline.json()["events"]
    assert [e["stage"] for e in events] == ["decision", "approval", "execution", "execution", "outcome"]
    assert events[2]["title"] == "Execution started"
    (step,) = [e for e in events if e["stage"] == "execution" and e["links"]]
    assert step["links"] == [body["external_refs"][0]], "the external id is shown as a link"
    assert body["external_refs"][0]["id"] in step["detail"]
    assert events[-1]["links"] == body["external_refs"]
    assert page.status_code == 200
    assert [item["action_intent_id"] for item in page.json()["items"]] == [intent_id]


def test_a_stored_text_that_is_not_a_sentence_is_replaced_by_the_catalogue(
    client: TestClient, service: ExecutionService, engine: Any, make_intent: Any, tenant: str
) -> None:
    intent_id = register(engine, make_intent("internal.create_task", {"title": "x"}))
    with transaction(engine) as session:
        executions.cancel(session, tenant, intent_id, actor="jordan@acme.example")
        row = session.get(Execution, intent_id)
        assert row is not None
        row.failure_message = '{"error": {"message": "INVALID_FIELD: secret-provider-text"}}'
        row.explanation = "Traceback (most recent call last): SELECT * FROM executions"
        session.add(row)

    body = client.get(f"/actions/{intent_id}/status", headers=bearer(service, "viewer", tenant)).json()

    assert body["failure"]["message"] == "Someone cancelled this action before it finished."
    assert body["explanation"] == "Cancelled; no further change will be made."
    assert "secret-provider-text" not in json.dumps(body) and "SELECT" not in json.dumps(body)


# --- auth ----------------------------------------------------------------------------------
def test_missing_invalid_revoked_and_expired_tokens_answer_401_with_a_bearer_challenge(
    client: TestClient, service: ExecutionService, engine: Any, make_intent: Any, tenant: str
) -> None:
    intent_id = register(engine, make_intent("internal.create_task", {"title": "x"}))
    revoked = service.create_token(role="viewer", tenant_id=tenant, expires_in=timedelta(hours=1))
    service.revoke_token(revoked.token.token_id)
    expired = service.create_token(role="viewer", tenant_id=tenant, expires_in=timedelta(hours=1))
    with transaction(engine) as session:
        row = session.get(ApiToken, expired.token.token_id)
        assert row is not None and row.created_at is not None
        row.expires_at = row.created_at - timedelta(seconds=1)
        session.add(row)
    valid = service.create_token(role="viewer", tenant_id=tenant, expires_in=timedelta(hours=1))
    cases = {
        "missing": {},
        "not bearer": {"Authorization": f"Basic {valid.secret}"},
        "garbage": {"Authorization": "Bearer nonsense"},
        "wrong secret, real id": {"Authorization": f"Bearer {valid.secret[:-4]}AAAA"},
        "revoked": {"Authorization": f"Bearer {revoked.secret}"},
        "expired": {"Authorization": f"Bearer {expired.secret}"},
    }
    for case, headers in cases.items():
        answer = client.get(f"/actions/{intent_id}/status", headers=headers)
        assert answer.status_code == 401, case
        assert answer.headers["www-authenticate"].startswith("Bearer"), case
        assert answer.json()["error"]["code"] == "UNAUTHORIZED", case
    ok = client.get(f"/actions/{intent_id}/status", headers={"Authorization": f"Bearer {valid.secret}"})
    assert ok.status_code == 200


def test_health_and_the_schema_need_no_token(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok", "database": "ok"}
    schema = client.get("/openapi.json").json()
    assert "BearerToken" in schema["components"]["securitySchemes"]
    assert {"/actions/{action_intent_id}/status", "/controls", "/actions/{action_intent_id}/ledger"} <= set(
        schema["paths"]
    )


# --- cancel --------------------------------------------------------------------------------
def test_cancel_needs_an_operator_and_answers_409_once_finished(
    client: TestClient, service: ExecutionService, engine: Any, make_intent: Any, tenant: str
) -> None:
    intent_id = register(engine, make_intent("internal.create_task", {"title": "x"}))
    viewer = bearer(service, "viewer", tenant)
    operator = bearer(service, "operator", tenant, name="ops-bot")

    refused = client.post(f"/actions/{intent_id}/cancel", headers=viewer)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "FORBIDDEN"
    assert client.get(f"/actions/{intent_id}/status", headers=viewer).json()["status"] == "PENDING"

    cancelled = client.post(f"/actions/{intent_id}/cancel", headers=operator)
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "CANCELLED"
    assert cancelled.json()["failure"]["code"] == "CANCELLED_BY_USER"

    again = client.post(f"/actions/{intent_id}/cancel", headers=operator)
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "ALREADY_FINISHED"

    ledger = client.get(f"/actions/{intent_id}/ledger", headers=operator).json()
    last = ledger["rows"][-1]
    assert last["event_type"] == "ACTION_CANCELLED" and last["actor"].startswith("ops-bot (tok_")


# --- ledger --------------------------------------------------------------------------------
def test_an_operator_reads_the_full_ledger_with_its_verification(
    client: TestClient, service: ExecutionService, engine: Any, make_intent: Any, tenant: str, tmp_path: Path
) -> None:
    intent_id = succeed(engine, make_intent("internal.create_task", {"title": "Audited"}), tmp_path)
    operator = bearer(service, "operator", tenant)

    assert (
        client.get(f"/actions/{intent_id}/ledger", headers=bearer(service, "viewer", tenant)).status_code
        == 403
    )
    answer = client.get(f"/actions/{intent_id}/ledger", headers=operator)
    assert answer.status_code == 200
    body = answer.json()
    assert [r["event_type"] for r in body["rows"]][0] == "INTENT_RECEIVED"
    assert body["rows"][-1]["event_type"] == "ACTION_EXECUTED"
    assert all(len(r["row_hash"]) == 64 for r in body["rows"])
    assert body["verification"]["ok"] is True and body["verification"]["intent_rows_intact"] is True

    # A database owner edits a row behind the trigger's back: the answer says so, and where.
    seq = body["rows"][1]["seq"]
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("ALTER TABLE ledger DISABLE TRIGGER ledger_append_only"))
        else:
            conn.execute(sa.text("DROP TRIGGER ledger_no_update"))
        conn.execute(
            sa.text("UPDATE ledger SET actor = 'mallory' WHERE tenant_id = :t AND seq = :s"),
            {"t": tenant, "s": seq},
        )
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("ALTER TABLE ledger ENABLE TRIGGER ledger_append_only"))
    tampered = client.get(f"/actions/{intent_id}/ledger", headers=operator).json()["verification"]
    assert tampered["ok"] is False and tampered["intent_rows_intact"] is False
    assert tampered["broken_seq"] == seq


# --- executions listing ----------------------------------------------------------------------
def test_executions_are_paginated_newest_first_and_filtered_by_status(
    client: TestClient, service: ExecutionService, engine: Any, make_intent: Any, tenant: str
) -> None:
    ids = [register(engine, make_intent("internal.create_task", {"title": f"n{i}"})) for i in range(5)]
    with transaction(engine) as session:
        for intent_id in ids[:2]:
            executions.cancel(session, tenant, intent_id, actor="ops")
    auth = bearer(service, "viewer", tenant)
    url = "/accounts/001Hs00002abcDEF/executions"

    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = client.get(url, params=params, headers=auth).json()
        seen += [item["action_intent_id"] for item in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3 and sorted(seen) == sorted(ids) and len(set(seen)) == 5
    full = client.get(url, params={"limit": 200}, headers=auth).json()["items"]
    assert [i["action_intent_id"] for i in full] == seen, "pages continue the newest-first order"
    stamps = [i["created_at"] for i in full]
    assert stamps == sorted(stamps, reverse=True)

    cancelled = client.get(url, params={"status": "CANCELLED"}, headers=auth).json()["items"]
    assert sorted(i["action_intent_id"] for i in cancelled) == sorted(ids[:2])
    both = client.get(url, params=[("status", "CANCELLED"), ("status", "PENDING")], headers=auth).json()
    assert len(both["items"]) == 5


@pytest.mark.parametrize(
    ("params", "code", "field"),
    [
        ({"status": "DONE"}, "INVALID_REQUEST", "status.0"),
        ({"limit": 0}, "INVALID_REQUEST", "limit"),
        ({"limit": 201}, "INVALID_REQUEST", "limit"),
        ({"limit": "many"}, "INVALID_REQUEST", "limit"),
        ({"cursor": "not-a-cursor"}, "INVALID_CURSOR", "cursor"),
    ],
)
def test_bad_listing_input_is_a_clean_422(
    client: TestClient, service: ExecutionService, tenant: str, params: dict[str, Any], code: str, field: str
) -> None:
    answer = client.get("/accounts/acc/executions", params=params, headers=bearer(service, "viewer", tenant))
    assert answer.status_code == 422
    assert answer.json()["error"]["code"] == code and answer.json()["error"]["field"] == field
    assert set(answer.json()) == {"error"}


# --- controls ------------------------------------------------------------------------------
def test_controls_roles_and_the_read_only_emergency_stop(
    client: TestClient, service: ExecutionService, tenant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    viewer = bearer(service, "viewer", tenant)
    operator = bearer(service, "operator", tenant)
    admin = bearer(service, "admin", None)
    off = {"enabled": False, "reason": "incident 42"}

    assert client.put(f"/controls/tenants/{tenant}", json=off, headers=viewer).status_code == 403
    switched = client.put(f"/controls/tenants/{tenant}", json=off, headers=operator)
    assert switched.status_code == 200, switched.text
    assert switched.json()["enabled"] is False and switched.json()["reason"] == "incident 42"
    assert client.put("/controls/action-types/crm.create_task", json=off, headers=operator).status_code == 403
    by_admin = client.put("/controls/action-types/crm.create_task", json=off, headers=admin)
    assert by_admin.status_code == 200 and by_admin.json()["scope"] == "action_type"
    assert (
        client.put(
            "/controls/action-types/crm.create_task", json={"enabled": True}, headers=admin
        ).status_code
        == 200
    )

    listed = client.get("/controls", headers=viewer).json()
    assert listed["emergency_stop"] is False
    assert {(s["scope"], s["key"], s["enabled"]) for s in listed["switches"]} >= {("tenant", tenant, False)}
    monkeypatch.setenv("FULFILL_EMERGENCY_STOP", "1")
    assert client.get("/controls", headers=viewer).json()["emergency_stop"] is True
    assert client.put("/controls/emergency-stop", json=off, headers=admin).status_code in (404, 405)

    for bad in (
        {"enabled": "no"},
        {},
        {"enabled": False, "extra": 1},
        {"enabled": False, "reason": "x" * 1001},
    ):
        answer = client.put(f"/controls/tenants/{tenant}", json=bad, headers=operator)
        assert answer.status_code == 422, bad
        assert answer.json()["error"]["code"] == "INVALID_REQUEST"
    assert client.put("/controls/action-types/crm.nope", json=off, headers=admin).status_code == 422


# --- tenant isolation ------------------------------------------------------------------------
def test_tenant_b_sees_nothing_of_tenant_a_on_any_endpoint(
    client: TestClient,
    service: ExecutionService,
    engine: Any,
    make_intent: Any,
    tenant: str,
    unique: str,
    tmp_path: Path,
) -> None:
    a_done = succeed(engine, make_intent("internal.create_task", {"title": "A's"}), tmp_path)
    a_pending = register(engine, make_intent("internal.create_task", {"title": "A's too"}))
    register(engine, make_intent("internal.create_task", {"title": "A's third"}))
    a_auth = bearer(service, "viewer", tenant)
    a_cursor = client.get(
        "/accounts/001Hs00002abcDEF/executions", params={"limit": 1}, headers=a_auth
    ).json()["next_cursor"]
    assert a_cursor
    b_tenant = f"b-{unique}"
    register(engine, other_tenant(make_intent, unique))
    b_auth = bearer(service, "operator", b_tenant)
    unknown = f"ai_unknown_{unique}"

    for intent_id in (a_done, a_pending):
        for method, path in (
            ("GET", "status"),
            ("GET", "timeline"),
            ("GET", "ledger"),
            ("POST", "cancel"),
            ("POST", "rerun"),
        ):
            theirs = client.request(method, f"/actions/{intent_id}/{path}", headers=b_auth)
            nobody = client.request(method, f"/actions/{unknown}/{path}", headers=b_auth)
            assert theirs.status_code == 404, (intent_id, path)
            assert theirs.content == nobody.content, "byte for byte like an unknown id"
            assert theirs.json() == NOT_FOUND_INTENT
    assert client.get(f"/actions/{a_pending}/status", headers=a_auth).json()["status"] == "PENDING"

    listing = client.get("/accounts/001Hs00002abcDEF/executions", headers=b_auth).json()
    assert [i["action_intent_id"] for i in listing["items"]] == [f"ai_b_{unique}"]
    with_cursor = client.get(
        "/accounts/001Hs00002abcDEF/executions", params={"cursor": a_cursor}, headers=b_auth
    )
    garbage = client.get("/accounts/001Hs00002abcDEF/executions", params={"cursor": "x" * 40}, headers=b_auth)
    assert with_cursor.status_code == 422 and with_cursor.content == garbage.content

    off = {"enabled": False, "reason": "not yours"}
    theirs = client.put(f"/controls/tenants/{tenant}", json=off, headers=b_auth)
    nobody = client.put("/controls/tenants/no-such-tenant", json=off, headers=b_auth)
    assert theirs.status_code == 404 and theirs.content == nobody.content
    client.put(f"/controls/tenants/{tenant}", json=off, headers=bearer(service, "operator", tenant))
    seen = client.get("/controls", headers=b_auth).json()["switches"]
    assert all(s["key"] != tenant for s in seen), "B does not see A's switch"
    with transaction(engine) as session:
        assert blocked_reason(session, b_tenant, "internal.create_task") is None

    everything = json.dumps(
        [client.get(f"/actions/{a_done}/{p}", headers=b_auth).json() for p in ("status", "timeline")]
    )
    assert "A's" not in everything and tenant not in everything


def halt(engine: Any, raw: dict[str, Any]) -> str:
    """A FAILED (KILL_SWITCH, needs no person) execution: claimed while its tenant's switch was off."""
    intent_id = register(engine, raw)
    with transaction(engine) as session:
        refused = executions.claim(session, intent_id, owner="test/1", blocked="tenant paused")
    assert isinstance(refused, executions.Refusal)
    return intent_id


def test_rerun_needs_an_operator_is_ledgered_with_who_and_starts_one_run_per_failed_attempt(
    client: TestClient, service: ExecutionService, engine: Any, make_intent: Any, tenant: str, tmp_path: Path
) -> None:
    failed = halt(engine, make_intent("internal.create_task", {"title": "Held"}))
    done = succeed(engine, make_intent("internal.create_task", {"title": "Done"}), tmp_path)
    operator = bearer(service, "operator", tenant, name="jordan@acme.example")

    viewer = client.post(f"/actions/{failed}/rerun", headers=bearer(service, "viewer", tenant))
    first = client.post(f"/actions/{failed}/rerun", headers=operator)
    again = client.post(f"/actions/{failed}/rerun", headers=operator)
    finished = client.post(f"/actions/{done}/rerun", headers=operator)

    assert viewer.status_code == 403
    assert first.status_code == 202, first.text
    assert first.json()["status"] == "FAILED", "it stays FAILED until the new run claims it"
    assert first.json()["flow_run_id"] == _launcher(
        failed, tenant_id=tenant, action_type="internal.create_task", idempotency_key=f"{failed}:rerun:1"
    )
    assert again.json()["flow_run_id"] == first.json()["flow_run_id"], "same failed attempt, same run"
    assert finished.status_code == 409 and finished.json()["error"]["code"] == "NOT_RERUNNABLE"
    rows = [r for r in service.get_ledger_entries(failed, tenant) if r.event_type == "RERUN_REQUESTED"]
    assert [r.actor for r in rows] == [first_actor := rows[0].actor] * 2 and "jordan" in first_actor
    timeline = client.get(f"/actions/{failed}/timeline", headers=operator).json()["events"]
    assert any(e["title"] == "Rerun requested" for e in timeline)


def test_a_rerun_whose_run_cannot_be_created_answers_503_and_changes_nothing(
    service: ExecutionService, engine: Any, make_intent: Any, tenant: str
) -> None:
    def unreachable(action_intent_id: str, **_: Any) -> str:
        raise ConnectionError("prefect server at 127.0.0.1:4200 refused the connection")

    client = TestClient(create_app(ApprovalIntake(launcher=unreachable), service=service))
    failed = halt(engine, make_intent("internal.create_task", {"title": "Held"}))

    answer = client.post(f"/actions/{failed}/rerun", headers=bearer(service, "operator", tenant))

    assert answer.status_code == 503 and "127.0.0.1" not in answer.text
    assert answer.json()["error"]["code"] == "UNAVAILABLE"
    assert service.get_execution_status(failed, tenant).status == "FAILED"


# --- errors --------------------------------------------------------------------------------
def test_unknown_paths_and_methods_answer_the_json_error_shape(
    client: TestClient, service: ExecutionService, tenant: str
) -> None:
    auth = bearer(service, "viewer", tenant)
    missing = client.get("/nope", headers=auth)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "NOT_FOUND"
    wrong = client.delete("/controls", headers=auth)
    assert wrong.status_code == 405 and wrong.json()["error"]["code"] == "METHOD_NOT_ALLOWED"
    assert "GET" in wrong.headers["allow"]
    operator = {**bearer(service, "operator", tenant), "content-type": "application/json"}
    garbled = client.put(f"/controls/tenants/{tenant}", content=b"\xff{not json", headers=operator)
    assert garbled.status_code == 422
    assert garbled.json() == {
        "error": {
            "code": "INVALID_REQUEST",
            "field": "body",
            "message": "the body could not be parsed as JSON",
        }
    }
    nul = client.get("/actions/a%00b/status", headers=auth)
    assert nul.status_code == 404 and nul.json() == NOT_FOUND_INTENT


def test_an_unexpected_error_answers_500_without_its_details(
    service: ExecutionService, tenant: str, engine: Any
) -> None:
    class Broken(ExecutionService):
        def get_execution_status(self, action_intent_id: str, tenant_id: str | None = None) -> Any:
            raise RuntimeError("SELECT secret FROM vault; password=hunter2")

    broken = Broken(engine)
    app = create_app(ApprovalIntake(launcher=_launcher), service=broken)
    with TestClient(app, raise_server_exceptions=False) as client:
        answer = client.get("/actions/x/status", headers=bearer(service, "viewer", tenant))
    assert answer.status_code == 500
    assert answer.json() == {
        "error": {
            "code": "INTERNAL_ERROR",
            "field": None,
            "message": "an internal error occurred; it has been logged",
        }
    }
    assert "hunter2" not in answer.text and "SELECT" not in answer.text


def test_metrics_and_connector_health_need_an_admin_token(
    client: TestClient, service: ExecutionService
) -> None:
    assert client.get("/metrics").status_code == 401
    viewer = bearer(service, "viewer", "acme")
    assert client.get("/metrics", headers=viewer).status_code == 403
    assert client.get("/connectors/health", headers=viewer).status_code == 403
    admin = bearer(service, "admin", None)
    metrics = client.get("/metrics", headers=admin)
    assert metrics.status_code == 200 and "fulfill_executions" in metrics.text
    assert client.get("/connectors/health", headers=admin).status_code == 200
