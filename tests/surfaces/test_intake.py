"""Approval intake over HTTP (contract §4): Standard Webhooks, admission, one run per approval."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlmodel import select
from standardwebhooks.webhooks import Webhook

from fulfill import ledger
from fulfill.db import transaction
from fulfill.tables import Execution, LedgerEntry
from surfaces.api import create_app
from surfaces.intake import MAX_BODY_BYTES, ApprovalIntake
from tests.conftest import VECTORS

SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
ROTATED = "whsec_" + "C2FVsBQIhrscChlQIMV+b5sSYspob7oD"


class Launches:
    """A launcher that records what it was asked to start (one run id per intent, like Prefect's key)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str]] = []
        self._lock = threading.Lock()

    def __call__(
        self, action_intent_id: str, *, tenant_id: str, action_type: str, idempotency_key: str | None = None
    ) -> str:
        with self._lock:
            self.calls.append((action_intent_id, tenant_id, action_type))
        return str(uuid.uuid5(uuid.NAMESPACE_URL, action_intent_id))


@pytest.fixture
def launches() -> Launches:
    return Launches()


@pytest.fixture
def api(engine: Any, launches: Launches, monkeypatch: pytest.MonkeyPatch) -> TestClient:
    monkeypatch.setenv("FULFILL_WEBHOOK_SECRETS", f"{ROTATED} {SECRET}")
    return TestClient(create_app(ApprovalIntake(launcher=launches)))


def deliver(
    api: TestClient, intent: Any, *, secret: str = SECRET, at: float | None = None, body: bytes | None = None
) -> Any:
    payload = (
        body
        if body is not None
        else json.dumps(
            {"type": "action_intent.approved", "timestamp": "2026-11-27T15:02:12Z", "data": intent}
        ).encode()
    )
    msg_id = f"msg_{uuid.uuid4().hex[:12]}"
    stamp = datetime.fromtimestamp(at if at is not None else time.time(), tz=UTC)
    signature = Webhook(secret).sign(msg_id, stamp, payload.decode())
    headers = {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(stamp.timestamp())),
        "webhook-signature": signature,
        "content-type": "application/json",
    }
    return api.post("/webhooks/approvals", content=payload, headers=headers)


def stored(engine: Any, intent_id: str) -> Execution | None:
    with transaction(engine) as session:
        return session.get(Execution, intent_id)


def events(engine: Any, tenant: str, intent_id: str) -> list[str]:
    with transaction(engine) as session:
        return [row.event_type for row in ledger.entries_for_intent(session, tenant, intent_id)]


def test_a_new_approval_is_registered_and_one_run_is_started(
    api: TestClient, engine: Any, make_intent: Any, tenant: str, launches: Launches
) -> None:
    intent = make_intent("crm.create_task", {"subject": "Follow up"})
    intent_id = intent["action_intent_id"]

    first = deliver(api, intent)
    again = deliver(api, intent, secret=ROTATED)  # redelivery, signed with the other secret

    assert first.status_code == 202, first.text
    assert first.json() == {
        "action_intent_id": intent_id,
        "status": "PENDING",
        "flow_run_id": str(uuid.uuid5(uuid.NAMESPACE_URL, intent_id)),
    }
    assert again.status_code == 200 and again.json() == first.json()
    assert {call[0] for call in launches.calls} == {intent_id}
    assert launches.calls[0] == (intent_id, tenant, "crm.create_task")
    execution = stored(engine, intent_id)
    assert execution is not None and execution.status == "PENDING"
    assert execution.flow_run_id == first.json()["flow_run_id"]
    assert events(engine, tenant, intent_id) == ["INTENT_RECEIVED"]


def test_the_same_id_with_other_content_is_a_conflict(
    api: TestClient, make_intent: Any, engine: Any, tenant: str
) -> None:
    intent = make_intent("crm.create_task", {"subject": "Follow up"})
    assert deliver(api, intent).status_code == 202
    other = make_intent(
        "crm.create_task", {"subject": "Something else"}, action_intent_id=intent["action_intent_id"]
    )

    answer = deliver(api, other)

    assert answer.status_code == 409
    assert answer.json()["error"]["code"] == "CONFLICT"
    execution = stored(engine, intent["action_intent_id"])
    assert execution is not None and execution.intent_json["parameters"]["subject"] == "Follow up"


BAD_DELIVERIES: dict[str, Callable[[Any], dict[str, Any]]] = {
    "unknown secret": lambda i: {"secret": "whsec_" + "VGhpcyBpcyBub3QgdGhlIHNlY3JldCE="},
    "stale timestamp": lambda i: {"at": time.time() - 6 * 60},
    "future timestamp": lambda i: {"at": time.time() + 6 * 60},
}


@pytest.mark.parametrize("case", list(BAD_DELIVERIES), ids=list(BAD_DELIVERIES))
def test_an_unverifiable_delivery_leaves_no_trace_but_a_security_line(
    api: TestClient,
    engine: Any,
    make_intent: Any,
    tenant: str,
    launches: Launches,
    caplog: pytest.LogCaptureFixture,
    case: str,
) -> None:
    intent = make_intent("crm.create_task", {"subject": "Follow up"})

    answer = deliver(api, intent, **BAD_DELIVERIES[case](intent))

    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "UNAUTHORIZED"
    assert stored(engine, intent["action_intent_id"]) is None
    with transaction(engine) as session:
        assert list(session.exec(select(LedgerEntry).where(LedgerEntry.tenant_id == tenant))) == []
    assert launches.calls == []
    assert any(r.name == "fulfill.security" and "refused" in r.getMessage() for r in caplog.records)


def test_missing_or_malformed_signature_headers_are_refused(api: TestClient, make_intent: Any) -> None:
    payload = json.dumps(
        {"type": "action_intent.approved", "data": make_intent("internal.log_note", {"body": "x"})}
    )
    assert api.post("/webhooks/approvals", content=payload).status_code == 401
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(int(time.time())),
        "webhook-signature": "v1,%%%",
    }
    answer = api.post("/webhooks/approvals", content=payload, headers=headers)
    assert answer.status_code == 401 and "Traceback" not in answer.text


def test_an_oversize_body_is_refused_before_it_is_read(
    api: TestClient, engine: Any, launches: Launches
) -> None:
    answer = api.post(
        "/webhooks/approvals",
        content=b"x" * (MAX_BODY_BYTES + 1),
        headers={"webhook-id": "m", "webhook-timestamp": "1", "webhook-signature": "v1,AAAA"},
    )
    assert answer.status_code == 413
    assert answer.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"
    assert launches.calls == []


def test_an_invalid_intent_is_422_naming_the_field_and_ledgered(
    api: TestClient, make_intent: Any, engine: Any, tenant: str, launches: Launches
) -> None:
    intent = make_intent("crm.create_task", {"subject": ""})

    answer = deliver(api, intent)

    assert answer.status_code == 422
    assert answer.json()["error"]["code"] == "VALIDATION_FAILED"
    assert answer.json()["error"]["field"] == "data.parameters.subject"
    assert stored(engine, intent["action_intent_id"]) is None
    assert events(engine, tenant, intent["action_intent_id"]) == ["INTENT_REJECTED"]
    assert launches.calls == []


def test_a_tampered_approval_is_422_approval_invalid(
    api: TestClient, make_intent: Any, engine: Any, launches: Launches
) -> None:
    intent = make_intent("crm.create_task", {"subject": "Follow up"})
    intent["parameters"]["subject"] = "Edited after approval"

    answer = deliver(api, intent)

    assert answer.status_code == 422
    assert answer.json()["error"]["code"] == "APPROVAL_INVALID"
    assert stored(engine, intent["action_intent_id"]) is None
    assert launches.calls == []


def test_an_envelope_of_another_type_is_422(api: TestClient, make_intent: Any) -> None:
    body = json.dumps(
        {"type": "action_intent.rejected", "data": make_intent("internal.log_note", {"body": "x"})}
    )
    answer = deliver(api, None, body=body.encode())
    assert answer.status_code == 422 and answer.json()["error"]["field"] == "type"


def test_an_expired_approval_is_200_expired_and_starts_nothing(
    api: TestClient, make_intent: Any, engine: Any, tenant: str, launches: Launches
) -> None:
    intent = make_intent("crm.create_task", {"subject": "Too late"}, expires_at_epoch=int(time.time()) - 60)

    answer = deliver(api, intent)

    assert answer.status_code == 200
    assert answer.json()["status"] == "EXPIRED"
    assert launches.calls == []
    assert events(engine, tenant, intent["action_intent_id"]) == ["INTENT_RECEIVED", "ACTION_EXPIRED"]


def test_the_published_webhook_vector_verifies(
    api: TestClient, monkeypatch: pytest.MonkeyPatch, launches: Launches
) -> None:
    """The independent implementation's delivery, verified on its raw bytes with the clock pinned."""
    import standardwebhooks.webhooks as module

    vector = json.loads((VECTORS / "webhook-standard-v1.json").read_text())
    pinned = datetime.fromtimestamp(int(vector["webhook-timestamp"]), tz=UTC)

    class Pinned(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> Any:
            return pinned

    monkeypatch.setattr(module, "datetime", Pinned)
    monkeypatch.setenv("FULFILL_WEBHOOK_SECRETS", vector["secret"])
    monkeypatch.setenv("FULFILL_MAX_APPROVAL_TTL", str(10**10))
    headers = {k: vector[k] for k in ("webhook-id", "webhook-timestamp", "webhook-signature")}

    answer = api.post("/webhooks/approvals", content=vector["body"].encode(), headers=headers)

    assert answer.status_code == 202, answer.text
    assert [call[0] for call in launches.calls] == ["ai_vec_0001"]
    tampered = vector["body"].replace("High", "Low").encode()
    assert api.post("/webhooks/approvals", content=tampered, headers=headers).status_code == 401


def test_healthz(api: TestClient) -> None:
    assert api.get("/healthz").json() == {"status": "ok", "database": "ok"}


@pytest.fixture(scope="module")
def execute_intent_deployment(prefect_server: str) -> str:
    """The execute-intent deployment registered on the test Prefect server (no worker: runs wait)."""
    from flows.execute_intent import execute_intent

    return str(execute_intent.to_deployment(name="execute-intent").apply())


def test_twenty_concurrent_deliveries_start_one_run_and_cause_one_effect(
    engine: Any,
    make_intent: Any,
    tenant: str,
    monkeypatch: pytest.MonkeyPatch,
    execute_intent_deployment: str,
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.flow_engine import run_flow

    from flows.execute_intent import execute_intent
    from fulfill.tables import InternalTask

    monkeypatch.setenv("FULFILL_WEBHOOK_SECRETS", SECRET)
    api = TestClient(create_app())  # the real launcher: a run of the deployment
    intent = make_intent("internal.create_task", {"title": "Delivered twenty times"})
    intent_id = intent["action_intent_id"]
    answers: list[Any] = []

    def post() -> None:
        answers.append(deliver(api, intent))

    threads = [threading.Thread(target=post) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(a.status_code for a in answers) == [200] * 19 + [202]
    run_ids = {a.json()["flow_run_id"] for a in answers}
    assert len(run_ids) == 1, "one flow run for twenty deliveries"
    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(uuid.UUID(run_ids.pop()))
    assert str(flow_run.deployment_id) == execute_intent_deployment
    assert flow_run.name == intent_id
    assert flow_run.parameters == {"action_intent_id": intent_id}, "the intent's content is no parameter"
    assert f"tenant:{tenant}" in flow_run.tags and "action:internal.create_task" in flow_run.tags

    run_flow(execute_intent, flow_run=flow_run, parameters=flow_run.parameters)  # a worker picks it up
    run_flow(execute_intent, flow_run=flow_run, parameters=flow_run.parameters)  # and again (a retry)

    with transaction(engine) as session:
        assert session.get(Execution, intent_id).status == "SUCCEEDED"  # type: ignore[union-attr]
        effects = session.exec(select(InternalTask).where(InternalTask.action_intent_id == intent_id))
        assert len(list(effects)) == 1, "one effect"
    assert events(engine, tenant, intent_id).count("INTENT_RECEIVED") == 1
